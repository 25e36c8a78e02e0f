"""Issue 13's alarm and recovery measures: pure functions over a strategy's window records.

Windows are counted from the change: the first window at or after the change is window 0, so
an alarm on the first window of the new concept has a delay of 0 windows.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.strategy import WindowRecord

DAY_MS = 86_400_000
RECOVERY_POINTS = 0.02  # "back within 2 points of the pre-change day's level"
RECOVERY_RUN = 4  # "... for 4 windows in a row"


def after(records: Sequence[WindowRecord], change_ms: int) -> list[WindowRecord]:
    return [r for r in records if r.start_ms >= change_ms]


def alarm_delay_windows(records: Sequence[WindowRecord], change_ms: int) -> int | None:
    """Windows from the change to the first alarm (0: the first new-concept window); None if
    no alarm fires after the change."""
    for index, record in enumerate(after(records, change_ms)):
        if record.alarm:
            return index
    return None


def pre_change_level(records: Sequence[WindowRecord], change_ms: int) -> float | None:
    """Accuracy over the windows of the day before the change (None without any)."""
    day = [r for r in records if change_ms - DAY_MS <= r.start_ms < change_ms]
    rows = sum(r.rows for r in day)
    return sum(r.correct for r in day) / rows if rows else None


def windows_to_recover(
    records: Sequence[WindowRecord],
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


def false_alarms(records: Sequence[WindowRecord], change_ms: int | None) -> int:
    """Alarms before the change; with no change (None: scenarios `none`, `seasonal`), every
    alarm is false."""
    return sum(1 for r in records if r.alarm and (change_ms is None or r.start_ms < change_ms))


def drift_retrains(records: Sequence[WindowRecord]) -> int:
    """Windows that asked for a full retrain on drift (any rule)."""
    return sum(1 for r in records if r.drift_retrain)


def concept_alarms(records: Sequence[WindowRecord]) -> int:
    return sum(1 for r in records if r.alarm)


def dummy_alarm(records: Sequence[WindowRecord]) -> list[WindowRecord]:
    """The trivial alarm policy: the same windows, an alarm on every one of them."""
    return [r._replace(alarm=True) for r in records]
