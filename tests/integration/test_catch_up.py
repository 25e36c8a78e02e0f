"""Scheduled runs catch up missed hours from the registry's lineage and the stream's own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from flows.finetune import closed_since, due_windows
from flows.runtime import stream_now
from flows.window_clock import announce_closed
from tasks.cycle import OPEN_WINDOW, CycleContext, finetune_window, retrain_until
from tasks.report import report_rows
from tasks.run_logging import cycle_runs
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import (
    ensure_topic,
    has_records,
    latest_timestamp,
    produce,
    read_window,
    watermark,
)
from tasks.windowing import Window, to_ms
from tests.integration.helpers import fresh_schema, quick_training
from tests.integration.test_stream import drone_value

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
LATER = datetime(2030, 1, 1, tzinfo=UTC)  # a wall clock long after the simulated days


def simulated(settings: Settings, days: int) -> StreamSchema:
    schema = fresh_schema(prefix="catchup")
    ensure_topic(settings, schema.topic)
    config = SimulationConfig(start=START, hours=days * 24, scenario="none", seed=3)
    produce(settings, schema.topic, generate(config))
    return schema


def test_stream_time_and_empty_windows_come_from_the_broker(settings: Settings) -> None:
    schema = simulated(settings, days=1)
    newest = latest_timestamp(settings, schema.topic)
    assert newest is not None and START < newest < START + timedelta(days=1)
    busy = [
        w
        for w in (Window(START + h * HOUR, START + (h + 1) * HOUR) for h in range(24))
        if has_records(settings, schema.topic, w)
    ]
    assert busy and len(busy) < 24  # daylight hours only
    assert latest_timestamp(settings, "no-such-topic-" + schema.topic) is None
    # A nightly retrain without --until ends at the stream's present, not the wall clock's.
    ctx = CycleContext(settings=settings, schema=schema)
    slowest = watermark(settings, schema.topic)
    assert slowest is not None and START < slowest <= newest
    assert stream_now(ctx, LATER) == slowest
    assert stream_now(ctx, START) == START


def test_missed_hours_are_found_from_lineage_not_the_wall_clock(
    settings: Settings, tmp_path: Path
) -> None:
    s = quick_training(settings)
    schema = simulated(s, days=10)
    ctx = CycleContext(settings=s, schema=schema)
    assert retrain_until(ctx, START + timedelta(days=8)).decision == "promoted"
    done = Window(START + timedelta(days=8, hours=10), START + timedelta(days=8, hours=11))
    assert finetune_window(ctx, done).window_closed

    due, left = due_windows(ctx, LATER)
    assert left == 0
    newest = watermark(s, schema.topic)
    assert newest is not None
    # From the hour after the last one fine-tuned, in order, up to the last window the
    # stream's time has closed (its end plus the lateness) - not up to the wall clock.
    assert due[0] == Window(done.end, done.end + HOUR)
    assert due == sorted(due) and len(set(due)) == len(due)
    assert due[-1].end + timedelta(seconds=s.allowed_lateness_s) <= newest
    assert due[-1].end + HOUR + timedelta(seconds=s.allowed_lateness_s) > newest

    # A wall clock before the stream's end bounds it instead; at most the configured number.
    capped = s.model_copy(update={"catch_up_max_windows": 3})
    capped_ctx = CycleContext(settings=capped, schema=schema)
    assert due_windows(capped_ctx, LATER) == (due[:3], len(due) - 3)
    assert due_windows(ctx, done.end + timedelta(minutes=5)) == ([], 0)

    # The stream's last window is still open (no partition has passed it): trained by hand,
    # the result and the report say so.
    last = Window.containing(newest, HOUR)
    early = finetune_window(ctx, last, trigger="manual")
    assert early.decision in ("promoted", "kept") and not early.window_closed
    assert OPEN_WINDOW in early.reasons
    (row,) = [
        r
        for r in report_rows(cycle_runs(s, schema.name))
        if r["window_start"] == early.window_start
    ]
    assert row["window_closed"] is False and OPEN_WINDOW in row["reasons"]
    closed_row = [
        r for r in report_rows(cycle_runs(s, schema.name)) if r["window_start"] == done.label()
    ]
    assert [r["window_closed"] for r in closed_row] == [True]


def test_the_window_clock_announces_each_closed_window_with_records_once(
    settings: Settings,
) -> None:
    schema = simulated(settings, days=2)
    sent: list[Window] = []
    first = announce_closed(settings, schema, LATER, emit=lambda _, w: sent.append(w))
    # Nothing fine-tuned yet: only the newest closed window is announced.
    assert first == sent and len(sent) == 1
    produce(
        settings,
        schema.topic,
        generate(
            SimulationConfig(start=START + timedelta(days=2), hours=24, scenario="none", seed=3)
        ),
    )
    second = announce_closed(settings, schema, LATER, emit=lambda _, w: sent.append(w))
    assert second and all(w > first[0] for w in second)
    assert all(has_records(settings, schema.topic, w) for w in second)
    assert announce_closed(settings, schema, LATER, emit=lambda _, w: sent.append(w)) == []
    assert len(sent) == len(set(sent))


def test_a_week_without_records_does_not_stall_the_catch_up(settings: Settings) -> None:
    """After an empty stretch longer than one run's cap, the next run reaches the new data."""
    from flows.finetune import closed_since

    schema = fresh_schema(prefix="gap")
    ensure_topic(settings, schema.topic)
    first = SimulationConfig(start=START, hours=24, scenario="none", seed=3)
    then = SimulationConfig(start=START + timedelta(days=9), hours=24, scenario="none", seed=3)
    produce(settings, schema.topic, [*generate(first), *generate(then)])
    done = Window(START + timedelta(hours=16), START + timedelta(hours=17))  # day 1's last hour
    capped = settings.model_copy(update={"catch_up_max_windows": 5})
    due, left = closed_since(capped, schema, done, LATER)
    # Day 10's first daylight hour is 09:00 (its records may sit up to the lateness earlier).
    assert due[0].start == START + timedelta(days=9, hours=8)
    assert all(w.start.date() == (START + timedelta(days=9)).date() for w in due)
    assert len(due) == 5 and left > 0
    # Nothing new after the newest window done: the empty night is not due again.
    last = Window(START + timedelta(days=9, hours=16), START + timedelta(days=9, hours=17))
    assert closed_since(capped, schema, last, LATER) == ([], 0)


