"""The simulator: deterministic bytes, the documented busy rules, and each scenario's change."""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tasks import simulator
from tasks.schema import MalformedRecord, decode_record, load_schema
from tasks.simulator import (
    CORRUPTIONS,
    RULES_BASE,
    RULES_SHIFTED,
    SCENARIOS,
    SimRecord,
    SimulationConfig,
    describe_rules,
    expected_counts,
    generate,
    is_busy,
    rules_at,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "drone.yaml")
START = datetime(2024, 1, 1, tzinfo=UTC)
DRIFT_MS = int((START + timedelta(days=14)).timestamp() * 1000)
WEEK_MS = 7 * 86_400_000
FAILING = set(CORRUPTIONS) - {"out_of_range", "duplicate"}
STORES = 40  # fewer than the default 100 keeps the scenario runs quick and still plenty


@cache
def four_weeks(scenario: str, seed: int = 0) -> tuple[SimRecord, ...]:
    """A four-week run, generated once per scenario for the whole module."""
    return tuple(generate(SimulationConfig(scenario=scenario, seed=seed, stores=STORES)))


def good(records: tuple[SimRecord, ...]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.corruption is None]


def agreement(rows: list[dict[str, Any]], rules: simulator.RuleSet) -> float:
    """Share of rows whose label matches `rules` (about 1 - label_noise when they are followed)."""
    hits = [r["busy"] == is_busy(rules, r["store_type"], r["day_of_week"], r["hour"]) for r in rows]
    return sum(hits) / len(hits)


