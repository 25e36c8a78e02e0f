"""The process's shared window reader: one consumer for many reads, per connection, robust.

Reads in a row reuse one consumer (building one costs more than an hourly read); other
bootstrap servers get their own; a topic that gained partitions and a broker restart are seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import kafka.record.util
import pytest
from kafka import KafkaConsumer

import tasks.stream
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import admin_client, close_readers, ensure_topic, produce, read_window
from tasks.windowing import Window
from tests.integration.helpers import fresh_schema

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 5, tzinfo=UTC)


class CountingConsumer(KafkaConsumer):  # type: ignore[misc]
    """The real consumer, counting how many were built and with which bootstrap servers."""

    built: ClassVar[list[list[str]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountingConsumer.built.append(list(kwargs["bootstrap_servers"]))
        super().__init__(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    close_readers()  # a consumer left by an earlier test would hide the count
    CountingConsumer.built = []
    monkeypatch.setattr(tasks.stream, "KafkaConsumer", CountingConsumer)
    yield CountingConsumer.built
    close_readers()


def simulated(settings: Settings, prefix: str, hours: int = 6) -> Any:
    schema = fresh_schema(prefix=prefix)
    ensure_topic(settings, schema.topic)
    produce(settings, schema.topic, generate(SimulationConfig(start=START, hours=hours, seed=5)))
    return schema


def hour(n: int) -> Window:
    return Window(START + timedelta(hours=n), START + timedelta(hours=n + 1))


def test_kafka_python_checks_crcs_with_the_c_extension() -> None:
    # Without the `crc32c` package kafka-python checks every fetched batch in pure Python,
    # which cost a third of an hourly window read.
    assert kafka.record.util.crc32c_c is not None


def test_reads_in_a_row_share_one_consumer(settings: Settings, counted: list[list[str]]) -> None:
    schema = simulated(settings, "shared-row", hours=12)
    reads = [read_window(settings, schema, hour(h), send_dead_letters=False) for h in (9, 10, 9)]
    assert len(counted) == 1
    assert all(r.manifest.rows > 0 for r in reads)
    # Reading an hour again on the reused consumer gives the same window.
    assert reads[0].manifest.to_dict() == reads[2].manifest.to_dict()
    assert reads[0].frame.equals(reads[2].frame)


def test_other_bootstrap_servers_get_a_consumer_of_their_own(
    settings: Settings, counted: list[list[str]]
) -> None:
    schema = simulated(settings, "shared-other")
    port = settings.bootstrap_servers.rsplit(":", 1)[1]
    other = settings.model_copy(update={"kafka_bootstrap_servers": f"localhost:{port}"})
    assert other.bootstrap_servers != settings.bootstrap_servers
    first = read_window(settings, schema, hour(9), send_dead_letters=False)
    second = read_window(other, schema, hour(9), send_dead_letters=False)
    read_window(settings, schema, hour(10), send_dead_letters=False)
    assert counted == [[settings.bootstrap_servers], [other.bootstrap_servers]]
    assert first.manifest.to_dict() == second.manifest.to_dict()


def test_a_topic_that_gained_partitions_is_read_whole(
    settings: Settings, counted: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = fresh_schema(prefix="shared-grow")
    ensure_topic(settings, schema.topic, partitions=1)
    records = list(generate(SimulationConfig(start=START, hours=12, seed=5)))
    produce(settings, schema.topic, records)
    before = read_window(settings, schema, hour(9), send_dead_letters=False)
    assert list(before.manifest.offsets) == [f"{schema.topic}-0"]

    with admin_client(settings) as admin:
        admin.create_partitions({schema.topic: 2})
    # Two records of hour 9 written to the new partition only (with fresh store ids).
    extra = [r for r in records if r.timestamp_ms >= hour(9).start_ms][:2]
    with tasks.stream.producer(settings) as client:
        for i, record in enumerate(extra):
            value = record.value.replace(b'"store_id": ', f'"store_id": 9{i}0'.encode(), 1)
            client.send(schema.topic, value=value, timestamp_ms=record.timestamp_ms, partition=1)
    # Metadata younger than METADATA_MAX_AGE_S is trusted; an hourly run's never is.
    monkeypatch.setattr(tasks.stream, "METADATA_MAX_AGE_S", 0.0)
    after = read_window(settings, schema, hour(9), send_dead_letters=False)
    assert len(counted) == 1
    assert sorted(after.manifest.offsets) == [f"{schema.topic}-0", f"{schema.topic}-1"]
    assert after.manifest.records_read == before.manifest.records_read + 2


def test_a_read_while_the_shared_consumer_is_busy_uses_a_private_one(
    settings: Settings, counted: list[list[str]]
) -> None:
    schema = simulated(settings, "shared-busy")
    with tasks.stream.window_reader(settings) as outer:
        inner = read_window(settings, schema, hour(9), send_dead_letters=False)
        assert outer is not None
    assert len(counted) == 2  # the shared one, and a private one for the nested read
    again = read_window(settings, schema, hour(9), send_dead_letters=False)
    assert len(counted) == 2
    assert inner.manifest.to_dict() == again.manifest.to_dict()
