"""What the replay leaves on its Prefect flow run: the per-day table as the terminal prints it,
the alarm and recovery line, the timeline image served by MLflow, links to the retrains' runs."""

from __future__ import annotations

from typing import Any

from flows.artifacts import ReplayProgress, artifact_key, artifact_url, replay_markdown
from tasks.cycle import CycleResult
from tasks.report import daily_table, drift_recovery, recovery_line, report_rows


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


CHANGE = "2026-01-19T00:00Z"


def around_change(after: list[float], alarms: set[int], false_alarm: bool = False) -> list[dict]:
    """A day of hourly windows at 0.95 before CHANGE, then `after` (alarm on those indexes),
    with a retrain and an unscored window in between that the measures must skip."""
    before = [
        cycle(
            f"2026-01-18T{h:02d}:00Z",
            rows=100,
            prequential_accuracy=0.95,
            concept_drift_alarm=false_alarm and h == 10,
        )
        for h in range(24)
    ]
    later = [
        cycle(
            f"2026-01-19T{i:02d}:00Z",
            rows=100,
            prequential_accuracy=a,
            concept_drift_alarm=i in alarms,
        )
        for i, a in enumerate(after)
    ]
    extra = [
        cycle("2026-01-19T03:00Z", "retrain", window_end="2026-01-19T03:00Z"),
        cycle("2026-01-18T23:30Z", prequential_accuracy=None, decision="skipped"),
    ]
    return report_rows(before + later + extra)


def test_recovery_counts_windows_from_the_change_as_the_bench_does() -> None:
    rows = around_change([0.40, 0.45, 0.60, 0.80, 0.94, 0.93, 0.95, 0.96, 0.95], {2, 3})
    found = drift_recovery(rows, CHANGE)
    assert found is not None
    assert (found.alarm, found.alarm_delay) == ("2026-01-19T02:00Z", 2)
    assert (found.windows, found.recovered) == (4, "2026-01-19T04:00Z")
    assert found.level is not None and abs(found.level - 0.95) < 1e-9
    assert recovery_line(rows, CHANGE) == (
        "Drift at 2026-01-19T00:00Z: the concept-drift alarm fired at 2026-01-19T02:00Z "
        "(2 windows after the change); accuracy was back within 2 points of the day before's "
        "0.950 4 windows after the change (from 2026-01-19T04:00Z, 4 windows in a row)."
    )


def test_an_alarm_before_the_change_is_not_the_alarm_and_a_dip_never_recovered_is_said() -> None:
    rows = around_change([0.5, 0.85, 0.9, 0.85, 0.92, 0.94, 0.88], {1}, false_alarm=True)
    found = drift_recovery(rows, CHANGE)
    assert found is not None and found.alarm == "2026-01-19T01:00Z" and found.windows is None
    line = recovery_line(rows, CHANGE)
    assert "alarm fired at 2026-01-19T01:00Z (1 window after the change)" in line
    assert line.endswith(
        "accuracy never came back within 2 points of the day before's 0.950 "
        "(for 4 windows in a row)."
    )
    silent = around_change([0.5, 0.6, 0.96, 0.95, 0.95, 0.95], set())
    assert recovery_line(silent, CHANGE).startswith(
        "Drift at 2026-01-19T00:00Z: no concept-drift alarm fired after it; accuracy was back "
    )


def test_without_a_known_change_recovery_counts_from_the_first_alarm() -> None:
    rows = around_change([0.95, 0.5, 0.6, 0.95, 0.95, 0.95, 0.95], {1})
    line = recovery_line(rows)
    assert line.startswith("Concept-drift alarm at 2026-01-19T01:00Z; accuracy was back")
    assert "2 windows after the alarm (from 2026-01-19T03:00Z" in line
    quiet = [{**r, "concept_drift_alarm": False} for r in rows]
    assert drift_recovery(quiet) is None
    assert recovery_line(quiet) == "No concept-drift alarm."


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
