"""`schema infer`: a draft schema from a CSV, with its guesses, that `load_schema` reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.csv_source import read_csv
from tasks.errors import InputError
from tasks.schema import load_schema
from tasks.schema_infer import infer_schema

# No header, label first, an entity key, a constant column, like 2weeksNoTime.csv.
SHOPS = (
    "1,1,3,0,41,7.5\r\n"
    "0,2,4,0,12,2.25\r\n"
    "1,3,3,0,58,9.0\r\n"
    "0,1,3,0,20,3.5\r\n"
    "1,2,4,0,33,8.0\r\n"
    "0,3,3,0,27,1.0\r\n"
)
# A header row, string columns, an ISO 8601 time column, string label classes.
READINGS = (
    "when,machine,line,temperature,status\n"
    "2026-03-02T00:00:00Z,m1,a,20.5,no\n"
    "2026-03-02T00:20:00Z,m2,b,88.0,yes\n"
    "2026-03-02T01:10:00Z,m1,a,35.0,no\n"
    "2026-03-02T01:40:00Z,m2,c,91.5,yes\n"
)


def csv_file(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8-sig"))
    return path


def entry(draft_schema: dict, name: str) -> dict:
    return next(f for f in draft_schema["features"] if f["name"] == name)


def test_no_header_draft_names_columns_and_adds_event_time(tmp_path: Path) -> None:
    table = read_csv(csv_file(tmp_path, SHOPS), header=False)
    draft = infer_schema(table, label="col0", key="col1", name="shops")
    schema = draft.schema
    assert schema["label"] == {"field": "col0", "classes": [0, 1], "positive": 1}
    assert schema["event_time"] == {"field": "event_time", "format": "iso8601"}
    assert schema["key"] == "col1"
    assert [f["name"] for f in schema["features"]] == ["col1", "col2", "col4", "col5"]
    assert entry(schema, "col1") == {"name": "col1", "kind": "categorical", "type": "int", "min": 1}
    assert entry(schema, "col2") == {
        "name": "col2",
        "kind": "categorical",
        "type": "int",
        "values": [3, 4],
    }
    assert entry(schema, "col5") == {
        "name": "col5",
        "kind": "numeric",
        "type": "float",
        "min": 1,
        "max": 9,
    }
    # col3 is always 0: left out, and the user is told why.
    why = {g.column: g.why for g in draft.guesses}
    assert "always '0'" in why["col3"]
    assert "no --time" in why["event_time"]
    # 3 shops per moment, so windows of `produce --every 1h` hold 3 rows: halved and doubled.
    assert schema["row_count"] == {"min": 1, "max": 6}


def test_numeric_int_column_gets_its_range_from_the_data(tmp_path: Path) -> None:
    rows = "".join(f"{i % 2},{100 + 7 * i}\n" for i in range(40))
    draft = infer_schema(read_csv(csv_file(tmp_path, rows), header=False), label="col0")
    assert entry(draft.schema, "col1") == {
        "name": "col1",
        "kind": "numeric",
        "type": "int",
        "min": 100,
        "max": 100 + 7 * 39,
    }


def test_header_draft_reads_strings_iso_time_and_string_labels(tmp_path: Path) -> None:
    table = read_csv(csv_file(tmp_path, READINGS), header=True)
    draft = infer_schema(table, label="status", time="when", name="Plant Readings")
    schema = draft.schema
    assert (schema["name"], schema["topic"]) == ("plant-readings", "plant-readings")
    assert schema["event_time"] == {"field": "when", "format": "iso8601"}
    assert schema["label"] == {"field": "status", "classes": ["no", "yes"], "positive": "yes"}
    assert entry(schema, "line")["values"] == ["a", "b", "c"]
    assert entry(schema, "machine") == {
        "name": "machine",
        "kind": "categorical",
        "type": "string",
        "values": ["m1", "m2"],
    }
    assert entry(schema, "temperature")["kind"] == "numeric"
    assert (entry(schema, "temperature")["min"], entry(schema, "temperature")["max"]) == (
        20.5,
        91.5,
    )
    assert "when" not in [f["name"] for f in schema["features"]]
    # Two rows in each hour of the time column.
    assert schema["row_count"] == {"min": 1, "max": 4}


def test_draft_yaml_loads_back_with_yes_no_classes_quoted(tmp_path: Path) -> None:
    table = read_csv(csv_file(tmp_path, READINGS), header=True)
    text = infer_schema(table, label="status", time="when").to_yaml()
    path = tmp_path / "draft.yaml"
    path.write_text(text)
    schema = load_schema(path)  # refuses unknown keys and unquoted yes/no
    assert schema.label.classes == ["no", "yes"] and schema.label.positive == "yes"
    assert schema.event_time.field == "when" and schema.window_ms == 3_600_000
    assert "# Drafted by `streamtrain schema infer`" in text


@pytest.mark.parametrize(
    ("stamps", "fmt"),
    [
        (["1772409600000", "1772413200000"], "epoch_ms"),
        (["1772409600", "1772413200"], "epoch_s"),
        (["2026-03-02T00:00:00+00:00", "2026-03-02 01:00:00"], "iso8601"),
    ],
)
def test_time_format_is_guessed_from_the_values(
    tmp_path: Path, stamps: list[str], fmt: str
) -> None:
    text = "ts,x,y\n" + "".join(f"{s},{i},{i % 2}\n" for i, s in enumerate(stamps * 2))
    draft = infer_schema(read_csv(csv_file(tmp_path, text), header=True), label="y", time="ts")
    assert draft.schema["event_time"] == {"field": "ts", "format": fmt}


def test_a_label_without_two_classes_is_one_clear_error(tmp_path: Path) -> None:
    text = "y,x\n0,1\n1,2\n2,3\n"
    table = read_csv(csv_file(tmp_path, text), header=True)
    with pytest.raises(InputError, match="'y' has 3 distinct values"):
        infer_schema(table, label="y")


def test_unknown_column_and_data_as_header_are_clear_errors(tmp_path: Path) -> None:
    with_header = read_csv(csv_file(tmp_path, READINGS), header=True)
    with pytest.raises(InputError, match="--time 'ts' is not a column"):
        infer_schema(with_header, label="status", time="ts")
    data_as_header = read_csv(csv_file(tmp_path, SHOPS), header=True)
    with pytest.raises(InputError, match="pass --no-header"):
        infer_schema(data_as_header, label="1")


def test_short_rows_are_left_out_of_the_guesses_and_listed(tmp_path: Path) -> None:
    text = SHOPS + "1,2,4,0\r\n" + "0,1,3,0,30,2.0\r\n"
    table = read_csv(csv_file(tmp_path, text), header=False)
    draft = infer_schema(table, label="col0", key="col1")
    assert [f["name"] for f in draft.schema["features"]][-1] == "col5"
    assert draft.skipped_lines == [7]
