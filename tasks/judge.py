"""What a cycle decides between its plan and its commit: fit, compare, gate, choose a reuse.

`tasks/cycle.py` runs these steps over Kafka and the MLflow registry; section 5 of the
benchmark (`bench/replica.py`) runs them over an in-memory stream and registry. The two
executors read, plan and write each in their own way, but the fit, the holdout comparison,
the gate, the choice of a past champion and the expected accuracy of whichever model serves
next are computed here, once and in one order, so the benchmark measures what ships.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks import faults
from tasks.drift_policy import RetrainRequest
from tasks.evaluation import binary_metrics, metric_value, paired_bootstrap
from tasks.gate import DriftSignal, GateDecision, GatePolicy, HoldoutComparison, decide_promotion
from tasks.model import build_model, fine_tune_copy, predict_proba, to_targets, train
from tasks.plan import RetrainPlan, WindowPlan, retrain_after_reuse
from tasks.reuse import Model, ReuseDecision, choose_reuse, score_models
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.windowing import Window

if TYPE_CHECKING:
    from tasks.cycle import CycleContext

# Past champions to score for a reuse, by version; called only when the plan considers one.
PastModels = Callable[[], Mapping[str, Model]]
# A retrain's fit from scratch: (rows, the range's values for vocabularies, weights) -> model.
FreshFit = Callable[[pd.DataFrame, pd.DataFrame, Any], Any]


@dataclass(frozen=True)
class Judgement:
    """A challenger judged: its holdout comparisons, the gate's decision (never a promotion
    when a past champion is brought back instead), the reuse considered, the retrain the
    drift policy still asks for, and what the next serving model is expected to score."""

    model: Any
    comparisons: list[HoldoutComparison]
    decision: GateDecision
    reuse: ReuseDecision | None = None  # None: no reuse considered
    retrain: RetrainRequest | None = None  # a retrain is never asked for by a retrain
    expected_accuracy: float | None = None  # None: the champion keeps serving

    @property
    def reused(self) -> str | None:
        """The past version brought back, if any."""
        return self.reuse.version if self.reuse is not None else None


def window_seed(settings: Settings, window: Window) -> int:
    """One seed per window: a rerun of the same window fits and bootstraps the same way."""
    return settings.seed + window.start_ms // (window.end_ms - window.start_ms)


def scorer(schema: StreamSchema, model: Any) -> Model:
    return lambda frame: predict_proba(model, schema, frame)


def fine_tune(
    ctx: CycleContext, champion: Any, rows: pd.DataFrame, seed: int, weights: Any = None
) -> Any:
    """A copy of the champion trained on the plan's rows; the champion stays untouched."""
    challenger = fine_tune_copy(champion)
    s = ctx.settings
    train(
        challenger,
        ctx.schema,
        rows,
        epochs=s.finetune_epochs,
        learning_rate=s.finetune_learning_rate,
        batch_size=s.batch_size,
        seed=seed,
        sample_weight=weights,
    )
    # New weights in memory only, nothing saved: what a crash in the middle of fit leaves.
    faults.checkpoint(s, "during_fit")
    return challenger


def fit_fresh(
    ctx: CycleContext, rows: pd.DataFrame, seen: pd.DataFrame, weights: Any = None
) -> Any:
    """Train from scratch on `rows`; vocabularies cover every value `seen` in the range.

    Categories that first appear in the holdout hours (new stores) still get their own
    entries, so the next fine-tunes can learn them instead of folding them into the OOV bucket.
    """
    s = ctx.settings
    model = build_model(ctx.schema, s, seen)
    train(
        model,
        ctx.schema,
        rows,
        epochs=s.retrain_epochs,
        learning_rate=s.retrain_learning_rate,
        batch_size=s.batch_size,
        seed=s.seed,
        sample_weight=weights,
    )
    return model


def compare_on_holdouts(
    ctx: CycleContext,
    challenger: Any,
    champion: Any,
    holdouts: dict[str, pd.DataFrame],
    seed: int,
) -> list[HoldoutComparison]:
    """Score both models on the same rows of each holdout, with a paired bootstrap."""
    metric = ctx.settings.primary_metric
    out = []
    for name, rows in holdouts.items():
        if rows.empty:
            continue
        truth = to_targets(ctx.schema, rows)
        p_new = predict_proba(challenger, ctx.schema, rows)
        new = binary_metrics(truth, p_new)
        old = diff = None
        if champion is not None:
            p_old = predict_proba(champion, ctx.schema, rows)
            old = binary_metrics(truth, p_old)
            diff = paired_bootstrap(
                truth,
                p_new,
                p_old,
                metric,
                samples=ctx.settings.bootstrap_samples,
                confidence=ctx.settings.confidence,
                seed=seed,
            )
        out.append(
            HoldoutComparison(name=name, rows=len(rows), challenger=new, champion=old, diff=diff)
        )
    return out


