"""The training cycle replayed in memory: the pipeline's own steps, without Kafka and MLflow.

Section 5 (model quality under drift) runs several strategies over six scenarios; through the
broker and the registry that would take hours on two cores. `Replica` is today's
`bench.strategy.StrategyUnderTest`: it composes the public functions `tasks/cycle.py`
composes (model build, fit and fine-tune, the holdout split, the replay sample, the drift
checks, the concept-drift detector, compare_on_holdouts, the promotion gate, the rollback
rule) on the simulator's records, with the pipeline's settings. What it skips: reading Kafka,
validation (the scenarios used here have no broken records), logging and registering.

Still copied from tasks/cycle.py, because no public function offers them yet (issue 13's
planner and executor will replace this whole class):
- the order of the steps in `finetune_window` and `retrain_until` (which rows train, which
  rows are held out, when the detector is reset);
- `_holdouts` (recent and long holdouts), as `_holdouts` below;
- `_signal` and `_note_retrain` (the drift signal for the gate and the rule that asks for a
  drift-triggered retrain), as `_retrain_causes` below;
- `_fine_tune` and `_fit_fresh` (thin over the public `tasks.model` functions, without the
  fault-injection checkpoint).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from bench.strategy import Outcome, WindowRecord
from tasks.cycle import CycleContext, compare_on_holdouts
from tasks.drift import (
    ConceptDriftDetector,
    DriftReport,
    ReferenceProfile,
    build_reference,
    check_data_drift,
)
from tasks.gate import GateDecision, GatePolicy, decide_promotion, decide_rollback
from tasks.model import build_model, fine_tune_copy, predict_proba, to_targets, train
from tasks.schema import StreamSchema, decode_record
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ROW_META
from tasks.training_data import data_hash, holdout_mask, replay_sample
from tasks.windowing import Window, format_instant, to_ms

HOUR_MS = 3_600_000
# What a fit from scratch depends on besides its rows (the cache key of `Retrains`).
FIT_SETTINGS = {
    "seed",
    "hidden_units",
    "embedding_dim",
    "dropout",
    "retrain_learning_rate",
    "retrain_epochs",
    "batch_size",
}


def simulated_frame(schema: StreamSchema, config: SimulationConfig) -> pd.DataFrame:
    """The scenario's records decoded as `read_window` decodes them, in event-time order."""
    rows = []
    for offset, record in enumerate(generate(config)):
        row = decode_record(schema, record.value)
        rows.append({**row, "_partition": 0, "_offset": offset})
    frame = pd.DataFrame(rows, columns=[*schema.columns, *ROW_META])
    return frame.sort_values(["_event_ms", schema.key or "_offset"], kind="stable").reset_index(
        drop=True
    )


class Stream:
    """All rows of a scenario, sliced by event time (what Kafka plus the history buffer give)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.times = frame["_event_ms"].to_numpy()

    def between(self, start_ms: int, end_ms: int) -> pd.DataFrame:
        lo, hi = np.searchsorted(self.times, [start_ms, end_ms], side="left")
        return self.frame.iloc[lo:hi].reset_index(drop=True)


@dataclass
class Served:
    """A model that served or may serve, with what the registry would keep beside it."""

    model: Any
    name: str
    reference: ReferenceProfile
    live: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Strategy:
    """How a model is kept up to date: the keys match the report's table."""

    key: str
    label: str
    finetune: bool
    nightly: bool
    drift_retrain: bool


