"""The live-accuracy join: predictions meet labelled records on (key, event time)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tasks.monitor import JoinResult, VersionAccuracy, join_predictions, window_metrics
from tasks.schema import load_schema, parse_event_time
from tasks.settings import PROJECT_ROOT

DRONE = load_schema(PROJECT_ROOT / "schemas" / "drone.yaml")


def labelled(*rows: tuple[int, str, int]) -> pd.DataFrame:
    """A window frame as read_window gives it: (store_id, event_time, label) per row."""
    return pd.DataFrame(
        [
            {
                "store_id": store,
                "event_time": when,
                DRONE.label.field: label,
                "_event_ms": parse_event_time(DRONE.event_time, when),
            }
            for store, when, label in rows
        ]
    )


def prediction(
    store: Any, when: str, predicted: int, version: str = "1", offset: int = 0, scored: int = 0
) -> dict[str, Any]:
    return {
        "key": store,
        "event_time": when,
        "probability": 0.9 if predicted else 0.1,
        "predicted": predicted,
        "model_name": DRONE.name,
        "model_version": version,
        "input_topic": "features",
        "input_partition": 0,
        "input_offset": offset,
        "scored_at_ms": scored,
    }


T1, T2, T3 = "2026-01-05T09:00:20Z", "2026-01-05T09:10:00Z", "2026-01-05T09:20:00Z"


def test_predictions_join_labels_of_the_same_key_and_event_time_per_version() -> None:
    frame = labelled((1, T1, 1), (2, T1, 0), (1, T2, 0), (3, T3, 1))
    preds = [
        prediction(1, T1, 1, "1", offset=0),  # correct
        prediction(2, T1, 1, "1", offset=1),  # wrong
        prediction(1, T2, 0, "2", offset=2),  # correct, served by version 2
        prediction(4, T3, 1, "2", offset=3),  # no label for store 4
    ]
    result = join_predictions(DRONE, frame, preds)
    assert result.versions == {
        "1": VersionAccuracy("1", joined=2, correct=1),
        "2": VersionAccuracy("2", joined=1, correct=1, unmatched_predictions=1),
    }
    assert result.versions["1"].accuracy == 0.5 and result.versions["2"].accuracy == 1.0
    assert result.unmatched_labels == 1  # store 3 at T3


def test_a_rescored_offset_counts_once_and_the_first_scoring_wins() -> None:
    frame = labelled((1, T1, 1))
    preds = [
        prediction(1, T1, 0, "2", offset=7, scored=200),  # re-scored later by another version
        prediction(1, T1, 1, "1", offset=7, scored=100),
    ]
    result = join_predictions(DRONE, frame, preds)
    assert result.versions["1"] == VersionAccuracy("1", joined=1, correct=1)
    assert result.versions["2"] == VersionAccuracy("2", duplicates=1)
    assert result.versions["2"].accuracy is None
    assert "live_accuracy" not in window_metrics(result, "2")


def test_a_repeated_input_record_of_the_same_key_and_time_is_a_duplicate() -> None:
    frame = labelled((1, T1, 1))
    preds = [prediction(1, T1, 1, offset=3), prediction(1, T1, 1, offset=4)]
    result = join_predictions(DRONE, frame, preds)
    assert result.versions["1"] == VersionAccuracy("1", joined=1, correct=1, duplicates=1)


@pytest.mark.parametrize(
    ("key", "when"),
    [("1", T1), (1, "2026-01-05T09:00:20+00:00"), (1, "2026-01-05T09:00:20.000Z")],
)
def test_keys_join_as_text_and_event_times_as_instants(key: Any, when: str) -> None:
    result = join_predictions(DRONE, labelled((1, T1, 0)), [prediction(key, when, 0)])
    assert result.versions["1"] == VersionAccuracy("1", joined=1, correct=1)
    assert result.unmatched_labels == 0


def test_unreadable_and_foreign_predictions_are_counted_not_joined() -> None:
    foreign = prediction(1, T1, 1) | {"model_name": "other"}
    broken = prediction(1, "yesterday", 1, offset=5)
    result = join_predictions(DRONE, labelled((1, T1, 1)), [foreign, broken])
    assert result == JoinResult(
        versions={}, unmatched_labels=1, unreadable_predictions=1, other_models=1
    )


def test_an_empty_window_joins_nothing() -> None:
    empty = pd.DataFrame(
        {c: pd.Series(dtype=object) for c in [*DRONE.columns, "_event_ms", "_partition"]}
    )
    result = join_predictions(DRONE, empty, [prediction(1, T1, 1)])
    assert result.unmatched_labels == 0
    assert result.versions["1"] == VersionAccuracy("1", unmatched_predictions=1)


def test_window_metrics_carry_accuracy_and_every_count() -> None:
    result = join_predictions(
        DRONE, labelled((1, T1, 1), (2, T1, 1)), [prediction(1, T1, 1), prediction(1, T1, 1)]
    )
    assert window_metrics(result, "1") == {
        "live_accuracy": 1.0,
        "live_joined": 1,
        "live_correct": 1,
        "live_unmatched_predictions": 0,
        "live_duplicates": 1,
        "live_unmatched_labels": 1,
    }
