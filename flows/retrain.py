"""Flow `retrain`: a full batch retrain on the recent range (deployment `nightly-retrain`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow

from flows.runtime import (
    cycle_context,
    log_accuracy_timeline,
    publish_cycle,
    stream_now,
    training_slot,
)
from tasks.cycle import retrain_until
from tasks.registry import training_lock
from tasks.windowing import parse_instant


@flow(name="retrain")
def retrain(until: str | None = None, trigger: str = "schedule") -> dict[str, Any]:
    """Train from scratch on the days up to `until`; evaluate, gate, register.

    Args:
        until: End of the training range (ISO 8601). Empty: now, or the stream's newest
            record if that is older (a replayed or simulated stream lives in its own time).
        trigger: Why the run happens (schedule, drift alarm, manual); kept in the lineage.
    """
    ctx = cycle_context(as_tasks=True)
    end = parse_instant(until) if until else stream_now(ctx, datetime.now(UTC))
    with (
        training_slot(ctx.settings, ctx.model_name),
        training_lock(ctx.settings, ctx.model_name, timeout_s=1800),
    ):
        result = retrain_until(ctx, end, trigger=trigger)
    publish_cycle(ctx, result)
    if result.run_id:
        since = end - timedelta(days=ctx.settings.retrain_days)
        log_accuracy_timeline(ctx, since, end, run_id=result.run_id)
    return result.to_dict()
