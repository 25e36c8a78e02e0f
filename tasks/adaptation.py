"""How fast the pipeline noticed and adapted to a change (issue 13's measures): windows from
the change to the first alarm, and to accuracy back at its pre-change level.

Pure functions over scored windows in stream order; `make bench` (bench/quality_metrics.py)
and the demo's summary line (tasks/report.py) both use them. Windows are counted from the
change: the first window at or after it is window 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar

DAY_MS = 86_400_000
RECOVERY_POINTS = 0.02  # "back within 2 points of the pre-change day's level"
RECOVERY_RUN = 4  # "... for 4 windows in a row"


class Scored(Protocol):
    """A scored window: when it starts, its rows, how many were predicted right, the alarm."""

    @property
    def start_ms(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def correct(self) -> int: ...
    @property
    def alarm(self) -> bool: ...
    @property
    def accuracy(self) -> float: ...


class ScoredWindow(NamedTuple):
    """The minimal `Scored` window (what a cycle record of the report provides)."""

    start_ms: int
    rows: int
    correct: int
    alarm: bool = False

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else 0.0


W = TypeVar("W", bound=Scored)


def after(records: Sequence[W], change_ms: int) -> list[W]:
    return [r for r in records if r.start_ms >= change_ms]


def alarm_delay_windows(records: Sequence[Scored], change_ms: int) -> int | None:
    """Windows from the change to the first alarm (0: the first new-concept window); None if
    no alarm fires after the change."""
    for index, record in enumerate(after(records, change_ms)):
        if record.alarm:
            return index
    return None


def pre_change_level(records: Sequence[Scored], change_ms: int) -> float | None:
    """Accuracy over the windows of the day before the change (None without any)."""
    day = [r for r in records if change_ms - DAY_MS <= r.start_ms < change_ms]
    rows = sum(r.rows for r in day)
    return sum(r.correct for r in day) / rows if rows else None


def windows_to_recover(
    records: Sequence[Scored],
    change_ms: int,
    level: float | None = None,
    points: float = RECOVERY_POINTS,
    run: int = RECOVERY_RUN,
) -> int | None:
    """Windows from the change until accuracy is back within `points` of `level` (default:
    the pre-change day's) for `run` windows in a row: the index of the first window of that
    run (0: no dip at all). None when it never happens or no level is known."""
    level = pre_change_level(records, change_ms) if level is None else level
    if level is None:
        return None
    streak = 0
    for index, record in enumerate(after(records, change_ms)):
        streak = streak + 1 if record.accuracy >= level - points else 0
        if streak == run:
            return index - run + 1
    return None
