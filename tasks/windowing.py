"""Event-time windows and the rule that puts every record in exactly one window's account.

Pure logic, no Kafka: `stream.read_window` feeds it records in partition/offset order.

The rule, per partition (Kafka orders records only within a partition):
- A record is *placed* at its event time; when the event time is unreadable, or lies more
  than the allowed clock skew after the record's Kafka timestamp, at its Kafka timestamp.
- Stream time (the watermark) after a record is the largest Kafka timestamp seen so far,
  that record included. Kafka timestamps, not event times, drive it so that one record with
  a hostile event time cannot close every window at once.
- A record is *on time* when stream time after it is still before the end of its window plus
  the allowed lateness; it then counts in its own window (used, duplicate or malformed).
- Otherwise it is *late*: its window was already closed when it arrived. It counts, as late,
  in the window that stream time minus the lateness falls in: the window being read when it
  arrived. So each record counts once, whichever windows are read and in which order.
- A window's scan of a partition ends at the first record whose stream time reaches the
  window's end plus the lateness; from there on nothing can count in this window.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tasks.errors import InputError


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def from_ms(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def format_instant(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the minute when seconds are zero (2026-01-05T10:00Z)."""
    moment = moment.astimezone(UTC)
    if moment.second == 0 and moment.microsecond == 0:
        return moment.strftime("%Y-%m-%dT%H:%MZ")
    return moment.isoformat().replace("+00:00", "Z")


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant; naive values are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{text!r} is not an ISO 8601 time such as 2026-01-05T10:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Window:
    """The half-open event-time interval [start, end)."""

    start: datetime
    end: datetime

    @classmethod
    def containing(cls, instant: datetime, length: timedelta) -> Window:
        length_ms = int(length.total_seconds() * 1000)
        start_ms = to_ms(instant) // length_ms * length_ms
        return cls(from_ms(start_ms), from_ms(start_ms + length_ms))

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def shifted(self, steps: int) -> Window:
        return Window(self.start + steps * self.length, self.end + steps * self.length)

    def label(self) -> str:
        return format_instant(self.start)

    def __str__(self) -> str:
        return f"[{format_instant(self.start)}, {format_instant(self.end)})"


def windows_between(start: datetime, end: datetime, length: timedelta) -> list[Window]:
    """Every window from the one containing `start` up to, not including, the one at `end`."""
    first = Window.containing(start, length)
    out = []
    current = first
    while current.start < end:
        out.append(current)
        current = current.shifted(1)
    return out


def last_closed(stream_time: datetime, lateness: timedelta, length: timedelta) -> Window:
    """The newest window whose end plus the allowed lateness stream time has passed."""
    return Window.containing(stream_time - lateness, length).shifted(-1)


def windows_in(duration: timedelta, length: timedelta) -> int:
    """How many windows of `length` a duration spans (at least one): settings such as
    `replay_hours` are durations of time, whatever the schema's window length."""
    return max(1, math.ceil(duration / length))


def skip_empty_stretch(
    last_done: Window, first_record: datetime | None, lateness: timedelta
) -> Window | None:
    """Where the catch-up resumes when nothing was written for a while.

    `first_record` is the earliest Kafka timestamp at or after `last_done.end`. Windows before
    the one it falls in (less the allowed lateness, since a record may belong to a window up to
    that much earlier) hold no record, so they count as done: an empty week is not re-read
    window by window every hour. None when no record follows at all.
    """
    if first_record is None:
        return None
    first = Window.containing(first_record - lateness, last_done.length)
    return first.shifted(-1) if first > last_done else last_done


def windows_to_catch_up(
    last_done: Window | None, closed: Window, limit: int
) -> tuple[list[Window], int]:
    """The closed windows after the last one trained on, oldest first, at most `limit`.

    Returns them with the number left for the next run: a run that was missed is caught up in
    order, never skipped, and a window already done is not run again. With no window done yet,
    only the newest closed one is due.
    """
    if last_done is None:
        return [closed], 0
    due = windows_between(last_done.end, closed.end, closed.length) if closed > last_done else []
    return due[:limit], max(0, len(due) - limit)


class Verdict(enum.Enum):
    """What one record means for the window being read."""

    ON_TIME = "on_time"  # placed in this window and on time
    LATE = "late"  # an earlier window's record that arrived while this window was open
    OTHER = "other"  # counts in another window's account
    STOP = "stop"  # stream time passed this window's end plus lateness: scan is over


def place(event_ms: int | None, kafka_ms: int, max_skew_ms: int) -> tuple[int, bool]:
    """Where a record is placed in event time, and whether its own event time was trusted."""
    if event_ms is None or event_ms > kafka_ms + max_skew_ms:
        return kafka_ms, False
    return event_ms, True


@dataclass
class PartitionScan:
    """The membership rule for one span of windows over one partition, fed in offset order.

    The span [window_start_ms, window_end_ms) is one window or several consecutive ones
    (a retrain's range); a record counts in it when it would count in one of its windows.
    """

    window_start_ms: int
    window_end_ms: int
    length_ms: int
    lateness_ms: int
    watermark_ms: int | None = None
    stopped: bool = False

    def observe(self, kafka_ms: int, placed_ms: int) -> Verdict:
        stream_time = kafka_ms if self.watermark_ms is None else max(self.watermark_ms, kafka_ms)
        if stream_time >= self.window_end_ms + self.lateness_ms:
            self.stopped = True
            return Verdict.STOP
        self.watermark_ms = stream_time
        placed_start = placed_ms // self.length_ms * self.length_ms
        if stream_time < placed_start + self.length_ms + self.lateness_ms:
            return Verdict.ON_TIME if self._inside(placed_start) else Verdict.OTHER
        arrival_slot = (stream_time - self.lateness_ms) // self.length_ms * self.length_ms
        return Verdict.LATE if self._inside(arrival_slot) else Verdict.OTHER

    def _inside(self, window_start_ms: int) -> bool:
        return self.window_start_ms <= window_start_ms < self.window_end_ms
