"""The deployment entrypoints run in-process under a command's settings (`use_settings`, as the
CLI sets them from `--schema`) use those settings, not a schema read from the environment.

The environment here names another schema file with another topic, so a flow that read the
environment would write to, or read from, the wrong stream of the test broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.monitor import monitor
from flows.simulate import simulate
from tasks.schema import load_schema
from tasks.settings import Settings, use_settings
from tasks.stream import ensure_topic
from tests.integration.helpers import schema_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SENSOR = ROOT / "tests" / "fixtures" / "sensor.yaml"


@pytest.fixture
def environment_elsewhere(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's settings: the same test broker and home, another schema and topic."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = schema_file(elsewhere, f"env-topic-{tmp_path.name}")
    monkeypatch.setenv("STREAMTRAIN_SCHEMA", str(path))
    monkeypatch.setenv("STREAMTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("STREAMTRAIN_MLFLOW_DIR", str(settings.mlflow_dir))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)


def sensor_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The command's settings: the sensor stream (15-minute windows) in a topic of its own."""
    path = tmp_path / "sensor.yaml"
    topic = f"sensor-{tmp_path.name}"
    text = SENSOR.read_text().replace("topic: sensor-readings", f"topic: {topic}")
    # The monitor joins predictions to labels by key: key the readings by line.
    path.write_text(text.replace("label:", "key: line\nlabel:", 1))
    return settings.model_copy(update={"schema_path": path})


@pytest.mark.usefixtures("environment_elsewhere")
def test_simulate_entrypoint_writes_to_the_commands_schema_topic(
    settings: Settings, tmp_path: Path
) -> None:
    command = sensor_settings(settings, tmp_path)
    with use_settings(command):
        summary = simulate.fn(start="2026-03-02T09:00Z", hours=1, scenario="none", seed=3)
    assert summary["topic"] == load_schema(command.schema_path).topic
    assert summary["records"] > 0


@pytest.mark.usefixtures("environment_elsewhere")
def test_monitor_entrypoint_reads_the_commands_stream_and_its_window_length(
    settings: Settings, tmp_path: Path
) -> None:
    command = sensor_settings(settings, tmp_path)
    schema = load_schema(command.schema_path)
    ensure_topic(command, schema.topic)
    predictions = f"{schema.topic}-predictions"
    ensure_topic(command, predictions)
    with use_settings(command):
        result = monitor.fn(predictions_topic=predictions, hour="2026-03-02T10:20Z")
    # the sensor's 15-minute window holding 10:20, not the environment schema's hour
    assert result["window_start"] == "2026-03-02T10:15:00+00:00"
    assert json.dumps(result)  # plain values, as a deployment's result must be
