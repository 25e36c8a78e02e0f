"""Window validation with Great Expectations: the generated suite, quarantine and rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.schema import StreamSchema, decode_record, load_schema
from tasks.simulator import SimulationConfig, generate
from tasks.validation import REASONS, build_data_docs, build_suite, validate_window

ROOT = Path(__file__).resolve().parents[2]
DRONE = load_schema(ROOT / "schemas" / "drone.yaml")
SENSOR = load_schema(ROOT / "tests" / "fixtures" / "sensor.yaml")
SHARE = 0.05


@pytest.fixture(scope="module")
def hour() -> pd.DataFrame:
    """One simulated daylight hour of the drone stream: 100 clean rows, as the reader gives them."""
    rows = [decode_record(DRONE, r.value) for r in generate(SimulationConfig(hours=10, seed=3))]
    frame = pd.DataFrame(rows, columns=[*DRONE.columns, "_event_ms"])
    first = frame[frame["hour"] == frame["hour"].min()].reset_index(drop=True)
    # Simulated labels can be busy in most rows of an hour; keep the label-mean rule satisfied.
    first["busy"] = [i % 2 for i in range(len(first))]
    return first


def _sensor_frame(rows: int = 60) -> pd.DataFrame:
    start = 1_700_000_000_000
    return pd.DataFrame(
        {
            "ts": [start + 1000 * i for i in range(rows)],
            "temperature": [20.0 + i % 7 for i in range(rows)],
            "vibration": [0.1 * (i % 5) for i in range(rows)],
            "line": [["a", "b", "c"][i % 3] for i in range(rows)],
            "status": ["alarm" if i % 10 == 0 else "ok" for i in range(rows)],
            "_event_ms": [start + 1000 * i for i in range(rows)],
        }
    )


def _kinds(schema: StreamSchema) -> set[tuple[str, str]]:
    out = set()
    for e in build_suite(schema).expectations:
        kwargs = e.configuration.kwargs
        subject = kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or "table"
        out.add((e.expectation_type, subject))
    return out


def test_generated_suite_covers_ranges_sets_label_uniqueness_and_row_count() -> None:
    kinds = _kinds(DRONE)
    for column in [*DRONE.feature_names, "busy", "event_time"]:
        assert ("expect_column_values_to_not_be_null", column) in kinds
    assert ("expect_column_values_to_be_between", "avg_rating") in kinds
    assert ("expect_column_values_to_be_between", "hour") in kinds
    assert ("expect_column_values_to_be_between", "store_id") in kinds  # open vocabulary, min 1
    assert ("expect_column_values_to_be_in_set", "store_type") in kinds
    assert ("expect_column_values_to_be_in_set", "busy") in kinds
    assert ("expect_compound_columns_to_be_unique", "store_id,_event_ms") in kinds
    assert ("expect_table_row_count_to_be_between", "table") in kinds
    assert ("expect_column_mean_to_be_between", "busy") in kinds  # hand-written
    assert not any(c == "suburb" for t, c in kinds if t != "expect_column_values_to_not_be_null")


def test_unknown_hand_written_expectation_is_named_in_the_error() -> None:
    broken = DRONE.model_copy(update={"expectations": [{"type": "expect_magic", "kwargs": {}}]})
    with pytest.raises(ValueError, match="expect_magic"):
        build_suite(broken)


def test_hand_written_expectation_with_bad_kwargs_is_a_clear_error() -> None:
    bad = [{"type": "expect_column_mean_to_be_between", "kwargs": {"colum": "busy"}}]
    with pytest.raises(ValueError, match=r"expectations\[0\].*bad kwargs"):
        build_suite(DRONE.model_copy(update={"expectations": bad}))


def test_clean_window_is_kept_whole(hour: pd.DataFrame) -> None:
    outcome = validate_window(DRONE, hour, max_failing_share=SHARE)
    assert outcome.success and not outcome.rejected
    assert outcome.rows_checked == len(hour) == len(outcome.kept)
    assert outcome.quarantined.empty and outcome.failed_expectations == []


def test_few_bad_rows_are_quarantined_with_reasons_and_the_rest_kept(hour: pd.DataFrame) -> None:
    frame = hour.copy()
    frame.loc[3, "avg_rating"] = 7.0
    frame.loc[5, "store_type"] = "zoo"
    frame.loc[5, "avg_delivery_minutes"] = -1.0
    frame.loc[8, "avg_distance_km"] = float("nan")
    outcome = validate_window(DRONE, frame, max_failing_share=SHARE)
    assert not outcome.success and not outcome.rejected
    assert sorted(outcome.quarantined.index) == [3, 5, 8]
    assert len(outcome.kept) + len(outcome.quarantined) == len(frame)
    assert set(outcome.kept.index).isdisjoint(outcome.quarantined.index)
    reasons = outcome.quarantined[REASONS]
    assert reasons[3] == ["avg_rating: expect_column_values_to_be_between [1, 5]"]
    assert sorted(reasons[5]) == [
        "avg_delivery_minutes: expect_column_values_to_be_between [0, 120]",
        "store_type: expect_column_values_to_be_in_set {cafe, restaurant, grocery, pharmacy, "
        "bakery}",
    ]
    assert reasons[8] == ["avg_distance_km: expect_column_values_to_not_be_null"]
    assert outcome.failing_rows["avg_rating: expect_column_values_to_be_between [1, 5]"] == 1


def test_repeated_key_and_event_time_quarantines_both_rows(hour: pd.DataFrame) -> None:
    frame = hour.copy()
    frame.loc[1, ["store_id", "_event_ms"]] = frame.loc[0, ["store_id", "_event_ms"]].to_numpy()
    outcome = validate_window(DRONE, frame, max_failing_share=SHARE)
    assert sorted(outcome.quarantined.index) == [0, 1]
    assert outcome.quarantined[REASONS][0] == [
        "store_id, _event_ms: expect_compound_columns_to_be_unique"
    ]


def test_many_bad_rows_reject_the_window(hour: pd.DataFrame) -> None:
    frame = hour.copy()
    frame.loc[:29, "avg_rating"] = 9.0
    outcome = validate_window(DRONE, frame, max_failing_share=SHARE)
    assert outcome.rejected and outcome.kept.empty
    assert len(outcome.quarantined) == 30
    assert outcome.reasons[0].startswith("30 of 100 rows fail")


def test_label_mean_out_of_range_rejects_the_window(hour: pd.DataFrame) -> None:
    frame = hour.assign(busy=1)
    outcome = validate_window(DRONE, frame, max_failing_share=SHARE)
    assert outcome.rejected and outcome.kept.empty and outcome.quarantined.empty
    assert outcome.failed_expectations == [
        "busy: expect_column_mean_to_be_between [0, 0.9] (observed 1)"
    ]
    assert outcome.failing_rows == {outcome.failed_expectations[0]: None}


def test_row_count_out_of_bounds_rejects_the_window(hour: pd.DataFrame) -> None:
    small = DRONE.model_copy(update={"row_count": DRONE.row_count.model_copy(update={"max": 50})})  # type: ignore[union-attr]
    outcome = validate_window(small, hour, max_failing_share=SHARE)
    assert outcome.rejected
    assert outcome.failed_expectations == [
        "table: expect_table_row_count_to_be_between [1, 50] (observed 100)"
    ]


def test_empty_window_is_not_rejected_and_keeps_nothing(hour: pd.DataFrame) -> None:
    outcome = validate_window(DRONE, hour.iloc[:0], max_failing_share=SHARE)
    assert outcome.success and not outcome.rejected
    assert outcome.rows_checked == 0 and outcome.kept.empty and outcome.quarantined.empty
    assert outcome.summary()["rows"] == 0


def test_missing_column_is_a_programming_error(hour: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="_event_ms"):
        validate_window(DRONE, hour.drop(columns="_event_ms"), max_failing_share=SHARE)


def test_sensor_schema_without_key_checks_unique_event_times() -> None:
    frame = _sensor_frame()
    frame.loc[4, "temperature"] = 200.0
    frame.loc[7, "status"] = "broken"
    frame.loc[9, "_event_ms"] = frame.loc[10, "_event_ms"]
    outcome = validate_window(SENSOR, frame, max_failing_share=0.1)
    assert not outcome.rejected
    assert sorted(outcome.quarantined.index) == [4, 7, 9, 10]
    assert outcome.quarantined[REASONS][7] == [
        "status: expect_column_values_to_be_in_set {ok, alarm}"
    ]
    assert len(outcome.kept) == len(frame) - 4


def test_summary_and_full_result_are_json(hour: pd.DataFrame) -> None:
    frame = hour.copy()
    frame.loc[2, "avg_rating"] = 0.5
    outcome = validate_window(DRONE, frame, max_failing_share=SHARE)
    summary = json.loads(json.dumps(outcome.summary()))
    assert summary == {
        "success": False,
        "rows": 100,
        "kept": 99,
        "quarantined": 1,
        "rejected": False,
        "reasons": [],
        "failed_expectations": {"avg_rating: expect_column_values_to_be_between [1, 5]": 1},
    }
    full = json.loads(json.dumps(outcome.full_result))
    assert full["success"] is False and len(full["results"]) == len(build_suite(DRONE).expectations)


def test_data_docs_are_written_to_the_target_dir(hour: pd.DataFrame, tmp_path: Path) -> None:
    index = build_data_docs(DRONE, hour, tmp_path / "docs")
    assert index.is_file() and index.is_relative_to(tmp_path)
    assert "<html" in index.read_text().lower()


def test_validating_window_after_window_keeps_nothing_per_window_in_the_gx_context(
    hour: pd.DataFrame,
) -> None:
    """The trainer validates every window in one process: GX objects are built once per
    schema, and no window's result stays behind in the context's store."""
    from tasks import validation

    validate_window(DRONE, hour, max_failing_share=SHARE)
    context = validation._CONTEXT[0]
    checkpoints = dict(validation._CHECKPOINTS)
    stored = len(context.validation_results_store.list_keys())
    bad = hour.copy()
    bad.loc[3, "avg_rating"] = 99.0  # a failing row: the detailed checkpoint runs as well
    for frame in (hour, bad, hour):
        validate_window(DRONE, frame, max_failing_share=SHARE)
    assert len(context.validation_results_store.list_keys()) == stored
    # Other tests in this process may have filled the cache with other schemas' checkpoints:
    # judge only what these windows added. At most the failing window's detailed checkpoint
    # is new, and every checkpoint built before is the same object, not a rebuilt one.
    added = validation._CHECKPOINTS.keys() - checkpoints.keys()
    assert added <= {k.replace("boolean", "complete") for k in checkpoints}
    assert len(added) <= 1
    assert all(validation._CHECKPOINTS[k] is built for k, built in checkpoints.items())
