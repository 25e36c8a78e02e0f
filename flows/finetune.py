"""Flow `finetune`: the test-then-train cycle of the windows that closed (`hourly-finetune`).

On the clock it catches up: every window after the last one the registry's lineage shows as
fine-tuned, up to the newest window the stream's time has closed, oldest first. Given an hour
(a person, or the window-closed event), it runs exactly that window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from flows.runtime import cycle_context, publish_cycle, request_retrain, training_slot
from tasks.cycle import CycleContext, CycleResult, finetune_window
from tasks.registry import training_lock
from tasks.run_logging import last_finetuned_window
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.stream import first_timestamp_from, watermark
from tasks.windowing import (
    Window,
    last_closed,
    parse_instant,
    skip_empty_stretch,
    windows_to_catch_up,
)


def closed_hour(now: datetime, lateness_s: int, length: timedelta) -> datetime:
    """Start of the latest window whose end plus the allowed lateness has passed."""
    return last_closed(now, timedelta(seconds=lateness_s), length).start


def closed_since(
    settings: Settings, schema: StreamSchema, last_done: Window | None, now: datetime
) -> tuple[list[Window], int]:
    """Closed windows after `last_done`, oldest first and capped, with how many are left."""
    stream_time = watermark(settings, schema.topic)
    if stream_time is None:
        return [], 0
    # The stream's time, not the wall clock, closes a window: a replayed or simulated stream
    # lives in its own time, and a window still being written must not be trained on. The
    # slowest partition's time: a partition behind the others still has on-time records.
    lateness = timedelta(seconds=settings.allowed_lateness_s)
    closed = last_closed(min(now, stream_time), lateness, schema.window)
    if last_done is not None:
        first = first_timestamp_from(settings, schema.topic, last_done.end)
        last_done = skip_empty_stretch(last_done, first, lateness)
        if last_done is None:
            return [], 0
    return windows_to_catch_up(last_done, closed, settings.catch_up_max_windows)


def due_windows(ctx: CycleContext, now: datetime) -> tuple[list[Window], int]:
    """The closed windows not yet fine-tuned (from lineage and the stream's own time), with
    how many more wait for the next run."""
    done = last_finetuned_window(ctx.settings, ctx.model_name)
    return closed_since(ctx.settings, ctx.schema, Window(*done) if done else None, now)


@flow(name="finetune")
def finetune(hour: str | None = None, trigger: str = "schedule") -> list[dict[str, Any]]:
    """Score the champion on each due window, fine-tune a copy, gate it and register it.

    Args:
        hour: Any instant (ISO 8601) in the one window to run. Empty: every window closed
            since the last one fine-tuned, oldest first.
        trigger: Why the run happens (schedule, event, manual); kept in the lineage.
    """
    from flows.backfill import run_backfill

    log = get_run_logger()
    ctx = cycle_context(as_tasks=True)
    if hour is None:
        windows, left = due_windows(ctx, datetime.now(UTC))
        if left:
            log.warning("%d more closed windows wait for the next run (in order)", left)
    else:
        windows = [Window.containing(parse_instant(hour), ctx.schema.window)]
    if not windows:
        log.info("No closed window is waiting to be fine-tuned")
        return []
    with training_slot(ctx.settings, ctx.model_name):
        if len(windows) == 1:
            with training_lock(ctx.settings, ctx.model_name, timeout_s=600):
                results = [finetune_window(ctx, windows[0], trigger=trigger)]
        else:
            log.info("Catching up %d windows from %s", len(windows), windows[0].start)
            results = run_backfill(
                ctx, windows[0].start, windows[-1].end, retrain_every_hours=None, trigger=trigger
            )
    for result in results:
        if result.kind == "finetune":
            publish_cycle(ctx, result)
    _request_retrains(ctx, results)
    return [r.to_dict() for r in results]


def _request_retrains(ctx: CycleContext, results: list[CycleResult]) -> None:
    last = results[-1]
    if last.kind == "finetune" and last.retrain_triggered:
        request_retrain(ctx, parse_instant(last.window_end), last.retrain_trigger or "drift")
