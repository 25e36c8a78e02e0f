"""Section 4, scoring: the project's scorer next to a bare consume-produce loop.

Both read the same kind of records from a topic of their own and write one JSON record per
input, committing offsets after the writes are acknowledged. The project's scorer also decodes
and checks each record against the schema, predicts with the champion and follows the alias;
the bare loop parses JSON and writes a constant (kafka-python directly: it is the baseline).
Throughput is measured on a backlog; latency (input timestamp to acknowledged prediction) on
records produced at a steady rate while the loop runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from bench.report import fig
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate

IDLE_EXIT_S = 60.0


def _values(count: int, seed: int) -> list[bytes]:
    config = SimulationConfig(hours=count // 100 * 3 + 48, seed=seed)
    out: list[bytes] = []
    for record in generate(config):
        out.append(record.value)
        if len(out) >= count:
            break
    return out


def _produce(settings: Settings, topic: str, values: list[bytes], rate: float | None) -> None:
    """Write `values` with the current time as timestamp, paced at `rate` per second if given."""
    with KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5) as out:
        started = time.monotonic()
        for i, value in enumerate(values):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            out.send(topic, value=value)
        out.flush()


def bare_loop(settings: Settings, source: str, sink: str, records: int) -> dict[str, Any]:
    """poll -> parse -> produce -> flush -> commit, until `records` were read."""
    consumer = KafkaConsumer(
        source,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=500,
        fetch_max_wait_ms=20,  # as the project's consumers: the loops differ in work, not tuning
    )
    latencies: list[int] = []
    first: float | None = None
    seen = batches = 0
    idle_since = time.monotonic()
    stages = _Stages()
    try:
        with KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5) as out:
            while seen < records and time.monotonic() - idle_since < IDLE_EXIT_S:
                with stages.timed("poll"):
                    polled = consumer.poll(timeout_ms=100, max_records=500)
                batch = [r for rs in polled.values() for r in rs]
                if not batch:
                    continue
                idle_since = time.monotonic()
                first = first or time.monotonic()
                with stages.timed("decode, encode and send"):
                    for record in batch:
                        row = json.loads(record.value)
                        value = {
                            "key": row.get("store_id"),
                            "probability": 0.5,
                            "offset": record.offset,
                        }
                        out.send(sink, value=json.dumps(value).encode())
                with stages.timed("await acks"):
                    out.flush()
                acked = int(time.time() * 1000)
                latencies.extend(acked - r.timestamp for r in batch)
                offsets = {}
                for r in batch:
                    offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(
                        r.offset + 1, "", -1
                    )
                with stages.timed("commit"):
                    consumer.commit_async(offsets)
                seen += len(batch)
                batches += 1
    finally:
        consumer.close()
    seconds = time.monotonic() - (first or time.monotonic())
    return _stats(seen, seconds, latencies) | {
        "stage_seconds": stages.rounded(),
        "batches": batches,
    }


class _Stages:
    """Seconds per step of a loop, as the scorer's own `stage_seconds` counts them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - began

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


def _stats(records: int, seconds: float, latencies: list[int] | list[float]) -> dict[str, Any]:
    lat = np.asarray(latencies, dtype=float)
    return {
        "records": records,
        "per_s": records / seconds if seconds > 0 else None,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }


