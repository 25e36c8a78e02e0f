"""What the replay leaves on its Prefect flow run: the per-day table as the terminal prints it,
the alarm and recovery line, the timeline image served by MLflow, links to the retrains' runs."""

from __future__ import annotations

from typing import Any

from flows.artifacts import ReplayProgress, artifact_key, artifact_url, replay_markdown
from tasks.cycle import CycleResult
from tasks.report import daily_table, recovery_line, report_rows


def cycle(start: str, kind: str = "finetune", **changes: Any) -> dict[str, Any]:
    row = {
        "window_start": start,
        "window_end": start,
        "kind": kind,
        "rows": 50,
        "prequential_accuracy": 0.9,
        "decision": "promoted",
        "reasons": [],
        "trigger": "backfill",
        "concept_drift_alarm": False,
        "run_id": f"run-{start}-{kind}",
    }
    return {**row, **changes}


def test_daily_table_has_the_printed_columns_and_cells() -> None:
    rows = report_rows(
        [
            cycle("2026-01-13T00:00Z", "retrain", trigger="drift:concept", challenger_version="3"),
            cycle("2026-01-13T00:00Z", prequential_accuracy=0.8),
            cycle("2026-01-13T01:00Z", prequential_accuracy=0.7, decision="rolled back"),
            cycle("2026-01-14T00:00Z", prequential_accuracy=None, decision="skipped"),
        ]
    )
    first, second = daily_table(rows)
    assert list(first) == [
        "day",
        "windows",
        "rows",
        "preq. acc",
        "promoted",
        "retrains",
        "by drift",
        "alarms",
        "rollbacks",
    ]
    assert first == {
        "day": "2026-01-13",
        "windows": "2",
        "rows": "100",
        "preq. acc": "0.750",
        "promoted": "2",
        "retrains": "1",
        "by drift": "1",
        "alarms": "0",
        "rollbacks": "1",
    }
    assert second["preq. acc"] == "-" and second["windows"] == "1"


def test_recovery_line_names_the_alarm_and_the_recovery() -> None:
    accs = [0.95] * 16 + [0.6, 0.55, 0.6, 0.62, 0.7, 0.8, 0.94, 0.95, 0.96, 0.95, 0.95]
    rows = [
        cycle(f"w{i:02d}", prequential_accuracy=a, concept_drift_alarm=i == 18)
        for i, a in enumerate(accs)
    ]
    line = recovery_line(rows)
    assert line.startswith("Concept drift detected at w18;")
    assert "(0.950) at w22, 4 observed hours later" in line
    assert recovery_line([{**r, "concept_drift_alarm": False} for r in rows]) == (
        "No concept-drift alarm."
    )


def test_replay_markdown_embeds_the_timeline_and_links_each_retrain_and_the_alarm() -> None:
    rows = [
        cycle("2026-01-13T00:00Z", "retrain", challenger_version="2", trigger="schedule:backfill"),
        cycle("2026-01-13T05:00Z", concept_drift_alarm=True),
        cycle("2026-01-13T06:00Z"),
    ]
    links = {r["run_id"]: f"http://ml/{r['run_id']}" for r in rows}
    links |= {"experiment": "http://ml/exp", "timeline": "http://ml/timeline"}
    text = replay_markdown("a .. b", rows, "No concept-drift alarm.", "http://ml/img.png", links)
    assert "![accuracy timeline](http://ml/img.png)" in text
    assert (
        "| schedule:backfill | 2 | promoted | [run](http://ml/run-2026-01-13T00:00Z-retrain) |"
        in (text)
    )
    assert "[fine-tune of 2026-01-13T05:00Z](http://ml/run-2026-01-13T05:00Z-finetune)" in text
    assert "run-2026-01-13T06:00Z" not in text  # fine-tunes are counted, not each linked


def test_artifact_names_fit_prefect_and_mlflow() -> None:
    assert artifact_key("replay-progress", "Drone_v2.1") == "replay-progress-drone-v2-1"
    assert artifact_url("http://127.0.0.1:5000", "abc", "accuracy_timeline.png") == (
        "http://127.0.0.1:5000/get-artifact?path=accuracy_timeline.png&run_uuid=abc"
    )


def test_progress_counts_finetuned_windows_only_and_updates_every_few() -> None:
    published: list[int] = []
    progress = ReplayProgress("m", total=10, terminal=False, every=4)
    progress._publish = lambda: published.append(progress.done)  # type: ignore[method-assign]
    with progress:
        for hour in range(10):
            progress(CycleResult(kind="finetune", window_start=str(hour), window_end=""))
            if hour % 5 == 0:
                progress(CycleResult(kind="retrain", window_start=str(hour), window_end=""))
    assert progress.done == 10
    assert published == [4, 8, 10]  # every 4th window and the last one

    published.clear()
    with ReplayProgress("m", total=10, terminal=False, every=4) as short:
        short._publish = lambda: published.append(short.done)  # type: ignore[method-assign]
        for hour in range(5):
            short(CycleResult(kind="finetune", window_start=str(hour), window_end=""))
    assert published == [4, 5]  # a replay that ends early still shows where it stopped
