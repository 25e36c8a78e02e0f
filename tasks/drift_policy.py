"""When drift asks for a full retrain, and which rule asked: a pure decision with memory.

Data drift alone is reported, not acted on: a seasonal feature under stable rules moves
every window, and a retrain per window buys nothing. It retrains together with a fall in
accuracy, or once per episode of severe drift; a new category value retrains once, not once
per window; a concept alarm always retrains. The memory (`DriftEpisodes`) is serialisable
state kept beside the alarm's.
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
    new_categories: dict[str, list[Scalar]], episodes: DriftEpisodes, severe_open: bool
) -> DriftEpisodes:
    merged = {k: list(v) for k, v in episodes.retrained_values.items()}
    for feature, values in new_categories.items():
        merged[feature] = sorted(
            {*merged.get(feature, []), *values}, key=lambda v: (str(type(v)), v)
        )
    return DriftEpisodes(severe_open=severe_open, retrained_values=merged)


def decide_retrain(
    data_drift: DriftLevel,
    new_categories: dict[str, list[Scalar]],
    episodes: DriftEpisodes,
    *,
    concept_alarm: bool,
    accuracy_fell: bool,
    enabled: bool = True,
) -> tuple[RetrainRequest, DriftEpisodes]:
    """(request, next memory) for one window; the request names the rule that decided."""
    fresh = _unseen(new_categories, episodes)
    severe_open = episodes.severe_open if data_drift == "mild" else data_drift == "severe"
    after = _remember(new_categories, episodes, severe_open)
    names = "; ".join(f"{k}: {', '.join(map(str, v[:5]))}" for k, v in sorted(fresh.items()))
    rule: RetrainRule | None = None
    if concept_alarm:
        rule, why = "concept-alarm", "concept alarm on live accuracy"
    elif data_drift != "none" and accuracy_fell:
        rule, why = "drift-with-accuracy-fall", f"{data_drift} data drift with a fall in accuracy"
    elif fresh:
        rule, why = "new-category", f"new category values, first seen: {names}"
    elif data_drift == "severe" and not episodes.severe_open:
        rule, why = "severe-drift-episode", "severe data drift: a new episode (one retrain each)"
    if rule is None:
        quiet = _quiet_reason(data_drift, episodes.severe_open, new_categories)
        return RetrainRequest(False, None, (quiet,)), after
    if not enabled:
        off = f"{why}: a retrain would be due (rule {rule}) but retrain_on_drift is off"
        return RetrainRequest(False, None, (off,)), after
    return RetrainRequest(True, rule, (f"retrain requested by rule {rule}: {why}",)), after


def _quiet_reason(
    data_drift: DriftLevel, severe_open: bool, new_categories: dict[str, list[Scalar]]
) -> str:
    if new_categories:
        return "new category values already retrained for once: reported, no retrain"
    if data_drift == "severe" and severe_open:
        return "severe data drift, same episode already retrained for: reported, no retrain"
    if data_drift != "none":
        return f"{data_drift} data drift without a fall in accuracy: reported, no retrain"
    return "no drift calls for a retrain"
