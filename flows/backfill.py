"""Flow `backfill`: replay a range of windows in order in one warm process, with periodic retrains.

Each window goes through the same `finetune_window` cycle as the hourly flow, but its steps are
plain calls (no Prefect task run per step) and the model, the Kafka consumer and recent rows stay
in memory: replaying weeks takes minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import flow

from flows.runtime import cycle_context, log_accuracy_timeline
from tasks.cycle import CycleContext, CycleResult, finetune_window, retrain_until
from tasks.registry import training_lock
from tasks.settings import Settings
from tasks.stream import read_window, window_reader
from tasks.training_data import RecentHistory, history_windows
from tasks.windowing import Window, parse_instant, windows_between


def run_backfill(
    ctx: CycleContext,
    start: datetime,
    end: datetime,
    *,
    retrain_every_hours: int | None = 24,
    retrain_at_hour: int = 0,
    trigger: str = "backfill",
    on_window: Callable[[CycleResult], None] | None = None,
) -> list[CycleResult]:
    """Fine-tune every window in [start, end) in order; retrain at `retrain_at_hour` each period."""
    settings = ctx.settings
    windows = windows_between(start, end, ctx.schema.window)
    keep = history_windows(settings, ctx.schema.window) + 1
    ctx.history = ctx.history or RecentHistory.empty(keep)
    results: list[CycleResult] = []
    with window_reader(settings) as reader, training_lock(settings, ctx.model_name, timeout_s=600):
        ctx.reader = reader
        if windows:
            _prime_history(ctx, windows[0].start, keep - 1)
        for index, window in enumerate(windows):
            if index and retrain_due(window, retrain_every_hours, retrain_at_hour):
                results.append(retrain_until(ctx, window.start, trigger="schedule:backfill"))
                if on_window:
                    on_window(results[-1])
            results.append(finetune_window(ctx, window, trigger=trigger))
            if on_window:
                on_window(results[-1])
            if results[-1].retrain_triggered:
                # In-process during a replay; the flow asks the retrain deployment instead.
                # Only the retrain carries the drift trigger: the next fine-tunes keep theirs.
                drift_trigger = results[-1].retrain_trigger or "drift"
                results.append(retrain_until(ctx, window.end, trigger=drift_trigger))
                if on_window:
                    on_window(results[-1])
    ctx.reader = None
    return results


def _prime_history(ctx: CycleContext, start: datetime, windows: int) -> None:
    """Read the replay and holdout history before the first window once, not per window."""
    assert ctx.history is not None
    span = Window(start - windows * ctx.schema.window, start)
    read = read_window(ctx.settings, ctx.schema, span, send_dead_letters=False, reader=ctx.reader)
    ctx.history.prime(span, read.frame, ctx.schema.window)


def retrain_due(window: Window, every_hours: int | None, at_hour: int) -> bool:
    """Whether a periodic retrain is due before `window`: it is the first window of a period.

    Periods of `every_hours` hours of stream time start `at_hour` past midnight UTC; with
    15-minute windows only the window a period starts in is due, not every window of its hour.
    """
    if not every_hours:
        return False
    period_ms = every_hours * 3_600_000
    offset = (window.start_ms - at_hour * 3_600_000) % period_ms
    return offset < window.end_ms - window.start_ms


@flow(name="backfill", flow_run_name="replay {start} .. {end}")
def backfill(
    start: str,
    end: str,
    retrain_every_hours: int | None = 24,
    show_progress: bool = False,
    drift_at: str | None = None,
) -> list[dict[str, Any]]:
    """Replay [start, end) hour by hour with nightly retrains (catching up, or the demo).

    The run's page shows the progress while it runs, then the per-day table, the accuracy
    timeline, the drift alarm and recovery line, and links to the MLflow runs.

    Args:
        start: First window to replay (ISO 8601).
        end: End of the range, exclusive (ISO 8601).
        retrain_every_hours: Full retrain every so many hours of stream time; empty: none.
        show_progress: Also draw a progress bar in the terminal (the demo runs it in-process).
        drift_at: When the stream is known to change (a simulated drift, ISO 8601): the
            recovery line counts the alarm's delay and the recovery from it.
    """
    from flows.artifacts import ReplayProgress, publish_replay

    settings: Settings | None = None
    ctx = cycle_context(as_tasks=False, settings=settings)
    first, last = parse_instant(start), parse_instant(end)
    total = len(windows_between(first, last, ctx.schema.window))
    with ReplayProgress(ctx.model_name, total, terminal=show_progress) as progress:
        results = run_backfill(
            ctx, first, last, retrain_every_hours=retrain_every_hours, on_window=progress
        )
    timeline = log_accuracy_timeline(ctx, first, last)
    publish_replay(ctx, first, last, timeline, change=drift_at)
    return [r.to_dict() for r in results]