def holdout_accuracy(
    comparisons: list[HoldoutComparison], judge_on: tuple[str, ...] | None
) -> float:
    """The promoted model's accuracy on the longest holdout it was judged on (0.5: none)."""
    judged = [c for c in comparisons if judge_on is None or c.name in judge_on] or comparisons
    if not judged:
        return 0.5
    longest = max(judged, key=lambda c: c.rows)
    return float(metric_value(longest.challenger, "accuracy"))


def judge_window(
    ctx: CycleContext,
    window: Window,
    plan: WindowPlan,
    champion: Any,
    signal: DriftSignal | None,
    past: PastModels,
) -> Judgement:
    """Fine-tune the champion on the plan's rows, compare, gate, and on an alarm weigh the
    past champions against both; then what the drift policy still asks for."""
    s = ctx.settings
    seed = window_seed(s, window)
    challenger = ctx.stages.run(
        "fine-tune", fine_tune, ctx, champion, plan.train, seed, plan.weights
    )
    comparisons = ctx.stages.run(
        "holdout eval", compare_on_holdouts, ctx, challenger, champion, plan.holdouts, seed
    )
    decision = ctx.stages.run(
        "gate",
        decide_promotion,
        comparisons,
        signal,
        GatePolicy.from_settings(s),
        judge_on=plan.judge_on,
    )
    reuse, scores = (
        _weigh_past(ctx, plan, champion, challenger, past) if plan.consider_reuse else (None, {})
    )
    expected = holdout_accuracy(comparisons, plan.judge_on) if decision.promote else None
    if reuse is not None:
        # A fine-tune the gate promotes still serves when no past champion is clearly better.
        brought_back = reuse.version is not None
        decision = replace(
            decision,
            promote=decision.promote and not brought_back,
            reasons=(*decision.reasons, *reuse.reasons),
        )
        if brought_back:
            assert reuse.version is not None
            expected = scores[reuse.version]
    retrain = retrain_after_reuse(plan.retrain, reuse.version if reuse is not None else None)
    return Judgement(challenger, comparisons, decision, reuse, retrain, expected)


def _weigh_past(
    ctx: CycleContext, plan: WindowPlan, champion: Any, challenger: Any, past: PastModels
) -> tuple[ReuseDecision | None, dict[str, float]]:
    """Would a past champion serve the fall's rows clearly better than both the champion and
    the fresh fine-tune? (None: no rows or no candidate to weigh.)"""
    rows = plan.reuse_rows
    if rows.empty:
        return None, {}
    candidates = past()
    if not candidates:
        return None, {}
    schema = ctx.schema
    scores = score_models(schema, candidates, rows)
    ours = score_models(
        schema, {"champion": scorer(schema, champion), "new": scorer(schema, challenger)}, rows
    )
    chosen = choose_reuse(
        scores,
        ours["champion"],
        ours["new"],
        rows=len(rows),
        margin=ctx.settings.reuse_margin,
        floor=plan.reuse_floor,
    )
    return chosen, scores


def judge_retrain(ctx: CycleContext, plan: RetrainPlan, champion: Any, fit: FreshFit) -> Judgement:
    """Fit from scratch on the plan's rows, compare with the champion, gate."""
    s = ctx.settings
    model = ctx.stages.run("fit", fit, plan.train, plan.vocabulary, plan.weights)
    comparisons = ctx.stages.run(
        "holdout eval", compare_on_holdouts, ctx, model, champion, plan.holdouts, s.seed
    )
    decision = ctx.stages.run(
        "gate",
        decide_promotion,
        comparisons,
        None,
        GatePolicy.from_settings(s),
        fine_tuned=False,
        judge_on=plan.judge_on,
    )
    expected = holdout_accuracy(comparisons, plan.judge_on) if decision.promote else None
    return Judgement(model, comparisons, decision, expected_accuracy=expected)
