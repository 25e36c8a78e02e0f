"""Flow `monitor`: live accuracy of the versions that served one window, from real predictions.

Run it after the window has closed (its end plus the allowed lateness), like `finetune`.
`run_monitor` is the same step without Prefect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from flows.finetune import closed_hour
from tasks.monitor import monitor_window
from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings, current_settings
from tasks.windowing import Window, parse_instant


def run_monitor(
    settings: Settings,
    schema: StreamSchema,
    *,
    predictions_topic: str,
    hour: datetime | None = None,
) -> dict[str, Any]:
    """Monitor the window containing `hour` (by default the one that closed last)."""
    if hour is None:
        hour = closed_hour(datetime.now(UTC), settings.allowed_lateness_s, schema.window)
    window = Window.containing(hour, schema.window)
    return monitor_window(settings, schema, window, predictions_topic=predictions_topic).to_dict()


@flow(name="monitor")
def monitor(predictions_topic: str, hour: str | None = None) -> dict[str, Any]:
    """Log the live accuracy of each version that served the window containing `hour`.

    Args:
        predictions_topic: The scorer's output topic.
        hour: Any instant (ISO 8601) in the window; empty: the window that closed last.
    """
    settings = current_settings()
    return run_monitor(
        settings,
        load_schema(settings.schema_path),
        predictions_topic=predictions_topic,
        hour=None if hour is None else parse_instant(hour),
    )
