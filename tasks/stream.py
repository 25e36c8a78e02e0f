"""Kafka I/O: topics, producing records, reading one event-time window, the dead-letter topic.

All Kafka client code of the project lives here. `read_window` uses the broker's time index
(`offsets_for_times`) to start near the window, applies the membership rule of
`tasks.windowing`, and accounts for every record it reads: used, duplicate, malformed or late.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner import DefaultPartitioner, Partitioner
from kafka.partitioner.default import murmur2

from tasks.errors import FinalError
from tasks.schema import MalformedRecord, StreamSchema, decode_record, parse_event_time
from tasks.settings import Settings
from tasks.windowing import (
    PartitionScan,
    Verdict,
    Window,
    format_instant,
    from_ms,
    place,
    to_ms,
)

log = logging.getLogger(__name__)

# Columns a window frame carries beside the schema's: event time in ms and Kafka coordinates.
ROW_META = ("_event_ms", "_partition", "_offset")


class StreamError(RuntimeError):
    """Kafka could not be used (unreachable cluster, missing topic); the message says why."""


class MissingTopic(StreamError, FinalError):
    """The topic does not exist: final at once, a retry would only wait to say so again."""


class DeadLetterError(StreamError):
    """Dead letters the broker did not acknowledge: their source offsets must not be committed."""


class OutgoingRecord(Protocol):
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int: ...


@dataclass(frozen=True)
class SetAside:
    """A record that was read but not used, with where it came from and why."""

    kind: str  # malformed | duplicate | late | quarantined
    reason: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass
class WindowManifest:
    """The account of one window read: what was used, what was set aside, what was covered."""

    topic: str
    window: Window
    rows: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, list[int]] = field(default_factory=dict)
    closed: bool = False
    dead_lettered: int = 0
    set_aside: list[SetAside] = field(default_factory=list)

    @property
    def records_read(self) -> int:
        return self.rows + self.duplicates + self.malformed + self.late

    def data_hash(self, frame: pd.DataFrame) -> str:
        return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        reasons = Counter(f"{a.kind}: {a.reason}" for a in self.set_aside)
        return {
            "topic": self.topic,
            "window_start": format_instant(self.window.start),
            "window_end": format_instant(self.window.end),
            "rows": self.rows,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "late": self.late,
            "records_read": self.records_read,
            "label_counts": self.label_counts,
            "offsets": self.offsets,
            "closed": self.closed,
            "dead_lettered": self.dead_lettered,
            "set_aside_reasons": dict(sorted(reasons.items())),
        }


@dataclass
class WindowRead:
    """A window's rows (a DataFrame in the schema's column order) and its manifest."""

    frame: pd.DataFrame
    manifest: WindowManifest


# --- clients -------------------------------------------------------------------------------


def _client_error(settings: Settings, exc: Exception) -> StreamError:
    return StreamError(
        f"Kafka at {settings.bootstrap_servers} did not answer ({exc.__class__.__name__}: {exc}). "
        "Start the embedded broker with `streamtrain kafka start`, or set KAFKA_BOOTSTRAP_SERVERS."
    )


@contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        client = KafkaAdminClient(
            **settings.kafka_client_config(), bootstrap_timeout_ms=10000, client_id="streamtrain"
        )
    except KafkaError as exc:
        raise _client_error(settings, exc) from None
    try:
        yield client
    finally:
        client.close()


class CachedHashPartitioner(Partitioner):
    """kafka-python's default partitioning (murmur2 of the key, as the Java client does), each
    key hashed once: a scorer sends a record per input with recurring keys, and the pure-Python
    murmur2 plus a sorted partition list per record cost a tenth of its send loop."""

    def __init__(self, cache_size: int = 65_536) -> None:
        self._hash = functools.lru_cache(maxsize=cache_size)(murmur2)
        self._unkeyed = DefaultPartitioner()

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(
                self._unkeyed.partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            )
        index = (self._hash(serialized_key) & 0x7FFFFFFF) % len(partitions)
        return int(sorted(partitions)[index])


@contextmanager
def producer(settings: Settings, **options: Any) -> Iterator[KafkaProducer]:
    """An idempotent producer (acks=all; kafka-python 3 defaults, kept on purpose)."""
    config: dict[str, Any] = {"linger_ms": 20, "batch_size": 256 * 1024, "client_id": "streamtrain"}
    config.update(options)
    try:
        client = KafkaProducer(
            **settings.kafka_client_config(), bootstrap_timeout_ms=10000, **config
        )
    except KafkaError as exc:
        raise _client_error(settings, exc) from None
    try:
        yield client
        client.flush()
    finally:
        client.close()


def _consumer(settings: Settings, **options: Any) -> KafkaConsumer:
    config: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "streamtrain-reader",
        "bootstrap_timeout_ms": 10000,
        # A window read ends at known offsets: don't let the broker hold empty fetches (a
        # fetch of a partition parked at its end would wait this long before answering).
        "fetch_max_wait_ms": 1,
        # A fetch returns whole batches from this far on, and kafka-python decodes every
        # record of them: an hour is a few kilobytes, so 1 MB a partition (the default) mostly
        # decodes records past the window. 64 kB keeps a multi-day span as fast as 1 MB did.
        "max_partition_fetch_bytes": 64 * 1024,
    }
    config.update(options)
    try:
        return KafkaConsumer(**settings.kafka_client_config(), **config)
    except KafkaError as exc:
        raise _client_error(settings, exc) from None


def ensure_topic(settings: Settings, topic: str, partitions: int | None = None) -> bool:
    """Create the topic if it does not exist; returns True when it was created."""
    with admin_client(settings) as admin:
        if topic in admin.list_topics():
            return False
        configs = {"retention.ms": str(settings.kafka_topic_retention_ms)}
        if settings.kafka_min_insync_replicas is not None:
            # With acks=all, a write then needs this many replicas: RF 3 and 2 survive a broker.
            configs["min.insync.replicas"] = str(settings.kafka_min_insync_replicas)
        spec = {
            "num_partitions": partitions or settings.kafka_partitions,
            "replication_factor": settings.kafka_replication_factor,
            "configs": configs,
        }
        try:
            admin.create_topics({topic: spec}, wait_for_metadata=True)
        except TopicAlreadyExistsError:
            return False
        return True


# --- producing -----------------------------------------------------------------------------


def produce(
    settings: Settings,
    topic: str,
    records: Iterable[OutgoingRecord],
    *,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send records with their own Kafka timestamps; returns how many were acknowledged."""
    sent = 0
    failures: list[Exception] = []

    def failed(exc: Exception) -> None:
        failures.append(exc)

    with producer(settings) as client:
        for record in records:
            client.send(
                topic, key=record.key, value=record.value, timestamp_ms=record.timestamp_ms
            ).add_errback(failed)
            sent += 1
            if on_sent is not None and sent % 1000 == 0:
                on_sent(1000)
        client.flush()
    if on_sent is not None and sent % 1000:
        on_sent(sent % 1000)
    if failures:
        raise StreamError(f"{len(failures)} of {sent} records were not written: {failures[0]}")
    return sent


