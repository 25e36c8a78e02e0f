"""CSV rows as records: real exports (BOM, CRLF, short rows), event times, rows that do not fit.

A row that does not fit is produced anyway; these tests hold `decode_record`, the window
reader's own rule, to setting every such record aside, never reading it as a good one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.csv_source import FromColumn, Steps, csv_records, read_csv, read_csv_for
from tasks.errors import InputError
from tasks.schema import MalformedRecord, StreamSchema, decode_record
from tasks.schema_infer import infer_schema

START = datetime(2026, 1, 5, tzinfo=UTC)
HOUR_MS = 3_600_000
# Label, shop (the key), two features: two hours of three shops, no header.
SHOPS = "1,1,7,40\r\n0,2,8,41\r\n1,3,7,42\r\n0,1,8,43\r\n1,2,7,44\r\n0,3,8,45\r\n"
READINGS = (
    "when,machine,temperature,status\n"
    "2026-03-02T00:00:00Z,m1,20.5,ok\n"
    "2026-03-02T00:20:00Z,m2,88.0,alarm\n"
    "2026-03-02T00:40:00Z,m1,35.0,ok\n"
    "2026-03-02T01:10:00Z,m2,91.5,alarm\n"
)


def write(tmp_path: Path, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode("utf-8-sig" if bom else "utf-8"))
    return path


def shops_schema(tmp_path: Path, text: str = SHOPS) -> StreamSchema:
    draft = infer_schema(read_csv(write(tmp_path, text), header=False), label="col0", key="col1")
    return StreamSchema.model_validate(draft.schema)


def records(tmp_path: Path, schema: StreamSchema, text: str, timing: Steps | FromColumn) -> list:
    return list(csv_records(read_csv_for(write(tmp_path, text), schema), schema, timing))


def test_bom_and_crlf_leave_no_trace_in_names_or_values(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, READINGS.replace("\n", "\r\n"), bom=True), header=True)
    assert table.names == ["when", "machine", "temperature", "status"]
    assert table.rows[0].fields == ["2026-03-02T00:00:00Z", "m1", "20.5", "ok"]
    assert all(not f.endswith("\r") for row in table.rows for f in row.fields)
    assert [row.line for row in table.rows] == [2, 3, 4, 5]


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, "1,2\r\n\r\n0,3\r\n"), header=False)
    assert [(row.line, row.fields) for row in table.rows] == [(1, ["1", "2"]), (3, ["0", "3"])]


def test_one_long_row_does_not_rename_the_columns(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, SHOPS + "1,2,7,44,99\r\n"), header=False)
    assert table.names == ["col0", "col1", "col2", "col3"]
    assert len(table.fitting_rows()) == 6


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_csv(tmp_path / "nope.csv", header=False)


def test_every_groups_rows_until_a_key_comes_again(tmp_path: Path) -> None:
    schema = shops_schema(tmp_path)
    out = records(tmp_path, schema, SHOPS, Steps(START, timedelta(hours=1)))
    start_ms = int(START.timestamp() * 1000)
    assert [r.timestamp_ms - start_ms for r in out] == [0, 0, 0, HOUR_MS, HOUR_MS, HOUR_MS]
    assert [r.key for r in out] == [b"1", b"2", b"3"] * 2
    decoded = [decode_record(schema, r.value) for r in out]
    assert [d["_event_ms"] for d in decoded] == [r.timestamp_ms for r in out]
    assert decoded[3] == {
        "_event_ms": start_ms + HOUR_MS,
        "event_time": "2026-01-05T01:00Z",
        "col1": 1,
        "col2": 8,
        "col3": 43,
        "col0": 0,
    }
    assert all(r.problem is None for r in out)


def test_short_row_is_produced_counted_and_refused_by_the_reader(tmp_path: Path) -> None:
    schema = shops_schema(tmp_path)
    text = SHOPS.replace("0,1,8,43\r\n", "0,1,8\r\n")  # line 4 cut short
    out = records(tmp_path, schema, text, Steps(START, timedelta(hours=1)))
    assert len(out) == 6
    assert [(r.line, r.problem) for r in out if r.problem] == [(4, "3 fields, expected 4")]
    with pytest.raises(MalformedRecord, match="missing field 'col3'"):
        decode_record(schema, out[3].value)
    assert json.loads(out[3].value)["col1"] == 1  # as it is: the fields it has


def test_short_row_missing_only_unread_fields_is_sent_as_its_text(tmp_path: Path) -> None:
    """col3 is not read by this schema: as JSON, the short row would pass as a good record."""
    schema = shops_schema(tmp_path)
    schema = schema.model_copy(update={"features": schema.features[:2]})
    text = SHOPS.replace("0,1,8,43\r\n", "0,1,8\r\n")
    short = records(tmp_path, schema, text, Steps(START, timedelta(hours=1)))[3]
    assert short.problem == "3 fields, expected 4" and short.value == b"0,1,8"
    with pytest.raises(MalformedRecord, match="not JSON"):
        decode_record(schema, short.value)


def test_short_row_without_its_key_stays_in_its_hour(tmp_path: Path) -> None:
    schema = shops_schema(tmp_path)
    text = SHOPS.replace("1,3,7,42\r\n", "1\r\n")  # the third shop of hour 0 lost its fields
    out = records(tmp_path, schema, text, Steps(START, timedelta(hours=1)))
    start_ms = int(START.timestamp() * 1000)
    assert [r.timestamp_ms - start_ms for r in out] == [0, 0, 0, HOUR_MS, HOUR_MS, HOUR_MS]
    assert out[2].key is None and out[2].problem == "1 fields, expected 4"


def test_unparsable_value_and_unknown_label_are_counted(tmp_path: Path) -> None:
    schema = shops_schema(tmp_path)
    text = SHOPS.replace("0,2,8,41", "0,2,eight,41").replace("0,3,8,45", "5,3,8,45")
    out = records(tmp_path, schema, text, Steps(START, timedelta(hours=1)))
    problems = {r.line: r.problem for r in out if r.problem}
    assert problems == {
        2: "field 'col2': expected a number, got str",
        6: "field 'col0': 5 is not one of [0, 1]",
    }
    for record in out:
        if record.problem:
            with pytest.raises(MalformedRecord):
                decode_record(schema, record.value)


def test_header_csv_with_iso_time_column_and_strings(tmp_path: Path) -> None:
    path = write(tmp_path, READINGS)
    draft = infer_schema(read_csv(path, header=True), label="status", time="when")
    schema = StreamSchema.model_validate(draft.schema)
    out = records(tmp_path, schema, READINGS, FromColumn("when"))
    decoded = [decode_record(schema, r.value) for r in out]
    assert [d["machine"] for d in decoded] == ["m1", "m2", "m1", "m2"]
    assert [d["status"] for d in decoded] == ["ok", "alarm", "ok", "alarm"]
    base = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)
    assert [(r.timestamp_ms - base) // 60_000 for r in out] == [0, 20, 40, 70]
    assert [r.key for r in out] == [None] * 4


def test_unreadable_time_keeps_the_previous_rows_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, READINGS)
    draft = infer_schema(read_csv(path, header=True), label="status", time="when")
    schema = StreamSchema.model_validate(draft.schema)
    text = READINGS.replace("2026-03-02T00:00:00Z", "soon").replace("2026-03-02T00:40:00Z", "later")
    out = records(tmp_path, schema, text, FromColumn("when"))
    base = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)
    # The first row has no time before it: it gets the first readable one (00:20).
    assert [(r.timestamp_ms - base) // 60_000 for r in out] == [20, 20, 20, 70]
    assert [r.line for r in out if r.problem] == [2, 4]
    assert "is not a iso8601 timestamp" in (out[0].problem or "")
