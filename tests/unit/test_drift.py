"""Data drift against a reference profile, and the Page-Hinkley concept-drift detector."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.drift import (
    ConceptDriftDetector,
    ReferenceProfile,
    build_reference,
    check_data_drift,
    psi,
)
from tasks.schema import decode_record, load_schema
from tasks.simulator import DEFAULT_START, NEW_SUBURB, SimulationConfig, generate

ROOT = Path(__file__).resolve().parents[2]
DRONE = load_schema(ROOT / "schemas" / "drone.yaml")
WEEK_MS = int((DEFAULT_START + timedelta(days=7)).timestamp() * 1000)


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    """Eight simulated days; 20 new stores in a new suburb appear on day 8."""
    config = SimulationConfig(
        hours=8 * 24, scenario="new-stores", seed=1, drift_at=DEFAULT_START + timedelta(days=7)
    )
    rows = [decode_record(DRONE, r.value) for r in generate(config)]
    return pd.DataFrame(rows, columns=[*DRONE.columns, "_event_ms"])


@pytest.fixture(scope="module")
def week(stream: pd.DataFrame) -> pd.DataFrame:
    return stream[stream["_event_ms"] < WEEK_MS]


@pytest.fixture(scope="module")
def reference(week: pd.DataFrame) -> ReferenceProfile:
    return build_reference(DRONE, week)


def _hour(frame: pd.DataFrame, day: int, hour: int) -> pd.DataFrame:
    return frame[(frame["day_of_week"] == day) & (frame["hour"] == hour)]


def _used(report_rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {r["feature"]: r for r in report_rows if r["used"]}


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift() -> None:
    base = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(base, base) == pytest.approx(0.0)
    assert psi(base, np.array([0.2, 0.3, 0.25, 0.25])) < psi(base, np.array([0.1, 0.4, 0.25, 0.25]))
    assert np.isfinite(psi(base, np.array([0.0, 0.5, 0.5, 0.0])))  # smoothed, not infinite


@pytest.mark.parametrize(("day", "hour"), [(1, 9), (3, 12), (7, 16)])
def test_window_from_the_reference_distribution_shows_no_drift(
    reference: ReferenceProfile, week: pd.DataFrame, day: int, hour: int
) -> None:
    report = check_data_drift(DRONE, reference, _hour(week, day, hour), recent=week)
    assert report.overall == "none", report.table()
    assert report.new_categories == {}


def test_hour_and_day_of_week_are_not_compared(
    reference: ReferenceProfile, week: pd.DataFrame
) -> None:
    report = check_data_drift(DRONE, reference, _hour(week, 2, 10))
    checked = {f.feature for f in report.features}
    assert checked == {f.name for f in DRONE.features if f.drift_check}
    assert not {"hour", "day_of_week"} & checked


def test_shifted_numeric_feature_is_severe(reference: ReferenceProfile, week: pd.DataFrame) -> None:
    window = _hour(week, 4, 13).copy()
    window["avg_delivery_minutes"] += 15.0
    report = check_data_drift(DRONE, reference, window)
    row = _used(report.table())["avg_delivery_minutes"]
    assert row["verdict"] == "severe" and row["test"] == "ks"
    assert row["p_value"] is not None and row["p_value"] < 0.01  # type: ignore[operator]
    assert row["threshold"] == 0.25
    assert report.overall == "severe"
    assert _used(report.table())["avg_rating"]["verdict"] == "none"


def test_new_stores_and_a_new_suburb_are_reported_by_name(
    reference: ReferenceProfile, stream: pd.DataFrame
) -> None:
    window = _hour(stream[stream["_event_ms"] >= WEEK_MS], 1, 11)
    report = check_data_drift(DRONE, reference, window)
    assert report.new_categories == {"store_id": list(range(101, 121)), "suburb": [NEW_SUBURB]}
    assert report.overall == "severe"
    signal = report.to_signal(concept_drift_alarm=True)
    assert signal.data_drift == "severe" and signal.concept_drift_alarm
    assert signal.new_categories["suburb"] == [NEW_SUBURB]


def test_small_window_is_judged_on_the_recent_period(
    reference: ReferenceProfile, week: pd.DataFrame
) -> None:
    shifted = week[week["day_of_week"] == 6].assign(avg_rating=lambda f: f["avg_rating"] - 1.0)
    window = shifted.iloc[:10]
    alone = check_data_drift(DRONE, reference, window)
    assert alone.overall == "none"  # ten rows are too few to judge
    assert "fewer than 50 rows" in _used(alone.table())["avg_rating"]["note"]  # type: ignore[operator]
    with_recent = check_data_drift(DRONE, reference, window, recent=shifted)
    used = _used(with_recent.table())
    assert used["avg_rating"]["scope"] == "recent" and used["avg_rating"]["verdict"] == "severe"
    assert with_recent.overall == "severe"


def test_large_window_is_judged_on_itself_with_the_recent_period_alongside(
    reference: ReferenceProfile, week: pd.DataFrame
) -> None:
    shifted_recent = week.assign(avg_rating=week["avg_rating"] - 1.0)
    report = check_data_drift(DRONE, reference, _hour(week, 5, 14), recent=shifted_recent)
    assert report.overall == "none"
    recent_rows = [r for r in report.table() if r["scope"] == "recent"]
    assert recent_rows and not any(r["used"] for r in recent_rows)
    assert {r["feature"]: r["verdict"] for r in recent_rows}["avg_rating"] == "severe"


def test_profile_json_round_trip(reference: ReferenceProfile, week: pd.DataFrame) -> None:
    text = reference.to_json()
    loaded = ReferenceProfile.from_json(text)
    assert loaded == reference
    assert isinstance(loaded.categorical["store_id"].values[0], int)
    assert isinstance(loaded.categorical["suburb"].values[0], str)
    assert len(loaded.numeric["avg_rating"].sample) <= 500
    window = _hour(week, 3, 15)
    assert check_data_drift(DRONE, loaded, window) == check_data_drift(DRONE, reference, window)
    json.dumps(check_data_drift(DRONE, loaded, window).table())


def test_empty_reference_is_refused(week: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        build_reference(DRONE, week.iloc[:0])


# --- concept drift -------------------------------------------------------------------------------


def _accuracies(seed: int, stable: int, dropped: int) -> list[float]:
    """Per-window accuracy on ~100 rows: 0.9 (std 0.03), then a sustained drop to 0.7."""
    rng = np.random.default_rng(seed)
    means = [0.9] * stable + [0.7] * dropped
    return [float(np.clip(rng.normal(m, 0.03), 0.0, 1.0)) for m in means]


def _first_alarm(accuracies: list[float]) -> int | None:
    detector = ConceptDriftDetector()
    for i, accuracy in enumerate(accuracies):
        if detector.update(1.0 - accuracy, weight=100):
            return i
    return None


def test_detector_matches_rivers_published_page_hinkley_example() -> None:
    # River's PageHinkley docstring: "Change detected at index 1006, input value: 5" with its
    # defaults; values and thresholds are scaled by 1/7 (the test is linear in them).
    rng = random.Random(12345)
    stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    detector = ConceptDriftDetector(min_instances=30, delta=0.005 / 7, threshold=50 / 7)
    hits = [(i, v) for i, v in enumerate(stream) if detector.update(v / 7)]
    assert hits == [(1006, 5)]


def test_stable_accuracy_raises_no_alarm_over_two_weeks() -> None:
    alarms = [_first_alarm(_accuracies(seed, stable=112, dropped=0)) for seed in range(20)]
    assert sum(a is not None for a in alarms) <= 1


def test_sustained_accuracy_drop_alarms_within_eight_windows() -> None:
    for seed in range(20):
        first = _first_alarm(_accuracies(seed, stable=48, dropped=24))
        assert first is not None and 48 <= first < 48 + 8, (seed, first)


def test_one_bad_hour_does_not_alarm() -> None:
    detector = ConceptDriftDetector()
    for accuracy in [0.9] * 30 + [0.5] + [0.9] * 30:
        assert not detector.update(1.0 - accuracy, weight=100)


def test_weight_counts_as_that_many_records() -> None:
    once, repeated = ConceptDriftDetector(), ConceptDriftDetector()
    once.update(0.2, weight=3)
    for _ in range(3):
        repeated.update(0.2)
    assert once == repeated


def test_detector_state_round_trip_resumes_identically() -> None:
    accuracies = _accuracies(seed=7, stable=48, dropped=24)
    original = ConceptDriftDetector()
    for accuracy in accuracies[:50]:
        original.update(1.0 - accuracy, weight=100)
    resumed = ConceptDriftDetector.from_json(original.to_json())
    assert resumed == original
    rest = accuracies[50:]
    assert [original.update(1 - a, 100) for a in rest] == [resumed.update(1 - a, 100) for a in rest]
    assert resumed == original


def test_alarm_is_kept_until_the_next_update_then_the_detector_starts_afresh() -> None:
    detector = ConceptDriftDetector()
    for accuracy in _accuracies(seed=1, stable=48, dropped=8):
        if detector.update(1.0 - accuracy, weight=100):
            break
    assert detector.alarm
    detector.update(0.1, weight=100)
    assert not detector.alarm and detector.sample_count == 101
    detector.reset()
    assert detector == ConceptDriftDetector()


def test_detector_refuses_an_error_rate_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="not in"):
        ConceptDriftDetector().update(1.5)