def dead_letter(settings: Settings, schema: StreamSchema, items: list[SetAside]) -> int:
    """Send set-aside records to the dead-letter topic and wait for the broker's acks.

    Raises `DeadLetterError` when any was not written: the dead letter may be a bad record's
    only copy once its input offset is committed, so the caller must not commit past it.
    The dead-letter topic is at-least-once: re-reading a window sends its set-aside records
    again; the `source` block (topic, partition, offset) identifies repeats.
    """
    if not items:
        return 0
    topic = schema.dead_letter_topic(settings.dead_letter_topic)
    ensure_topic(settings, topic, partitions=1)
    with producer(settings) as client:
        futures = [
            client.send(
                topic,
                key=item.key,
                value=_envelope(schema, item),
                headers=_dead_letter_headers(schema, item),
                timestamp_ms=item.timestamp_ms,
            )
            for item in items
        ]
        client.flush()
    failed = [(item, f.exception) for item, f in zip(items, futures, strict=True) if f.failed()]
    if failed:
        first, exc = failed[0]
        raise DeadLetterError(
            f"{len(failed)} of {len(items)} dead letters were not written to '{topic}' "
            f"(first: {schema.topic}-{first.partition} offset {first.offset}: "
            f"{type(exc).__name__}: {exc})"
        )
    return len(items)


def _dead_letter_headers(schema: StreamSchema, item: SetAside) -> list[tuple[str, bytes]]:
    return [
        ("source-topic", schema.topic.encode()),
        ("source-partition", str(item.partition).encode()),
        ("source-offset", str(item.offset).encode()),
        ("reason", item.kind.encode()),
    ]


