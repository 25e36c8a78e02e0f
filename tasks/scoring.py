"""The streaming scorer: score feature records with the champion as they arrive.

A consumer-group service (instances share the input partitions). Each polled batch is decoded,
predicted at once, written to the predictions topic (its bad records to the dead-letter topic)
and acknowledged by the broker before its offsets are committed: at-least-once, a re-scored
record repeats its input offset, and a batch whose dead letters failed is not committed. A watcher
thread follows the registry's `champion` alias and loads new versions off the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from tasks import aliases, versions
from tasks.schema import LabelSpec, MalformedRecord, Scalar, StreamSchema, decode_record
from tasks.settings import Settings
from tasks.stream import (
    CachedHashPartitioner,
    SetAside,
    StreamError,
    _consumer,
    dead_letter,
    ensure_topic,
    producer,
)

if TYPE_CHECKING:
    import keras
    from kafka import KafkaConsumer, KafkaProducer

log = logging.getLogger(__name__)

THRESHOLD = 0.5  # predicted positive at probability >= THRESHOLD, as in tasks.evaluation
POLL_TIMEOUT_MS = 100  # how long an idle poll blocks: bounds the reaction to stop and reloads
LINGER_MS = 5
FETCH_MAX_WAIT_MS = 20  # how long the broker may hold an empty fetch (bounds added latency)
SESSION_TIMEOUT_MS = 10_000  # a crashed instance's partitions move on after this long
_LATENCY_SAMPLES = 100_000
_RETRY_CAP_S = 300.0
# An instance left with no partition this long (the group join included) asks to join again.
REJOIN_AFTER_S = SESSION_TIMEOUT_MS / 1000 + 5

Predictor = Callable[[pd.DataFrame], np.ndarray]


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorerStats:
    """What one scorer run did. `seconds` is the whole run, `scoring_seconds` from the first
    record on (throughput); latency is input record timestamp -> prediction acknowledged, so it
    includes any backlog the scorer found."""

    records_in: int
    predictions_out: int
    dead_lettered: int
    batches: int
    versions_used: dict[str, int]
    reloads: int
    seconds: float
    scoring_seconds: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_max: float | None = None
    # Seconds spent in each step of the loop (poll, decode, predict, encode and send, await
    # acknowledgements, commit): where a batch's time goes, so throughput can be explained.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        return self.records_in / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return fields | {"records_per_s": round(self.records_per_s, 1)}


@dataclass(frozen=True)
class Champion:
    """A loaded champion version and its compiled predictor."""

    version: str
    predict: Predictor


@dataclass(frozen=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


@dataclass
class DecodedBatch:
    """A polled batch split into decoded rows (with their sources) and set-aside records."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)


def default_group_id(model_name: str) -> str:
    return f"streamtrain-scorer-{model_name}"


def predicted_class(label: LabelSpec, probability: float, threshold: float = THRESHOLD) -> Scalar:
    return label.positive if probability >= threshold else label.negative


def record_key(schema: StreamSchema, row: dict[str, Any], raw_key: bytes | None) -> Any:
    """The schema's key field when it has one, else the Kafka key as text (or None)."""
    if schema.key is not None:
        return row[schema.key]
    return None if raw_key is None else raw_key.decode("utf-8", "replace")


def build_prediction(
    schema: StreamSchema,
    row: dict[str, Any],
    probability: float,
    *,
    model_name: str,
    model_version: str,
    source: Source,
    scored_at_ms: int,
) -> dict[str, Any]:
    """The prediction record of one input row (a JSON object on the predictions topic)."""
    return {
        "key": record_key(schema, row, source.key),
        "event_time": row[schema.event_time.field],
        "probability": float(probability),
        "predicted": predicted_class(schema.label, float(probability)),
        "model_name": model_name,
        "model_version": model_version,
        "input_topic": source.topic,
        "input_partition": source.partition,
        "input_offset": source.offset,
        "scored_at_ms": scored_at_ms,
    }


