"""`streamtrain --schema FILE` alone (no STREAMTRAIN_SCHEMA) reaches every flow it starts.

The stream is the sensor fixture (15-minute windows, no key, epoch timestamps, string labels)
in a topic of its own: neither its topic nor its model name is the default schema's.
"""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.settings import Settings
from tasks.stream import ensure_topic, produce
from tasks.windowing import to_ms
from tests.integration.helpers import Raw

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
SENSOR = ROOT / "tests" / "fixtures" / "sensor.yaml"
START = datetime(2026, 3, 2, tzinfo=UTC)


def sensor_schema(tmp_path: Path, topic: str) -> Path:
    """The sensor schema with a topic of its own (the model name stays `sensor-alarm`)."""
    path = tmp_path / "sensor.yaml"
    path.write_text(SENSOR.read_text().replace("topic: sensor-readings", f"topic: {topic}"))
    return path


def sensor_records(start: datetime, minutes: int, hot_from: datetime | None = None) -> list[Raw]:
    """One reading a minute; hot, vibrating machines raise the alarm (learnable, seeded)."""
    rng = random.Random(11)
    out = []
    for i in range(minutes):
        at = start + timedelta(minutes=i)
        temperature = rng.uniform(10, 90)
        if hot_from is not None and at >= hot_from:
            temperature = rng.uniform(140, 149)  # a drifted window: far outside training data
        vibration = rng.uniform(0, 2)
        alarm = temperature + 20 * vibration > 85
        value = {
            "ts": to_ms(at),
            "temperature": round(temperature, 2),
            "vibration": round(vibration, 3),
            "line": "abc"[i % 3],
            "status": "alarm" if alarm else "ok",
        }
        out.append(Raw(None, json.dumps(value).encode(), to_ms(at)))
    return out


def streamtrain(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [STREAMTRAIN, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@pytest.fixture
def schema_only_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The test's environment without STREAMTRAIN_SCHEMA: only --schema can name the stream."""
    env = {k: v for k, v in cli_env.items() if k != "STREAMTRAIN_SCHEMA"}
    assert not any(k.upper() == "STREAMTRAIN_SCHEMA" for k in env)
    return {
        **env,
        "STREAMTRAIN_RETRAIN_DAYS": "2",
        "STREAMTRAIN_HOLDOUT_HOURS": "6",
        "STREAMTRAIN_RETRAIN_EPOCHS": "5",
        "STREAMTRAIN_BOOTSTRAP_SAMPLES": "200",
        "STREAMTRAIN_DRIFT_MIN_ROWS": "5",
    }


@pytest.mark.slow
def test_schema_option_reaches_retrain_finetune_fallback_retrain_and_report(
    settings: Settings, schema_only_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"sensor-{uuid.uuid4().hex[:8]}"
    schema = str(sensor_schema(tmp_path, topic))
    ensure_topic(settings, topic)
    hot_from = START + timedelta(days=2, hours=1)
    produce(settings, topic, sensor_records(START, 3 * 24 * 60, hot_from=hot_from))
    env = schema_only_env

    retrained = streamtrain(env, "--schema", schema, "retrain", "--until", "2026-03-04T00:00Z")
    assert "retrain 2026-03-02T00:00Z .. 2026-03-04T00:00Z" in retrained.stdout
    assert "promoted" in retrained.stdout

    tuned = as_json(
        streamtrain(env, "--schema", schema, "finetune", "--hour", "2026-03-04T00:20Z", "--json")
    )
    assert (tuned["window_start"], tuned["window_end"]) == (
        "2026-03-04T00:15Z",
        "2026-03-04T00:30Z",
    )
    assert tuned["rows"] == 15 and tuned["champion_version"] == "1"

    # A drifted window asks for a full retrain; without a server it runs in this process,
    # on the same --schema stream.
    drifted = streamtrain(env, "--schema", schema, "finetune", "--hour", "2026-03-04T01:05Z")
    assert "finetune 2026-03-04T01:00Z .. 2026-03-04T01:15Z" in drifted.stdout
    assert "drift:severe-drift-episode@2026-03-04T01:00Z" in drifted.stdout

    rows = as_json(streamtrain(env, "--schema", schema, "report", "--json"))
    assert [(r["kind"], r["trigger"]) for r in rows] == [
        ("retrain", "schedule"),
        ("finetune", "schedule"),
        ("finetune", "schedule"),
        ("retrain", "drift:severe-drift-episode@2026-03-04T01:00Z"),
    ]
    assert rows[0]["rows"] == 2 * 24 * 60
    report = streamtrain(env, "--schema", schema, "report").stdout
    assert "Training report" in report and "2026-03-04T01:00Z" in report

    from tasks import registry

    client = registry.connect(settings)
    names = {m.name for m in client.search_registered_models()}
    assert names == {"sensor-alarm"}

    shown = streamtrain(env, "--schema", schema, "model", "show").stdout
    assert "Model versions" in shown and "retrain" in shown and "finetune" in shown
    history = streamtrain(env, "--schema", schema, "model", "history").stdout
    assert "Alias history" in history and "champion" in history
    moves = as_json(streamtrain(env, "--schema", schema, "model", "history", "--json"))
    assert moves and all(m["at"] in history for m in moves)


def test_monitor_uses_the_schema_option_stream(
    schema_only_env: dict[str, str], tmp_path: Path
) -> None:
    """Monitor reads the labels of the --schema stream (here a topic nobody created)."""
    topic = f"sensor-{uuid.uuid4().hex[:8]}"
    schema = str(sensor_schema(tmp_path, topic))
    done = subprocess.run(
        [STREAMTRAIN, "--schema", schema, "monitor", "--predictions", "p", "--hour", "2026-03-02"],
        capture_output=True,
        text=True,
        env=schema_only_env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and f"topic '{topic}' does not exist" in said[0], done.stderr


def test_window_human_output_summarises_the_schema_option_stream(
    settings: Settings, schema_only_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"sensor-{uuid.uuid4().hex[:8]}"
    schema = str(sensor_schema(tmp_path, topic))
    ensure_topic(settings, topic)
    records = sensor_records(START, 60)
    produce(settings, topic, records)
    labels = [json.loads(r.value)["status"] for r in records[15:30]]
    out = streamtrain(schema_only_env, "--schema", schema, "window", "--hour", "2026-03-02T00:20Z")
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in out.stdout.splitlines()
        if len(cells := line.split("│")) == 4
    }
    assert "Window 2026-03-02T00:15Z .. 2026-03-02T00:30Z" in out.stdout
    assert rows["rows used"] == "15" and rows["duplicates"] == "0" and rows["late"] == "0"
    assert rows["labels"] == ", ".join(f"{k}: {labels.count(k)}" for k in sorted(set(labels)))
    assert rows["closed"] == "yes"
    assert rows["offsets"].startswith(f"{topic}-")  # offsets per partition of its own topic
