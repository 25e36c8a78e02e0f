"""The seam of section 5: what a strategy under test does each window, and what it records.

The quality benchmark drives every pipeline strategy through `StrategyUnderTest`: per window,
score the window with the serving model, then train and decide, and return one
`WindowRecord` (accuracy counts plus whether a concept alarm fired and whether a drift retrain
was asked for). `bench.replica.Replica` implements it: an executor over an in-memory stream
and registry that runs the pipeline's planner (tasks/plan.py) and decision steps
(tasks/judge.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from tasks.windowing import Window


class WindowRecord(NamedTuple):
    """One scored window: start (ms), rows, correct predictions, tp, fp, fn, and the flags."""

    start_ms: int
    rows: int
    correct: int
    tp: int
    fp: int
    fn: int
    alarm: bool = False  # the concept-drift alarm fired on this window
    drift_retrain: bool = False  # this window asked for a full retrain (any drift rule)

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else 0.0


def score_counts(start_ms: int, truth: np.ndarray, predicted: np.ndarray) -> WindowRecord:
    """Counts of one window's predictions against its labels (both boolean arrays)."""
    return WindowRecord(
        start_ms,
        len(truth),
        int(np.sum(predicted == truth)),
        int(np.sum(predicted & truth)),
        int(np.sum(predicted & ~truth)),
        int(np.sum(~predicted & truth)),
    )


@dataclass
class Outcome:
    """A strategy's per-window records and its counters over the whole replay."""

    windows: list[WindowRecord] = field(default_factory=list)
    retrains: int = 0
    drift_retrains: int = 0
    promotions: int = 0
    rollbacks: int = 0

    def add(self, start_ms: int, truth: np.ndarray, predicted: np.ndarray) -> WindowRecord:
        record = score_counts(start_ms, truth, predicted)
        self.windows.append(record)
        return record

    def flag_last(self, *, alarm: bool, drift_retrain: bool) -> None:
        """Set the flags of the window just scored (they are known only after training)."""
        if self.windows:
            self.windows[-1] = self.windows[-1]._replace(alarm=alarm, drift_retrain=drift_retrain)

    def to_dict(self) -> dict[str, object]:
        """Plain data, to send an outcome back from a worker process."""
        return {
            "windows": [list(w) for w in self.windows],
            "retrains": self.retrains,
            "drift_retrains": self.drift_retrains,
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Outcome:
        windows = data["windows"]
        assert isinstance(windows, list)
        counters = {k: int(v) for k, v in data.items() if k != "windows"}  # type: ignore[call-overload]
        return cls(windows=[WindowRecord(*w) for w in windows], **counters)


class StrategyUnderTest(Protocol):
    """One way of keeping the model up to date, as the benchmark drives it."""

    outcome: Outcome

    def nightly(self, at: datetime) -> None:
        """The scheduled full retrain at the start of a day (a no-op if the strategy has none)."""
        ...

    def step(self, window: Window) -> WindowRecord | None:
        """Score `window` with the serving model, then train and decide; the window's record
        (None when the window has no rows or nothing serves yet)."""
        ...
