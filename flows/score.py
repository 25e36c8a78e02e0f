"""Flow `score`: the streaming scorer, scoring feature records with the champion as they arrive.

A long-running consumer-group service; SIGTERM or SIGINT finishes the current batch, commits
and returns. `streamtrain score` calls `run_scoring`; a deployment runs the flow.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import flow

from tasks.schema import StreamSchema, load_schema
from tasks.scoring import run_scorer, stop_on_signals
from tasks.settings import Settings, current_settings


def run_scoring(
    settings: Settings,
    schema: StreamSchema,
    *,
    input_topic: str,
    output_topic: str,
    group_id: str | None = None,
    max_records: int | None = None,
    idle_exit_s: float | None = None,
    reload_interval_s: float = 5.0,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Run the scorer until a signal, `max_records` or `idle_exit_s`; returns its statistics."""
    stop = threading.Event()
    with stop_on_signals(stop):
        stats = run_scorer(
            settings,
            schema,
            input_topic=input_topic,
            output_topic=output_topic,
            group_id=group_id,
            max_records=max_records,
            idle_exit_s=idle_exit_s,
            reload_interval_s=reload_interval_s,
            batch_size=batch_size,
            stop=stop,
        )
    return stats.to_dict()


@flow(name="score")
def score(
    input_topic: str,
    output_topic: str,
    group_id: str | None = None,
    max_records: int | None = None,
    idle_exit_s: float | None = None,
    reload_interval_s: float = 5.0,
) -> dict[str, Any]:
    """Score records from `input_topic` with the champion into `output_topic`."""
    settings = current_settings()
    return run_scoring(
        settings,
        load_schema(settings.schema_path),
        input_topic=input_topic,
        output_topic=output_topic,
        group_id=group_id,
        max_records=max_records,
        idle_exit_s=idle_exit_s,
        reload_interval_s=reload_interval_s,
    )