def decode_batch(schema: StreamSchema, records: Iterable[Any]) -> DecodedBatch:
    """Decode Kafka records (label absent or ignored); unreadable ones are set aside."""
    batch = DecodedBatch()
    for record in records:
        try:
            row = decode_record(schema, record.value, require_label=False)
        except MalformedRecord as exc:
            batch.set_aside.append(
                SetAside(
                    "malformed",
                    str(exc),
                    record.partition,
                    record.offset,
                    record.timestamp,
                    record.key,
                    record.value,
                )
            )
            continue
        batch.rows.append(row)
        batch.sources.append(
            Source(record.topic, record.partition, record.offset, record.timestamp, record.key)
        )
    return batch


def commit_offsets(records: Iterable[Any]) -> dict[tuple[str, int], int]:
    """The next offset to read per (topic, partition) after these records."""
    nxt: dict[tuple[str, int], int] = {}
    for record in records:
        tp = (record.topic, record.partition)
        nxt[tp] = max(nxt.get(tp, 0), record.offset + 1)
    return nxt


# --- the champion ---------------------------------------------------------------------------


def compile_predictor(schema: StreamSchema, model: keras.Model) -> Predictor:
    """A traced forward pass over the batch (same numbers as model.predict_proba, ~7x cheaper
    per call: it skips the shared trainer's per-call weight copy and config hashing)."""
    import tensorflow as tf

    from tasks.model import to_inputs

    specs = {
        t.name: tf.TensorSpec((None, 1), tf.as_dtype(t.dtype), name=t.name) for t in model.inputs
    }
    if set(specs) != set(schema.feature_names):
        raise ValueError(
            f"model inputs {sorted(specs)} are not the schema's features {schema.feature_names}"
        )

    def forward(x: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.reshape(model(x, training=False), (-1,))

    traced = tf.function(forward, input_signature=[specs])
    traced.get_concrete_function()  # trace now (in the watcher thread), not on the first batch

    def predict(frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(traced(to_inputs(schema, frame)), dtype=np.float64)

    return predict


def load_champion(settings: Settings, schema: StreamSchema, version: str) -> Champion:
    """Load a registered version (by number, so a moving alias cannot race) and compile it."""
    model = versions.load_keras(settings, schema.name, version)
    return Champion(version=version, predict=compile_predictor(schema, model))


class ChampionWatcher:
    """Polls the alias every `interval_s` in a thread, loads a new version there, hands it over.

    A version that fails to load is logged once (one line) and retried with backoff, while the
    scorer keeps the version it has.
    """

    def __init__(
        self,
        lookup: Callable[[], str | None],
        load: Callable[[str], Champion],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup, self.load, self.interval_s, self.clock = lookup, load, interval_s, clock
        self.serving: str | None = None  # the version loaded last (handed over or pending)
        self._pending: Champion | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, tuple[int, float]] = {}  # version -> (attempts, retry at)
        self._lookup_failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._closed.is_set():
            self.check_once()
            self._closed.wait(self.interval_s)

    def take(self) -> Champion | None:
        """The newly loaded champion, once; None when nothing changed."""
        with self._lock:
            champion, self._pending = self._pending, None
            return champion

    def check_once(self) -> None:
        try:
            version = self.lookup()
        except Exception as exc:
            if not self._lookup_failing:
                log.warning(
                    "registry lookup failed (%s: %s); keeping version %s",
                    type(exc).__name__,
                    exc,
                    self.serving,
                )
            self._lookup_failing = True
            return
        self._lookup_failing = False
        if version is None or version == self.serving:
            return
        attempts, retry_at = self._failures.get(version, (0, 0.0))
        if self.clock() < retry_at:
            return
        try:
            champion = self.load(version)
        except Exception as exc:
            if attempts == 0:
                log.warning(
                    "champion version %s did not load (%s: %s); still serving version %s",
                    version,
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    self.serving,
                )
            wait = min(self.interval_s * 2**attempts, _RETRY_CAP_S)
            self._failures[version] = (attempts + 1, self.clock() + wait)
            return
        self._failures.pop(version, None)
        with self._lock:
            self._pending, self.serving = champion, version


# --- the service ----------------------------------------------------------------------------


@dataclass
class _Tally:
    records_in: int = 0
    predictions_out: int = 0
    dead_lettered: int = 0
    batches: int = 0
    reloads: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    latencies: deque[int] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))
    started: float = field(default_factory=time.monotonic)
    first_record: float | None = None
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - began

    def stats(self) -> ScorerStats:
        lat = np.asarray(self.latencies, dtype=np.float64)
        p50, p99, worst = (
            (float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max()))
            if lat.size
            else (None, None, None)
        )
        return ScorerStats(
            records_in=self.records_in,
            predictions_out=self.predictions_out,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            versions_used=dict(self.versions),
            reloads=self.reloads,
            seconds=round(time.monotonic() - self.started, 3),
            scoring_seconds=round(time.monotonic() - (self.first_record or time.monotonic()), 3),
            latency_ms_p50=p50,
            latency_ms_p99=p99,
            latency_ms_max=worst,
            stage_seconds={k: round(v, 4) for k, v in self.stages.items()},
        )


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop` (finish the batch, commit, exit 0); only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def champion_lookup(settings: Settings, schema: StreamSchema) -> Callable[[], str | None]:
    """What the watcher polls: the champion alias alone, never the model's tags or history."""
    return lambda: aliases.get_alias_version(settings, schema.name, aliases.CHAMPION)


def run_scorer(
    settings: Settings,
    schema: StreamSchema,
    *,
    input_topic: str,
    output_topic: str,
    group_id: str | None = None,
    max_records: int | None = None,
    idle_exit_s: float | None = None,
    reload_interval_s: float = 5.0,
    batch_size: int = 500,
    stop: threading.Event | None = None,
) -> ScorerStats:
    """Score `input_topic` into `output_topic` with the champion until stopped, `max_records`
    were read, or nothing arrived for `idle_exit_s` (counted from the start, group join included).
    """
    stop = stop or threading.Event()
    tally = _Tally()
    watcher = ChampionWatcher(
        lookup=champion_lookup(settings, schema),
        load=lambda version: load_champion(settings, schema, version),
        interval_s=reload_interval_s,
    )
    watcher.start()
    try:
        champion = _await_champion(watcher, schema.name, stop, idle_exit_s)
        if champion is None:
            return tally.stats()
        ensure_topic(settings, output_topic)
        group = group_id or default_group_id(schema.name)
        log.info(
            "scoring %s -> %s as group %s with version %s",
            input_topic,
            output_topic,
            group,
            champion.version,
        )
        consumer = _consumer(
            settings,
            group_id=group,
            client_id="streamtrain-scorer",
            max_poll_records=batch_size,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            # Not the window reader's tuning: a service that waits on new records would send
            # an empty fetch every millisecond while idle, and it uses every record it fetches.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_partition_fetch_bytes=1024 * 1024,
        )
        try:
            consumer.subscribe([input_topic])
            with producer(
                settings,
                linger_ms=LINGER_MS,
                client_id="streamtrain-scorer",
                partitioner=CachedHashPartitioner(),
            ) as out:
                watch = EmptyAssignmentWatch(input_topic)
                loop = _Loop(settings, schema, consumer, out, output_topic, tally, champion, watch)
                try:
                    loop.run(watcher, stop, max_records, idle_exit_s, batch_size)
                finally:
                    loop.finish()
        finally:
            consumer.close()
    finally:
        watcher.close()
    stats = tally.stats()
    log.info("scorer done: %s", stats.to_dict())
    return stats


def _await_champion(
    watcher: ChampionWatcher, name: str, stop: threading.Event, idle_exit_s: float | None
) -> Champion | None:
    started = time.monotonic()
    waiting_logged = False
    while not stop.is_set():
        champion = watcher.take()
        if champion is not None:
            return champion
        waited = time.monotonic() - started
        if idle_exit_s is not None and waited >= idle_exit_s:
            log.info("no champion for %s after %.0f s; exiting", name, waited)
            return None
        if not waiting_logged and waited > 1.0:  # the first load normally takes about a second
            log.info("model %s has no loadable champion yet; waiting for one", name)
            waiting_logged = True
        stop.wait(0.05)
    return None


class EmptyAssignmentWatch:
    """Joins the group again when this instance has owned no partition of a topic that has
    partitions for `after_s` seconds; the wait doubles up to `cap_s` until it owns one.

    kafka-python's group leader can assign before its metadata holds the topic (it logs "No
    partition metadata for topic ..."): every member then owns nothing, and in about one
    integration run in three the empty assignment stood until the scorer's idle exit. A
    member of a group with more instances than partitions owns nothing by design; the
    doubling wait keeps its rejoins, and the rebalances they cause, rare.
    """

    def __init__(
        self,
        topic: str,
        *,
        after_s: float = REJOIN_AFTER_S,
        cap_s: float = _RETRY_CAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic, self.first_wait_s, self.cap_s, self.clock = topic, after_s, cap_s, clock
        self.wait_s = after_s
        self.since: float | None = clock()
        self.rejoins = 0

    def check(self, consumer: Any) -> bool:
        """Call between idle polls; True when it asked the group for a new assignment."""
        if consumer.assignment():
            self.since, self.wait_s = None, self.first_wait_s
            return False
        now = self.clock()
        if self.since is None:
            self.since = now
            return False
        if now - self.since < self.wait_s:
            return False
        partitions = consumer.partitions_for_topic(self.topic) or set()
        self.since = now
        if not partitions:
            return False
        log.warning(
            "no partition of %s (%d partitions) assigned to this scorer for %.0f s; "
            "joining the group again",
            self.topic,
            len(partitions),
            self.wait_s,
        )
        consumer.unsubscribe()
        consumer.subscribe([self.topic])
        self.rejoins += 1
        self.wait_s = min(self.wait_s * 2, self.cap_s)
        return True


@dataclass
class _Sent:
    """A batch whose predictions were sent and not yet acknowledged (nothing committed)."""

    records: list[Any]
    futures: list[Any]
    sources: list[Source]
    set_aside: list[SetAside]
    version: str


class _Loop:
    """poll -> decode -> predict -> produce; then acks -> dead-letter (acks) -> commit.

    One batch's acknowledgements are awaited while the next batch is decoded and predicted
    (a flush per batch idled the loop for a broker round trip each time); a batch's offsets
    are still committed only once its predictions and dead letters are acknowledged. Before an
    idle poll the batch in flight is settled, so a quiet stream gets no added latency.
    """

    def __init__(
        self,
        settings: Settings,
        schema: StreamSchema,
        consumer: KafkaConsumer,
        out: KafkaProducer,
        output_topic: str,
        tally: _Tally,
        champion: Champion,
        watch: EmptyAssignmentWatch | None = None,
    ) -> None:
        self.settings, self.schema, self.consumer, self.out = settings, schema, consumer, out
        self.output_topic, self.tally, self.champion = output_topic, tally, champion
        self.watch = watch
        self.done: dict[tuple[str, int], int] = {}  # acknowledged offsets, to commit on exit
        self.uncommitted: dict[tuple[str, int], int] = {}  # acknowledged, not yet sent to commit
        self.inflight: Any = None  # the pending asynchronous commit, if any
        self.sent: _Sent | None = None  # the batch awaiting its acknowledgements

    def finish(self) -> None:
        """Commit, and wait for, the offsets of partitions still owned."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        _commit(self.consumer, {tp: o for tp, o in self.done.items() if tp in owned}, wait=True)

    def commit_between_batches(self, offsets: dict[tuple[str, int], int]) -> None:
        """Keep one asynchronous commit in flight; the next one carries what piled up.

        A commit per batch at hundreds of batches a second fills the coordinator's in-flight
        requests and the client refuses the rest (NodeNotReadyError); offsets are cumulative,
        so waiting for the previous commit loses nothing.
        """
        self.uncommitted.update(offsets)
        if self.inflight is not None and not self.inflight.is_done:
            return
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        request = {tp: o for tp, o in self.uncommitted.items() if tp in owned}
        self.uncommitted.clear()
        self.inflight = _commit(self.consumer, request)

    def run(
        self,
        watcher: ChampionWatcher,
        stop: threading.Event,
        max_records: int | None,
        idle_exit_s: float | None,
        batch_size: int,
    ) -> None:
        last_record = time.monotonic()
        while not stop.is_set():
            left = None if max_records is None else max_records - self.tally.records_in
            if left is not None and left <= 0:
                break
            newer = watcher.take()  # swaps happen only between batches
            if newer is not None:
                log.info("champion %s -> %s", self.champion.version, newer.version)
                self.champion = newer
                self.tally.reloads += 1
            # With a batch in flight, look for more without waiting; settle it before waiting.
            with self.tally.timed("poll"):
                polled = self.consumer.poll(
                    timeout_ms=0 if self.sent else POLL_TIMEOUT_MS,
                    max_records=min(batch_size, left or batch_size),
                )
            records = [record for batch in polled.values() for record in batch]
            if records:
                self.score(records)
                last_record = time.monotonic()
            elif self.sent is not None:
                self.settle()
            elif idle_exit_s is not None and time.monotonic() - last_record >= idle_exit_s:
                log.info("no records for %.0f s; exiting", idle_exit_s)
                break
            elif self.watch is not None:
                self.watch.check(self.consumer)
        self.settle()

    def score(self, records: list[Any]) -> None:
        """Decode, predict and send one batch, then settle the batch sent before it."""
        if self.tally.first_record is None:
            self.tally.first_record = time.monotonic()
        tally = self.tally
        with tally.timed("decode"):
            batch = decode_batch(self.schema, records)
            frame = pd.DataFrame(batch.rows, columns=self.schema.feature_names)
        with tally.timed("predict"):
            proba = self.champion.predict(frame) if batch.rows else np.zeros(0)
        now_ms = int(time.time() * 1000)
        futures = []
        send, topic, version = self.out.send, self.output_topic, self.champion.version
        with tally.timed("encode and send"):
            for row, p, source in zip(batch.rows, proba.tolist(), batch.sources, strict=True):
                record = build_prediction(
                    self.schema,
                    row,
                    p,
                    model_name=self.schema.name,
                    model_version=version,
                    source=source,
                    scored_at_ms=now_ms,
                )
                futures.append(send(topic, key=source.key, value=orjson.dumps(record)))
        self.tally.records_in += len(records)
        self.settle()
        self.sent = _Sent(records, futures, batch.sources, batch.set_aside, self.champion.version)

    def settle(self) -> None:
        """Wait for the batch in flight to be acknowledged, dead-letter its bad records, and
        commit it; a failure raises with nothing committed (a restart scores it again)."""
        sent, self.sent = self.sent, None
        if sent is None:
            return
        with self.tally.timed("await acks"):
            _await_acks(sent.futures, self.settings.kafka_request_timeout_ms / 1000)
        failed = [
            f.exception or "no acknowledgement in time"
            for f in sent.futures
            if not f.is_done or f.failed()
        ]
        if failed:
            raise StreamError(f"{len(failed)} predictions were not written: {failed[0]}")
        acked_ms = int(time.time() * 1000)
        self.tally.latencies.extend(acked_ms - s.timestamp_ms for s in sent.sources)
        if sent.set_aside:
            # The envelope's source topic is the schema's: name the input topic there instead.
            # A DeadLetterError leaves the batch uncommitted: a restart dead-letters it again.
            source_schema = self.schema.model_copy(update={"topic": sent.records[0].topic})
            self.tally.dead_lettered += dead_letter(self.settings, source_schema, sent.set_aside)
        offsets = commit_offsets(sent.records)
        with self.tally.timed("commit"):
            self.commit_between_batches(offsets)
        self.done.update(offsets)
        self.tally.predictions_out += len(sent.futures)
        self.tally.batches += 1
        self.tally.versions[sent.version] += len(sent.futures)


def _await_acks(futures: list[Any], timeout_s: float) -> None:
    """Wait for these sends only (a flush would also wait for the batch sent after them)."""
    deadline = time.monotonic() + timeout_s
    for future in futures:
        if not future.is_done:
            with contextlib.suppress(Exception):  # a failed send is read by the caller
                future.get(timeout=max(0.0, deadline - time.monotonic()))


def _commit(
    consumer: KafkaConsumer, offsets: dict[tuple[str, int], int], *, wait: bool = False
) -> Any:
    """Commit offsets whose predictions are acknowledged.

    Asynchronous between batches (a sync commit would add a round trip to every batch's
    latency); a lost commit only means a re-score. The last commit on shutdown waits.
    Returns the asynchronous commit's future (None when nothing was sent or it waited).
    """
    from kafka import OffsetAndMetadata, TopicPartition
    from kafka.errors import KafkaError

    request = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
    if not request:
        return None
    if not wait:
        return consumer.commit_async(request, callback=_commit_failed)
    try:
        consumer.commit(request)
    except KafkaError as exc:  # also on the way out after an error: log, do not mask it
        _commit_failed(request, exc)
    return None


def _commit_failed(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning(
            "commit failed (%s: %s); those records will be scored again",
            type(response).__name__,
            response,
        )
