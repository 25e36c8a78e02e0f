"""One training cycle, composed from the steps: the hourly fine-tune and the full retrain.

Plain functions over a `CycleContext`, so a test or a backfill runs them without Prefect;
the flows in `flows/` run the same functions with each step as a Prefect task.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from tasks import aliases, faults, guards, model_state, recovery, run_logging, versions
from tasks.drift import DriftReport, reference_for_range
from tasks.evaluation import binary_metrics, metric_value
from tasks.gate import (
    DriftSignal,
    GateDecision,
    HoldoutComparison,
    decide_rollback,
)
from tasks.judge import Judgement, fit_fresh, judge_retrain, judge_window, scorer
from tasks.lineage import Lineage
from tasks.model import predict_proba, to_targets
from tasks.plan import (
    WindowPlan,
    plan_retrain_on_new_concept,
    plan_window,
)
from tasks.reuse import Model, past_champions
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.stages import Stages
from tasks.stream import ROW_META, WindowRead, read_window
from tasks.training_data import RecentHistory, data_hash, history_hours
from tasks.validation import ValidationOutcome
from tasks.windowing import Window, format_instant, to_ms, windows_between, windows_in

log = logging.getLogger("streamtrain.cycle")


@dataclass
class CycleContext:
    """What a cycle needs and what a backfill keeps warm between windows."""

    settings: Settings
    schema: StreamSchema
    stages: Stages = field(default_factory=Stages)
    history: RecentHistory | None = None
    reader: Any = None  # a reused Kafka consumer (backfill), or None for one per read
    models: dict[str, Any] = field(default_factory=dict)  # version -> loaded keras model
    cache: dict[str, Any] = field(default_factory=dict)  # reference profiles, drift detector
    send_dead_letters: bool = True

    @property
    def model_name(self) -> str:
        return self.schema.name


OPEN_WINDOW = (
    "trained before every partition had passed the window's end plus the allowed lateness: "
    "a lagging partition's on-time records may still arrive"
)


@dataclass
class CycleResult:
    """One row of `streamtrain report`: what a cycle read, measured and decided."""

    kind: str
    window_start: str
    window_end: str
    rows: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    champion_version: str | None = None
    prequential_accuracy: float | None = None
    challenger_version: str | None = None
    challenger_metric: float | None = None
    champion_metric: float | None = None
    decision: str = "skipped"
    reasons: list[str] = field(default_factory=list)
    trigger: str = "schedule"
    quarantined: int = 0
    rejected: bool = False
    data_drift: str = "none"
    concept_drift_alarm: bool = False
    retrain_triggered: bool = False
    retrain_trigger: str | None = None
    new_categories: dict[str, list[Any]] = field(default_factory=dict)
    drift_table: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    window_closed: bool = True  # every partition with data had passed the window when read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- small steps -------------------------------------------------------------------------


def champion_model(ctx: CycleContext) -> tuple[str | None, Any]:
    """The serving champion's version and model, loaded once per version per process."""
    version = aliases.get_alias_version(ctx.settings, ctx.model_name, aliases.CHAMPION)
    if version is None:
        return None, None
    if version not in ctx.models:
        ctx.models.clear()  # keep one champion in memory, not the whole history
        ctx.models[version] = versions.load_keras(ctx.settings, ctx.model_name, version)
        log.info("Loaded champion version %s of %s from the registry", version, ctx.model_name)
    return version, ctx.models[version]


def already_trained(ctx: CycleContext, parent: str | None, window: Window, kind: str) -> str | None:
    """A version already trained on this window from this champion, or the champion itself
    when it came from this window: a rerun of the same hour must change nothing."""
    if parent is not None:
        lineage = versions.version_lineage(ctx.settings, ctx.model_name, parent)
        if (
            lineage is not None
            and lineage.training_kind == kind
            and lineage.window_start == format_instant(window.start)
        ):
            return parent
    return versions.find_version(
        ctx.settings,
        ctx.model_name,
        window_start=window.start,
        parent_version=parent,
        training_kind=kind,
    )


def score_accuracy(model: Any, schema: StreamSchema, frame: pd.DataFrame) -> float:
    """Accuracy of a model on rows it has not been trained on (test-then-train)."""
    proba = predict_proba(model, schema, frame)
    return float(binary_metrics(to_targets(schema, frame), proba).accuracy)


def _primary(
    comparisons: list[HoldoutComparison], metric: str
) -> tuple[float | None, float | None]:
    if not comparisons:
        return None, None
    longest = max(comparisons, key=lambda c: c.rows)
    champ = metric_value(longest.champion, metric) if longest.champion is not None else None
    return metric_value(longest.challenger, metric), champ


