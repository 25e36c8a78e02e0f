"""The window membership rule: every record counts in exactly one window's account."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tasks.windowing import (
    PartitionScan,
    Verdict,
    Window,
    format_instant,
    last_closed,
    parse_instant,
    place,
    skip_empty_stretch,
    windows_in,
    windows_to_catch_up,
)

HOUR = 3_600_000
T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)


def scan_for(start_hour: int, lateness_ms: int = 600_000) -> PartitionScan:
    start = T0 + start_hour * HOUR
    return PartitionScan(start, start + HOUR, HOUR, lateness_ms)


def test_window_containing_any_instant_and_length() -> None:
    w = Window.containing(datetime(2026, 1, 5, 10, 37, tzinfo=UTC), timedelta(hours=1))
    assert (w.start.hour, w.end.hour) == (10, 11)
    quarter = Window.containing(datetime(2026, 1, 5, 10, 37, tzinfo=UTC), timedelta(minutes=15))
    assert (quarter.start.minute, quarter.end.minute) == (30, 45)
    assert w.shifted(2).start.hour == 12


def test_instants_round_trip() -> None:
    moment = parse_instant("2026-01-05T10:00Z")
    assert format_instant(moment) == "2026-01-05T10:00Z"
    assert parse_instant("2026-01-05T10:00").tzinfo is not None
    with pytest.raises(ValueError, match="not an ISO 8601"):
        parse_instant("yesterday")


def test_in_order_records_are_on_time_in_their_window_only() -> None:
    scan = scan_for(10)
    assert scan.observe(T0 + 9 * HOUR + 5, T0 + 9 * HOUR + 5) is Verdict.OTHER
    assert scan.observe(T0 + 10 * HOUR + 1, T0 + 10 * HOUR + 1) is Verdict.ON_TIME
    assert scan.observe(T0 + 11 * HOUR + 1, T0 + 11 * HOUR + 1) is Verdict.OTHER
    assert scan.observe(T0 + 11 * HOUR + 600_000, T0 + 11 * HOUR + 600_000) is Verdict.STOP
    assert scan.stopped


def test_out_of_order_record_within_lateness_lands_in_its_window() -> None:
    scan = scan_for(10)
    scan.observe(T0 + 11 * HOUR + 60_000, T0 + 11 * HOUR + 60_000)  # stream time 11:01
    assert scan.observe(T0 + 10 * HOUR + 30, T0 + 10 * HOUR + 30) is Verdict.ON_TIME


def test_record_after_lateness_is_late_in_the_window_open_when_it_arrived() -> None:
    # Stream time 12:20: window 10 closed at 11:10, so a 10:xx record is late, counted in 12.
    record = T0 + 10 * HOUR + 30
    for hour, expected in [(10, Verdict.OTHER), (11, Verdict.OTHER), (12, Verdict.LATE)]:
        scan = scan_for(hour)
        if hour < 12:
            # the scans of 10 and 11 stop before they ever see stream time 12:20
            assert scan.observe(T0 + 12 * HOUR + 1_200_000, 0) is Verdict.STOP
            continue
        scan.observe(T0 + 12 * HOUR + 1_200_000, T0 + 12 * HOUR + 1_200_000)
        assert scan.observe(record, record) is expected


def test_event_time_far_ahead_of_kafka_time_is_not_trusted() -> None:
    assert place(T0 + 10 * HOUR, T0, max_skew_ms=300_000) == (T0, False)
    assert place(T0 + 1000, T0, max_skew_ms=300_000) == (T0 + 1000, True)
    assert place(None, T0, max_skew_ms=0) == (T0, False)


def test_random_stream_counts_every_record_exactly_once() -> None:
    """Whatever the disorder, the windows' accounts partition the records."""
    rng = random.Random(3)
    stream = []
    for i in range(3000):
        kafka_ms = T0 + i * 7_000 + rng.randint(-60_000, 60_000)
        event_ms = kafka_ms - (rng.randint(0, 3 * HOUR) if rng.random() < 0.05 else 0)
        stream.append((kafka_ms, event_ms))
    counted: Counter[int] = Counter()
    for hour in range(-2, 10):
        scan = scan_for(hour)
        start = scan.window_start_ms - 300_000
        # Like the reader: begin at the first record stamped at or after the start.
        first = next((i for i, (k, _) in enumerate(stream) if k >= start), len(stream))
        # Records before it all stamped earlier? Only if stamps were sorted; emulate the
        # time index exactly: earliest offset whose timestamp >= start.
        for index in range(first, len(stream)):
            kafka_ms, event_ms = stream[index]
            verdict = scan.observe(kafka_ms, place(event_ms, kafka_ms, 300_000)[0])
            if verdict is Verdict.STOP:
                break
            if verdict in (Verdict.ON_TIME, Verdict.LATE):
                counted[index] += 1
    inside = [
        i
        for i, (k, _) in enumerate(stream)
        if T0 - 2 * HOUR + 3_600_000 <= k < T0 + 9 * HOUR  # well inside the scanned hours
    ]
    assert inside
    assert all(counted[i] == 1 for i in inside), [i for i in inside if counted[i] != 1][:5]