class Retrains:
    """Fitted-from-scratch models by the rows they saw: a retrain of the same range is the
    same model (same seed, same rows, same settings), whichever strategy asks, so it is
    fitted once."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[Any, ReferenceProfile]] = {}
        self.fitted = 0

    def fit(
        self, ctx: CycleContext, train_rows: pd.DataFrame, seen: pd.DataFrame
    ) -> tuple[Any, ReferenceProfile]:
        fit = ctx.settings.model_dump(include=FIT_SETTINGS)
        key = data_hash(train_rows) + data_hash(seen) + repr(sorted(fit.items()))
        if key not in self.models:
            model = _fit_fresh(ctx, train_rows, seen)
            self.models[key] = (model, build_reference(ctx.schema, train_rows))
            self.fitted += 1
        return self.models[key]


@dataclass
class Replica:
    """One strategy's state while it replays a stream window by window (copyable to fork)."""

    settings: Settings
    schema: StreamSchema
    strategy: Strategy
    stream: Stream
    retrains: Retrains
    champion: Served | None = None
    previous: Served | None = None
    detector: ConceptDriftDetector | None = None
    outcome: Outcome = field(default_factory=Outcome)
    versions: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        if self.detector is None:
            self.detector = ConceptDriftDetector(
                delta=s.concept_delta, threshold=s.concept_threshold
            )

    @property
    def ctx(self) -> CycleContext:
        return CycleContext(settings=self.settings, schema=self.schema)

    def fork(self, strategy: Strategy, stream: Stream | None = None) -> Replica:
        """The same state under another strategy or on another stream (models are never
        changed in place)."""
        return replace(
            self,
            strategy=strategy,
            stream=stream or self.stream,
            detector=copy.deepcopy(self.detector),
            outcome=copy.deepcopy(self.outcome),
        )

    # --- StrategyUnderTest -----------------------------------------------------------------

    def nightly(self, at: datetime) -> None:
        if self.strategy.nightly:
            self.retrain(at)

    def step(self, window: Window) -> WindowRecord | None:
        """Test-then-train one window as the strategy says; may retrain on drift."""
        rows = self.stream.between(window.start_ms, window.end_ms)
        if rows.empty or self.champion is None:
            return None
        truth = to_targets(self.schema, rows) > 0.5
        predicted = predict_proba(self.champion.model, self.schema, rows) >= 0.5
        record = self.outcome.add(window.start_ms, truth, predicted)
        if self.strategy.finetune:
            alarm, retrain = self._finetune(window, rows, record.accuracy)
            self.outcome.flag_last(alarm=alarm, drift_retrain=retrain)
        return self.outcome.windows[-1]

    # --- the full retrain (tasks.cycle.retrain_until) -------------------------------------

    def retrain(self, until: datetime) -> bool:
        s, schema = self.settings, self.schema
        end = Window.containing(until, schema.window).start
        frame = self.stream.between(to_ms(end - timedelta(days=s.retrain_days)), to_ms(end))
        if frame.empty:
            return False
        cutoff = to_ms(end - timedelta(hours=s.holdout_hours))
        recent = (frame["_event_ms"] >= cutoff).to_numpy()
        train_rows = frame[~recent & ~holdout_mask(schema, frame, s.seed)]
        if train_rows.empty:
            return False
        model, reference = self.retrains.fit(self.ctx, train_rows, frame)
        recent_cut = to_ms(end - timedelta(hours=s.recent_holdout_hours))
        holdouts = {"recent": frame[frame["_event_ms"] >= recent_cut], "long": frame[recent]}
        champion = self.champion.model if self.champion else None
        comparisons = compare_on_holdouts(self.ctx, model, champion, holdouts, s.seed)
        decision = decide_promotion(
            comparisons, None, GatePolicy.from_settings(s), fine_tuned=False
        )
        self.outcome.retrains += 1
        if decision.promote:
            self._promote(Served(model, f"retrain@{format_instant(end)}", reference))
            assert self.detector is not None
            self.detector.reset()
        return decision.promote

    def _promote(self, served: Served) -> None:
        self.versions += 1
        self.outcome.promotions += 1
        self.previous, self.champion = self.champion, served

    # --- one window's fine-tune (tasks.cycle.finetune_window) -----------------------------

    def _finetune(self, window: Window, rows: pd.DataFrame, accuracy: float) -> tuple[bool, bool]:
        """Fine-tune, gate, maybe roll back or retrain; (concept alarm, drift retrain)."""
        s, schema = self.settings, self.schema
        assert self.champion is not None and self.detector is not None
        history_hours = max(s.replay_hours, s.long_holdout_hours)
        history = self.stream.between(window.start_ms - history_hours * HOUR_MS, window.start_ms)
        self.champion = replace(self.champion, live=[*self.champion.live, accuracy][-72:])
        alarm = self.detector.update(1.0 - accuracy, weight=len(rows))
        recent = history[history["_event_ms"] >= window.start_ms - s.drift_recent_hours * HOUR_MS]
        drift = check_data_drift(
            schema,
            self.champion.reference,
            rows,
            recent=recent if not recent.empty else None,
            psi_mild=s.psi_mild,
            psi_severe=s.psi_severe,
            p_value=s.drift_p_value,
            min_rows_for_test=s.drift_min_rows,
        )
        challenger, comparisons = self._challenger(window, rows, history)
        signal = drift.to_signal(concept_drift_alarm=alarm)
        decision = decide_promotion(comparisons, signal, GatePolicy.from_settings(s))
        wanted = self.strategy.drift_retrain and self.settings.retrain_on_drift
        retrain = bool(wanted and _retrain_causes(alarm, drift, decision))
        if decision.promote:
            self._promote(
                Served(challenger, f"finetune@{window.start_ms}", self.champion.reference)
            )
        else:
            self._check_rollback()
        if retrain:
            self.outcome.drift_retrains += 1
            self.retrain(window.end)
        return alarm, retrain

    def _challenger(
        self, window: Window, rows: pd.DataFrame, history: pd.DataFrame
    ) -> tuple[Any, list[Any]]:
        s, schema = self.settings, self.schema
        assert self.champion is not None
        seed = s.seed + window.start_ms // HOUR_MS
        window_holdout = holdout_mask(schema, rows, s.seed)
        hist_holdout = holdout_mask(schema, history, s.seed) if not history.empty else None
        train_rows = rows[~window_holdout]
        if hist_holdout is not None:
            pool = history[~hist_holdout]
            pool = pool[pool["_event_ms"] >= window.start_ms - s.replay_hours * HOUR_MS]
            train_rows = pd.concat(
                [train_rows, replay_sample(pool, s.replay_samples, s.seed, seed)],
                ignore_index=True,
            )
        challenger = _fine_tune(self.ctx, self.champion.model, train_rows, seed)
        past = history[hist_holdout] if hist_holdout is not None else history
        holdouts = _holdouts(s, window, rows[window_holdout], past)
        comparisons = compare_on_holdouts(self.ctx, challenger, self.champion.model, holdouts, seed)
        return challenger, comparisons

    def _check_rollback(self) -> None:
        s = self.settings
        if self.champion is None or self.previous is None:
            return
        before = self.previous.live[-s.rollback_hours :]
        previous = sum(before) / len(before) if before else None
        decision = decide_rollback(
            self.champion.live, previous, s.rollback_hours, s.rollback_margin
        )
        if decision.rollback:
            self.champion, self.previous = self.previous, None
            self.outcome.rollbacks += 1


