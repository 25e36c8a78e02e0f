"""The training cycle replayed in memory: the pipeline's own steps, without Kafka and MLflow.

Section 5 (model quality under drift) runs several strategies over six scenarios; through the
broker and the registry that would take hours on two cores. `Replica` is today's
`bench.strategy.StrategyUnderTest`: an executor over an in-memory stream and registry.

What a window or a retrain decides is the pipeline's own code, not a copy: the planner
(`tasks.plan.plan_window`, `plan_retrain_on_new_concept`: training rows and weights, the
probe that judges old rows after a change, holdouts, what is judged, the accuracy alarm, the
drift policy), and `tasks.judge.judge_window` and `judge_retrain`, the steps tasks/cycle.py
runs between its plan and its commit (fit or fine-tune, compare on the holdouts, gate, weigh
the past champions, the retrain still asked for, the next champion's expected accuracy).
What is the replica's own, as an executor's: where rows and models come from (the simulator's
records sliced by event time; past champions kept one per day, where the cycle asks the
registry for one per day), the rollback's live accuracy series (the cycle keeps it in the
registry) and what it skips: reading Kafka, validation (these scenarios have no broken
records), logging and registering, the crash recovery.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from bench.strategy import Outcome, WindowRecord
from tasks.cycle import CycleContext
from tasks.detector import AccuracyAlarm
from tasks.drift import ReferenceProfile, check_data_drift, reference_for_range
from tasks.drift_policy import DriftEpisodes
from tasks.gate import decide_rollback
from tasks.judge import fit_fresh, judge_retrain, judge_window, scorer
from tasks.model import predict_proba, to_targets
from tasks.plan import (
    new_alarm,
    plan_retrain_on_new_concept,
    plan_window,
)
from tasks.schema import StreamSchema, decode_record
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ROW_META
from tasks.training_data import data_hash, history_hours
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
        self, ctx: CycleContext, train_rows: pd.DataFrame, seen: pd.DataFrame, weights: Any
    ) -> tuple[Any, ReferenceProfile]:
        fit = ctx.settings.model_dump(include=FIT_SETTINGS)
        key = (
            data_hash(train_rows)
            + data_hash(seen)
            + data_hash(pd.DataFrame({"w": np.asarray(weights, dtype=float)}))
            + repr(sorted(fit.items()))
        )
        if key not in self.models:
            model = fit_fresh(ctx, train_rows, seen, weights)
            self.models[key] = (model, reference_for_range(ctx.schema, seen))
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
    alarm: AccuracyAlarm | None = None
    episodes: DriftEpisodes = field(default_factory=DriftEpisodes)
    past: dict[str, Served] = field(default_factory=dict)  # last champion of each day
    outcome: Outcome = field(default_factory=Outcome)
    versions: int = 0

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
            alarm=copy.deepcopy(self.alarm),
            episodes=copy.deepcopy(self.episodes),
            past=dict(self.past),
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

    def retrain(self, until: datetime, *, drift: bool = False) -> bool:
        s, schema = self.settings, self.schema
        end = Window.containing(until, schema.window).start
        frame = self.stream.between(to_ms(end - timedelta(days=s.retrain_days)), to_ms(end))
        if frame.empty:
            return False
        change = self.alarm.change_start_ms if self.alarm is not None else None
        returned = self.alarm is not None and self.alarm.serves_returned_concept
        plan = plan_retrain_on_new_concept(
            schema,
            s,
            frame,
            to_ms(end),
            change_start_ms=change,
            fit_probe=self._fit_probe,
            returned=scorer(schema, self.champion.model) if returned and self.champion else None,
        )
        if plan.train.empty:
            return False
        fitted: dict[str, ReferenceProfile] = {}

        def fit(rows: pd.DataFrame, seen: pd.DataFrame, weights: Any) -> Any:
            model, fitted["reference"] = self.retrains.fit(self.ctx, rows, seen, weights)
            return model

        champion = self.champion.model if self.champion else None
        judged = judge_retrain(self.ctx, plan, champion, fit)
        self.outcome.retrains += 1
        if judged.decision.promote:
            served = Served(judged.model, f"retrain@{format_instant(end)}", fitted["reference"])
            self._promote(served, end)
            assert judged.expected_accuracy is not None
            self._new_champion(judged.expected_accuracy, fine_tuned=False)
        return judged.decision.promote

    def _fit_probe(self, rows: pd.DataFrame, seen: pd.DataFrame, weights: Any) -> Any:
        model, _ = self.retrains.fit(self.ctx, rows, seen, weights)
        return scorer(self.schema, model)

    def _promote(self, served: Served, at: datetime) -> None:
        self.versions += 1
        self.outcome.promotions += 1
        self.previous, self.champion = self.champion, served
        self.past[at.date().isoformat()] = served
        self.past = dict(sorted(self.past.items())[-15:])

    def _new_champion(self, accuracy: float, *, fine_tuned: bool, reused: bool = False) -> None:
        if self.alarm is None:
            self.alarm = new_alarm(self.settings, min(max(accuracy, 0.0), 1.0))
        else:
            self.alarm = self.alarm.with_champion(accuracy, fine_tuned=fine_tuned, reused=reused)

    # --- one window's fine-tune (tasks.cycle.finetune_window) -----------------------------

    def _finetune(self, window: Window, rows: pd.DataFrame, accuracy: float) -> tuple[bool, bool]:
        """Plan, fine-tune, gate, maybe reuse, roll back or retrain; (alarm, drift retrain)."""
        s, schema = self.settings, self.schema
        assert self.champion is not None and self.alarm is not None
        hours = history_hours(s)
        history = self.stream.between(window.start_ms - hours * HOUR_MS, window.start_ms)
        self.champion = replace(self.champion, live=[*self.champion.live, accuracy][-72:])
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
        plan = plan_window(
            schema,
            s,
            window,
            rows,
            history,
            accuracy=accuracy,
            alarm=self.alarm,
            episodes=self.episodes,
            drift=drift,
        )
        self.alarm, self.episodes = plan.alarm_state, plan.episodes
        signal = drift.to_signal(concept_drift_alarm=plan.alarm.alarm)
        champion = self.champion
        past = [served for served in self.past.values() if served is not champion]
        judged = judge_window(
            self.ctx,
            window,
            plan,
            champion.model,
            signal,
            lambda: {str(i): scorer(schema, served.model) for i, served in enumerate(past)},
        )
        if judged.reused is not None:
            self._promote(past[int(judged.reused)], window.start)
        elif judged.decision.promote:
            self._promote(
                Served(judged.model, f"finetune@{window.start_ms}", champion.reference),
                window.start,
            )
        else:
            self._check_rollback()
        if judged.expected_accuracy is not None:
            reused = judged.reused is not None
            self._new_champion(judged.expected_accuracy, fine_tuned=not reused, reused=reused)
        assert judged.retrain is not None
        wanted = self.strategy.drift_retrain and judged.retrain.retrain
        if wanted:
            self.outcome.drift_retrains += 1
            self.retrain(window.end, drift=True)
        return plan.alarm.alarm, bool(wanted)

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
