"""Section 5's ceiling: an oracle that knows the simulator's rules, the mark no learner beats."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bench.ceiling import oracle_outcome
from bench.quality_goals import check, summary
from bench.quality_report import ceiling_stats
from bench.replica import simulated_frame
from tasks.schema import load_schema
from tasks.simulator import RULES_BASE, RULES_SHIFTED, SimulationConfig, rules_at, shifted_share
from tests.integration.helpers import DRONE

START = datetime(2024, 1, 1, tzinfo=UTC)
DRIFT = START + timedelta(days=1)
HOUR_MS = 3_600_000


def _config(scenario: str, noise: float = 0.0) -> SimulationConfig:
    return SimulationConfig(
        start=START,
        hours=4 * 24,
        scenario=scenario,
        seed=5,
        stores=30,
        drift_at=DRIFT,
        drift_period=timedelta(days=2),
        label_noise=noise,
    )


def test_the_shifted_share_ramps_on_gradual_and_flips_on_recurring() -> None:
    gradual, recurring = _config("gradual"), _config("recurring")
    assert shifted_share(gradual, DRIFT - timedelta(hours=1)) == 0.0
    assert shifted_share(gradual, DRIFT + timedelta(days=1)) == pytest.approx(0.5)
    assert shifted_share(gradual, DRIFT + timedelta(days=5)) == 1.0
    assert shifted_share(recurring, DRIFT + timedelta(days=1)) == 1.0
    assert shifted_share(recurring, DRIFT + timedelta(days=3)) == 0.0  # the old concept is back
    assert shifted_share(_config("none"), DRIFT + timedelta(days=1)) == 0.0


def test_rules_follow_the_share_the_oracle_reads() -> None:
    rng = random.Random(1)
    for scenario in ("none", "sudden", "recurring"):
        config = _config(scenario)
        for hours in range(0, 96, 7):
            at = START + timedelta(hours=hours)
            expected = RULES_SHIFTED if shifted_share(config, at) == 1.0 else RULES_BASE
            assert rules_at(config, at, rng) is expected, (scenario, hours)
    gradual = _config("gradual")
    halfway = DRIFT + timedelta(days=1)
    drawn = [rules_at(gradual, halfway, rng) is RULES_SHIFTED for _ in range(2000)]
    assert np.mean(drawn) == pytest.approx(0.5, abs=0.05)


def _accuracy(scenario: str, noise: float) -> tuple[float, float]:
    """The oracle's accuracy before the drift and after it, over the whole stream."""
    config = _config(scenario, noise)
    frame = simulated_frame(load_schema(DRONE), config)
    first, last = int(START.timestamp() * 1000), int(frame["_event_ms"].max()) + 1
    windows = oracle_outcome(config, frame, first, last, HOUR_MS).windows
    drift_ms = int(DRIFT.timestamp() * 1000)

    def share(records: list) -> float:
        return sum(r.correct for r in records) / sum(r.rows for r in records)

    return (
        share([w for w in windows if w.start_ms < drift_ms]),
        share([w for w in windows if w.start_ms >= drift_ms]),
    )


def test_without_label_noise_the_oracle_is_always_right_where_the_rules_are_certain() -> None:
    assert _accuracy("sudden", 0.0) == (1.0, 1.0)
    assert _accuracy("recurring", 0.0) == (1.0, 1.0)


def test_the_gradual_ramp_costs_even_the_oracle_and_label_noise_costs_about_its_share() -> None:
    before, after = _accuracy("gradual", 0.0)
    assert before == 1.0 and 0.8 < after < 1.0  # records on the ramp follow either rule set
    noisy_before, _ = _accuracy("sudden", 0.1)
    assert noisy_before == pytest.approx(0.9, abs=0.03)


def test_the_goals_table_shows_the_ceiling_beside_the_mean_accuracy() -> None:
    figure = {"value": 87.3, "unit": "%"}
    stats = {
        "gradual": {
            "default": {"mean_accuracy": figure},
            "ceiling": {"mean_accuracy": {"value": 92.46, "unit": "%"}},
        }
    }
    (row,) = check(stats, [])
    assert row["measured"] == "87.3 % (ceiling 92.5 %)" and row["met"] is False
    del stats["gradual"]["ceiling"]
    assert check(stats, [])[0]["measured"] == "87.3 %"


def test_a_recovery_goal_shows_the_oracles_own_recovery_on_the_same_measure() -> None:
    stats = {
        "sudden": {
            "default": {"mean_accuracy": {"value": 92.2, "unit": "%"}, "windows_to_recover": 39},
            "ceiling": {"mean_accuracy": {"value": 95.1, "unit": "%"}, "windows_to_recover": 18},
        }
    }
    recovery = next(r for r in check(stats, []) if r["goal"] == "back within 8 windows")
    assert recovery["measured"] == "39 (ceiling 18)" and recovery["met"] is False
    del stats["sudden"]["ceiling"]["windows_to_recover"]
    recovery = next(r for r in check(stats, []) if r["goal"] == "back within 8 windows")
    assert recovery["measured"] == "39"


def test_the_ceiling_row_measures_the_oracles_recovery_from_its_windows() -> None:
    config = _config("recurring")  # no label noise: the oracle never dips
    frame = simulated_frame(load_schema(DRONE), config)
    first, last = int(START.timestamp() * 1000), int(frame["_event_ms"].max()) + 1
    oracle = oracle_outcome(config, frame, first, last, HOUR_MS)
    drift_ms = int(DRIFT.timestamp() * 1000)
    row = ceiling_stats(oracle, drift_ms, "recurring")
    assert row["windows_to_recover"] == 0 and "windows_to_recover_on_return" in row
    assert row["mean_accuracy"]["value"] == 100.0
    assert ceiling_stats(oracle, drift_ms, "none")["windows_to_recover"] is None  # no change


def test_the_summary_names_each_missed_goal_with_its_measure_in_one_pair_of_parentheses() -> None:
    stats = {
        "sudden": {
            "default": {"mean_accuracy": {"value": 92.2, "unit": "%"}, "windows_to_recover": 29},
            "ceiling": {"mean_accuracy": {"value": 95.1, "unit": "%"}, "windows_to_recover": 18},
        }
    }
    line = summary(check(stats, []))
    assert "sudden: back within 8 windows, measured 29 (ceiling 18)" in line
    assert "((" not in line and "))" not in line and line.startswith("1 of 3 goals")