# --- copies of tasks/cycle.py's private helpers (see the module docstring) -----------------


def _fit_fresh(ctx: CycleContext, rows: pd.DataFrame, seen: pd.DataFrame) -> Any:
    """Train from scratch on `rows`; vocabularies cover every value `seen` in the range."""
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
    )
    return model


def _fine_tune(ctx: CycleContext, champion: Any, rows: pd.DataFrame, seed: int) -> Any:
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
    )
    return challenger


def _holdouts(
    s: Settings, window: Window, current: pd.DataFrame, past: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Recent and long holdouts: held-out rows of the last few hours and of a longer period."""
    out = {}
    for name, hours in (("recent", s.recent_holdout_hours), ("long", s.long_holdout_hours)):
        since = to_ms(window.end - timedelta(hours=hours))
        older = past[past["_event_ms"] >= since] if not past.empty else past
        out[name] = pd.concat([older, current], ignore_index=True) if not older.empty else current
    return out


def _retrain_causes(alarm: bool, drift: DriftReport, decision: GateDecision) -> list[str]:
    """Why the cycle would ask for a full retrain (empty: it would not)."""
    causes = []
    if alarm:
        causes.append("concept")
    if drift.overall == "severe":
        causes.append("data")
    if any(v for v in drift.new_categories.values()):
        causes.append("new-categories")
    if decision.retrain and not causes:
        causes.append("gate")
    return causes
