"""Issue 13's alarm and recovery measures: pure functions over a strategy's window records.

Windows are counted from the change: the first window at or after the change is window 0, so
an alarm on the first window of the new concept has a delay of 0 windows.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.strategy import WindowRecord
from tasks.adaptation import (  # one definition, shared with the demo's summary line
    DAY_MS,
    RECOVERY_POINTS,
    RECOVERY_RUN,
    after,
    alarm_delay_windows,
    pre_change_level,
    windows_to_recover,
)

__all__ = [
    "DAY_MS",
    "RECOVERY_POINTS",
    "RECOVERY_RUN",
    "after",
    "alarm_delay_windows",
    "concept_alarms",
    "drift_retrains",
    "dummy_alarm",
    "false_alarms",
    "pre_change_level",
    "windows_to_recover",
]


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
