"""`streamtrain produce`: write a CSV file to a topic, one JSON record a row.

The rows become records in `tasks/csv_source.py`; this module paces them, shows progress and
sends them with the project's idempotent producer (`tasks.stream.produce`), as `simulate` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from tasks.csv_source import CsvRecord, CsvTable, FromColumn, Steps, csv_records
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.stream import ensure_topic, produce
from tasks.windowing import format_instant, from_ms

# How many rows that do not fit are reported with their line numbers.
SHOWN_MISFITS = 10


@dataclass
class ProduceSummary:
    """What `produce` did, for people and scripts."""

    topic: str
    records: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    misfits: int = 0
    misfit_lines: list[dict[str, Any]] = field(default_factory=list)

    def note(self, record: CsvRecord) -> None:
        """Count a record: its event time, and whether it fits the schema."""
        stamp = record.timestamp_ms
        self.first_ms = stamp if self.first_ms is None else min(stamp, self.first_ms)
        self.last_ms = stamp if self.last_ms is None else max(stamp, self.last_ms)
        if record.problem is None:
            return
        self.misfits += 1
        if len(self.misfit_lines) < SHOWN_MISFITS:
            self.misfit_lines.append({"line": record.line, "problem": record.problem})

    def to_dict(self) -> dict[str, Any]:
        def instant(ms: int | None) -> str | None:
            return None if ms is None else format_instant(from_ms(ms))

        return {
            "topic": self.topic,
            "records": self.records,
            "first_event": instant(self.first_ms),
            "last_event": instant(self.last_ms),
            "rows_not_fitting": self.misfits,
            "rows_not_fitting_first": self.misfit_lines,
        }


def tracked(
    records: Iterable[CsvRecord], summary: ProduceSummary, rate: float | None
) -> Iterator[CsvRecord]:
    """Note each record in the summary; with a rate, release them at that many a second."""
    started = time.monotonic()
    for sent, record in enumerate(records):
        if rate:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        summary.note(record)
        yield record


def run_produce(
    settings: Settings,
    schema: StreamSchema,
    table: CsvTable,
    timing: Steps | FromColumn,
    *,
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = False,
) -> ProduceSummary:
    """Write every row to the topic (acks awaited) and count the rows that do not fit."""
    summary = ProduceSummary(topic or schema.topic)
    ensure_topic(settings, summary.topic)
    stream = tracked(csv_records(table, schema, timing), summary, rate)
    with Progress(transient=True, disable=not progress) as bar:
        job = bar.add_task(f"Producing to {summary.topic}", total=len(table.rows))
        summary.records = produce(
            settings, summary.topic, stream, on_sent=lambda n: bar.advance(job, n)
        )
    return summary
