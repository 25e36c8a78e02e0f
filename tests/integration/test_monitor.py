"""The monitor against the real broker and a real MLflow store: a served version's live accuracy
is computed from the predictions the scorer actually wrote and logged on its serving run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tasks import aliases, registry, serving_runs
from tasks.monitor import monitor_window, window_step
from tasks.schema import decode_record, load_schema
from tasks.scoring import run_scorer
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tasks.windowing import Window
from tests.integration.helpers import read_json, register_by_hand

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "drone.yaml")
START = datetime(2026, 1, 5, tzinfo=UTC)
WINDOW = Window(START.replace(hour=10), START.replace(hour=11))


@dataclass(frozen=True)
class Raw:
    key: bytes | None
    value: bytes
    timestamp_ms: int


def simulated(hours: int, seed: int) -> list[Raw]:
    config = SimulationConfig(start=START, hours=hours, stores=20, seed=seed)
    return [Raw(r.key, r.value, r.timestamp_ms) for r in generate(config) if r.corruption is None]


def serve_a_trained_model(settings: Settings) -> str:
    """Train a tiny model, register it and make it the champion; returns its version."""
    from tasks import model as m

    rows = [decode_record(SCHEMA, r.value) for r in simulated(48, seed=1)]
    frame = pd.DataFrame(rows, columns=SCHEMA.columns)
    model = m.build_model(SCHEMA, Settings(hidden_units=(8,), seed=3), frame)
    m.train(model, SCHEMA, frame, epochs=1, learning_rate=3e-3, batch_size=64, seed=3)
    version, _ = register_by_hand(settings, SCHEMA, model, name="monitor test", window_start=START)
    aliases.promote(settings, SCHEMA.name, version, trigger="test", reasons=["test"])
    return version


def in_window(value: bytes) -> bool:
    return WINDOW.start_ms <= decode_record(SCHEMA, value)["_event_ms"] < WINDOW.end_ms


def test_live_accuracy_of_the_serving_version_is_what_its_predictions_scored(
    settings: Settings,
) -> None:
    version = serve_a_trained_model(settings)
    suffix = uuid.uuid4().hex[:8]
    schema = SCHEMA.model_copy(update={"topic": f"labelled-{suffix}"})  # no other test's data
    features, sink = f"features-{suffix}", f"predictions-{suffix}"
    for topic in (schema.topic, features):
        ensure_topic(settings, topic, partitions=3)
    records = simulated(24, seed=2)
    hour = [r for r in records if in_window(r.value)]
    withheld = set(hour[:2])  # labelled but never scored: unmatched labels
    repeated = hour[2:5]  # sent to the scorer twice: duplicates
    produce(settings, schema.topic, records)
    scored = [*(r for r in records if r not in withheld), *repeated]
    produce(settings, features, scored)
    stats = run_scorer(
        settings,
        SCHEMA,
        input_topic=features,
        output_topic=sink,
        max_records=len(scored),
        idle_exit_s=30,
        batch_size=100,
    )
    assert stats.predictions_out == len(scored)

    result = monitor_window(settings, schema, WINDOW, predictions_topic=sink)

    labels = {
        (str(row["store_id"]), row["event_time"]): row[SCHEMA.label.field]
        for row in (decode_record(SCHEMA, r.value) for r in hour)
    }
    served = {
        (str(p["key"]), p["event_time"]): p["predicted"]
        for p in read_json(settings, sink)
        if (str(p["key"]), p["event_time"]) in labels
    }
    expected = sum(served[k] == labels[k] for k in served) / len(served)
    assert len(served) == len(hour) - len(withheld)

    assert result.labels_closed and result.labelled_rows == len(hour)
    assert set(result.join.versions) == {version}
    live = result.join.versions[version]
    assert live.accuracy == pytest.approx(expected)
    assert (live.joined, live.unmatched_predictions, live.duplicates) == (len(served), 0, 3)
    assert result.join.unmatched_labels == len(withheld)

    client = registry.connect(settings)
    run = client.get_run(result.run_ids[version])
    assert run.info.run_name == f"serving v{version}"
    assert run.data.tags[serving_runs.SERVING_TAG] == version
    step = window_step(WINDOW)
    assert serving_runs.serving_metric(settings, run.info.run_id, "live_accuracy") == {
        step: pytest.approx(expected)
    }
    assert serving_runs.serving_metric(settings, run.info.run_id, "live_unmatched_labels") == {
        step: len(withheld)
    }

    again = monitor_window(settings, schema, WINDOW, predictions_topic=sink)
    assert again.run_ids == result.run_ids  # the same long-lived run, found by its tag
    assert len(client.get_metric_history(run.info.run_id, "live_accuracy")) == 1
