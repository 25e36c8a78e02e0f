"""A CSV file as a stream: read rows as real exports write them, and turn each into one record.

`schema infer` drafts a schema from the rows read here; `produce` sends the records to Kafka
through `tasks.stream`. A row that does not fit the schema is still sent, as it is: the window
reader and validation are where bad input is judged.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.progress import Progress

from tasks.schema import MalformedRecord, StreamSchema, parse_event_time
from tasks.settings import Settings

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


def read_csv(path: Path, *, header: bool) -> CsvTable:
    """Read a CSV, tolerating a UTF-8 byte-order mark, CRLF line ends and blank lines."""
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
        raise ValueError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    if header:
        return CsvTable(rows[0].fields, rows[1:], header=True)
    width = max(len(row.fields) for row in rows)
    return CsvTable([f"col{i}" for i in range(width)], rows, header=False)


def read_csv_for(path: Path, schema: StreamSchema) -> CsvTable:
    """Read a CSV for a schema: its first row is a header when it names the label field."""
    with_header = read_csv(path, header=True)
    if schema.label.field in with_header.names:
        return with_header
    return read_csv(path, header=False)


def parse_duration(text: str) -> timedelta:
    """'1h', '15m', '90s', '250ms', '1d' as a timedelta; refuses zero and other spellings."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"--every {text!r} is not a positive duration such as 1h, 15m, 90s")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def parse_rate(text: str) -> float:
    """'200/s' or '200' records per second."""
    match = _RATE.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"--rate {text!r} is not a positive rate such as 200/s")
    return float(match[1])


# --- rows to records -----------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRecord:
    """One Kafka record from one CSV row (an `OutgoingRecord` for `tasks.stream.produce`)."""

    key: bytes | None
    value: bytes
    timestamp_ms: int
    line: int
    problem: str | None = None


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
    """Event times read from a column of the file."""

    column: str


@dataclass
class _Clock:
    timing: Steps | FromColumn
    schema: StreamSchema
    step: int = 0
    seen: set[str] = field(default_factory=set)
    last_ms: int | None = None

    def event(self, values: dict[str, str], key: str | None) -> tuple[int, object, str | None]:
        """(Kafka timestamp, event-time value for the record, problem) for one row."""
        if isinstance(self.timing, Steps):
            if key is None or key in self.seen:
                self.step += 1 if (self.last_ms is not None) else 0
                self.seen = set()
            if key is not None:
                self.seen.add(key)
            moment = self.timing.start + self.step * self.timing.every
            self.last_ms = int(moment.timestamp() * 1000)
            return self.last_ms, _iso(moment), None
        raw = values.get(self.timing.column)
        value: object = _typed(raw) if self.schema.event_time.format != "iso8601" else raw
        try:
            self.last_ms = parse_event_time(self.schema.event_time, value)
            return self.last_ms, value, None
        except MalformedRecord as exc:
            return self.last_ms or 0, value, str(exc)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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


def _convert(name: str, raw: str, kind: str | None) -> tuple[object, str | None]:
    """The value the schema asks for, or the text itself and why it does not fit."""
    if kind is None:
        return _typed(raw), None
    if kind == "string":
        return raw, None
    try:
        return (int(raw) if kind == "int" else float(raw)), None
    except ValueError:
        return raw, f"{name} {raw!r} is not {'an integer' if kind == 'int' else 'a number'}"


def csv_records(
    table: CsvTable, schema: StreamSchema, timing: Steps | FromColumn
) -> Iterator[CsvRecord]:
    """Each row as one JSON record keyed by the schema's key, stamped with its event time.

    A row with too few fields is sent with the fields it has; one with too many as its raw
    text (it is not a record of this schema); a value that does not parse as its text.
    """
    clock = _Clock(timing, schema)
    types = _field_types(schema)
    width = len(table.names)
    for row in table.rows:
        values = dict(zip(table.names, row.fields, strict=False))
        key = values.get(schema.key) if schema.key else None
        stamp, event_value, problem = clock.event(values, key)
        if len(row.fields) != width:
            problem = f"{len(row.fields)} fields, expected {width}"
        record: dict[str, Any] = {}
        for name, raw in values.items():
            record[name], bad = _convert(name, raw, types.get(name))
            problem = problem or bad
        record[schema.event_time.field] = event_value
        body = (
            ",".join(row.fields).encode()
            if len(row.fields) > width
            else json.dumps(record, separators=(",", ":")).encode()
        )
        yield CsvRecord(key.encode() if key else None, body, stamp, row.line, problem)


# --- producing -----------------------------------------------------------------------------


@dataclass
class ProduceSummary:
    """What `produce` did, for people and scripts."""

    topic: str
    records: int = 0
    first_event: str | None = None
    last_event: str | None = None
    misfits: int = 0
    misfit_lines: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "records": self.records,
            "first_event": self.first_event,
            "last_event": self.last_event,
            "rows_not_fitting": self.misfits,
            "rows_not_fitting_first": self.misfit_lines,
        }


def tracked(
    records: Iterator[CsvRecord], summary: ProduceSummary, rate: float | None, keep: int = 10
) -> Iterator[CsvRecord]:
    """Count rows that do not fit (first `keep` with their lines), note event times, pace."""
    started = time.monotonic()
    for sent, record in enumerate(records):
        if rate:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if record.problem is not None:
            summary.misfits += 1
            if len(summary.misfit_lines) < keep:
                summary.misfit_lines.append({"line": record.line, "problem": record.problem})
        moment = _iso(datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC))
        summary.first_event = summary.first_event or moment
        summary.last_event = moment
        yield record


def produce_csv(
    settings: Settings,
    schema: StreamSchema,
    table: CsvTable,
    timing: Steps | FromColumn,
    *,
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = False,
) -> ProduceSummary:
    """Write every row to the topic (idempotent producer, acks awaited) and report misfits."""
    from tasks.stream import ensure_topic, produce

    summary = ProduceSummary(topic or schema.topic)
    ensure_topic(settings, summary.topic)
    stream = tracked(csv_records(table, schema, timing), summary, rate)
    with Progress(transient=True, disable=not progress) as bar:
        job = bar.add_task(f"Producing to {summary.topic}", total=len(table.rows))
        summary.records = produce(
            settings, summary.topic, stream, on_sent=lambda n: bar.advance(job, n)
        )
    return summary
