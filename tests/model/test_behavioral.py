"""Behavioural tests of a trained model (Made-With-ML style): it learned the rule, not noise.

The data follow a simple rule written here: cafes are busy at 9h, restaurants at 12h and 13h,
nothing else is. Store id, day, suburb, delivery time, distance and rating are noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import model as m
from tasks.schema import StreamSchema, load_schema
from tasks.settings import PROJECT_ROOT, Settings

SUBURBS = ["Carlton", "Fitzroy", "Richmond", "Brunswick"]


def is_busy(store_type: np.ndarray, hour: np.ndarray) -> np.ndarray:
    cafe = (store_type == "cafe") & (hour == 9)
    restaurant = (store_type == "restaurant") & np.isin(hour, [12, 13])
    return cafe | restaurant


def observations(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Busy hours are drawn more often so that the positive class is not a rare event.
    hours = np.arange(7, 21)
    weights = np.where(np.isin(hours, [9, 12, 13]), 4.0, 1.0)
    hour = rng.choice(hours, rows, p=weights / weights.sum())
    store_type = rng.choice(["cafe", "restaurant", "grocery", "pharmacy", "bakery"], rows)
    return pd.DataFrame(
        {
            "event_time": ["2024-05-06T09:00:00+00:00"] * rows,
            "store_id": rng.integers(1, 41, rows),
            "day_of_week": rng.integers(1, 8, rows),
            "hour": hour,
            "store_type": pd.array(store_type, dtype="str"),
            "suburb": pd.array(rng.choice(SUBURBS, rows), dtype="str"),
            "avg_delivery_minutes": rng.uniform(5, 60, rows),
            "avg_distance_km": rng.uniform(0, 12, rows),
            "avg_rating": rng.uniform(1, 5, rows),
            "busy": is_busy(store_type, hour).astype(int),
        }
    )


@pytest.fixture(scope="module")
def schema() -> StreamSchema:
    return load_schema(PROJECT_ROOT / "schemas" / "drone.yaml")


@pytest.fixture(scope="module")
def model(schema: StreamSchema) -> m.keras.Model:
    settings = Settings(seed=3)
    frame = observations(2500, seed=0)
    trained = m.build_model(schema, settings, frame)
    m.train(trained, schema, frame, epochs=15, learning_rate=5e-3, batch_size=64, seed=3)
    return trained


def one_row(store_type: str, hour: int, **changes: object) -> pd.DataFrame:
    row: dict[str, object] = {
        "event_time": "2024-05-07T09:00:00+00:00",
        "store_id": 7,
        "day_of_week": 2,
        "hour": hour,
        "store_type": store_type,
        "suburb": "Fitzroy",
        "avg_delivery_minutes": 25.0,
        "avg_distance_km": 3.0,
        "avg_rating": 4.2,
        "busy": 0,
    }
    row.update(changes)
    return pd.DataFrame([row])


def proba(model: m.keras.Model, schema: StreamSchema, frame: pd.DataFrame) -> float:
    return float(m.predict_proba(model, schema, frame)[0])


def test_model_learned_the_rule_on_fresh_data(model: m.keras.Model, schema: StreamSchema) -> None:
    frame = observations(500, seed=1)
    predicted = m.predict_proba(model, schema, frame) >= 0.5
    assert np.mean(predicted == frame["busy"].to_numpy().astype(bool)) > 0.95


@pytest.mark.parametrize(
    ("store_type", "hour", "busy"),
    [
        pytest.param("cafe", 9, True, id="cafe-at-9-busy"),
        pytest.param("restaurant", 12, True, id="restaurant-at-12-busy"),
        pytest.param("restaurant", 13, True, id="restaurant-at-13-busy"),
        pytest.param("cafe", 15, False, id="cafe-at-15-quiet"),
        pytest.param("grocery", 9, False, id="grocery-at-9-quiet"),
    ],
)
def test_minimum_functionality(
    model: m.keras.Model, schema: StreamSchema, store_type: str, hour: int, busy: bool
) -> None:
    assert (proba(model, schema, one_row(store_type, hour)) >= 0.5) is busy


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"avg_rating": 1.0}, id="low-rating"),
        pytest.param({"avg_rating": 5.0}, id="high-rating"),
        pytest.param({"suburb": "Richmond"}, id="other-suburb"),
        pytest.param({"suburb": "Docklands"}, id="unseen-suburb"),
        pytest.param({"store_id": 999}, id="unseen-store"),
        pytest.param({"avg_distance_km": 11.0, "avg_delivery_minutes": 55.0}, id="far-and-slow"),
    ],
)
@pytest.mark.parametrize(("store_type", "hour"), [("cafe", 9), ("restaurant", 15)])
def test_invariance_to_features_that_do_not_drive_busyness(
    model: m.keras.Model,
    schema: StreamSchema,
    changes: dict[str, object],
    store_type: str,
    hour: int,
) -> None:
    base = proba(model, schema, one_row(store_type, hour))
    changed = proba(model, schema, one_row(store_type, hour, **changes))
    assert (changed >= 0.5) == (base >= 0.5), (base, changed)


@pytest.mark.parametrize(
    ("store_type", "quiet_hour", "busy_hour"),
    [
        pytest.param("restaurant", 15, 12, id="restaurant-15h-to-12h"),
        pytest.param("restaurant", 18, 13, id="restaurant-18h-to-13h"),
        pytest.param("cafe", 14, 9, id="cafe-14h-to-9h"),
    ],
)
def test_direction_moving_into_a_busy_hour_raises_probability(
    model: m.keras.Model, schema: StreamSchema, store_type: str, quiet_hour: int, busy_hour: int
) -> None:
    quiet = proba(model, schema, one_row(store_type, quiet_hour))
    busy = proba(model, schema, one_row(store_type, busy_hour))
    assert busy > quiet + 0.3, (quiet, busy)
