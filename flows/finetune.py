"""Flow `finetune`: the hourly test-then-train cycle of one window (`hourly-finetune`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow

from flows.runtime import cycle_context, publish_cycle, request_retrain
from tasks.cycle import finetune_window
from tasks.registry import training_lock
from tasks.windowing import Window, parse_instant


def closed_hour(now: datetime, lateness_s: int, length: timedelta) -> datetime:
    """The latest window whose end plus the allowed lateness has passed."""
    return Window.containing(now - timedelta(seconds=lateness_s), length).start - length


@flow(name="finetune")
def finetune(hour: str | None = None, trigger: str = "schedule") -> dict[str, Any]:
    """Score the champion on the window, fine-tune a copy, gate it and register it.

    `hour` is any instant in the window; by default the window that closed last.
    """
    ctx = cycle_context(as_tasks=True)
    if hour is None:
        start = closed_hour(datetime.now(UTC), ctx.settings.allowed_lateness_s, ctx.schema.window)
    else:
        start = parse_instant(hour)
    window = Window.containing(start, ctx.schema.window)
    with training_lock(ctx.settings, ctx.model_name, timeout_s=600):
        result = finetune_window(ctx, window, trigger=trigger)
    publish_cycle(ctx, result)
    if result.retrain_triggered:
        request_retrain(ctx, window.end, result.retrain_trigger or "drift")
    return result.to_dict()
