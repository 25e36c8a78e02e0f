"""Bringing back a past champion: a recurring concept should cost one window, not days.

Pure: the executor loads the last few distinct champions (tasks/versions.py), and passes them
here as callables producing probabilities; the choice comes back with its reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.schema import StreamSchema

Model = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class ReuseDecision:
    """The past version to bring back (None: none), and why."""

    version: str | None
    reasons: tuple[str, ...]


def score_models(
    schema: StreamSchema, models: Mapping[str, Model], rows: pd.DataFrame
) -> dict[str, float]:
    """Accuracy of each model on `rows` (the newest windows, which none of them trained on)."""
    truth = rows[schema.label.field].to_numpy() == schema.label.positive
    out = {}
    for version, model in models.items():
        predicted = np.asarray(model(rows), dtype=float).reshape(-1) >= 0.5
        out[version] = float(np.mean(predicted == truth)) if len(rows) else float("nan")
    return out


def choose_reuse(
    past: Mapping[str, float],
    champion: float,
    fine_tune: float,
    *,
    rows: int,
    margin: float,
    floor: float = 0.0,
) -> ReuseDecision:
    """The best past champion, if it beats both the champion and a fresh fine-tune by `margin`
    on the same `rows` rows and brings back the level fallen from (`floor`, the alarm's
    expected accuracy less its margin); ties go to the newest version (the highest number).

    The floor keeps reuse for concepts a past champion knew: after a sudden change to a new
    concept, the best of fifteen old-concept champions scored on two dozen rows beats the
    champion by a row or two by chance; brought back, it answered the alarm, so no retrain
    ran, and its low score became the expectation, so the next falls raised no alarm.
    """
    if not past:
        return ReuseDecision(None, ("no past champion to bring back",))
    version, score = sorted(past.items(), key=lambda kv: (-kv[1], -_number(kv[0])))[0]
    bar = max(champion, fine_tune) + margin
    text = (
        f"best past champion version {version}: accuracy {score:.2f} on {rows} newest rows "
        f"vs champion {champion:.2f} and fine-tune {fine_tune:.2f} (margin {margin:.2f})"
    )
    if score < floor:
        return ReuseDecision(
            None,
            (f"{text}: below the {floor:.2f} the champion was expected to keep, not reused",),
        )
    if score >= bar:
        return ReuseDecision(version, (f"{text}: reused version {version}",))
    return ReuseDecision(None, (f"{text}: not clearly better, not reused",))


def past_champions(versions: Sequence[Any], champion: str, days: int) -> list[str]:
    """Candidates to bring back: the last version promoted on each of the last `days` days
    of stream time (by the window it was trained on), the serving champion left out.

    One per day rather than the last few promotions: hourly fine-tunes promote many versions
    of the same concept, and a recurring concept is days old.
    """
    promoted = [
        v
        for v in versions
        if v.lineage is not None and v.lineage.gate_decision == "promoted" and v.version != champion
    ]
    if not promoted:
        return []
    by_day: dict[str, str] = {}
    for v in sorted(promoted, key=lambda v: (v.lineage.window_end, _number(v.version))):
        by_day[v.lineage.window_end[:10]] = v.version
    return [by_day[day] for day in sorted(by_day)[-days:]][::-1]


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1