# Kafka's default limit on one record is 1 MB, and an envelope escapes its value (up to 12
# bytes a character), so a record that fitted its topic may not fit as a dead letter. Beyond
# this size the envelope keeps the value's head; the source offset still leads to all of it.
DEAD_LETTER_MAX_BYTES = 512 * 1024


def _envelope(schema: StreamSchema, item: SetAside) -> bytes:
    """The dead letter's JSON: kind, reason, source coordinates and the value as text."""
    value = None if item.value is None else item.value.decode("utf-8", "replace")
    envelope: dict[str, Any] = {
        "kind": item.kind,
        "reason": item.reason[:2000],
        "source": {
            "topic": schema.topic,
            "partition": item.partition,
            "offset": item.offset,
            "timestamp_ms": item.timestamp_ms,
        },
        "value": value,
    }
    encoded = json.dumps(envelope, sort_keys=True).encode()
    if len(encoded) <= DEAD_LETTER_MAX_BYTES or value is None:
        return encoded
    envelope["value"] = value[: DEAD_LETTER_MAX_BYTES // 16]
    envelope["value_truncated_from_bytes"] = len(item.value or b"")
    return json.dumps(envelope, sort_keys=True).encode()


# --- reading a window ----------------------------------------------------------------------


@dataclass
class _Candidate:
    partition: int
    offset: int
    decoded: dict[str, Any]


@dataclass
class _SharedReader:
    consumer: KafkaConsumer
    lock: threading.Lock = field(default_factory=threading.Lock)
    refreshed: float = 0.0  # monotonic time of the last metadata refresh


# How old the shared consumer's metadata may be when a read starts. kafka-python spaces
# metadata requests by retry_backoff_ms (100 ms), so refreshing before every read of a tight
# loop would cost more than the read; an hourly run always starts from fresh metadata.
METADATA_MAX_AGE_S = 1.0


# One consumer per process and connection: building one (bootstrap, metadata) costs more than
# reading a whole hourly window. Keyed by everything that makes a connection, so settings with
# other bootstrap servers or credentials (a test's own broker) get a consumer of their own.
_SHARED: dict[tuple[int, str], _SharedReader] = {}
_SHARED_LOCK = threading.Lock()


def _connection_key(settings: Settings) -> tuple[int, str]:
    config = settings.kafka_client_config()
    # The pid too: a forked child must not use its parent's consumer (its IO thread is gone).
    return os.getpid(), hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()


def _shared_reader(settings: Settings) -> _SharedReader:
    key = _connection_key(settings)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _SharedReader(_consumer(settings))
        return shared


def _drop_shared(shared: _SharedReader) -> None:
    with _SHARED_LOCK:
        for key, found in list(_SHARED.items()):
            if found is shared:
                del _SHARED[key]
    shared.consumer.close()


@atexit.register
def close_readers() -> None:
    """Close every shared consumer of this process (at exit; tests call it to start afresh)."""
    with _SHARED_LOCK:
        found = [s for (pid, _), s in _SHARED.items() if pid == os.getpid()]
        _SHARED.clear()
    for shared in found:
        shared.consumer.close()


@contextmanager
def window_reader(settings: Settings) -> Iterator[KafkaConsumer]:
    """The process's consumer for these settings, to read windows and offsets with.

    Reused across calls (and so across a backfill's hours and an hourly process's runs). Its
    metadata is refreshed when a read starts (unless the last refresh is under a second old),
    so a topic that gained partitions is read whole. When another thread holds it, or a read
    already uses it, a private consumer serves instead. A read that failed closes it: the next
    one starts from a new connection.
    """
    shared = _shared_reader(settings)
    if not shared.lock.acquire(blocking=False):
        private = _consumer(settings)
        try:
            yield private
        finally:
            private.close()
        return
    try:
        if time.monotonic() - shared.refreshed > METADATA_MAX_AGE_S:
            _refresh_metadata(settings, shared.consumer)
            shared.refreshed = time.monotonic()
        yield shared.consumer
    except BaseException:
        _drop_shared(shared)
        raise
    finally:
        shared.lock.release()


def _refresh_metadata(settings: Settings, consumer: KafkaConsumer) -> None:
    try:
        consumer.topics()  # always asks the cluster: partitions added since the last read
    except KafkaError as exc:
        raise _client_error(settings, exc) from None


def read_window(
    settings: Settings,
    schema: StreamSchema,
    window: Window,
    *,
    topic: str | None = None,
    send_dead_letters: bool = True,
    require_label: bool = True,
    reader: KafkaConsumer | None = None,
) -> WindowRead:
    """Read the records of one event-time window (or a span of them) across all partitions."""
    if window.start_ms % schema.window_ms or window.end_ms % schema.window_ms:
        raise ValueError(f"{window} is not aligned to the schema's {schema.window} windows")
    topic = topic or schema.topic
    manifest = WindowManifest(topic=topic, window=window)
    candidates: list[_Candidate] = []
    if reader is None:
        with window_reader(settings) as own:
            _read_into(settings, schema, own, topic, manifest, candidates, require_label)
    else:
        _read_into(settings, schema, reader, topic, manifest, candidates, require_label)
    frame = _used_rows(schema, candidates, manifest)
    if send_dead_letters:
        manifest.dead_lettered = dead_letter(
            settings, schema, [a for a in manifest.set_aside if a.kind != "duplicate"]
        )
    return WindowRead(frame=frame, manifest=manifest)


def _read_into(
    settings: Settings,
    schema: StreamSchema,
    consumer: KafkaConsumer,
    topic: str,
    manifest: WindowManifest,
    candidates: list[_Candidate],
    require_label: bool,
) -> None:
    window = manifest.window
    found_partitions = consumer.partitions_for_topic(topic)
    if not found_partitions:
        raise MissingTopic(f"topic '{topic}' does not exist on {settings.bootstrap_servers}")
    partitions = [TopicPartition(topic, p) for p in sorted(found_partitions)]
    consumer.assign(partitions)
    scan_from = window.start_ms - settings.max_clock_skew_s * 1000
    starts = consumer.offsets_for_times({tp: scan_from for tp in partitions})
    ends = consumer.end_offsets(partitions)
    scans: dict[TopicPartition, PartitionScan] = {}
    for tp in partitions:
        found = starts.get(tp)
        if found is None or found.offset >= ends[tp]:
            continue
        consumer.seek(tp, found.offset)
        scans[tp] = PartitionScan(
            window.start_ms, window.end_ms, schema.window_ms, settings.allowed_lateness_s * 1000
        )
        manifest.offsets[f"{topic}-{tp.partition}"] = [found.offset, found.offset - 1]
    for tp in partitions:
        if tp not in scans:  # nothing to read here: park it at its end
            consumer.seek(tp, ends[tp])
    _scan(settings, schema, consumer, scans, ends, manifest, candidates, require_label)
    # Closed when every partition that holds records has passed the window's end plus the
    # lateness; one whose records all precede the window (no scan) is behind, not done.
    # (A scanned partition holds records; only the others need their first offsets.)
    unscanned = [tp for tp in partitions if tp not in scans]
    firsts = consumer.beginning_offsets(unscanned) if unscanned else {}
    holding = [tp for tp in partitions if tp in scans or ends[tp] > firsts[tp]]
    manifest.closed = bool(holding) and all(tp in scans and scans[tp].stopped for tp in holding)


def _scan(
    settings: Settings,
    schema: StreamSchema,
    consumer: KafkaConsumer,
    scans: dict[TopicPartition, PartitionScan],
    ends: dict[TopicPartition, int],
    manifest: WindowManifest,
    candidates: list[_Candidate],
    require_label: bool,
) -> None:
    skew_ms = settings.max_clock_skew_s * 1000
    active = {tp for tp in scans if consumer.position(tp) < ends[tp]}
    idle_polls = 0
    while active:
        batch = consumer.poll(timeout_ms=1000, max_records=250)
        idle_polls = 0 if batch else idle_polls + 1
        if idle_polls > settings.kafka_request_timeout_ms // 1000:
            raise StreamError(f"reading {manifest.window} from '{manifest.topic}' stalled")
        for tp, records in batch.items():
            if tp not in active:
                continue
            scan = scans[tp]
            for record in records:
                if record.offset >= ends[tp] or scan.stopped:
                    break
                _classify(schema, scan, record, skew_ms, manifest, candidates, require_label)
                if not scan.stopped:
                    manifest.offsets[f"{tp.topic}-{tp.partition}"][1] = record.offset
            if scan.stopped or consumer.position(tp) >= ends[tp]:
                active.discard(tp)
                consumer.seek(tp, ends[tp])  # stop fetching what this read will not use


def _classify(
    schema: StreamSchema,
    scan: PartitionScan,
    record: Any,
    skew_ms: int,
    manifest: WindowManifest,
    candidates: list[_Candidate],
    require_label: bool,
) -> None:
    problem: str | None = None
    decoded: dict[str, Any] | None = None
    event_ms: int | None = None
    try:
        decoded = decode_record(schema, record.value, require_label=require_label)
        event_ms = decoded["_event_ms"]
    except MalformedRecord as exc:
        problem = str(exc)
    placed_ms, trusted = place(event_ms, record.timestamp, skew_ms)
    if event_ms is not None and not trusted:
        problem = (
            f"event time {format_instant(from_ms(event_ms))} is after its Kafka timestamp "
            f"{format_instant(from_ms(record.timestamp))} by more than the allowed clock skew"
        )
    verdict = scan.observe(record.timestamp, placed_ms)
    if verdict in (Verdict.OTHER, Verdict.STOP):
        return

    def aside(kind: str, reason: str) -> SetAside:
        return SetAside(
            kind,
            reason,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
        )

    if verdict is Verdict.LATE:
        manifest.late += 1
        manifest.set_aside.append(
            aside("late", f"arrived after window {format_instant(from_ms(placed_ms))} closed")
        )
    elif problem is not None or decoded is None:
        manifest.malformed += 1
        manifest.set_aside.append(aside("malformed", problem or "unreadable"))
    else:
        candidates.append(_Candidate(record.partition, record.offset, decoded))


def _used_rows(
    schema: StreamSchema, candidates: list[_Candidate], manifest: WindowManifest
) -> pd.DataFrame:
    """Drop repeats of (key, event time), then order rows deterministically."""
    seen: set[tuple[Any, int]] = set()
    rows: list[dict[str, Any]] = []
    order: list[tuple[int, str, int, int]] = []
    for cand in sorted(candidates, key=lambda c: (c.partition, c.offset)):
        key = cand.decoded.get(schema.key) if schema.key else None
        identity = (key, cand.decoded["_event_ms"])
        if identity in seen:
            manifest.duplicates += 1
            manifest.set_aside.append(
                SetAside(
                    "duplicate",
                    f"repeats {schema.key}={key} at the same event time",
                    cand.partition,
                    cand.offset,
                    cand.decoded["_event_ms"],
                    None,
                    None,
                )
            )
            continue
        seen.add(identity)
        rows.append({**cand.decoded, "_partition": cand.partition, "_offset": cand.offset})
        order.append((cand.decoded["_event_ms"], str(key), cand.partition, cand.offset))
    ranked = [row for _, row in sorted(zip(order, rows, strict=True), key=lambda pair: pair[0])]
    frame = pd.DataFrame(ranked, columns=[*schema.columns, *ROW_META]) if ranked else _empty(schema)
    manifest.rows = len(frame)
    if schema.label.field in frame and len(frame):
        counts = frame[schema.label.field].value_counts()
        manifest.label_counts = {str(k): int(v) for k, v in sorted(counts.items(), key=str)}
    return frame.reset_index(drop=True)


def _empty(schema: StreamSchema) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in [*schema.columns, *ROW_META]})


