"""What stands between a window and the model: validation, quarantine, drift checks.

Glue between the pure checks (`tasks.validation`, `tasks.drift`) and the edges (the dead-letter
topic in `tasks.stream`, the reference profile and detector state in `tasks.registry`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks import registry
from tasks.drift import ConceptDriftDetector, DriftReport, ReferenceProfile, check_data_drift
from tasks.schema import RowCountSpec
from tasks.stream import SetAside, dead_letter
from tasks.validation import REASONS, ValidationOutcome, validate_window

if TYPE_CHECKING:
    from tasks.cycle import CycleContext

REFERENCE_ARTIFACT = "reference_profile.json"
DETECTOR_TAG = "concept_drift.state"
# The last window fed to the detector and the state before it, so that the rerun of a crashed
# hour replaces that window's update instead of counting it twice.
DETECTOR_WINDOW_TAG = "concept_drift.last_window"


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
        text = registry.read_version_artifact(
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


def detector(ctx: CycleContext) -> ConceptDriftDetector:
    """The stream's concept-drift detector, resumed from the registry (kept warm in a backfill)."""
    if "detector" not in ctx.cache:
        text = registry.get_model_tag(ctx.settings, ctx.model_name, DETECTOR_TAG)
        s = ctx.settings
        ctx.cache["detector"] = (
            ConceptDriftDetector.from_json(text)
            if text
            else ConceptDriftDetector(delta=s.concept_delta, threshold=s.concept_threshold)
        )
    found: ConceptDriftDetector = ctx.cache["detector"]
    return found


def update_detector(ctx: CycleContext, accuracy: float, rows: int, window: str) -> bool:
    """Feed the serving champion's error rate on this window; True when the alarm fires.

    Once per window: the state before the window is written first, so a run killed after the
    update, then rerun, starts again from that state and ends where one run would have.
    """
    found = detector(ctx)
    if "detector_window" not in ctx.cache:
        text = registry.get_model_tag(ctx.settings, ctx.model_name, DETECTOR_WINDOW_TAG)
        ctx.cache["detector_window"] = json.loads(text) if text else {}
    last: dict[str, str] = ctx.cache["detector_window"]
    if last.get("window") == window:
        found = ctx.cache["detector"] = ConceptDriftDetector.from_json(last["before"])
    last = {"window": window, "before": found.to_json()}
    registry.set_model_tag(ctx.settings, ctx.model_name, DETECTOR_WINDOW_TAG, json.dumps(last))
    ctx.cache["detector_window"] = last
    alarm = found.update(1.0 - accuracy, weight=rows)
    registry.set_model_tag(ctx.settings, ctx.model_name, DETECTOR_TAG, found.to_json())
    return alarm


def reset_detector(ctx: CycleContext) -> None:
    """A new model from scratch starts a new error history."""
    found = detector(ctx)
    found.reset()
    registry.set_model_tag(ctx.settings, ctx.model_name, DETECTOR_TAG, found.to_json())
