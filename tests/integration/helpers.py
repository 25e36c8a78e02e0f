"""Helpers shared by the integration tests: raw records, own topics, quick training settings."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DRONE = ROOT / "schemas" / "drone.yaml"


@dataclass(frozen=True)
class Raw:
    """A record to produce as it is: key, value bytes, Kafka timestamp."""

    key: bytes | None
    value: bytes
    timestamp_ms: int


def own_topic(schema: StreamSchema, prefix: str | None = None) -> StreamSchema:
    """The schema with a topic of its own, so tests never read each other's records."""
    return schema.model_copy(update={"topic": f"{prefix or schema.topic}-{uuid.uuid4().hex[:8]}"})


def fresh_schema(path: Path = DRONE, prefix: str | None = None) -> StreamSchema:
    return own_topic(load_schema(path), prefix)


def schema_file(tmp_path: Path, topic: str) -> Path:
    """A copy of the drone schema file naming `topic`, for commands run as subprocesses."""
    path = tmp_path / "drone.yaml"
    path.write_text(DRONE.read_text().replace("topic: drone-observations", f"topic: {topic}"))
    return path


def quick_training(settings: Settings, **changes: object) -> Settings:
    """Small, quick training settings for tests."""
    return settings.model_copy(
        update={
            "retrain_days": 8,
            "holdout_hours": 16,
            "retrain_epochs": 8,
            "bootstrap_samples": 200,
            **changes,
        }
    )


def dead_letters(settings: Settings, schema: StreamSchema) -> list[dict[str, Any]]:
    """Everything on the schema's dead-letter topic, decoded."""
    return read_json(settings, schema.dead_letter_topic())


def limit_record_size(settings: Settings, topic: str, max_bytes: int) -> None:
    """Create `topic`, or change it, so that the broker refuses any batch over `max_bytes`."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from tasks.stream import ensure_topic

    ensure_topic(settings, topic, partitions=1)
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(max_bytes)}
        )
        admin.alter_configs([resource])
    finally:
        admin.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every record the topic holds now, partition by partition (none when it does not exist)."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} stalled"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                out.extend(r for r in batch if r.offset < ends[tp])
        return out
    finally:
        consumer.close()


def read_json(settings: Settings, topic: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every record the topic holds now, each value decoded from JSON."""
    return [json.loads(r.value) for r in read_topic(settings, topic, timeout_s)]


def register_by_hand(
    settings: Settings, schema: StreamSchema, model: Any, *, name: str, window_start: datetime
) -> tuple[str, str]:
    """Log and register a model outside the training cycle; returns (version, model URI)."""
    from tasks import run_logging, versions
    from tasks.lineage import Lineage

    lineage = Lineage(
        training_kind="retrain",
        window_start=window_start,
        window_end=window_start + timedelta(days=1),
        data_hash="0" * 16,
        schema_hash=schema.fingerprint(),
        seed=3,
    )
    ref = run_logging.log_training_run(
        settings,
        schema,
        run_name=name,
        params={},
        metrics={},
        metric_series={},
        tags={},
        model=model,
        lineage=lineage,
        artifacts={},
    )
    return versions.register_version(settings, schema, ref, lineage, name), ref.model_uri


SENSOR = ROOT / "tests" / "fixtures" / "sensor.yaml"


def sensor_schema_file(tmp_path: Path, topic: str, name: str) -> Path:
    """A copy of the 15-minute sensor schema naming its own topic and model."""
    path = tmp_path / "sensor.yaml"
    text = SENSOR.read_text().replace("topic: sensor-readings", f"topic: {topic}")
    path.write_text(text.replace("name: sensor-alarm", f"name: {name}"))
    return path


def sensor_readings(start: datetime, minutes: int, seed: int = 3) -> list[Raw]:
    """One reading a minute of the sensor stream, its alarms a learnable rule of the values."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(minutes):
        at = int((start + timedelta(minutes=i)).timestamp() * 1000)
        temperature = rng.uniform(10, 110)
        vibration = rng.uniform(0, 1)
        line = "abc"[rng.randrange(3)]
        alarm = temperature > 80 or (line == "c" and vibration > 0.7)
        value = {
            "ts": at,
            "temperature": round(temperature, 2),
            "vibration": round(vibration, 3),
            "line": line,
            "status": "alarm" if alarm else "ok",
        }
        out.append(Raw(None, json.dumps(value).encode(), at))
    return out
