"""Issue 13's alarm and recovery measures on small hand-made window series."""

from __future__ import annotations

from collections.abc import Collection

from bench.quality_metrics import (
    alarm_delay_windows,
    drift_retrains,
    dummy_alarm,
    false_alarms,
    pre_change_level,
    windows_to_recover,
)
from bench.strategy import WindowRecord

HOUR_MS = 3_600_000
CHANGE_MS = 30 * HOUR_MS


def series(
    accuracy_percent: list[int], alarms: Collection[int] = (), retrains: Collection[int] = ()
) -> list[WindowRecord]:
    """One 100-row window per hour from hour 0; index i has the given accuracy in percent."""
    return [
        WindowRecord(i * HOUR_MS, 100, a, 0, 0, 0, i in alarms, i in retrains)
        for i, a in enumerate(accuracy_percent)
    ]


def test_alarm_delay_counts_windows_from_the_change_and_ignores_earlier_alarms() -> None:
    records = series([95] * 40, alarms={3, 32})
    assert alarm_delay_windows(records, CHANGE_MS) == 2
    assert alarm_delay_windows(records, 33 * HOUR_MS) is None
    assert alarm_delay_windows(series([95] * 40, alarms={30}), CHANGE_MS) == 0


def test_pre_change_level_is_the_accuracy_of_the_day_before() -> None:
    records = series([50] * 6 + [90] * 24 + [40] * 10)
    assert pre_change_level(records, CHANGE_MS) == 0.90
    assert pre_change_level(records, 0) is None


def test_recovery_needs_four_windows_in_a_row_within_two_points() -> None:
    # Day before: 95 %. After the change: a dip, one good window, a relapse, then good.
    after = [40, 60, 94, 80, 93, 96, 94, 95, 95]
    records = series([95] * 30 + after)
    assert windows_to_recover(records, CHANGE_MS) == 4  # 93 is within 2 points, 92 would not be
    worse = series([95] * 30 + [40, 60, 94, 80, 92, 96, 94, 95, 95])
    assert windows_to_recover(worse, CHANGE_MS) == 5
    assert windows_to_recover(series([95] * 30 + [95] * 3), CHANGE_MS) is None  # too short
    assert windows_to_recover(series([95] * 34), CHANGE_MS) == 0  # no dip at all


def test_recovery_against_a_given_level() -> None:
    records = series([95] * 30 + [80] * 6)
    assert windows_to_recover(records, CHANGE_MS) is None
    assert windows_to_recover(records, CHANGE_MS, level=0.81) == 0


def test_false_alarms_before_the_change_or_all_without_one() -> None:
    records = series([95] * 40, alarms={1, 5, 31})
    assert false_alarms(records, CHANGE_MS) == 2
    assert false_alarms(records, None) == 3


def test_drift_retrains_count_flagged_windows() -> None:
    assert drift_retrains(series([95] * 10, retrains={2, 7})) == 2
    assert drift_retrains(series([95] * 10)) == 0


def test_the_dummy_alarm_fires_on_every_window() -> None:
    records = dummy_alarm(series([95] * 40))
    assert alarm_delay_windows(records, CHANGE_MS) == 0
    assert false_alarms(records, CHANGE_MS) == 30
    assert false_alarms(records, None) == 40
