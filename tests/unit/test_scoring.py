"""The scorer's pure parts: prediction records, batch decoding, offsets, the champion watcher."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any, NamedTuple

import numpy as np
import pytest

from tasks.schema import load_schema
from tasks.scoring import (
    Champion,
    ChampionWatcher,
    ScorerStats,
    Source,
    build_prediction,
    commit_offsets,
    decode_batch,
    default_group_id,
    predicted_class,
    stop_on_signals,
)
from tasks.settings import PROJECT_ROOT, Settings

DRONE = load_schema(PROJECT_ROOT / "schemas" / "drone.yaml")
SENSOR = load_schema(PROJECT_ROOT / "tests" / "fixtures" / "sensor.yaml")
GOOD = {
    "event_time": "2026-01-05T09:00:20Z",
    "store_id": 5,
    "day_of_week": 1,
    "hour": 9,
    "store_type": "grocery",
    "suburb": "Eastbank",
    "avg_delivery_minutes": 19.0,
    "avg_distance_km": 6.5,
    "avg_rating": 3.4,
}


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def rec(offset: int, value: object, partition: int = 0) -> Rec:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return Rec("features", partition, offset, 1_000 + offset, b"k", raw)


def test_prediction_record_names_model_source_and_class() -> None:
    source = Source("features", 2, 41, 1_000, b"5")
    record = build_prediction(
        DRONE,
        GOOD,
        0.75,
        model_name="drone-busy",
        model_version="3",
        source=source,
        scored_at_ms=2_000,
    )
    assert record == {
        "key": 5,
        "event_time": "2026-01-05T09:00:20Z",
        "probability": 0.75,
        "predicted": 1,
        "model_name": "drone-busy",
        "model_version": "3",
        "input_topic": "features",
        "input_partition": 2,
        "input_offset": 41,
        "scored_at_ms": 2_000,
    }
    json.dumps(record)  # plain JSON types only (no numpy scalars)


def test_without_a_schema_key_the_kafka_key_is_used() -> None:
    row = {"ts": 1_700_000_000_000, "temperature": 20.0, "vibration": 0.1, "line": "a"}
    for raw_key, expected in ((b"m-7", "m-7"), (None, None)):
        record = build_prediction(
            SENSOR,
            row,
            0.2,
            model_name="sensor-alarm",
            model_version="1",
            source=Source("s", 0, 0, 0, raw_key),
            scored_at_ms=0,
        )
        assert record["key"] == expected and record["event_time"] == row["ts"]
        assert record["predicted"] == "ok"


@pytest.mark.parametrize(
    ("probability", "expected"), [(0.0, "ok"), (0.4999, "ok"), (0.5, "alarm"), (1.0, "alarm")]
)
def test_predicted_class_is_positive_from_the_threshold_up(
    probability: float, expected: str
) -> None:
    assert predicted_class(SENSOR.label, probability) == expected


def test_bad_records_are_set_aside_with_reason_and_position_and_labels_are_optional() -> None:
    missing = {k: v for k, v in GOOD.items() if k != "hour"}
    records = [
        rec(0, GOOD),
        rec(1, b"{not json"),
        rec(2, missing),
        rec(3, GOOD | {"avg_rating": "high"}),
        rec(4, None),
        rec(5, GOOD | {"busy": 1}, partition=1),
    ]
    batch = decode_batch(DRONE, records)
    assert [s.offset for s in batch.sources] == [0, 5]
    assert [r["store_id"] for r in batch.rows] == [5, 5]
    assert [(a.kind, a.partition, a.offset) for a in batch.set_aside] == [
        ("malformed", 0, 1),
        ("malformed", 0, 2),
        ("malformed", 0, 3),
        ("malformed", 0, 4),
    ]
    reasons = [a.reason for a in batch.set_aside]
    assert "not JSON" in reasons[0] and "hour" in reasons[1] and "avg_rating" in reasons[2]
    assert batch.set_aside[0].value == b"{not json" and batch.set_aside[0].timestamp_ms == 1_001


def test_commit_offsets_are_one_past_the_last_record_per_partition() -> None:
    records = [rec(7, GOOD), rec(9, GOOD), rec(3, GOOD, partition=2), rec(8, GOOD)]
    assert commit_offsets(records) == {("features", 0): 10, ("features", 2): 4}
    assert commit_offsets([]) == {}


class CommitRecorder:
    """A consumer that records commit requests and leaves each one pending until told."""

    def __init__(self, owned: set[tuple[str, int]]) -> None:
        from kafka import TopicPartition

        self.owned = {TopicPartition(t, p) for t, p in owned}
        self.requests: list[dict[tuple[str, int], int]] = []
        self.futures: list[Any] = []

    def assignment(self) -> set[Any]:
        return self.owned

    def commit_async(self, offsets: dict[Any, Any], callback: Any = None) -> Any:
        from kafka.future import Future

        self.requests.append({(tp.topic, tp.partition): m.offset for tp, m in offsets.items()})
        self.futures.append(Future())
        return self.futures[-1]


def test_one_async_commit_in_flight_and_the_next_carries_what_piled_up() -> None:
    from tasks.scoring import _Loop

    consumer = CommitRecorder({("features", 0), ("features", 1)})
    loop = _Loop.__new__(_Loop)
    loop.consumer, loop.uncommitted, loop.inflight = consumer, {}, None  # type: ignore[assignment]
    loop.commit_between_batches({("features", 0): 10})
    loop.commit_between_batches({("features", 0): 20, ("features", 1): 5})  # first in flight
    loop.commit_between_batches({("features", 1): 9, ("features", 7): 3})  # 7 is not owned
    assert consumer.requests == [{("features", 0): 10}]
    consumer.futures[0].failure(Exception("NodeNotReadyError"))  # done, even if it failed
    loop.commit_between_batches({("features", 0): 30})
    assert consumer.requests[1] == {("features", 0): 30, ("features", 1): 9}
    consumer.futures[1].success(None)
    loop.commit_between_batches({})
    assert len(consumer.requests) == 2  # nothing new to commit, nothing sent


def test_default_group_is_per_model() -> None:
    assert default_group_id("drone-busy") == "streamtrain-scorer-drone-busy"


# --- the champion watcher ------------------------------------------------------------------


class FakeRegistry:
    def __init__(self) -> None:
        self.alias: str | None = None
        self.broken: set[str] = set()
        self.loads: list[str] = []
        self.lookup_error: Exception | None = None
        self.now = 0.0

    def lookup(self) -> str | None:
        if self.lookup_error is not None:
            raise self.lookup_error
        return self.alias

    def load(self, version: str) -> Champion:
        self.loads.append(version)
        if version in self.broken:
            raise OSError(f"no model files for version {version}\nsecond line")
        return Champion(version, lambda frame: np.zeros(len(frame)))

    def watcher(self) -> ChampionWatcher:
        return ChampionWatcher(self.lookup, self.load, interval_s=5.0, clock=lambda: self.now)


def test_watcher_hands_over_each_new_champion_once() -> None:
    fake = FakeRegistry()
    watcher = fake.watcher()
    watcher.check_once()
    assert watcher.take() is None  # no champion yet
    fake.alias = "1"
    watcher.check_once()
    first = watcher.take()
    assert first is not None and first.version == "1" and watcher.take() is None
    watcher.check_once()
    assert watcher.take() is None and fake.loads == ["1"]  # unchanged alias: no reload
    fake.alias = "2"
    watcher.check_once()
    second = watcher.take()
    assert second is not None and second.version == "2" and watcher.serving == "2"


def test_a_version_that_fails_to_load_keeps_the_old_one_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeRegistry()
    watcher = fake.watcher()
    fake.alias = "1"
    watcher.check_once()
    assert watcher.take() is not None
    fake.alias, fake.broken = "2", {"2"}
    with caplog.at_level(logging.WARNING, logger="tasks.scoring"):
        for _ in range(3):
            watcher.check_once()
            fake.now += 1.0
    assert watcher.take() is None and watcher.serving == "1"
    assert fake.loads == ["1", "2"]  # retried only after the backoff (5 s, then 10 s, ...)
    (warning,) = caplog.records
    message = warning.getMessage()
    assert "version 2 did not load" in message and "still serving version 1" in message
    assert "\n" not in message and warning.exc_info is None
    fake.broken = set()
    fake.now += 5.0
    watcher.check_once()
    loaded = watcher.take()
    assert loaded is not None and loaded.version == "2"


def test_registry_lookup_errors_keep_serving_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeRegistry()
    watcher = fake.watcher()
    fake.alias = "1"
    watcher.check_once()
    watcher.take()
    fake.lookup_error = ConnectionError("store unreachable")
    with caplog.at_level(logging.WARNING, logger="tasks.scoring"):
        watcher.check_once()
        watcher.check_once()
    assert len(caplog.records) == 1 and "keeping version 1" in caplog.records[0].getMessage()
    fake.lookup_error, fake.alias = None, "2"
    watcher.check_once()
    assert watcher.serving == "2"


def test_watcher_thread_picks_up_a_move_within_the_interval() -> None:
    fake = FakeRegistry()
    fake.alias = "4"
    watcher = ChampionWatcher(fake.lookup, fake.load, interval_s=0.01)
    watcher.start()
    try:
        found: list[Champion] = []
        deadline = threading.Event()
        for _ in range(500):
            champion = watcher.take()
            if champion is not None:
                found.append(champion)
                break
            deadline.wait(0.01)
        assert [c.version for c in found] == ["4"]
    finally:
        watcher.close()


# --- stats and signals ---------------------------------------------------------------------


def test_stats_report_throughput() -> None:
    stats = ScorerStats(
        records_in=500,
        predictions_out=498,
        dead_lettered=2,
        batches=5,
        versions_used={"3": 498},
        reloads=0,
        seconds=3.0,
        scoring_seconds=2.0,
        latency_ms_p50=8.0,
        latency_ms_p99=20.0,
        latency_ms_max=25.0,
    )
    data: dict[str, Any] = stats.to_dict()
    assert data["records_per_s"] == 250.0 and data["versions_used"] == {"3": 498}
    assert json.loads(json.dumps(data)) == data


def test_sigterm_sets_the_stop_event_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before


class HeldProducer:
    """A producer whose sends stay unacknowledged until `ack()`; counts flushes."""

    def __init__(self) -> None:
        self.futures: list[Any] = []
        self.flushes = 0

    def send(self, topic: str, key: Any = None, value: Any = None) -> Any:
        from kafka.future import Future

        self.futures.append(Future())
        return self.futures[-1]

    def flush(self) -> None:
        self.flushes += 1
        self.ack()

    def ack(self) -> None:
        for future in self.futures:
            if not future.is_done:
                future.success(None)


def test_a_batch_is_committed_once_acknowledged_while_the_next_one_is_scored() -> None:
    from tasks.scoring import _Loop, _Tally

    consumer = CommitRecorder({("features", 0)})
    out = HeldProducer()
    champion = Champion("1", lambda frame: np.full(len(frame), 0.7))
    loop = _Loop(Settings(), DRONE, consumer, out, "predictions", _Tally(), champion)  # type: ignore[arg-type]
    first = [rec(n, GOOD) for n in range(3)]
    second = [rec(n, GOOD) for n in range(3, 5)]

    loop.score(first)
    assert consumer.requests == [] and out.flushes == 0  # sent, not waited for
    out.ack()
    loop.score(second)  # the first batch settles: its offsets are committed, not the second's
    assert consumer.requests == [{("features", 0): 3}]
    assert loop.tally.predictions_out == 3 and loop.tally.records_in == 5
    consumer.futures[0].success(None)
    out.ack()
    loop.settle()
    assert consumer.requests[-1] == {("features", 0): 5}
    assert loop.tally.predictions_out == 5 and loop.tally.batches == 2


class _Partitions:
    """What a partitioner asks of kafka-python's cluster metadata."""

    def __init__(self, count: int, available: int | None = None) -> None:
        self.all = set(range(count))
        self.up = set(range(count if available is None else available))

    def topics(self) -> set[str]:
        return {"predictions"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.all)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.up)


