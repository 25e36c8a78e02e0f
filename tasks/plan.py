"""The training planner: what a cycle trains on, with which weights, and what it is judged on.

Pure: rows (pandas frames with `_event_ms`), the alarm and drift-memory states, the drift
report and the settings in; frozen plans with their reasons out. No Kafka, MLflow, Prefect
or TensorFlow. A reader who asks "why did it train on these rows?" reads this module.

How the executor (`tasks/cycle.py`) calls it:

- Hourly fine-tune, after reading and validating the window (`rows`) and the history before
  it (`history`, at least `max(replay_hours, long_holdout_hours)` hours), and scoring the
  champion on the window (`accuracy`):
  `plan = plan_window(schema, settings, window, rows, history, accuracy=..., alarm=...,
  episodes=..., drift=report)`, where `alarm` is `AccuracyAlarm.from_json(tag)` or, for a
  champion without one, `AccuracyAlarm.for_model(its holdout accuracy, ...)` (never blank;
  see `new_alarm`), and `episodes` is `DriftEpisodes.from_json(tag)` or `DriftEpisodes()`.
  It fits a copy on `plan.train` weighted by `plan.weights`, compares challenger and champion
  on `plan.holdouts` and gates with `decide_promotion(..., judge_on=plan.judge_on)`. If
  `plan.consider_reuse`, it scores the last few distinct past champions on `plan.reuse_rows`
  (`tasks.reuse.score_models`) and calls `tasks.reuse.choose_reuse`. If
  `plan.retrain.retrain`, it runs a retrain with `plan.retrain.rule` as its trigger. The
  commit step stores `plan.alarm_state.to_json()` and `plan.episodes.to_json()` with the
  version, nothing earlier. On a promotion it calls `plan.alarm_state.with_champion(holdout
  accuracy, fine_tuned=..., reused=...)` so the next window is compared with the new
  champion; a retrained or reused one starts the cumulative tests from its own holdout error
  (never `guards.reset_detector`'s blank state). Rollback stays `tasks.gate.decide_rollback`
  over live accuracy, after the gate.
- Full retrain over a range (`frame`, the whole range read and validated):
  `plan = plan_retrain_on_new_concept(schema, settings, frame, end_ms,
  change_start_ms=alarm.change_start_ms, fit_probe=...)`, which after a change fits a probe
  on the post-change rows (the executor's own fit) and plans again with `agrees=probe`, or,
  when `alarm.serves_returned_concept`, with the serving champion as `returned` and no probe
  (`plan_retrain` alone is the single step); fit on `plan.train` / `plan.weights`,
  build vocabularies from `plan.vocabulary`, store `reference_for_range(schema,
  plan.vocabulary)` as the reference profile, and gate on `plan.holdouts` with
  `judge_on=plan.judge_on`.

Weights are Keras `sample_weight` values, one per row of `plan.train` (`tasks.model.train`
takes none yet: the executor's wiring adds it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from tasks.detector import AccuracyAlarm, AlarmVerdict
from tasks.drift import DriftReport
from tasks.drift_policy import DriftEpisodes, RetrainRequest, decide_retrain
from tasks.sample_weights import HOUR_MS, Model, agreement, recency_weights, weighted_replay
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.training_data import holdout_mask
from tasks.windowing import Window

CURRENT = "current"  # the holdout of post-change rows, judged alone after an alarm


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """What one hourly cycle does, and why."""

    train: pd.DataFrame
    weights: np.ndarray
    holdouts: dict[str, pd.DataFrame]
    judge_on: tuple[str, ...] | None
    alarm: AlarmVerdict
    alarm_state: AccuracyAlarm
    episodes: DriftEpisodes
    retrain: RetrainRequest
    change_start_ms: int | None
    consider_reuse: bool
    reuse_rows: pd.DataFrame  # held-out rows of the fall: no candidate trained on them
    reuse_floor: float  # a past champion must score this well to come back (the level fallen from)
    reasons: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class RetrainPlan:
    """What a full retrain trains on (and with which weights), is judged on, and profiles."""

    train: pd.DataFrame
    weights: np.ndarray
    holdouts: dict[str, pd.DataFrame]
    judge_on: tuple[str, ...] | None
    vocabulary: pd.DataFrame  # the whole range's feature values: vocabularies and reference
    change_start_ms: int | None
    reasons: tuple[str, ...]
    # Post-change training rows to fit a probe of the new concept on, which then judges the
    # older rows (`plan_retrain(..., agrees=probe)`); None when no probe is wanted.
    probe: pd.DataFrame | None = None


# rows, vocabulary rows, sample weights -> a model of them (probabilities of the positive class)
Fit = Callable[[pd.DataFrame, pd.DataFrame, np.ndarray], Model]


def new_alarm(settings: Settings, holdout_accuracy: float) -> AccuracyAlarm:
    """The alarm of a champion that has none yet, started from its own holdout accuracy."""
    return AccuracyAlarm.for_model(
        holdout_accuracy,
        confidence=settings.alarm_confidence,
        margin=settings.alarm_margin,
        delta=settings.concept_delta,
        threshold=settings.concept_threshold,
        warm_rows=settings.alarm_warm_rows,
        pool_windows=settings.alarm_pool_windows,
        pooled_margin=settings.alarm_pooled_margin,
        same_change_ms=int(settings.same_change_hours * HOUR_MS),
    )


# --- the hourly plan -------------------------------------------------------------------------


def _since(frame: pd.DataFrame, start_ms: int | None) -> pd.DataFrame:
    if frame.empty or start_ms is None:
        return frame
    return frame[frame["_event_ms"] >= start_ms]


def holdouts_for(
    settings: Settings, end_ms: int, held: pd.DataFrame, change_start_ms: int | None
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...] | None]:
    """Recent and long holdouts of hash-held-out rows, and after a change the post-change
    rows alone as `current`, which is then the only one judged."""
    out = {}
    for name, hours in (
        ("recent", settings.recent_holdout_hours),
        ("long", settings.long_holdout_hours),
    ):
        out[name] = _since(held, end_ms - hours * HOUR_MS)
    if change_start_ms is None or change_start_ms < end_ms - settings.long_holdout_hours * HOUR_MS:
        return out, None
    out[CURRENT] = _since(held, change_start_ms)
    if len(out[CURRENT]) < settings.min_current_holdout_rows:
        return out, None  # too few rows of the new concept yet: judged on every holdout
    return out, (CURRENT,)


def fine_tune_set(
    settings: Settings,
    window: Window,
    new_rows: pd.DataFrame,
    pool: pd.DataFrame,
    change_start_ms: int | None,
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """The window's trainable rows at weight 1 plus a replay of recent trainable history,
    from after the change if there was one, weighted towards the present."""
    since = window.start_ms - settings.replay_hours * HOUR_MS
    after_change = change_start_ms is not None and change_start_ms > since
    pool = _since(pool, max(since, change_start_ms or since))
    replay, replay_weights = weighted_replay(
        pool,
        float(len(new_rows)),
        settings.replay_samples,
        settings,
        window.start_ms,
        salt=window.start_ms // HOUR_MS,
    )
    train = pd.concat([new_rows, replay], ignore_index=True)
    weights = np.concatenate([np.ones(len(new_rows)), replay_weights])
    share = len(new_rows) / weights.sum() if weights.sum() else 1.0
    note = (
        f"fine-tune on {len(new_rows)} window rows and {len(replay)} replay rows"
        + (" drawn after the change" if after_change else "")
        + f"; the window's rows carry {share:.0%} of the weight"
    )
    return train, weights, note


def plan_window(
    schema: StreamSchema,
    settings: Settings,
    window: Window,
    rows: pd.DataFrame,
    history: pd.DataFrame,
    *,
    accuracy: float,
    alarm: AccuracyAlarm,
    episodes: DriftEpisodes,
    drift: DriftReport | None,
) -> WindowPlan:
    """Plan one hourly cycle: alarm, drift policy, fine-tune rows and weights, holdouts."""
    state = copy.deepcopy(alarm)
    verdict = state.update(accuracy, len(rows), window.start_ms)
    reasons = list(verdict.reasons)
    change = state.change_start_ms
    # Inside a fall that has already alarmed, its retrain has been asked for.
    already = verdict.fall and not verdict.alarm
    fell = accuracy < state.expected - state.margin and not already
    request, episodes_after = decide_retrain(
        drift.overall if drift is not None else "none",
        dict(drift.new_categories) if drift is not None else {},
        episodes,
        concept_alarm=verdict.alarm,
        accuracy_fell=fell,
        enabled=settings.retrain_on_drift,
        now_ms=window.start_ms,
        quiet_ms=settings.drift_episode_quiet_hours * HOUR_MS,
    )
    reasons.extend(request.reasons)
    window_held = holdout_mask(schema, rows, settings.seed)
    history_held = holdout_mask(schema, history, settings.seed) if not history.empty else None
    pool = history if history_held is None else history[~history_held]
    train, weights, note = fine_tune_set(settings, window, rows[~window_held], pool, change)
    reasons.append(note)
    held_past = history if history_held is None else history[history_held]
    held = pd.concat([held_past, rows[window_held]], ignore_index=True)
    holdouts, judge_on = holdouts_for(settings, window.end_ms, held, change)
    if judge_on:
        reasons.append(f"judged on the {len(holdouts[CURRENT])} held-out rows since the change")
    elif CURRENT in holdouts:
        reasons.append(
            f"only {len(holdouts[CURRENT])} held-out rows since the change (fewer than "
            f"{settings.min_current_holdout_rows}): judged on every holdout"
        )
    return WindowPlan(
        train=train,
        weights=weights,
        holdouts=holdouts,
        judge_on=judge_on,
        alarm=verdict,
        alarm_state=state,
        episodes=episodes_after,
        retrain=request,
        change_start_ms=change,
        consider_reuse=verdict.alarm,
        reuse_rows=_reuse_rows(held, rows[window_held], state, verdict.alarm),
        reuse_floor=state.expected - state.margin,
        reasons=tuple(reasons),
    )


def retrain_after_reuse(request: RetrainRequest, reused_version: str | None) -> RetrainRequest:
    """A past champion brought back answers the alarm that asked for a retrain.

    The retrain would learn the rows since the change point, which after a concept that came
    back within the merge span mix both concepts, and its gate would judge the reused model
    on them: in the recurring benchmark it replaced the reused champion each time, and the
    returning concept was relearned over days instead of served at once. A new fall of the
    reused model is a new alarm.
    """
    if reused_version is None or not request.retrain:
        return request
    why = f"no {request.rule} retrain: version {reused_version} was brought back for this fall"
    return RetrainRequest(False, None, (*request.reasons, why))


def _reuse_rows(
    held: pd.DataFrame, window_held: pd.DataFrame, alarm: AccuracyAlarm, alarmed: bool
) -> pd.DataFrame:
    """Held-out rows of this fall alone, where past champions are scored.

    The change point merges a fall within a week of the last change into it (a model fitted
    on the change's first windows misses its other hours and days), but a past concept that
    comes back within that week is a new fall: scored on the rows since the merged start,
    which mix the two concepts, no past champion looks better, and the returning concept
    waits for the merge to lapse.
    """
    if not alarmed or alarm.fall_start_ms is None:
        return window_held
    return _since(held, alarm.fall_start_ms)


# --- the full retrain ------------------------------------------------------------------------


def plan_retrain(
    schema: StreamSchema,
    settings: Settings,
    frame: pd.DataFrame,
    end_ms: int,
    *,
    change_start_ms: int | None = None,
    agrees: Model | None = None,
) -> RetrainPlan:
    """Plan a retrain over a range: hash holdout kept out everywhere, nothing else withheld.

    After a change (`change_start_ms` from the alarm), the post-change rows train at full
    weight; older rows train at full weight only where `agrees` (a model of the new concept,
    e.g. the fine-tuned champion) predicts their label, else at `old_concept_weight`; the
    challenger is judged on post-change held-out rows alone. Without a change (the nightly
    retrain), every row trains with a recency weight. Vocabularies and the reference profile
    come from the whole range's feature values, the holdout period included.
    """
    held = holdout_mask(schema, frame, settings.seed)
    trainable, held_rows = frame[~held], frame[held]
    if change_start_ms is not None and change_start_ms <= frame["_event_ms"].min():
        change_start_ms = None  # the whole range is the current concept: as a nightly retrain
    vocabulary = frame[schema.feature_names]
    post = _since(trainable, change_start_ms)
    if change_start_ms is not None and len(post) >= settings.min_change_rows:
        old = trainable[trainable["_event_ms"] < change_start_ms]
        train, weights, reasons = _learn_new_concept(schema, settings, post, old, agrees)
        holdouts = {CURRENT: _since(held_rows, change_start_ms)}
        reasons.append(f"judged on the {len(holdouts[CURRENT])} held-out rows since the change")
        probe = post.reset_index(drop=True) if agrees is None and len(old) else None
        return RetrainPlan(
            train,
            weights,
            holdouts,
            (CURRENT,),
            vocabulary,
            change_start_ms,
            tuple(reasons),
            probe,
        )
    reasons = []
    if change_start_ms is not None:
        reasons.append(
            f"only {len(post)} training rows since the change (fewer than "
            f"{settings.min_change_rows}): the whole range, weighted to the present"
        )
    weights = recency_weights(
        trainable["_event_ms"].to_numpy(), end_ms, settings.recency_half_life_hours
    )
    last_day = trainable["_event_ms"].to_numpy() >= end_ms - 24 * HOUR_MS
    recent_share = float(weights[last_day].sum()) / max(float(weights.sum()), 1e-12)
    reasons.append(
        f"retrain on {len(trainable)} rows weighted with a {settings.recency_half_life_hours:g} h "
        f"half-life: the last 24 h carry {recent_share:.0%} of the weight"
    )
    holdouts, _ = holdouts_for(settings, end_ms, held_rows, None)
    holdouts["long"] = _since(held_rows, end_ms - settings.holdout_hours * HOUR_MS)
    return RetrainPlan(
        trainable.reset_index(drop=True), weights, holdouts, None, vocabulary, None, tuple(reasons)
    )


def plan_retrain_on_new_concept(
    schema: StreamSchema,
    settings: Settings,
    frame: pd.DataFrame,
    end_ms: int,
    *,
    change_start_ms: int | None,
    fit_probe: Fit,
    returned: Model | None = None,
) -> RetrainPlan:
    """`plan_retrain`, with the older rows judged by a probe fitted on the post-change rows.

    Weighting old rows down is not enough when a feature such as the day of week tells the
    concepts apart: a weekday seen only in old rows keeps the old rules, whatever its weight.
    A probe that has seen the new concept alone keeps only the old rows it agrees with, so
    every weekday learns the new rules where they differ. The executor (`tasks/cycle.py`) and
    the benchmark's replica call this with their own fit.

    When a past champion was brought back for this change (`returned`, the serving model;
    `AccuracyAlarm.serves_returned_concept`), it judges the old rows instead: it knows the
    returning concept on the days and hours the rows since the change do not show yet, where
    a probe of those rows would drop the concept's own old weekend rows and keep the
    interlude's (in the recurring benchmark the next Saturday fell to 0.52).
    """
    plan = plan_retrain(schema, settings, frame, end_ms, change_start_ms=change_start_ms)
    if plan.probe is None:
        return plan
    if returned is not None:
        judged = plan_retrain(
            schema, settings, frame, end_ms, change_start_ms=change_start_ms, agrees=returned
        )
        note = "older rows judged by the champion brought back for this change"
        return replace(judged, reasons=(*judged.reasons, note))
    probe = fit_probe(plan.probe, plan.vocabulary, np.ones(len(plan.probe)))
    judged = plan_retrain(
        schema, settings, frame, end_ms, change_start_ms=change_start_ms, agrees=probe
    )
    note = f"older rows judged by a probe fitted on the {len(plan.probe)} rows since the change"
    return replace(judged, reasons=(*judged.reasons, note))


def _learn_new_concept(
    schema: StreamSchema,
    settings: Settings,
    post: pd.DataFrame,
    old: pd.DataFrame,
    agrees: Model | None,
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Post-change rows at full weight; old rows only where the new concept agrees with their
    labels, or (no model to judge them) weighted down."""
    low = settings.old_concept_weight
    if agrees is not None:
        keep = agreement(schema, old, agrees)
        old, old_weights = old[keep], np.ones(int(keep.sum()))
        how = f"{len(old)} of {len(keep)} older rows agree with the new concept and train too"
    else:
        # Together they weigh at most `low` times the new rows: a fortnight of old rows must
        # not outvote one day of the new concept.
        each = min(low, low * len(post) / len(old)) if len(old) else 0.0
        old_weights = np.full(len(old), each)
        how = f"{len(old)} older rows weigh {each:.3g} each (no model of the new concept)"
    train = pd.concat([post, old], ignore_index=True)
    weights = np.concatenate([np.ones(len(post)), old_weights])
    share = len(post) / weights.sum() if weights.sum() else 1.0
    reasons = [
        f"retrain on the {len(post)} rows since the change (weight 1; {share:.0%} of the "
        f"weight); {how}"
    ]
    return train, weights, reasons
