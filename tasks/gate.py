"""The promotion gate and the rollback rule: pure decisions over evaluation results.

The flow evaluates challenger and champion on the same holdouts (tasks/evaluation.py) and
checks drift (tasks/drift.py); these functions turn those numbers into a decision with
reasons a person can read. No I/O, no models: table-tested in tests/unit/test_gate.py.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from tasks.evaluation import DiffInterval, Metrics, metric_value
from tasks.settings import Settings

Direction = Literal["higher", "lower"]
DriftLevel = Literal["none", "mild", "severe"]

# Declared, not guessed from the name: which way is better for each metric the gate may use.
METRIC_DIRECTION: dict[str, Direction] = {
    "accuracy": "higher",
    "f1": "higher",
    "auc": "higher",
    "precision": "higher",
    "recall": "higher",
    "log_loss": "lower",
}


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate, kept apart from the evaluation that produces the numbers."""

    metric: str
    direction: Direction
    absolute_floor: float
    tolerance: float
    confidence: float
    block_on_severe_drift: bool = True
    block_on_concept_alarm: bool = True
    recent_holdout: str = "recent"  # the holdout judged strictly under drift
    waive_floor_for_broken_champion: bool = True  # see decide_promotion

    @classmethod
    def from_settings(cls, settings: Settings) -> GatePolicy:
        return cls(
            metric=settings.primary_metric,
            direction=METRIC_DIRECTION[settings.primary_metric],
            absolute_floor=settings.absolute_floor,
            tolerance=settings.tolerance,
            confidence=settings.confidence,
        )

    def gain(self, diff: float) -> float:
        """A difference (challenger - champion) turned so that positive always means better."""
        return diff if self.direction == "higher" else -diff

    def clears_floor(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.direction == "higher":
            return value >= self.absolute_floor
        return value <= self.absolute_floor


@dataclass(frozen=True)
class HoldoutComparison:
    """Challenger (and champion, if any) scored on one holdout, e.g. "recent" or "long"."""

    name: str
    rows: int
    challenger: Metrics
    champion: Metrics | None = None
    diff: DiffInterval | None = None  # of the primary metric: challenger - champion, with CI


@dataclass(frozen=True)
class DriftSignal:
    """What the drift checks found in the window (filled in by tasks/drift.py)."""

    data_drift: DriftLevel = "none"
    concept_drift_alarm: bool = False
    new_categories: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    retrain: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackDecision:
    rollback: bool
    reason: str


def _pct(confidence: float) -> str:
    return f"{confidence * 100:.0f}%"


def _compare(
    c: HoldoutComparison, champion: Metrics, policy: GatePolicy
) -> tuple[bool, str, float, str]:
    """(blocks, reason, point gain, rule) for one holdout with a champion.

    The paired interval decides first: a whole interval above the champion is better, a whole
    interval beyond -tolerance is worse. When the interval straddles, the point estimate
    decides against the tolerance. Requiring the interval's LOWER bound to clear -tolerance
    instead would block nearly every challenger on holdouts of a few hundred rows, where
    intervals are several points wide, and the pipeline would never adapt.
    """
    name, tol = policy.metric, policy.tolerance
    ours, theirs = metric_value(c.challenger, name), metric_value(champion, name)
    diff = c.diff.diff if c.diff is not None else ours - theirs
    gain = policy.gain(diff)
    text = f"{name} {ours:.2f} vs champion {theirs:.2f} on {c.name} holdout ({c.rows} rows): "
    text += f"diff {diff:+.2f}"
    worst_gain = best_gain = math.nan
    if c.diff is not None and not math.isnan(c.diff.low):
        lo, hi = c.diff.low, c.diff.high
        text += f", {_pct(c.diff.confidence)} CI [{lo:+.2f}, {hi:+.2f}]"
        best_gain = max(policy.gain(lo), policy.gain(hi))  # the interval's most favourable end
        worst_gain = min(policy.gain(lo), policy.gain(hi))
    if math.isnan(diff):
        return True, text + f": {name} undefined, cannot compare", gain, "undefined"
    if best_gain < -tol:
        reason = text + f": the whole interval is worse than tolerance {tol:.2f}"
        return True, reason, gain, "interval-worse"
    if worst_gain > 0:
        return False, text + ": the whole interval lies above the champion", gain, "interval-better"
    if gain < -tol:
        return True, text + f": worse than tolerance {tol:.2f} allows", gain, "point-worse"
    return False, text + f" within tolerance {tol:.2f}", gain, "point-within-tolerance"


def _drift_reasons(drift: DriftSignal | None, policy: GatePolicy) -> tuple[bool, bool, list[str]]:
    """(retrain, strict, reasons): severe drift or a concept alarm always asks for a retrain;
    `strict` (no worse fine-tuned challenger may replace) follows the policy's block flags.
    Mild drift is noted but changes nothing."""
    if drift is None:
        return False, False, []
    reasons: list[str] = []
    severe, alarm = drift.data_drift == "severe", drift.concept_drift_alarm
    if severe:
        reasons.append("severe data drift in the window: a full retrain is due")
    elif drift.data_drift == "mild":
        reasons.append("mild data drift in the window: noted, no effect on the decision")
    if alarm:
        reasons.append("concept drift alarm on live accuracy: a full retrain is due")
    for feature, values in sorted(drift.new_categories.items()):
        if values:
            shown = ", ".join(str(v) for v in values[:5])
            more = f" and {len(values) - 5} more" if len(values) > 5 else ""
            reasons.append(f"new {feature} values the model has not seen: {shown}{more}")
    strict = (severe and policy.block_on_severe_drift) or (alarm and policy.block_on_concept_alarm)
    return severe or alarm, strict, reasons


def decide_promotion(
    comparisons: list[HoldoutComparison],
    drift: DriftSignal | None,
    policy: GatePolicy,
    *,
    fine_tuned: bool = True,
    judge_on: Collection[str] | None = None,
) -> GateDecision:
    """Promote the challenger only if it clears the floor and is not worse than the champion.

    - No comparisons: never promote (nothing was evaluated).
    - `judge_on` (the planner's choice after an alarm, e.g. the post-change holdout): only
      these holdouts count; the others describe the past concept.
    - The floor is checked on the longest holdout (most rows, least noise). It protects a
      first model and a healthy champion: when the champion is below the floor too and the
      challenger's whole interval lies above it there, the floor is waived.
    - With a champion, every holdout must pass `_compare` (interval first, then the point
      estimate); `details["rules"]` says which rule decided on each holdout.
    - Severe data drift or a concept alarm sets `retrain`; and a fine-tuned challenger with
      any loss (point estimate below zero) on the recent holdout is then not promoted: the
      warm-started model is suspect under drift, so it must at least hold its ground.
    """
    name = policy.metric
    retrain, strict, notes = _drift_reasons(drift, policy)
    details: dict[str, Any] = {"metric": name, "direction": policy.direction, "strict": strict}
    if judge_on is not None:
        comparisons = [c for c in comparisons if c.name in judge_on]
        notes.insert(0, f"judged on the current concept only: {', '.join(sorted(judge_on))}")
        details["judged_on"] = sorted(judge_on)
    if not comparisons:
        nothing = "no holdout comparison ran: nothing to promote on"
        return GateDecision(False, (nothing, *notes), retrain, details)
    longest = max(comparisons, key=lambda c: c.rows)
    value = metric_value(longest.challenger, name)
    floor = f"{name} {value:.2f} on {longest.name} holdout ({longest.rows} rows)"
    details.update(floor_holdout=longest.name, challenger=value, floor=policy.absolute_floor)
    if policy.clears_floor(value):
        reasons = [f"{floor} clears the floor {policy.absolute_floor:.2f}"]
    else:
        waiver = _floor_waiver(longest, policy)
        if waiver is None:
            bound = "at least" if policy.direction == "higher" else "at most"
            reason = f"{floor} is not {bound} the floor {policy.absolute_floor:.2f}"
            return GateDecision(False, (reason, *notes), retrain, details)
        reasons = [f"{floor} is below the floor {policy.absolute_floor:.2f}, {waiver}"]
        details["rules"] = {"floor": "waived-broken-champion"}
    with_champion = [(c, c.champion) for c in comparisons if c.champion is not None]
    if not with_champion:
        reasons[0] += "; no champion yet"
        return GateDecision(True, (*reasons, *notes), retrain, details)
    promote = _judge_each(with_champion, policy, strict and fine_tuned, reasons, details)
    return GateDecision(promote, (*reasons, *notes), retrain, details)


def _floor_waiver(c: HoldoutComparison, policy: GatePolicy) -> str | None:
    """Why the floor does not apply (a broken champion clearly beaten), or None if it does."""
    if c.champion is None or not policy.waive_floor_for_broken_champion:
        return None
    theirs = metric_value(c.champion, policy.metric)
    if policy.clears_floor(theirs) or math.isnan(theirs):
        return None
    blocks, _, _, rule = _compare(c, c.champion, policy)
    if blocks or rule != "interval-better":
        return None
    return (
        f"but the champion is below it too ({theirs:.2f}) and the challenger's whole interval "
        "lies above the champion: the floor protects a healthy champion, not a broken one"
    )


def _judge_each(
    with_champion: list[tuple[HoldoutComparison, Metrics]],
    policy: GatePolicy,
    strict: bool,
    reasons: list[str],
    details: dict[str, Any],
) -> bool:
    """Compare on every holdout; under `strict`, a fine-tune that loses ground is refused."""
    # Without a holdout of the recent name, every holdout is judged strictly under drift.
    has_recent = any(c.name == policy.recent_holdout for c, _ in with_champion)
    rules: dict[str, str] = details.setdefault("rules", {})
    promote = True
    for c, champion in with_champion:
        blocks, reason, gain, rule = _compare(c, champion, policy)
        details[f"gain_{c.name}"] = gain
        rules[c.name] = rule
        reasons.append(reason)
        promote = promote and not blocks
        judged_strictly = strict and (c.name == policy.recent_holdout or not has_recent)
        if judged_strictly and gain < 0 and not blocks:
            promote = False
            rules[c.name] = "drift-no-loss"
            reasons.append(
                f"under drift, a fine-tuned challenger worse on {c.name} is not promoted"
            )
    return promote


def decide_rollback(
    live_new: list[float], live_previous: float | None, windows: int, margin: float
) -> RollbackDecision:
    """Roll back when the new champion's mean live accuracy over its first `windows` windows is
    below the previous champion's by more than `margin`; undecided (no rollback) before then.
    The live series holds one value per window, so the count is of windows, whatever their
    length (the caller turns `rollback_hours` into windows).
    """
    if live_previous is None:
        return RollbackDecision(False, "no previous champion to roll back to")
    if len(live_new) < windows:
        return RollbackDecision(
            False,
            f"{len(live_new)} of {windows} windows of live accuracy so far: too early to judge",
        )
    observed = [v for v in live_new[:windows] if not math.isnan(v)]
    if not observed:
        return RollbackDecision(False, f"no live accuracy in the first {windows} windows")
    mean = sum(observed) / len(observed)
    text = (
        f"live accuracy {mean:.2f} over the first {windows} windows vs previous champion "
        f"{live_previous:.2f} (margin {margin:.2f})"
    )
    if mean < live_previous - margin:
        return RollbackDecision(True, text + ": worse beyond the margin, rolling back")
    return RollbackDecision(False, text + ": within the margin, keeping the new champion")
