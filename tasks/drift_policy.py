"""When drift asks for a full retrain, and which rule asked: a pure decision with memory.

Data drift alone is reported, not acted on: a seasonal feature under stable rules moves
every window, and a retrain per window buys nothing. It retrains together with a fall in
accuracy (not again inside a severe episode already retrained for), or once per episode of
severe drift; a new category value retrains once, not once per window; a concept alarm
always retrains. The memory (`DriftEpisodes`) is serialisable state kept beside the alarm's.

An episode ends only after a quiet stretch (`quiet_ms` of event time without drift), not at
the first calm window: the retrain an episode asks for moves the reference profile, so the
next windows look calm until the season has moved on again, and closing at once made every
step of a season a new episode (11 retrains in 28 days of the `seasonal` benchmark scenario).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from tasks.gate import DriftLevel
from tasks.schema import Scalar

RetrainRule = Literal[
    "concept-alarm", "drift-with-accuracy-fall", "new-category", "severe-drift-episode"
]


@dataclass(frozen=True)
class DriftEpisodes:
    """Drift already acted on: an open severe episode, values already retrained for."""

    severe_open: bool = False
    retrained_values: dict[str, list[Scalar]] = field(default_factory=dict)
    # While an episode is open: start (ms) of the run of windows without drift, if in one.
    quiet_since_ms: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftEpisodes:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RetrainRequest:
    """Whether to retrain, the rule that asked for it (None: no retrain), and why."""

    retrain: bool
    rule: RetrainRule | None
    reasons: tuple[str, ...]


def _unseen(
    new_categories: dict[str, list[Scalar]], episodes: DriftEpisodes
) -> dict[str, list[Scalar]]:
    out = {}
    for feature, values in new_categories.items():
        done = set(episodes.retrained_values.get(feature, []))
        fresh = [v for v in values if v not in done]
        if fresh:
            out[feature] = fresh
    return out


def _remember(
    new_categories: dict[str, list[Scalar]],
    episodes: DriftEpisodes,
    severe_open: bool,
    quiet_since_ms: int | None,
) -> DriftEpisodes:
    merged = {k: list(v) for k, v in episodes.retrained_values.items()}
    for feature, values in new_categories.items():
        merged[feature] = sorted(
            {*merged.get(feature, []), *values}, key=lambda v: (str(type(v)), v)
        )
    return DriftEpisodes(severe_open, merged, quiet_since_ms if severe_open else None)


def _episode(
    data_drift: DriftLevel, episodes: DriftEpisodes, now_ms: int | None, quiet_ms: int
) -> tuple[bool, int | None]:
    """(episode open after this window, start of its quiet run): severe opens or continues
    it, mild continues it, a window without drift starts or extends a quiet run, and a run
    of `quiet_ms` ends it (at once when the window's time is not given)."""
    if data_drift == "severe":
        return True, None
    if data_drift == "mild" or not episodes.severe_open:
        return episodes.severe_open, None
    if now_ms is None:
        return False, None
    since = episodes.quiet_since_ms if episodes.quiet_since_ms is not None else now_ms
    return now_ms - since < quiet_ms, since


def decide_retrain(
    data_drift: DriftLevel,
    new_categories: dict[str, list[Scalar]],
    episodes: DriftEpisodes,
    *,
    concept_alarm: bool,
    accuracy_fell: bool,
    enabled: bool = True,
    now_ms: int | None = None,
    quiet_ms: int = 0,
) -> tuple[RetrainRequest, DriftEpisodes]:
    """(request, next memory) for one window (starting at `now_ms`); the request names the
    rule that decided."""
    fresh = _unseen(new_categories, episodes)
    severe_open, quiet_since = _episode(data_drift, episodes, now_ms, quiet_ms)
    after = _remember(new_categories, episodes, severe_open, quiet_since)
    names = "; ".join(f"{k}: {', '.join(map(str, v[:5]))}" for k, v in sorted(fresh.items()))
    rule: RetrainRule | None = None
    if concept_alarm:
        rule, why = "concept-alarm", "concept alarm on live accuracy"
    elif data_drift != "none" and accuracy_fell and not episodes.severe_open:
        rule, why = "drift-with-accuracy-fall", f"{data_drift} data drift with a fall in accuracy"
    elif fresh:
        rule, why = "new-category", f"new category values, first seen: {names}"
    elif data_drift == "severe" and not episodes.severe_open:
        rule, why = "severe-drift-episode", "severe data drift: a new episode (one retrain each)"
    if rule is None:
        quiet = _quiet_reason(data_drift, episodes.severe_open, new_categories, accuracy_fell)
        return RetrainRequest(False, None, (quiet,)), after
    if not enabled:
        off = f"{why}: a retrain would be due (rule {rule}) but retrain_on_drift is off"
        return RetrainRequest(False, None, (off,)), after
    return RetrainRequest(True, rule, (f"retrain requested by rule {rule}: {why}",)), after


def _quiet_reason(
    data_drift: DriftLevel,
    severe_open: bool,
    new_categories: dict[str, list[Scalar]],
    accuracy_fell: bool,
) -> str:
    if data_drift != "none" and accuracy_fell and severe_open:
        return (
            "accuracy fell inside a severe drift episode already retrained for: reported, no "
            "retrain (a concept alarm would retrain)"
        )
    if new_categories:
        return "new category values already retrained for once: reported, no retrain"
    if data_drift == "severe" and severe_open:
        return "severe data drift, same episode already retrained for: reported, no retrain"
    if data_drift != "none":
        return f"{data_drift} data drift without a fall in accuracy: reported, no retrain"
    return "no drift calls for a retrain"
