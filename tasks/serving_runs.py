"""Serving runs: the live accuracy of the versions that served, from real predictions.

One long-lived run per serving version, one step per window; the monitor logs to it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tasks.registry import connect, ensure_experiment, file_lock, lock_dir
from tasks.schema import StreamSchema
from tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


SERVING_TAG = "streamtrain.serving_version"  # not `streamtrain.kind`: not a training cycle


def serving_run(settings: Settings, schema: StreamSchema, version: str) -> str:
    """The id of the long-lived run "serving v<version>", found by tag or created.

    Creation happens under a file lock so two monitors on this machine cannot both create it;
    should two runs exist anyway (monitors on different machines), the oldest one is used.
    """
    client = connect(settings)
    experiment_id = ensure_experiment(settings, schema.name)
    lock = lock_dir(settings) / f"{schema.name}.serving.lock"
    with file_lock(lock, timeout_s=60, what="serving-run lock"):
        found = _serving_runs(client, experiment_id, version)
        if found:
            return found[0]
        run = client.create_run(
            experiment_id,
            run_name=f"serving v{version}",
            tags={SERVING_TAG: version, "streamtrain.model": schema.name},
        )
    return str(run.info.run_id)


def _serving_runs(client: MlflowClient, experiment_id: str, version: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{SERVING_TAG}` = '{version}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return [str(run.info.run_id) for run in runs]


def log_serving_window(
    settings: Settings, run_id: str, step: int, metrics: Mapping[str, float]
) -> None:
    """Log one window's metrics at `step`; values already logged at that step are not repeated,
    so monitoring a window again only adds what changed (late labels)."""
    from mlflow.entities import Metric

    client = connect(settings)
    now = int(time.time() * 1000)
    points = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if float(value) != _metric_at(client, run_id, key, step)
    ]
    if points:
        client.log_batch(run_id, metrics=points)


def _metric_at(client: MlflowClient, run_id: str, key: str, step: int) -> float | None:
    """The latest value of a metric at a step (None when it was never logged there)."""
    at_step = [m for m in client.get_metric_history(run_id, key) if m.step == step]
    return max(at_step, key=lambda m: m.timestamp).value if at_step else None


def serving_metric(settings: Settings, run_id: str, key: str) -> dict[int, float]:
    """A serving run's metric as {step: latest value}."""
    latest: dict[int, tuple[int, float]] = {}
    for m in connect(settings).get_metric_history(run_id, key):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, m.value)
    return {step: value for step, (_, value) in sorted(latest.items())}