# --- which closed windows a scheduled run catches up ---------------------------------------

LENGTH = timedelta(hours=1)


def hour_window(day: int, hour: int) -> Window:
    return Window.containing(datetime(2026, 1, day, hour, tzinfo=UTC), LENGTH)


def test_a_window_closes_only_after_its_end_plus_the_lateness() -> None:
    lateness = timedelta(minutes=10)
    assert last_closed(datetime(2026, 1, 5, 11, 9, tzinfo=UTC), lateness, LENGTH) == hour_window(
        5, 9
    )
    assert last_closed(datetime(2026, 1, 5, 11, 10, tzinfo=UTC), lateness, LENGTH) == (
        hour_window(5, 10)
    )


def test_missed_hours_are_caught_up_in_order_and_none_twice() -> None:
    due, left = windows_to_catch_up(hour_window(5, 7), hour_window(5, 11), limit=10)
    assert due == [hour_window(5, h) for h in (8, 9, 10, 11)] and left == 0
    # Up to date, or the stream's time has not moved on: nothing runs again.
    assert windows_to_catch_up(hour_window(5, 11), hour_window(5, 11), limit=10) == ([], 0)
    assert windows_to_catch_up(hour_window(5, 12), hour_window(5, 11), limit=10) == ([], 0)


def test_a_long_outage_is_caught_up_oldest_first_over_several_runs() -> None:
    due, left = windows_to_catch_up(hour_window(5, 0), hour_window(6, 0), limit=5)
    assert due == [hour_window(5, h) for h in range(1, 6)] and left == 19
    due, left = windows_to_catch_up(due[-1], hour_window(6, 0), limit=5)
    assert due[0] == hour_window(5, 6) and left == 14


def test_with_nothing_done_only_the_newest_closed_window_is_due() -> None:
    assert windows_to_catch_up(None, hour_window(5, 11), limit=10) == ([hour_window(5, 11)], 0)


def test_a_duration_spans_whole_windows_of_any_length() -> None:
    assert windows_in(timedelta(hours=72), timedelta(hours=1)) == 72
    assert windows_in(timedelta(hours=72), timedelta(minutes=15)) == 288
    assert windows_in(timedelta(minutes=20), timedelta(minutes=15)) == 2
    assert windows_in(timedelta(0), timedelta(hours=1)) == 1


def test_the_catch_up_skips_an_empty_stretch_to_the_window_of_the_next_record() -> None:
    hour = timedelta(hours=1)
    done = Window(datetime(2026, 1, 5, 16, tzinfo=UTC), datetime(2026, 1, 5, 17, tzinfo=UTC))
    next_record = datetime(2026, 1, 12, 9, 3, tzinfo=UTC)  # a week later
    resumed = skip_empty_stretch(done, next_record, timedelta(minutes=10))
    # The record may belong to a window up to the lateness earlier: 08:00 is due, not 09:00.
    assert resumed == Window(
        datetime(2026, 1, 12, 7, tzinfo=UTC), datetime(2026, 1, 12, 8, tzinfo=UTC)
    )
    due, left = windows_to_catch_up(resumed, Window.containing(next_record, hour), 168)
    assert [w.start.hour for w in due] == [8, 9] and left == 0
    # A record right after the last window done skips nothing; no record at all: nothing due.
    assert skip_empty_stretch(done, done.end, timedelta(minutes=10)) == done
    assert skip_empty_stretch(done, None, timedelta(minutes=10)) is None