def test_the_scorers_partitioner_puts_each_key_where_the_default_one_does() -> None:
    """Predictions keep their input's key partitioning (murmur2, as the Java client), only
    hashed once per key; records without a key still go to an available partition."""
    from kafka.partitioner import DefaultPartitioner

    from tasks.stream import CachedHashPartitioner

    ours, reference = CachedHashPartitioner(cache_size=8), DefaultPartitioner()
    keys = [str(n).encode() for n in range(200)] + [b"", b"store-\xff", b"x" * 300]
    for count in (1, 3, 7, 12):
        cluster = _Partitions(count)
        for key in keys * 2:  # the second pass is served from the cache (and evicts it)
            expected = reference.partition("predictions", key, key, None, None, cluster)
            assert ours.partition("predictions", key, key, None, None, cluster) == expected
    unkeyed = {
        ours.partition("predictions", None, None, None, None, _Partitions(6, 2)) for _ in range(50)
    }
    assert unkeyed <= {0, 1}


# --- an empty assignment that stands ---------------------------------------------------------


class GroupMember:
    """What the watch asks of a consumer: its assignment, the topic's partitions, rejoins."""

    def __init__(self, partitions: set[int]) -> None:
        self.owned: set[Any] = set()
        self.partitions = partitions
        self.calls: list[str] = []

    def assignment(self) -> set[Any]:
        return self.owned

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def subscribe(self, topics: list[str]) -> None:
        self.calls.append(f"subscribe {','.join(topics)}")


