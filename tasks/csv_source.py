"""A CSV file as a stream: read rows as real exports write them, and turn each into one record.

`schema infer` drafts a schema from the rows read here; `produce` (flows/produce.py) sends the
records to Kafka. A row that does not fit the schema is still sent, as it is: the window reader
and validation are where bad input is judged. Pure: no Kafka, no clock.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tasks.errors import InputError
from tasks.schema import MalformedRecord, StreamSchema, decode_record, parse_event_time
from tasks.windowing import format_instant

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*$")


@dataclass(frozen=True)
class CsvRow:
    """One row of the file and the line it starts on (1 = the file's first line)."""

    line: int
    fields: list[str]


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's column names (its header, or col0, col1, ...) and data rows."""

    names: list[str]
    rows: list[CsvRow]
    header: bool

    def fitting_rows(self) -> list[CsvRow]:
        """Rows with as many fields as there are columns."""
        return [row for row in self.rows if len(row.fields) == len(self.names)]

    def misfit_lines(self) -> list[int]:
        """Lines of the rows with another field count than the columns'."""
        return [row.line for row in self.rows if len(row.fields) != len(self.names)]


def read_rows(path: Path) -> list[CsvRow]:
    """The non-blank rows of a CSV, tolerating a UTF-8 byte-order mark and CRLF line ends."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            rows: list[CsvRow] = []
            start = 1
            for fields in reader:
                if any(f.strip() for f in fields):
                    rows.append(CsvRow(start, [f.strip() for f in fields]))
                start = reader.line_num + 1
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def as_table(rows: list[CsvRow], *, header: bool) -> CsvTable:
    """Name the columns: from the header row, or col0, col1, ... by the usual field count.

    Without a header, the most common field count decides how many columns there are, so that
    one row with a field too many or too few does not rename the others.
    """
    if header:
        return CsvTable(rows[0].fields, rows[1:], header=True)
    counts = Counter(len(row.fields) for row in rows)
    width = max(counts, key=lambda n: (counts[n], n))
    return CsvTable([f"col{i}" for i in range(width)], rows, header=False)


def read_csv(path: Path, *, header: bool) -> CsvTable:
    """Read a CSV with or without a header row."""
    return as_table(read_rows(path), header=header)


def read_csv_for(path: Path, schema: StreamSchema) -> CsvTable:
    """Read a CSV for a schema: its first row is a header when it names the label field."""
    rows = read_rows(path)
    return as_table(rows, header=schema.label.field in rows[0].fields)


def parse_duration(text: str) -> timedelta:
    """'1h', '15m', '90s', '250ms', '1d' as a timedelta; refuses zero and other spellings."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise InputError(f"--every {text!r} is not a positive duration such as 1h, 15m, 90s")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def parse_rate(text: str) -> float:
    """'200/s' or '200' records per second."""
    match = _RATE.match(text)
    if not match or float(match[1]) <= 0:
        raise InputError(f"--rate {text!r} is not a positive rate such as 200/s")
    return float(match[1])


# --- event times ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    """Event times from --start and --every: rows of one moment share one event time.

    With a key in the schema, a new step begins when a key value comes again (per-entity
    data: 100 shops per hour are 100 rows of one hour); without a key, each row is a step.
    """

    start: datetime
    every: timedelta


@dataclass(frozen=True)
class FromColumn:
    """Event times read from the schema's event-time column of the file."""

    column: str


@dataclass
class _StepClock:
    """Hands out the event time of each row under `Steps`."""

    timing: Steps
    step: int = -1
    seen: set[str] = field(default_factory=set)

    def stamp(self, key: str | None, keyed: bool) -> datetime:
        """The row's event time; a keyed row without its key (a short row) stays in the step."""
        if self.step < 0 or not keyed or (key is not None and key in self.seen):
            self.step += 1
            self.seen = set()
        if key is not None:
            self.seen.add(key)
        return self.timing.start + self.step * self.timing.every


def _time_value(schema: StreamSchema, raw: str | None) -> object:
    """The event-time text as the JSON value its format wants (a number for epochs)."""
    return _typed(raw) if schema.event_time.format != "iso8601" else raw


def _written_time(schema: StreamSchema, moment: datetime, millis: int) -> object:
    """An event time filled in by `produce`, in the schema's format."""
    if schema.event_time.format == "iso8601":
        return format_instant(moment)
    return millis if schema.event_time.format == "epoch_ms" else millis / 1000


def _first_time_ms(table: CsvTable, schema: StreamSchema, column: str) -> int:
    """The first readable event time: the Kafka timestamp of rows before it with none."""
    for row in table.rows:
        values = dict(zip(table.names, row.fields, strict=False))
        try:
            return parse_event_time(schema.event_time, _time_value(schema, values.get(column)))
        except MalformedRecord:
            continue
    raise InputError(f"no row has a readable {schema.event_time.format} time in {column!r}")


# --- rows to records -----------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRecord:
    """One Kafka record from one CSV row (an `OutgoingRecord` for `tasks.stream.produce`)."""

    key: bytes | None
    value: bytes
    timestamp_ms: int
    line: int
    problem: str | None = None


def _typed(raw: str | None) -> object:
    """A CSV text as the JSON value it most likely is: integer, number or string."""
    if raw is None:
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _field_types(schema: StreamSchema) -> dict[str, str]:
    types: dict[str, str] = {spec.name: spec.type for spec in schema.features}
    types[schema.label.field] = "int" if isinstance(schema.label.classes[0], int) else "string"
    return types


def _convert(raw: str, kind: str | None) -> object:
    """The value the schema asks for, or the text itself when it does not parse as that."""
    if kind is None:
        return _typed(raw)
    if kind == "string":
        return raw
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        return raw


def _body(schema: StreamSchema, row: CsvRow, record: dict[str, Any], width: int) -> bytes:
    """The record's bytes: JSON, or the row's text when JSON could pass for a good record.

    A short row is sent as JSON with the fields it has (the reader names the missing one); if
    its missing fields are none the schema reads, or the row has fields too many, its values
    may sit under the wrong names, so it goes as the row's text, which no reader takes as JSON.
    """
    text = ",".join(row.fields).encode()
    if len(row.fields) > width:
        return text
    encoded = json.dumps(record, separators=(",", ":")).encode()
    if len(row.fields) == width or _problem(schema, encoded) is not None:
        return encoded
    return text


def _problem(schema: StreamSchema, body: bytes) -> str | None:
    """What the window reader will say about this record, or None if it reads it as good."""
    try:
        decode_record(schema, body)
    except MalformedRecord as exc:
        return str(exc)
    return None


def csv_records(
    table: CsvTable, schema: StreamSchema, timing: Steps | FromColumn
) -> Iterator[CsvRecord]:
    """Each row as one JSON record keyed by the schema's key, stamped with its event time.

    A row that does not fit (a field too few or too many, a value that does not parse, a label
    that is not a class) is still sent, and its `problem` says why: it is what the window
    reader will set aside as malformed.
    """
    types = _field_types(schema)
    width = len(table.names)
    steps, column = (_StepClock(timing), "") if isinstance(timing, Steps) else (None, timing.column)
    last_ms = 0 if steps else _first_time_ms(table, schema, column)
    for row in table.rows:
        values = dict(zip(table.names, row.fields, strict=False))
        key = values.get(schema.key) if schema.key else None
        record: dict[str, Any] = {n: _convert(raw, types.get(n)) for n, raw in values.items()}
        if steps is not None:
            moment = steps.stamp(key, keyed=schema.key is not None)
            last_ms = int(moment.timestamp() * 1000)
            record[schema.event_time.field] = _written_time(schema, moment, last_ms)
        else:
            value = _time_value(schema, values.get(column))
            record[schema.event_time.field] = value
            # An unreadable time keeps the previous row's: the reader finds it there.
            with suppress(MalformedRecord):
                last_ms = parse_event_time(schema.event_time, value)
        body = _body(schema, row, record, width)
        problem = (
            f"{len(row.fields)} fields, expected {width}"
            if len(row.fields) != width
            else _problem(schema, body)
        )
        yield CsvRecord(key.encode() if key else None, body, last_ms, row.line, problem)