def topic_size(settings: Settings, topic: str) -> int:
    """How many records the topic holds now (0 when it does not exist)."""
    with window_reader(settings) as consumer:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return 0
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
    return sum(ends[tp] - starts[tp] for tp in tps)


def latest_timestamp(settings: Settings, topic: str) -> datetime | None:
    """The newest record timestamp on the topic (how far its fastest partition got), or None.

    For where a live simulation continues; whether a window is closed is `watermark`'s call.
    """
    tails = partition_tails(settings, topic)
    return from_ms(max(tails.values())) if tails else None


def watermark(settings: Settings, topic: str) -> datetime | None:
    """The stream's event-time watermark: the slowest partition's newest timestamp, or None.

    Only partitions that hold records count. A window is closed when this has passed its end
    plus the allowed lateness: a partition behind the others may still deliver its records.
    """
    tails = partition_tails(settings, topic)
    return from_ms(min(tails.values())) if tails else None


def partition_tails(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's last record timestamp (ms), for the partitions that hold records.

    Producers stamp records with their event time, so this is how far each partition's time
    has got. Reads only the last record of each partition.
    """
    with window_reader(settings) as consumer:
        tps = _partitions(consumer, topic)
        firsts = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        tails = {tp: end for tp, end in ends.items() if end > firsts[tp]}
        if not tails:
            return {}
        consumer.assign(list(tails))
        for tp, end in tails.items():
            consumer.seek(tp, end - 1)
        last: dict[int, int] = {}
        for record in _until_ends(settings, consumer, tails, "the stream's end"):
            last[record.partition] = record.timestamp
    return last


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions in order; none when it does not exist."""
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def has_records(settings: Settings, topic: str, window: Window) -> bool:
    """Whether any record is stamped inside the window, from the broker's time index alone."""
    with window_reader(settings) as consumer:
        tps = _partitions(consumer, topic)
        ends = consumer.end_offsets(tps)
        firsts = consumer.offsets_for_times({tp: window.start_ms for tp in tps})
        afters = consumer.offsets_for_times({tp: window.end_ms for tp in tps})
    for tp in tps:
        first, after = firsts.get(tp), afters.get(tp)
        if first is not None and first.offset < (ends[tp] if after is None else after.offset):
            return True
    return False


def first_timestamp_from(settings: Settings, topic: str, instant: datetime) -> datetime | None:
    """The earliest record timestamp at or after `instant` on any partition, or None.

    From the broker's time index alone (one lookup per partition): how the hourly catch-up
    skips a long empty stretch without reading its windows one by one.
    """
    with window_reader(settings) as consumer:
        tps = _partitions(consumer, topic)
        found = consumer.offsets_for_times({tp: to_ms(instant) for tp in tps}) if tps else {}
    stamps = [hit.timestamp for hit in found.values() if hit is not None]
    return from_ms(min(stamps)) if stamps else None


# --- reading predictions -------------------------------------------------------------------


def read_predictions(
    settings: Settings, schema: StreamSchema, window: Window, *, topic: str
) -> list[dict[str, Any]]:
    """Every prediction on `topic` (as written by the scorer) whose event time is in `window`.

    The scorer gives a prediction record no timestamp of its own, so its Kafka timestamp is the
    time it was scored, not its event time. A record is scored after it was produced, and a
    record's event time is trusted up to the clock skew after its Kafka timestamp, so scoring
    cannot precede the window start by more than two skews (the input producer's and the
    scorer's clocks): the read starts there and runs to the end offsets as of now, because a
    backlog may be scored any time later. Each prediction is then filtered by its event time.
    """
    skew_ms = settings.max_clock_skew_s * 1000
    out: list[dict[str, Any]] = []
    unreadable = 0
    with window_reader(settings) as consumer:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise MissingTopic(f"topic '{topic}' does not exist on {settings.bootstrap_servers}")
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        starts = consumer.offsets_for_times(
            {tp: window.start_ms - 2 * skew_ms for tp in partitions}
        )
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            start = starts.get(tp)
            consumer.seek(tp, ends[tp] if start is None else min(start.offset, ends[tp]))
        for record in _until_ends(settings, consumer, ends, f"predictions of {window}"):
            try:
                prediction = json.loads(record.value)
                event_ms = parse_event_time(schema.event_time, prediction["event_time"])
            except (TypeError, ValueError, KeyError, MalformedRecord):
                unreadable += 1
                continue
            if window.start_ms <= event_ms < window.end_ms:
                out.append(prediction)
    if unreadable:
        log.warning("%d unreadable prediction records on %s skipped", unreadable, topic)
    return out


def _until_ends(
    settings: Settings, consumer: KafkaConsumer, ends: dict[TopicPartition, int], what: str
) -> Iterator[Any]:
    """The assigned partitions' records from their positions up to `ends`."""
    active = {tp for tp in ends if consumer.position(tp) < ends[tp]}
    idle_polls = 0
    while active:
        batch = consumer.poll(timeout_ms=1000, max_records=1000)
        idle_polls = 0 if batch else idle_polls + 1
        if idle_polls > settings.kafka_request_timeout_ms // 1000:
            raise StreamError(f"reading {what} stalled")
        for tp, records in batch.items():
            if tp not in active:
                continue
            yield from (record for record in records if record.offset < ends[tp])
            if consumer.position(tp) >= ends[tp]:
                active.discard(tp)
                consumer.seek(tp, ends[tp])