def test_a_scorer_that_owns_nothing_of_a_partitioned_topic_rejoins_with_a_doubling_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tasks.scoring import EmptyAssignmentWatch

    now = [0.0]
    member = GroupMember({0, 1, 2})
    watch = EmptyAssignmentWatch("features", after_s=15, cap_s=40, clock=lambda: now[0])
    now[0] = 14.9
    assert not watch.check(member) and member.calls == []  # a join may take this long
    now[0] = 15.0
    with caplog.at_level(logging.WARNING, logger="tasks.scoring"):
        assert watch.check(member)
    assert member.calls == ["unsubscribe", "subscribe features"]
    assert "no partition of features (3 partitions) assigned" in caplog.text
    now[0] = 44.9
    assert not watch.check(member)  # the wait doubled to 30 s
    now[0] = 45.0
    assert watch.check(member) and watch.wait_s == 40  # and is capped
    member.owned = {("features", 0)}
    now[0] = 200.0
    assert not watch.check(member)  # owns a partition: nothing to do, the wait starts over
    member.owned = set()
    now[0] = 210.0
    assert not watch.check(member)
    now[0] = 225.0
    assert watch.check(member) and watch.rejoins == 3


def test_a_topic_with_no_partitions_known_yet_is_not_a_reason_to_rejoin() -> None:
    from tasks.scoring import EmptyAssignmentWatch

    now = [0.0]
    member = GroupMember(set())
    watch = EmptyAssignmentWatch("features", after_s=15, clock=lambda: now[0])
    now[0] = 100.0
    assert not watch.check(member) and member.calls == []


def test_the_loop_consults_the_watch_on_idle_polls() -> None:
    from tasks.scoring import EmptyAssignmentWatch, _Loop, _Tally

    class IdleMember(GroupMember):
        def __init__(self) -> None:
            super().__init__({0})
            self.polls = 0

        def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
            self.polls += 1
            if self.polls == 3:
                stop.set()
            return {}

    stop = threading.Event()
    member = IdleMember()
    watch = EmptyAssignmentWatch("features", after_s=0.0, clock=lambda: 1.0)
    champion = Champion("1", lambda frame: np.full(len(frame), 0.7))
    loop = _Loop(Settings(), DRONE, member, HeldProducer(), "p", _Tally(), champion, watch)  # type: ignore[arg-type]
    watcher = ChampionWatcher(lookup=lambda: None, load=lambda v: champion, interval_s=60)
    loop.run(watcher, stop, None, None, 10)
    assert member.calls[:2] == ["unsubscribe", "subscribe features"] and watch.rejoins >= 1