class _CommitFailures(logging.Handler):
    """Counts the scorer's "commit failed" warnings (a finding, not an error of the bench)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "commit failed" in record.getMessage()


def project_loop(
    settings: Settings, schema: StreamSchema, source: str, sink: str, records: int
) -> dict[str, Any]:
    from tasks import scoring
    from tasks.scoring import run_scorer

    failures = _CommitFailures()
    scoring.log.addHandler(failures)
    try:
        stats = _score(settings, schema, source, sink, records, run_scorer)
    finally:
        scoring.log.removeHandler(failures)
    return _stats(stats.records_in, stats.scoring_seconds, []) | {
        "p50_ms": stats.latency_ms_p50,
        "p99_ms": stats.latency_ms_p99,
        "batches": stats.batches,
        "commit_failures": failures.count,
        "stage_seconds": stats.stage_seconds,
    }


def _score(
    settings: Settings,
    schema: StreamSchema,
    source: str,
    sink: str,
    records: int,
    run_scorer: Callable[..., Any],
) -> Any:
    return run_scorer(
        settings,
        schema,
        input_topic=source,
        output_topic=sink,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        max_records=records,
        idle_exit_s=IDLE_EXIT_S,
    )


def _measure(
    settings: Settings,
    loop: Callable[[str, str, int], dict[str, Any]],
    values: list[bytes],
    rate: float | None,
) -> dict[str, Any]:
    """A backlog (rate None: all produced first) or a paced stream, through `loop`."""
    from tasks.stream import ensure_topic, topic_size

    source, sink = f"bench-in-{uuid.uuid4().hex[:8]}", f"bench-out-{uuid.uuid4().hex[:8]}"
    ensure_topic(settings, source)
    ensure_topic(settings, sink)
    if rate is None:
        _produce(settings, source, values, None)
        return loop(source, sink, len(values))
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(loop(source, sink, len(values))), daemon=True
    )
    worker.start()
    _produce(settings, source, values[:1], None)  # warm-up: wait until the loop answers
    deadline = time.monotonic() + 120
    while topic_size(settings, sink) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    _produce(settings, source, values[1:], rate)
    worker.join(timeout=IDLE_EXIT_S * 3)
    return result


def run_scoring(
    settings: Settings, schema: StreamSchema, backlog: int, rate: float, seconds: float
) -> dict[str, Any]:
    values = _values(max(backlog, int(rate * seconds)) + 1, settings.seed)
    paced = values[: int(rate * seconds) + 1]

    def project(s: str, t: str, n: int) -> dict[str, Any]:
        return project_loop(settings, schema, s, t, n)

    def bare(s: str, t: str, n: int) -> dict[str, Any]:
        return bare_loop(settings, s, t, n)

    results = {
        "project_backlog": _measure(settings, project, values[:backlog], None),
        "bare_backlog": _measure(settings, bare, values[:backlog], None),
        "project_paced": _measure(settings, project, paced, rate),
        "bare_paced": _measure(settings, bare, paced, rate),
    }
    return _section(results, backlog, rate, seconds)


STAGE_TABLE = "Microseconds per record, by step of the loop"
LOOPS = (
    ("project_backlog", "scorer, backlog"),
    ("bare_backlog", "bare loop, backlog"),
    ("project_paced", "scorer, paced"),
    ("bare_paced", "bare loop, paced"),
)


def per_record_us(run: dict[str, Any]) -> dict[str, float]:
    """A loop's `stage_seconds` as microseconds per record read (the first poll, which waits
    for the group to form, included)."""
    records = run.get("records") or 0
    stages = run.get("stage_seconds") or {}
    return {k: v * 1e6 / records for k, v in stages.items()} if records else {}


def stage_table(r: dict[str, Any]) -> dict[str, Any]:
    """Where each loop's time goes: the same steps timed in the scorer and the bare loop."""
    costs = {key: per_record_us(r.get(key, {})) for key, _ in LOOPS}
    stages = list(dict.fromkeys(stage for cost in costs.values() for stage in cost))
    rows = [[stage, *(fig(costs[key].get(stage), "us", 1) for key, _ in LOOPS)] for stage in stages]
    batches = [
        "batches",
        *(fig(r.get(key, {}).get("batches"), "", 0) for key, _ in LOOPS),
    ]
    return {
        "title": STAGE_TABLE,
        "header": ["step", *(label for _, label in LOOPS)],
        "rows": [*rows, batches],
    }


def _section(r: dict[str, Any], backlog: int, rate: float, seconds: float) -> dict[str, Any]:
    pb, bb = r["project_backlog"], r["bare_backlog"]
    pp, bp = r["project_paced"], r["bare_paced"]
    ratio = pb["per_s"] / bb["per_s"] if pb.get("per_s") and bb.get("per_s") else None
    extra = (
        pp["p50_ms"] - bp["p50_ms"] if pp.get("p50_ms") is not None and bp.get("p50_ms") else None
    )
    figures = {
        "project scorer throughput (backlog)": fig(pb.get("per_s"), "records/s", 0),
        "bare consume-produce throughput (backlog)": fig(bb.get("per_s"), "records/s", 0),
        "project / bare throughput": fig(ratio, "x", 2),
        "project scorer latency p50 (paced)": fig(pp.get("p50_ms"), "ms", 1),
        "project scorer latency p99 (paced)": fig(pp.get("p99_ms"), "ms", 1),
        "bare loop latency p50 (paced)": fig(bp.get("p50_ms"), "ms", 1),
        "bare loop latency p99 (paced)": fig(bp.get("p99_ms"), "ms", 1),
        "latency added by the project, p50": fig(extra, "ms", 1),
    }
    findings = []
    failed = pp.get("commit_failures", 0) + pb.get("commit_failures", 0)
    if failed:
        findings.append(
            f"The scorer logged {failed} 'commit failed (NodeNotReadyError ... max_in_flight)' "
            f"warnings ({pp.get('batches')} batches in the paced run): with small batches its "
            "asynchronous commit per batch outruns the client's in-flight limit. Records are "
            "then scored again after a restart (at-least-once holds), but it is worth fixing."
        )
    if ratio is not None and ratio < 1:
        findings.append(
            f"The scorer moves {ratio:.2f}x the records per second of a bare loop that does no "
            "decoding, validation or prediction: that is the price of the model and the checks."
        )
    return {
        "title": "4. Scoring",
        "tables": [stage_table(r)],
        "method": (
            f"Backlog: {backlog:,} simulated records produced first, then read by each loop "
            "(throughput from its first record). Paced: "
            f"{int(rate * seconds):,} records produced at {rate:,.0f}/s while the loop runs "
            "(latency = acknowledged prediction time minus the input's Kafka timestamp). "
            "The project's scorer is `tasks.scoring.run_scorer` with the champion of section "
            "1's store and batches of 500; the bare loop uses kafka-python with the same batch "
            "size, parses the JSON and writes a constant."
        ),
        "figures": figures,
        "findings": findings,
        "raw": r,
    }
