"""What stands between a window and the model: validation, quarantine, drift checks.

Glue between the pure checks (`tasks.validation`, `tasks.drift`) and the edges (the dead-letter
topic in `tasks.stream`, the reference profile in `tasks.versions`, the detector state in
`tasks.model_state`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks import model_state, versions
from tasks.detector import AccuracyAlarm
from tasks.drift import DriftReport, ReferenceProfile, check_data_drift
from tasks.drift_policy import DriftEpisodes
from tasks.schema import RowCountSpec
from tasks.stream import SetAside, dead_letter
from tasks.validation import REASONS, ValidationOutcome, validate_window

if TYPE_CHECKING:
    from tasks.cycle import CycleContext

REFERENCE_ARTIFACT = "reference_profile.json"
# The planner's state after the last window: the alarm and the data-drift episodes already
# acted on (a new value retrains once, not every window), one tag so one write.
DETECTOR_TAG = "concept_drift.state"
# The last window fed to the detector and the state before it, so that the rerun of a crashed
# hour replaces that window's update instead of counting it twice.
DETECTOR_WINDOW_TAG = "concept_drift.last_window"
# Where stores written before the state held the episodes keep them (read, never written).
EPISODES_TAG = "drift.episodes"


def validate_rows(ctx: CycleContext, frame: pd.DataFrame, windows: int = 1) -> ValidationOutcome:
    """Validate a window (or a range of `windows` windows, whose row bounds scale with it)."""
    schema = ctx.schema
    if windows > 1 and schema.row_count is not None:
        scaled = RowCountSpec(
            min=schema.row_count.min,
            max=None if schema.row_count.max is None else schema.row_count.max * windows,
        )
        schema = schema.model_copy(update={"row_count": scaled})
    return validate_window(schema, frame, max_failing_share=ctx.settings.max_failing_share)


def quarantine(ctx: CycleContext, outcome: ValidationOutcome, frame: pd.DataFrame) -> int:
    """Send quarantined (or, for a rejected window, all) rows to the dead-letter topic."""
    if outcome.rejected:
        reason = "window rejected: " + "; ".join(outcome.reasons)
        rows = frame.assign(**{REASONS: [[reason]] * len(frame)})
        kind = "rejected"
    else:
        rows, kind = outcome.quarantined, "quarantined"
    if rows.empty or not ctx.send_dead_letters:
        return 0
    schema = ctx.schema
    items = []
    for row in rows.to_dict("records"):
        value = {c: _plain(row[c]) for c in schema.columns if c in row}
        items.append(
            SetAside(
                kind=kind,
                reason="; ".join(row[REASONS]) or kind,
                partition=int(row["_partition"]),
                offset=int(row["_offset"]),
                timestamp_ms=int(row["_event_ms"]),
                key=str(row[schema.key]).encode() if schema.key else None,
                value=json.dumps(value, sort_keys=True).encode(),
            )
        )
    return dead_letter(ctx.settings, schema, items)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def reference_for(ctx: CycleContext, version: str) -> ReferenceProfile | None:
    """The champion's training-data profile, stored with its run; loaded once per version."""
    key = f"reference:{version}"
    if key not in ctx.cache:
        text = versions.read_version_artifact(
            ctx.settings, ctx.model_name, version, REFERENCE_ARTIFACT
        )
        ctx.cache[key] = ReferenceProfile.from_json(text) if text else None
    profile: ReferenceProfile | None = ctx.cache[key]
    return profile


def data_drift(
    ctx: CycleContext, version: str, window_rows: pd.DataFrame, recent: pd.DataFrame
) -> DriftReport | None:
    """Compare the window and the recent period with the champion's training data."""
    reference = reference_for(ctx, version)
    if reference is None or window_rows.empty:
        return None
    s = ctx.settings
    return check_data_drift(
        ctx.schema,
        reference,
        window_rows,
        recent=recent if not recent.empty else None,
        psi_mild=s.psi_mild,
        psi_severe=s.psi_severe,
        p_value=s.drift_p_value,
        min_rows_for_test=s.drift_min_rows,
    )


# --- the planner's state: the accuracy alarm and the drift episodes ---------------------------


def champion_holdout_accuracy(ctx: CycleContext, version: str) -> float:
    """What the serving model is expected to score: its own accuracy on its longest holdout."""
    lineage = versions.version_lineage(ctx.settings, ctx.model_name, version)
    metrics = lineage.holdout_metrics if lineage is not None else {}
    for name in ("current.accuracy", "long.accuracy", "recent.accuracy"):
        if name in metrics:
            return float(metrics[name])
    return 1.0 - ctx.settings.absolute_floor / 2  # no holdout recorded: a cautious guess


def planning_state(
    ctx: CycleContext, champion: str, window: str
) -> tuple[AccuracyAlarm, DriftEpisodes]:
    """The alarm and drift-episode state this window starts from.

    Resumed from the registry (kept warm in a backfill); for the rerun of the window last
    seen, the state from before it, so a crashed hour is not counted twice; for a champion
    with no state yet, an alarm started from that champion's holdout accuracy, never blank.
    """
    if "alarm_window" not in ctx.cache:
        text = model_state.get_model_tag(ctx.settings, ctx.model_name, DETECTOR_WINDOW_TAG)
        ctx.cache["alarm_window"] = _loads(text)
    last: dict[str, str] = ctx.cache["alarm_window"]
    if last.get("window") == window and "alarm" in last:
        return AccuracyAlarm.from_json(last["alarm"]), DriftEpisodes.from_json(last["episodes"])
    if ctx.cache.get("alarm") is None or "episodes" not in ctx.cache:
        stored_alarm, stored_episodes = _stored_state(ctx)
        if ctx.cache.get("alarm") is None:
            ctx.cache["alarm"] = stored_alarm or _new_alarm(ctx, champion)
        if "episodes" not in ctx.cache:
            ctx.cache["episodes"] = stored_episodes or DriftEpisodes()
    return ctx.cache["alarm"], ctx.cache["episodes"]