def lagging_topic(settings: Settings) -> tuple[StreamSchema, KafkaProducer]:
    """A two-partition topic, and a producer that writes to a partition of its choice."""
    schema = fresh_schema(prefix="lagging")
    ensure_topic(settings, schema.topic, partitions=2)
    return schema, KafkaProducer(**settings.kafka_client_config())


def send_to(out: KafkaProducer, schema: StreamSchema, partition: int, *times: datetime) -> None:
    for n, when in enumerate(times):
        value = drone_value(100 * partition + n, when)
        out.send(schema.topic, value=value, partition=partition, timestamp_ms=to_ms(when))
    out.flush()


def test_a_lagging_partition_holds_its_windows_open_until_it_passes_them(
    settings: Settings,
) -> None:
    schema, out = lagging_topic(settings)
    ten = START + 10 * HOUR
    minutes = [timedelta(minutes=m) for m in (-45, 5, 20, 90, 180)]
    try:
        send_to(out, schema, 0, *(ten + m for m in minutes))  # up to 13:00
        send_to(out, schema, 1, ten - timedelta(minutes=50), ten - timedelta(minutes=30))
        before = Window(ten - HOUR, ten)
        window = Window(ten, ten + HOUR)

        assert watermark(settings, schema.topic) == ten - timedelta(minutes=30)
        assert latest_timestamp(settings, schema.topic) == ten + 3 * HOUR
        assert closed_since(settings, schema, before, LATER) == ([], 0)
        assert stream_now(CycleContext(settings=settings, schema=schema), LATER) < window.start
        assert not read_window(settings, schema, window, send_dead_letters=False).manifest.closed

        # The lagging partition delivers an on-time 10:40 record, then moves past 11:10.
        send_to(out, schema, 1, ten + timedelta(minutes=40), ten + 2 * HOUR + timedelta(minutes=30))
    finally:
        out.close()
    assert closed_since(settings, schema, before, LATER) == ([window, window.shifted(1)], 0)
    read = read_window(settings, schema, window, send_dead_letters=False)
    assert read.manifest.closed and (read.manifest.rows, read.manifest.late) == (3, 0)
    assert sorted(read.frame["_partition"]) == [0, 0, 1]
