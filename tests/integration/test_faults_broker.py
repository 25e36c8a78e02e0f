"""The broker restarts in the middle of a window read and of a simulator run.

Each test starts a broker of its own (the session broker is shared by other tests), stops it
cleanly and starts it again on the same ports and data directory.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kafka import KafkaConsumer

from flows.simulate import run_simulation
from tasks.broker import free_ports, start_broker, stop_broker
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import (
    StreamError,
    WindowRead,
    close_readers,
    ensure_topic,
    produce,
    read_window,
    topic_size,
    window_reader,
)
from tasks.windowing import Window
from tests.integration.helpers import fresh_schema, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Settings]:
    """A broker for this test alone: a temp home and free ports."""
    port, controller_port = free_ports(2)
    settings = Settings(
        home=tmp_path / "broker", kafka_port=port, kafka_controller_port=controller_port
    )
    start_broker(settings)
    try:
        yield settings
    finally:
        stop_broker(settings)


def restart(settings: Settings) -> None:
    """Stop the broker cleanly and start it again: same ports, same data."""
    assert stop_broker(settings)
    start_broker(settings)


class RestartAfterFirstBatch:
    """A window reader's consumer that restarts the broker once its first batch has arrived."""

    def __init__(self, consumer: KafkaConsumer, settings: Settings) -> None:
        self.consumer, self.settings, self.restarted = consumer, settings, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        batch = self.consumer.poll(*args, **kwargs)
        if batch and not self.restarted:
            self.restarted = True
            restart(self.settings)
        return batch


def same_window(a: WindowRead, b: WindowRead) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.manifest.to_dict() == b.manifest.to_dict()


def topic_records(settings: Settings, topic: str) -> Counter[tuple[bytes | None, bytes, int]]:
    """Every record on the topic as (key, value, timestamp), counted."""
    return Counter((r.key, r.value, r.timestamp) for r in read_topic(settings, topic))


def test_a_window_read_across_a_broker_restart_gives_the_healthy_window(broker: Settings) -> None:
    schema = fresh_schema(prefix="bounce-read")
    ensure_topic(broker, schema.topic)
    produce(broker, schema.topic, generate(SimulationConfig(start=START, hours=72, seed=3)))
    span = Window(START, START + timedelta(days=2))
    healthy = read_window(broker, schema, span, send_dead_letters=False)
    assert healthy.manifest.rows > 1000 and healthy.manifest.closed

    with window_reader(broker) as consumer:
        reader = RestartAfterFirstBatch(consumer, broker)
        try:
            bounced = read_window(broker, schema, span, send_dead_letters=False, reader=reader)
        except StreamError:  # a clean failure is allowed: the retry must give the same window
            bounced = read_window(broker, schema, span, send_dead_letters=False)
    assert reader.restarted
    same_window(bounced, healthy)


def test_a_simulator_run_across_a_broker_restart_loses_nothing_and_reads_the_clean_windows(
    broker: Settings,
) -> None:
    schema = fresh_schema(prefix="bounce-sim")
    config = SimulationConfig(start=START, hours=48, seed=9, stores=50)
    outcome: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def simulate() -> None:
        try:
            outcome.append(
                run_simulation(
                    broker,
                    schema,
                    start="2026-01-05T00:00Z",
                    hours=48,
                    scenario="none",
                    seed=9,
                    stores=50,
                    realtime=48 * 3600 / 20,  # two simulated days in about 20 s
                )
            )
        except BaseException as exc:
            failures.append(exc)

    producer = threading.Thread(target=simulate)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while topic_size(broker, schema.topic) < 100:
            assert time.monotonic() < deadline, "the simulator wrote nothing"
            time.sleep(0.2)
        restart(broker)
        assert producer.is_alive() and not outcome  # the restart came in the middle of the run
    finally:
        producer.join(timeout=240)
    assert not failures, failures
    expected = Counter((r.key, r.value, r.timestamp_ms) for r in generate(config))
    assert outcome[0]["records"] == sum(expected.values())
    on_topic = topic_records(broker, schema.topic)
    assert set(on_topic) == set(expected)  # nothing lost, nothing foreign
    # Idempotence stops most retry duplicates, not every one: a batch in flight while the
    # leader shuts down can land twice (seen in CI; librdkafka#4953 reports the same). A
    # repeat is byte for byte, and the window reader counts it as a duplicate by key and event
    # time, so the windows are those of a clean run.
    repeats = sum(on_topic.values()) - sum(expected.values())
    clean = fresh_schema(prefix="bounce-clean")
    ensure_topic(broker, clean.topic)
    produce(broker, clean.topic, generate(config))
    span = Window(START, START + timedelta(hours=48))
    bounced = read_window(broker, schema, span, send_dead_letters=False)
    healthy = read_window(broker, clean, span, send_dead_letters=False)
    offsets = ["_partition", "_offset"]
    pd.testing.assert_frame_equal(
        bounced.frame.drop(columns=offsets), healthy.frame.drop(columns=offsets)
    )
    assert bounced.manifest.duplicates == repeats and healthy.manifest.duplicates == 0
    assert bounced.manifest.rows == healthy.manifest.rows > 0


def test_the_shared_reader_survives_a_broker_restart(broker: Settings) -> None:
    import tasks.stream

    schema = fresh_schema(prefix="bounce-shared")
    ensure_topic(broker, schema.topic)
    produce(broker, schema.topic, generate(SimulationConfig(start=START, hours=24, seed=3)))
    hour = Window(START + timedelta(hours=9), START + timedelta(hours=10))
    close_readers()
    before = read_window(broker, schema, hour, send_dead_letters=False)
    key = tasks.stream._connection_key(broker)
    consumer = tasks.stream._SHARED[key].consumer
    restart(broker)
    after = read_window(broker, schema, hour, send_dead_letters=False)
    assert tasks.stream._SHARED[key].consumer is consumer  # reconnected, not rebuilt
    same_window(before, after)