def store_planning_state(
    ctx: CycleContext,
    window: str,
    before: tuple[AccuracyAlarm, DriftEpisodes],
    after: tuple[AccuracyAlarm, DriftEpisodes],
) -> None:
    """Keep the state before this window (for a rerun) and after it; `save_planning_state`
    writes both in the commit step, so a window that dies before it leaves the store as it was."""
    last = {"window": window, "alarm": before[0].to_json(), "episodes": before[1].to_json()}
    ctx.cache["alarm_window"] = last
    ctx.cache["alarm"], ctx.cache["episodes"] = after
    ctx.cache["planning_unsaved"] = True


def save_planning_state(ctx: CycleContext) -> None:
    """Write the state kept by `store_planning_state`, if any: two registered-model tags."""
    if not ctx.cache.get("planning_unsaved"):
        return
    last = json.dumps(ctx.cache["alarm_window"])
    model_state.set_model_tag(ctx.settings, ctx.model_name, DETECTOR_WINDOW_TAG, last)
    _store(ctx, ctx.cache["alarm"], ctx.cache["episodes"])
    del ctx.cache["planning_unsaved"]  # only once written: a retried commit writes it again


def alarm_for_new_champion(
    ctx: CycleContext, holdout_accuracy: float, *, fine_tuned: bool, reused: bool = False
) -> None:
    """A promoted champion is judged against its own holdout accuracy from the next window on;
    a new model (retrain, reuse) starts the cumulative test from its own error, not blank."""
    if "alarm" not in ctx.cache or "episodes" not in ctx.cache:
        stored_alarm, stored_episodes = _stored_state(ctx)
        ctx.cache.setdefault("alarm", stored_alarm)
        ctx.cache.setdefault("episodes", stored_episodes or DriftEpisodes())
    current: AccuracyAlarm | None = ctx.cache["alarm"]
    if current is None:
        alarm = _fresh_alarm(ctx, holdout_accuracy)
    else:
        alarm = current.with_champion(holdout_accuracy, fine_tuned=fine_tuned, reused=reused)
    _store(ctx, alarm, ctx.cache["episodes"])


def current_alarm(ctx: CycleContext) -> AccuracyAlarm | None:
    """The alarm state this run holds, else the stored one (one registry read)."""
    cached: AccuracyAlarm | None = ctx.cache.get("alarm")
    return cached or _stored_state(ctx)[0]


def change_start(ctx: CycleContext) -> int | None:
    """Where the last alarmed change began (epoch ms), for a retrain the alarm asked for."""
    alarm = current_alarm(ctx)
    return alarm.change_start_ms if alarm is not None else None


def serves_returned_concept(ctx: CycleContext) -> bool:
    """Was the serving champion's line brought back from the registry for the current change?"""
    alarm = current_alarm(ctx)
    return alarm is not None and alarm.serves_returned_concept


def _store(ctx: CycleContext, alarm: AccuracyAlarm, episodes: DriftEpisodes) -> None:
    ctx.cache["alarm"], ctx.cache["episodes"] = alarm, episodes
    state = {"alarm": json.loads(alarm.to_json()), "episodes": json.loads(episodes.to_json())}
    model_state.set_model_tag(ctx.settings, ctx.model_name, DETECTOR_TAG, json.dumps(state))


def _stored_state(ctx: CycleContext) -> tuple[AccuracyAlarm | None, DriftEpisodes | None]:
    """The stored alarm and episodes; a store of an earlier release kept them in two tags."""
    text = model_state.get_model_tag(ctx.settings, ctx.model_name, DETECTOR_TAG)
    state = _loads(text)
    if "alarm" not in state:  # an alarm alone, or nothing
        episodes = model_state.get_model_tag(ctx.settings, ctx.model_name, EPISODES_TAG)
        return _alarm(text), DriftEpisodes.from_json(episodes) if episodes else None
    return _alarm(json.dumps(state["alarm"])), DriftEpisodes.from_json(
        json.dumps(state["episodes"])
    )


def _alarm(text: str | None) -> AccuracyAlarm | None:
    if not text:
        return None
    try:
        return AccuracyAlarm.from_json(text)
    except (KeyError, TypeError, ValueError):  # a Page-Hinkley state of an earlier release
        return None


def _new_alarm(ctx: CycleContext, champion: str) -> AccuracyAlarm:
    return _fresh_alarm(ctx, champion_holdout_accuracy(ctx, champion))


def _fresh_alarm(ctx: CycleContext, holdout_accuracy: float) -> AccuracyAlarm:
    from tasks.plan import new_alarm

    return new_alarm(ctx.settings, min(max(holdout_accuracy, 0.0), 1.0))


def _loads(text: str | None) -> dict[str, str]:
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
