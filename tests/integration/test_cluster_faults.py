"""A real 3-broker KRaft cluster: the simulator, the hourly training and the scorer run while one
broker is stopped and started again. Nothing is lost, no window changes, every record scored.

Topics are created with replication factor 3 and min.insync.replicas 2; the producers are
kafka-python 3's idempotent acks=all defaults; the scorer commits only acknowledged output.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from flows.simulate import run_simulation
from tasks.broker import free_ports, start_cluster, stop_cluster, stop_cluster_node
from tasks.cycle import CycleContext, finetune_window, retrain_until
from tasks.schema import StreamSchema, decode_record
from tasks.scoring import ScorerStats, run_scorer
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import WindowRead, read_window
from tasks.versions import list_versions
from tasks.windowing import Window, format_instant
from tests.integration.helpers import fresh_schema, quick_training, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
SPLIT = START + timedelta(days=8, hours=12)  # produced before / while the broker is down
END = SPLIT + timedelta(days=1)
STORES = 50


def simulate(settings: Settings, schema: StreamSchema, start: datetime, hours: int) -> int:
    summary = run_simulation(
        settings,
        schema,
        start=format_instant(start),
        hours=hours,
        scenario="none",
        seed=11,
        stores=STORES,
    )
    return int(summary["records"])


def simulated(start: datetime, hours: int) -> list[Any]:
    return list(generate(SimulationConfig(start=start, hours=hours, seed=11, stores=STORES)))


def topic_config(settings: Settings, topic: str) -> dict[str, Any]:
    with KafkaAdminClient(**settings.kafka_client_config()) as admin:
        (described,) = admin.describe_topics([topic])
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {"partitions": described["partitions"], "configs": configs}


def same_window(a: WindowRead, b: WindowRead) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.manifest.to_dict() == b.manifest.to_dict()


def test_a_broker_restart_mid_run_loses_no_record_window_or_prediction(tmp_path: Path) -> None:
    ports = free_ports(6)
    pairs = list(zip(ports[:3], ports[3:], strict=True))
    local = Settings(home=tmp_path / "cluster", kafka_start_timeout_s=120)
    nodes = start_cluster(local, nodes=3, ports=pairs)
    try:
        s = quick_training(
            local,
            home=tmp_path,
            mlflow_dir=tmp_path / "mlflow",
            kafka_bootstrap_servers=",".join(node.bootstrap for node in nodes),
            kafka_replication_factor=3,
            kafka_min_insync_replicas=2,
        )
        schema = fresh_schema(prefix="cluster")
        output = f"{schema.topic}.predictions"
        produced = simulate(s, schema, START, int((SPLIT - START) / HOUR))
        described = topic_config(s, schema.topic)
        assert all(len(p["replica_nodes"]) == 3 for p in described["partitions"])
        assert "'min.insync.replicas'" in repr(described["configs"]), described["configs"]

        stop = threading.Event()
        scored: list[ScorerStats] = []
        scorer = threading.Thread(
            target=lambda: scored.append(
                run_scorer(
                    s,
                    schema,
                    input_topic=schema.topic,
                    output_topic=output,
                    group_id="cluster-scorers",
                    reload_interval_s=1.0,
                    stop=stop,
                )
            )
        )
        scorer.start()
        ctx = CycleContext(settings=s, schema=schema)
        reads: dict[datetime, WindowRead] = {}
        results = []

        def train_hour(start: datetime) -> None:
            window = Window(start, start + HOUR)
            reads[start] = read_window(s, schema, window, send_dead_letters=False)
            results.append(finetune_window(ctx, window))

        try:
            first = retrain_until(ctx, START + timedelta(days=8))
            assert first.decision == "promoted", first.reasons
            for hour in (9, 10):
                train_hour(START + timedelta(days=8, hours=hour))

            assert stop_cluster_node(local, 2)  # one broker down: RF 3, 2 in sync still write
            produced += simulate(s, schema, SPLIT, int((END - SPLIT) / HOUR))
            for hour in (12, 13):
                train_hour(START + timedelta(days=8, hours=hour))
            assert all(node.running for node in start_cluster(local, nodes=3, ports=pairs))
            for hour in (14, 15):
                train_hour(START + timedelta(days=8, hours=hour))

            inputs = read_topic(s, schema.topic)
            wanted = {identity(schema, r.value) for r in inputs}
            deadline = time.monotonic() + 120
            while not wanted <= {(p["key"], p["event_time"]) for p in predictions(s, output)}:
                assert scorer.is_alive() and time.monotonic() < deadline, "predictions missing"
                time.sleep(0.5)
        finally:
            stop.set()
            scorer.join(timeout=60)

        # No record lost or written twice: the topic holds exactly what the simulator made.
        expected = Counter(
            (r.key, r.value, r.timestamp_ms)
            for r in [*simulated(START, int((SPLIT - START) / HOUR)), *simulated(SPLIT, 24)]
        )
        assert produced == sum(expected.values())
        assert Counter((r.key, r.value, r.timestamp) for r in inputs) == expected

        # Windows read during the run, with a broker down or just back, equal healthy reads.
        for start, during in reads.items():
            same_window(during, read_window(s, schema, Window(start, start + HOUR)))
        assert [r.rows for r in results] == [reads[t].manifest.rows for t in reads]
        assert all(r.decision in {"promoted", "kept"} for r in results), results
        versions = list_versions(s, schema.name)
        assert len(versions) == 1 + len(reads)  # one retrain, one version per hour, no repeats

        # Every input has a prediction; repeats (re-scored after a rebalance) share an identity.
        out = predictions(s, output)
        counted = Counter((p["key"], p["event_time"]) for p in out)
        assert set(counted) == wanted and len(wanted) == len(inputs)
        assert scored and scored[0].predictions_out >= len(inputs)
    finally:
        stop_cluster(local)


def identity(schema: StreamSchema, value: bytes) -> tuple[Any, str]:
    """A record's key and event time: what tells a repeat from a new record."""
    row = decode_record(schema, value)
    return row[schema.key], row[schema.event_time.field]


def predictions(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_topic(settings, topic)]