def between(rows: list[dict[str, Any]], start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        stamp = datetime.fromisoformat(row["event_time"].replace("Z", "+00:00"))
        if start_ms <= stamp.timestamp() * 1000 < end_ms:
            out.append(row)
    return out


# --- determinism and shape -------------------------------------------------------------------


def test_same_config_gives_identical_bytes() -> None:
    config = SimulationConfig(
        hours=72,
        scenario="corrupt",
        seed=3,
        out_of_order_share=0.05,
        drift_at=START + timedelta(hours=24),
        corrupt_share=0.2,
    )
    assert list(generate(config)) == list(generate(config))


def test_different_seed_gives_different_records() -> None:
    first = [r.value for r in generate(SimulationConfig(hours=24, seed=1))]
    second = [r.value for r in generate(SimulationConfig(hours=24, seed=2))]
    assert len(first) == len(second)
    assert first != second


def test_a_later_range_replays_the_tail_of_a_longer_run() -> None:
    """Per-hour random streams: backfilling days 3-4 gives the same bytes as a run from day 1."""
    whole = list(generate(SimulationConfig(hours=96, seed=5)))
    tail = list(generate(SimulationConfig(start=START + timedelta(days=2), hours=48, seed=5)))
    assert whole[len(whole) - len(tail) :] == tail


def test_default_run_has_5600_records_per_week() -> None:
    assert expected_counts(SimulationConfig()) == 4 * 5_600
    per_week: defaultdict[int, int] = defaultdict(int)
    for record in generate(SimulationConfig(hours=14 * 24)):
        per_week[(record.event_ms - int(START.timestamp() * 1000)) // WEEK_MS] += 1
    assert dict(per_week) == {0: 5_600, 1: 5_600}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_expected_counts_matches_generate(scenario: str) -> None:
    config = SimulationConfig(scenario=scenario, stores=STORES)
    assert expected_counts(config) == len(four_weeks(scenario))


def test_records_are_in_event_time_order_hour_by_hour() -> None:
    config = SimulationConfig(hours=48, out_of_order_share=0.1)
    stamps = [r.timestamp_ms for r in generate(config)]
    assert stamps == sorted(stamps)
    on_time = [r.event_ms for r in generate(SimulationConfig(hours=48))]
    assert on_time == sorted(on_time)


def test_record_layout_is_canonical_json_keyed_by_store() -> None:
    for record in four_weeks("new-stores")[::97]:
        obj = json.loads(record.value)
        assert record.value == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        assert record.key == str(obj["store_id"]).encode()
        assert record.event_ms == record.timestamp_ms
        assert all(round(obj[f], 2) == obj[f] for f in ("avg_rating", "avg_distance_km"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_good_record_decodes_within_the_schema(scenario: str) -> None:
    config = SimulationConfig()
    for record in four_weeks(scenario):
        if record.corruption is not None:
            continue
        row = decode_record(SCHEMA, record.value)
        assert row["_event_ms"] == record.event_ms
        assert row["hour"] in config.daylight
        for spec in SCHEMA.features:
            if spec.values is not None:
                assert row[spec.name] in spec.values, spec.name
            if spec.min is not None:
                assert row[spec.name] >= spec.min, spec.name
            if spec.max is not None:
                assert row[spec.name] <= spec.max, spec.name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_busy_is_a_minority_class(seed: int) -> None:
    for scenario in ("none", "sudden"):  # base rules, then shifted rules throughout
        config = SimulationConfig(scenario=scenario, seed=seed, hours=7 * 24, drift_at=START)
        share = summarize(generate(config)).busy_share
        assert 0.20 <= share <= 0.35, scenario


def test_four_weeks_give_22400_observations() -> None:
    count = sum(1 for _ in generate(SimulationConfig(scenario="gradual", seed=9)))
    assert count == 22_400


# --- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store_type", "day", "hour", "busy"),
    [
        ("cafe", 1, 9, True),
        ("cafe", 1, 11, False),
        ("cafe", 6, 11, True),
        ("restaurant", 3, 12, True),
        ("restaurant", 5, 16, True),
        ("restaurant", 4, 16, False),
        ("grocery", 7, 15, True),
        ("grocery", 1, 12, False),
        ("pharmacy", 1, 11, True),
        ("pharmacy", 2, 9, False),
        ("bakery", 4, 9, True),
        ("bakery", 4, 10, False),
    ],
)
def test_base_rules(store_type: str, day: int, hour: int, busy: bool) -> None:
    assert is_busy(RULES_BASE, store_type, day, hour) is busy


def test_docs_show_both_rule_tables() -> None:
    docs = (ROOT / "docs" / "simulator.md").read_text()
    daylight = SimulationConfig().daylight
    assert describe_rules(RULES_BASE, daylight) in docs
    assert describe_rules(RULES_SHIFTED, daylight) in docs


def test_labels_follow_the_base_rules_up_to_the_noise() -> None:
    assert 0.93 <= agreement(good(four_weeks("none")), RULES_BASE) <= 0.97


# --- scenarios -------------------------------------------------------------------------------


def test_unknown_scenario_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="new-stores"):
        SimulationConfig(scenario="chaos")


@pytest.mark.parametrize("start", [datetime(2024, 1, 1), datetime(2024, 1, 1, 9, 30, tzinfo=UTC)])
def test_start_must_be_aware_and_on_the_hour(start: datetime) -> None:
    with pytest.raises(ValueError, match="start"):
        SimulationConfig(start=start)


def test_sudden_switches_rules_at_drift_and_changes_nothing_else() -> None:
    rows = good(four_weeks("sudden"))
    before, after = between(rows, 0, DRIFT_MS), between(rows, DRIFT_MS, 2**62)
    assert agreement(before, RULES_BASE) > 0.93
    assert agreement(after, RULES_SHIFTED) > 0.93
    assert agreement(after, RULES_BASE) < 0.8

    def cafe_at_9(part: list[dict[str, Any]]) -> float:
        hits = [r["busy"] for r in part if r["store_type"] == "cafe" and r["hour"] == 9]
        return sum(hits) / len(hits)

    assert cafe_at_9(before) > 0.9 and cafe_at_9(after) < 0.1
    unchanged = good(four_weeks("none"))
    assert [{**r, "busy": 0} for r in rows] == [{**r, "busy": 0} for r in unchanged]


def test_gradual_mixes_in_the_new_rules_over_the_ramp() -> None:
    rows = good(four_weeks("gradual"))
    # Only rows where the two rule sets disagree tell which one was followed.
    split = [
        r
        for r in rows
        if is_busy(RULES_BASE, r["store_type"], r["day_of_week"], r["hour"])
        != is_busy(RULES_SHIFTED, r["store_type"], r["day_of_week"], r["hour"])
    ]
    day_ms = 86_400_000
    shares = []
    for day in range(-1, 8):
        part = between(split, DRIFT_MS + day * day_ms, DRIFT_MS + (day + 1) * day_ms)
        shares.append(agreement(part, RULES_SHIFTED))
    assert shares[0] < 0.1  # the day before drift
    assert shares[-1] > 0.9  # after the seven-day ramp
    assert shares[1] < shares[4] < shares[7]
    assert 0.3 < shares[4] < 0.7  # mid-ramp


def test_gradual_rule_choice_follows_the_elapsed_share_of_the_ramp() -> None:
    config = SimulationConfig(scenario="gradual")
    rng = random.Random(0)
    mid = config.drift_time + config.drift_period / 4
    share = sum(rules_at(config, mid, rng) is RULES_SHIFTED for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28


def test_recurring_brings_the_old_rules_back_every_other_period() -> None:
    rows = good(four_weeks("recurring"))
    week3, week4 = (
        between(rows, DRIFT_MS, DRIFT_MS + WEEK_MS),
        between(rows, DRIFT_MS + WEEK_MS, 2**62),
    )
    assert agreement(between(rows, 0, DRIFT_MS), RULES_BASE) > 0.93
    assert agreement(week3, RULES_SHIFTED) > 0.93
    assert agreement(week4, RULES_BASE) > 0.93


def test_seasonal_distances_rise_and_fall_each_week_while_labels_keep_the_base_rules() -> None:
    rows = good(four_weeks("seasonal"))
    plain = good(four_weeks("none"))
    assert [r["busy"] for r in rows] == [r["busy"] for r in plain]
    assert agreement(rows, RULES_BASE) > 0.93
    day_ms = 86_400_000

    def daily_mean(part: list[dict[str, Any]], name: str) -> list[float]:
        days: dict[int, list[float]] = defaultdict(list)
        for r in part:
            stamp = datetime.fromisoformat(r["event_time"].replace("Z", "+00:00"))
            days[int(stamp.timestamp() * 1000) // day_ms].append(r[name])
        return [sum(v) / len(v) for _, v in sorted(days.items())]

    for name in ("avg_distance_km", "avg_delivery_minutes"):
        season, flat = daily_mean(rows, name), daily_mean(plain, name)
        assert max(season) > 1.3 * max(flat) and min(season) < 0.7 * min(flat), name
        # One cycle a week: the same weekday of consecutive weeks sees the same level.
        assert season[0:7] == pytest.approx(season[7:14], rel=0.05), name
    distances = [r["avg_distance_km"] for r in rows]
    assert min(distances) > 0 and max(distances) <= 30  # inside the schema's range


def test_new_stores_and_their_suburb_appear_only_after_drift() -> None:
    records = four_weeks("new-stores")
    rows = good(records)
    before, after = between(rows, 0, DRIFT_MS), between(rows, DRIFT_MS, 2**62)
    assert {r["store_id"] for r in before} == set(range(1, STORES + 1))
    assert {r["store_id"] for r in after} == set(range(1, STORES + 21))
    assert "Harbourside" not in {r["suburb"] for r in before}
    assert {r["suburb"] for r in after if r["store_id"] > STORES} == {"Harbourside"}
    assert len(after) == 14 * 8 * (STORES + 20)
    # The original stores' observations are exactly those of scenario "none".
    assert [r for r in rows if r["store_id"] <= STORES] == good(four_weeks("none"))


def test_corrupt_breaks_a_share_of_records_after_drift_in_every_way() -> None:
    records = four_weeks("corrupt")
    broken = [r for r in records if r.corruption is not None]
    assert all(r.timestamp_ms >= DRIFT_MS for r in broken)
    after = sum(r.timestamp_ms >= DRIFT_MS for r in records)
    assert 0.014 < len(broken) / after < 0.026
    assert {r.corruption for r in broken} == set(CORRUPTIONS)
    for record in broken:
        if record.corruption in FAILING:
            with pytest.raises(MalformedRecord):
                decode_record(SCHEMA, record.value)
            continue
        row = decode_record(SCHEMA, record.value)  # well-formed: for validation to catch
        if record.corruption == "out_of_range":
            assert (
                row["avg_rating"] > 5
                or row["avg_distance_km"] < 0
                or row["avg_delivery_minutes"] > 120
            )


def test_a_duplicate_repeats_the_previous_good_record() -> None:
    records = four_weeks("corrupt")
    for i, record in enumerate(records):
        if record.corruption == "duplicate":
            previous = next(r for r in reversed(records[:i]) if r.corruption is None)
            assert (record.key, record.value, record.event_ms) == (
                previous.key,
                previous.value,
                previous.event_ms,
            )


def test_unreadable_corrupt_records_keep_their_hour_as_timestamp() -> None:
    for record in four_weeks("corrupt"):
        if record.corruption is not None:
            assert record.timestamp_ms // 3_600_000 * 3_600_000 <= record.event_ms
            assert record.event_ms <= record.timestamp_ms


def test_out_of_order_records_move_back_but_keep_their_place() -> None:
    config = SimulationConfig(
        hours=7 * 24, out_of_order_share=0.05, max_lateness=timedelta(minutes=20)
    )
    records = list(generate(config))
    late = [r for r in records if r.event_ms < r.timestamp_ms]
    assert 0.03 < len(late) / len(records) < 0.07
    assert all(r.timestamp_ms - r.event_ms <= 20 * 60_000 for r in late)
    for record in late:
        row = decode_record(SCHEMA, record.value)
        stamp = datetime.fromtimestamp(record.event_ms / 1000, UTC)
        assert (row["hour"], row["day_of_week"]) == (stamp.hour, stamp.isoweekday())
        assert row["hour"] in config.daylight
    on_time = list(generate(SimulationConfig(hours=7 * 24)))
    assert [r.key for r in records] == [r.key for r in on_time]


def paced_offsets(start: datetime, days: int, skip: bool) -> list[int]:
    config = SimulationConfig(start=start, hours=days * 24, scenario="none", seed=3, stores=5)
    clock = simulator.PacingClock(int(start.timestamp() * 1000), skip_empty_hours=skip)
    return [clock.offset_ms(r.timestamp_ms) for r in simulator.generate(config)]


def test_the_live_pacing_clock_skips_the_nights_so_every_hour_of_wall_time_has_records() -> None:
    hour = 3_600_000
    start = datetime(2026, 2, 2, 17, tzinfo=UTC)  # live starts the hour after a day's last
    skipped = paced_offsets(start, 3, skip=True)
    waited = paced_offsets(start, 3, skip=False)
    gaps = [b - a for a, b in itertools.pairwise(skipped)]
    assert skipped[0] < hour and min(gaps) >= 0 and max(gaps) < 2 * hour
    # three days of 8 observed hours are 24 paced hours, not the 64 stream hours they span
    assert 23 * hour < skipped[-1] < 24 * hour < 63 * hour < waited[-1]
    assert max(b - a for a, b in itertools.pairwise(waited)) > 15 * hour
    # inside an hour nothing changes: the records keep their spacing
    assert skipped[1] - skipped[0] == waited[1] - waited[0]