def _metrics_dict(comparisons: list[HoldoutComparison], which: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for comp in comparisons:
        metrics = comp.challenger if which == "challenger" else comp.champion
        if metrics is None:
            continue
        for name in ("accuracy", "f1", "auc"):
            value = metric_value(metrics, name)
            if value == value:  # skip NaN (AUC of a one-class holdout)
                out[f"{comp.name}.{name}"] = float(value)
    return out


def register_and_decide(
    ctx: CycleContext,
    *,
    kind: Literal["retrain", "finetune"],
    window: Window,
    read: WindowRead,
    model: Any,
    train_rows: pd.DataFrame,
    parent: str | None,
    comparisons: list[HoldoutComparison],
    decision: GateDecision,
    trigger: str,
    extra_metrics: dict[str, float],
    extra_artifacts: dict[str, str],
    result: CycleResult,
) -> tuple[str, str]:
    """The commit step: save the window's state, log the run, register the version with its
    lineage, and move aliases per the gate. Nothing is written to the registry before it."""
    settings, schema = ctx.settings, ctx.schema
    ctx.stages.run("log and register", _save_window_state, ctx, window, result, retries=2)
    verdict = "promoted" if decision.promote else "kept champion"
    lineage = Lineage(
        parent_version=parent,
        training_kind=kind,
        window_start=format_instant(window.start),
        window_end=format_instant(window.end),
        trained_windows=(format_instant(window.start),) if kind == "finetune" else (),
        offsets={k: (v[0], v[1]) for k, v in read.manifest.offsets.items()},
        data_hash=data_hash(train_rows.drop(columns=list(ROW_META), errors="ignore")),
        schema_hash=schema.fingerprint(),
        seed=settings.seed,
        trigger=trigger,
        holdout_metrics=_metrics_dict(comparisons, "challenger"),
        holdout_rows={c.name: c.rows for c in comparisons},
        champion_version=parent,
        champion_metrics=_metrics_dict(comparisons, "champion"),
        gate_decision=verdict,
        gate_reasons=tuple(decision.reasons),
    )
    metrics = {f"holdout.{k}": v for k, v in lineage.holdout_metrics.items()}
    metrics |= {f"champion.{k}": v for k, v in lineage.champion_metrics.items()}
    metrics |= extra_metrics
    metrics["rows"] = float(read.manifest.rows)
    metrics["promoted"] = 1.0 if decision.promote else 0.0
    run = ctx.stages.run(
        "log and register",
        run_logging.log_training_run,
        settings,
        schema,
        run_name=run_logging.format_run_name(kind, window.start),
        params={
            "kind": kind,
            "epochs": settings.finetune_epochs if kind == "finetune" else settings.retrain_epochs,
            "seed": settings.seed,
            "primary_metric": settings.primary_metric,
            "parent": parent or "none",
        },
        metrics=metrics,
        metric_series={},
        tags={
            "streamtrain.kind": kind,
            "streamtrain.window_start": format_instant(window.start),
            "streamtrain.window_end": format_instant(window.end),
            "streamtrain.decision": verdict,
            "streamtrain.trigger": trigger,
            "streamtrain.reasons": json.dumps([*_read_notes(result), *decision.reasons])[:4900],
            **_report_tags(result),
        },
        model=model,
        lineage=lineage,
        training_rows=train_rows,
        artifacts={
            **extra_artifacts,
            "window_manifest.json": _json(read.manifest.to_dict()),
            "gate_decision.json": _json(
                {
                    "promote": decision.promote,
                    "reasons": list(decision.reasons),
                    "details": decision.details,
                }
            ),
        },
        retries=2,
    )
    description = (
        f"{kind} on {format_instant(window.start)}..{format_instant(window.end)} from "
        f"{'version ' + parent if parent else 'scratch'}: {verdict}. " + " ".join(decision.reasons)
    )
    version = ctx.stages.run(
        "log and register",
        versions.register_version,
        settings,
        schema,
        run,
        lineage,
        description,
        retries=2,
    )
    run_logging.tag_run(settings, run.run_id, {"streamtrain.version": version})
    faults.checkpoint(settings, "after_register")
    ctx.stages.run("gate", _move_aliases, ctx, version, decision, trigger)
    return version, run.run_id


def _save_window_state(ctx: CycleContext, window: Window, result: CycleResult) -> None:
    """The champion's live accuracy on this window and the planner's state after it.

    Written before the run is logged: a rerun after a crash from here on replans the window
    from the state before it, which the planner's state keeps beside the new one.
    """
    if result.kind == "finetune" and result.champion_version is not None:
        accuracy = result.prequential_accuracy
        if accuracy is not None:
            model_state.record_live_accuracy(
                ctx.settings, ctx.model_name, result.champion_version, window.start, accuracy
            )
    guards.save_planning_state(ctx)


def _recover(ctx: CycleContext) -> str | None:
    """Finish the alias moves a crashed run left undone, before this cycle loads the champion.

    Returns the version recovered, if any. A recovered promotion judges the alarm against the
    new champion's holdout accuracy, as the run that died would have (a retrain's also starts
    the cumulative test from it).
    """
    found = recovery.finish_latest(ctx.settings, ctx.model_name)
    if found is None:
        return None
    version, lineage = found
    ctx.models.clear()
    if lineage.gate_decision == "promoted":
        accuracy = guards.champion_holdout_accuracy(ctx, version)
        fine_tuned = lineage.training_kind != "retrain"
        guards.alarm_for_new_champion(ctx, accuracy, fine_tuned=fine_tuned)
    ctx.cache[f"recovered:{version}"] = lineage
    return version


def _report_recovered(ctx: CycleContext, version: str, result: CycleResult) -> None:
    """The rerun of a crashed hour reports the decision its run made, now carried out."""
    lineage = ctx.cache.pop(f"recovered:{version}")
    result.decision = "promoted" if lineage.gate_decision == "promoted" else "kept"
    result.reasons = [
        f"made the alias moves of version {version}, registered by an interrupted run",
        *lineage.gate_reasons,
    ]


def _move_aliases(ctx: CycleContext, version: str, decision: GateDecision, trigger: str) -> None:
    aliases.challenge(
        ctx.settings,
        ctx.model_name,
        version,
        promote=decision.promote,
        trigger=trigger,
        reasons=list(decision.reasons),
    )


def _result_metrics(result: CycleResult) -> dict[str, float]:
    values = {
        "prequential_accuracy": result.prequential_accuracy,
        "challenger_metric": result.challenger_metric,
        "champion_metric": result.champion_metric,
    }
    return {k: float(v) for k, v in values.items() if v is not None and v == v}


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _base_result(kind: str, window: Window, read: WindowRead, trigger: str) -> CycleResult:
    m = read.manifest
    return CycleResult(
        kind=kind,
        window_start=format_instant(window.start),
        window_end=format_instant(window.end),
        rows=m.rows,
        duplicates=m.duplicates,
        malformed=m.malformed,
        late=m.late,
        trigger=trigger,
    )


# --- the hourly fine-tune ------------------------------------------------------------------


def recent_rows(ctx: CycleContext, window: Window, hours: int) -> pd.DataFrame:
    """Rows of the `hours` windows before `window`: from memory in a backfill, else Kafka."""
    if ctx.history is not None and ctx.history.covers(window, hours):
        return ctx.history.before(window, hours)
    span = Window(window.start - timedelta(hours=hours), window.start)
    read = ctx.stages.run(
        "read window",
        read_window,
        ctx.settings,
        ctx.schema,
        span,
        send_dead_letters=False,
        reader=ctx.reader,
        retries=3,
    )
    return read.frame


def finetune_window(ctx: CycleContext, window: Window, *, trigger: str = "schedule") -> CycleResult:
    """Test-then-train one window: score the champion, fine-tune a copy, gate, register."""
    settings, schema = ctx.settings, ctx.schema
    read = ctx.stages.run(
        "read window",
        read_window,
        settings,
        schema,
        window,
        send_dead_letters=ctx.send_dead_letters,
        reader=ctx.reader,
        retries=3,
    )
    result = _base_result("finetune", window, read, trigger)
    if not read.manifest.closed:  # e.g. run by hand: a lagging partition may still send rows
        result.window_closed = False
        result.reasons.append(OPEN_WINDOW)
    history = recent_rows(ctx, window, history_hours(settings))
    faults.checkpoint(settings, "after_read")
    rows, validation = _validated(ctx, read, result)
    if ctx.history is not None:
        ctx.history.add(window, rows)
    if result.rejected:
        return _finish(ctx, result)
    if rows.empty:
        result.reasons = ["window has no rows"]
        return _finish(ctx, result)
    recovered = ctx.stages.run("recover", _recover, ctx, retries=2)
    parent, champion = ctx.stages.run("load champion", champion_model, ctx, retries=2)
    result.champion_version = parent
    if champion is None:
        result.reasons = ["no champion yet: run `streamtrain retrain` first"]
        return _finish(ctx, result)
    result.prequential_accuracy = ctx.stages.run(
        "prequential score", score_accuracy, champion, schema, rows
    )
    existing = already_trained(ctx, parent, window, "finetune")
    if existing is not None:
        result.challenger_version = existing
        if existing == recovered:
            _report_recovered(ctx, existing, result)
            if result.decision == "kept":
                _check_rollback(ctx, result)
            return _finish(ctx, result)
        result.decision = "unchanged"
        result.reasons = [
            f"already trained on this window from version {parent} (version {existing})"
        ]
        return _finish(ctx, result)
    assert parent is not None  # a champion model implies its version
    recent_cut = to_ms(window.start - timedelta(hours=settings.drift_recent_hours))
    recent = history[history["_event_ms"] >= recent_cut] if not history.empty else history
    drift = ctx.stages.run("drift", guards.data_drift, ctx, parent, rows, recent)
    plan = _plan(ctx, window, parent, rows, history, result.prequential_accuracy, drift)
    result.concept_drift_alarm = plan.alarm.alarm
    signal = _signal(drift, result)

    judged = judge_window(ctx, window, plan, champion, signal, lambda: _past_champions(ctx, parent))
    challenger, comparisons, decision = judged.model, judged.comparisons, judged.decision
    _note_retrain(result, plan, window, judged)
    result.challenger_metric, result.champion_metric = _primary(
        comparisons, settings.primary_metric
    )
    version, run_id = register_and_decide(
        ctx,
        kind="finetune",
        window=window,
        read=read,
        model=challenger,
        train_rows=plan.train,
        parent=parent,
        comparisons=comparisons,
        decision=decision,
        trigger=trigger,
        extra_metrics=_result_metrics(result),
        extra_artifacts=_check_artifacts(ctx, parent, validation, drift),
        result=result,
    )
    result.challenger_version, result.run_id = version, run_id
    result.decision = "promoted" if decision.promote else "kept"
    result.reasons = [*result.reasons, *plan.reasons, *decision.reasons]
    if decision.promote:
        ctx.models.clear()
        ctx.models[version] = challenger
        assert judged.expected_accuracy is not None
        guards.alarm_for_new_champion(ctx, judged.expected_accuracy, fine_tuned=True)
    elif judged.reused is not None:
        _bring_back(ctx, judged, trigger, result)
    else:
        _check_rollback(ctx, result)
    return _finish(ctx, result)


def _plan(
    ctx: CycleContext,
    window: Window,
    parent: str,
    rows: pd.DataFrame,
    history: pd.DataFrame,
    accuracy: float,
    drift: DriftReport | None,
) -> WindowPlan:
    """Plan the window from the alarm and drift-episode state, and keep the new state.

    The state is written before the fit, with the state before this window beside it, so a
    run killed later and run again starts from where this one started.
    """
    label = format_instant(window.start)
    before = guards.planning_state(ctx, parent, label)
    plan = ctx.stages.run(
        "plan",
        plan_window,
        ctx.schema,
        ctx.settings,
        window,
        rows,
        history,
        accuracy=accuracy,
        alarm=before[0],
        episodes=before[1],
        drift=drift,
    )
    guards.store_planning_state(ctx, label, before, (plan.alarm_state, plan.episodes))
    return plan


REUSE_LOOKBACK_DAYS = 14


def _past_champions(ctx: CycleContext, parent: str) -> dict[str, Model]:
    """The registry's candidates for a reuse: one past champion per day of the last fortnight."""
    candidates = past_champions(
        versions.list_versions(ctx.settings, ctx.model_name), parent, REUSE_LOOKBACK_DAYS
    )
    return {
        v: scorer(ctx.schema, versions.load_keras(ctx.settings, ctx.model_name, v))
        for v in candidates
    }


def _bring_back(ctx: CycleContext, judged: Judgement, trigger: str, result: CycleResult) -> None:
    """Make the chosen past champion serve again, recorded as a reuse in the alias history."""
    assert judged.reuse is not None and judged.reused is not None
    version = judged.reused
    aliases.promote(
        ctx.settings,
        ctx.model_name,
        version,
        trigger=f"reuse:{trigger}",
        reasons=[f"reused version {version}", *judged.reuse.reasons],
    )
    ctx.models.clear()
    assert judged.expected_accuracy is not None
    guards.alarm_for_new_champion(ctx, judged.expected_accuracy, fine_tuned=False, reused=True)
    result.decision = "reused"
    result.reasons.append(f"reused version {version}")


def _check_rollback(ctx: CycleContext, result: CycleResult) -> None:
    """Give the champion back when a new one serves clearly worse than the one it replaced."""
    s = ctx.settings
    # The live series holds one value per window: the judged span is rollback_hours of time.
    windows = windows_in(timedelta(hours=s.rollback_hours), ctx.schema.window)
    live = model_state.live_accuracy(s, ctx.model_name, windows)
    if live is None:
        return
    decision = decide_rollback(list(live.current), live.previous, windows, s.rollback_margin)
    if decision.rollback:
        restored = aliases.rollback(
            s, ctx.model_name, who="streamtrain auto-rollback", why=decision.reason
        )
        ctx.models.clear()
        result.decision = "rolled back"
        result.reasons.append(f"rolled back to version {restored}: {decision.reason}")


def _finish(ctx: CycleContext, result: CycleResult) -> CycleResult:
    result.timings = ctx.stages.reset()
    log.info(
        "%s %s: %s rows, champion v%s, prequential accuracy %s, %s",
        result.kind,
        result.window_start,
        result.rows,
        result.champion_version or "-",
        f"{result.prequential_accuracy:.3f}" if result.prequential_accuracy is not None else "-",
        result.decision,
    )
    return result


# --- the full retrain ------------------------------------------------------------------------


def retrain_until(ctx: CycleContext, until: datetime, *, trigger: str = "schedule") -> CycleResult:
    """Train from scratch on the last `retrain_days` up to `until`; gate against the champion."""
    settings, schema = ctx.settings, ctx.schema
    end = Window.containing(until, schema.window).start
    span = Window(end - timedelta(days=settings.retrain_days), end)
    read = ctx.stages.run(
        "read window",
        read_window,
        settings,
        schema,
        span,
        send_dead_letters=False,
        reader=ctx.reader,
        retries=3,
    )
    result = _base_result("retrain", span, read, trigger)
    windows = len(windows_between(span.start, span.end, schema.window))
    validated, validation = _validated(ctx, read, result, windows=windows, dead_letters=False)
    if result.rejected:
        return _finish(ctx, result)
    if validated.empty:
        result.reasons = [f"no rows in {span}"]
        return _finish(ctx, result)
    recovered = ctx.stages.run("recover", _recover, ctx, retries=2)
    parent, champion = ctx.stages.run("load champion", champion_model, ctx, retries=2)
    result.champion_version = parent
    existing = already_trained(ctx, parent, span, "retrain")
    if existing is not None:
        result.challenger_version = existing
        if existing == recovered:
            _report_recovered(ctx, existing, result)
            return _finish(ctx, result)
        result.decision = "unchanged"
        result.reasons = [
            f"already retrained on this range from version {parent} (version {existing})"
        ]
        return _finish(ctx, result)
    alarm = guards.current_alarm(ctx)  # one read of the stored state for both questions
    change = alarm.change_start_ms if alarm is not None else None  # None: no alarm yet
    returned = alarm is not None and alarm.serves_returned_concept
    plan = ctx.stages.run(
        "plan",
        plan_retrain_on_new_concept,
        schema,
        settings,
        validated,
        span.end_ms,
        change_start_ms=change,
        fit_probe=lambda rows, seen, weights: scorer(schema, fit_fresh(ctx, rows, seen, weights)),
        returned=scorer(schema, champion) if returned else None,
    )
    if plan.train.empty:
        result.reasons = ["no rows outside the holdout to train on"]
        return _finish(ctx, result)
    judged = judge_retrain(
        ctx, plan, champion, lambda rows, seen, weights: fit_fresh(ctx, rows, seen, weights)
    )
    model, comparisons, decision = judged.model, judged.comparisons, judged.decision
    result.challenger_metric, result.champion_metric = _primary(
        comparisons, settings.primary_metric
    )
    version, run_id = register_and_decide(
        ctx,
        kind="retrain",
        window=span,
        read=read,
        model=model,
        train_rows=plan.train,
        parent=parent,
        comparisons=comparisons,
        decision=decision,
        trigger=trigger,
        extra_metrics=_result_metrics(result),
        extra_artifacts={
            guards.REFERENCE_ARTIFACT: reference_for_range(schema, plan.vocabulary).to_json(),
            "validation_summary.json": _json(validation.summary()),
        },
        result=result,
    )
    result.challenger_version, result.run_id = version, run_id
    result.decision = "promoted" if decision.promote else "kept"
    result.reasons = [*plan.reasons, *decision.reasons]
    if decision.promote:
        ctx.models.clear()
        ctx.models[version] = model
        assert judged.expected_accuracy is not None
        guards.alarm_for_new_champion(ctx, judged.expected_accuracy, fine_tuned=False)
    return _finish(ctx, result)


# --- validation and drift ------------------------------------------------------------------


def _validated(
    ctx: CycleContext,
    read: WindowRead,
    result: CycleResult,
    *,
    windows: int = 1,
    dead_letters: bool = True,
) -> tuple[pd.DataFrame, ValidationOutcome]:
    """Rows fit to learn from; failing rows quarantined, or the whole window rejected."""
    outcome = ctx.stages.run("validate", guards.validate_rows, ctx, read.frame, windows)
    if dead_letters:
        guards.quarantine(ctx, outcome, read.frame)
    result.rejected = outcome.rejected
    result.quarantined = len(read.frame) if outcome.rejected else len(outcome.quarantined)
    result.rows = len(outcome.kept)
    if outcome.rejected:
        result.decision = "rejected"
        result.reasons = [f"window rejected by validation: {r}" for r in outcome.reasons]
        run_logging.log_cycle_run(
            ctx.settings,
            ctx.schema,
            run_name=run_logging.format_run_name(result.kind, result.window_start),
            tags={
                "streamtrain.kind": result.kind,
                "streamtrain.window_start": result.window_start,
                "streamtrain.window_end": result.window_end,
                "streamtrain.decision": "rejected",
                "streamtrain.trigger": result.trigger,
                "streamtrain.reasons": json.dumps(result.reasons)[:4900],
                **_report_tags(result),
            },
            metrics={"rows": 0.0, "quarantined": float(result.quarantined)},
            artifacts={"validation_summary.json": _json(outcome.summary())},
        )
    elif not outcome.quarantined.empty:
        result.reasons.append(
            f"{len(outcome.quarantined)} rows quarantined: "
            + "; ".join(sorted(outcome.failed_expectations))
        )
    return outcome.kept, outcome


def _signal(drift: DriftReport | None, result: CycleResult) -> DriftSignal:
    if drift is None:
        return DriftSignal(concept_drift_alarm=result.concept_drift_alarm)
    result.data_drift = drift.overall
    result.drift_table = drift.table()
    result.new_categories = {k: list(v) for k, v in drift.new_categories.items() if v}
    return drift.to_signal(concept_drift_alarm=result.concept_drift_alarm)


def _note_retrain(result: CycleResult, plan: WindowPlan, window: Window, judged: Judgement) -> None:
    """Ask for a full retrain when the planner's drift policy does (and no past champion was
    brought back instead); the rule is the trigger."""
    request = judged.retrain
    assert request is not None
    if not request.retrain:
        if plan.retrain.retrain:  # asked for, but the reuse answered the alarm: say so
            result.reasons.append(request.reasons[-1])
        return
    result.retrain_triggered = True
    rule = request.rule or "drift"
    result.retrain_trigger = f"drift:{rule}@{format_instant(window.start)}"
    result.reasons.append(f"retrain triggered by the {rule} rule")


def _check_artifacts(
    ctx: CycleContext,
    parent: str,
    validation: ValidationOutcome,
    drift: DriftReport | None,
) -> dict[str, str]:
    """What a fine-tuned version carries: its base profile, validation and drift results."""
    out = {"validation_summary.json": _json(validation.summary())}
    reference = guards.reference_for(ctx, parent)
    if reference is not None:
        out[guards.REFERENCE_ARTIFACT] = reference.to_json()
    if drift is not None:
        out["drift_report.json"] = _json(
            {
                "overall": drift.overall,
                "features": drift.table(),
                "new_categories": drift.new_categories,
            }
        )
    return out


def _read_notes(result: CycleResult) -> list[str]:
    """What the report must say about the read itself, beside the gate's reasons."""
    return [] if result.window_closed else [OPEN_WINDOW]


def _report_tags(result: CycleResult) -> dict[str, str]:
    return {
        "report.window_closed": str(result.window_closed).lower(),
        "report.data_drift": result.data_drift,
        "report.concept_drift_alarm": str(result.concept_drift_alarm).lower(),
        "report.retrain_triggered": str(result.retrain_triggered).lower(),
        "report.quarantined": str(result.quarantined),
        "report.rejected": str(result.rejected).lower(),
    }
