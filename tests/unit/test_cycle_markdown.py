"""The Prefect artifact of a cycle: what a person reads in the Prefect UI after each run."""

from __future__ import annotations

from flows.runtime import cycle_markdown
from tasks.cycle import CycleResult


def result(**changes: object) -> CycleResult:
    base = CycleResult(
        kind="finetune",
        window_start="2026-01-13T10:00Z",
        window_end="2026-01-13T11:00Z",
        rows=100,
        quarantined=2,
        data_drift="mild",
        champion_version="3",
        challenger_version="4",
        challenger_metric=0.91,
        champion_metric=0.88,
        decision="promoted",
        reasons=["f1 0.91 vs champion 0.88 on recent holdout"],
        run_id="abc123",
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_the_artifact_shows_window_validation_drift_metrics_decision_and_reasons() -> None:
    text = cycle_markdown(result())
    assert "finetune 2026-01-13T10:00Z .. 2026-01-13T11:00Z" in text
    assert "| rows used | 100 |" in text and "2 quarantined" in text
    assert "| data drift | mild |" in text
    assert "| challenger (primary metric) | 0.910 |" in text
    assert "| champion (primary metric) | 0.880 |" in text
    assert "**promoted**" in text and "- f1 0.91 vs champion 0.88" in text


def test_the_mlflow_run_is_a_link_when_a_tracking_server_gives_one() -> None:
    url = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"
    assert f"| MLflow run | [abc123]({url}) |" in cycle_markdown(result(), url)
    assert "| MLflow run | abc123 |" in cycle_markdown(result())
    assert "| MLflow run | - |" in cycle_markdown(result(run_id=None))
