"""Retrain and fine-tune cycles against the real broker and a real MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tasks import aliases, registry, run_logging, versions
from tasks.cycle import CycleContext, finetune_window, retrain_until
from tasks.lineage import Lineage
from tasks.model import predict_proba
from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce, read_window
from tasks.windowing import Window
from tests.integration.helpers import Raw, own_topic, register_by_hand
from tests.integration.helpers import quick_training as fast

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def stream(kafka_broker: Settings) -> StreamSchema:
    """Ten simulated days (scenario none) in a topic of their own, shared by this module."""
    schema = load_schema(ROOT / "schemas" / "drone.yaml")
    schema = own_topic(schema, "train")
    ensure_topic(kafka_broker, schema.topic)
    produce(
        kafka_broker,
        schema.topic,
        generate(SimulationConfig(start=START, hours=10 * 24, scenario="none", seed=5)),
    )
    return schema


def context(settings: Settings, schema: StreamSchema) -> CycleContext:
    return CycleContext(settings=settings, schema=schema)


def test_retrain_registers_a_champion_with_lineage(
    settings: Settings, stream: StreamSchema
) -> None:
    s = fast(settings)
    result = retrain_until(context(s, stream), START + 8 * DAY)
    assert result.decision == "promoted", result
    assert aliases.get_alias_version(s, stream.name, aliases.CHAMPION) == result.challenger_version
    (version,) = versions.list_versions(s, stream.name)
    lineage = version.lineage
    assert lineage is not None
    assert lineage.training_kind == "retrain" and lineage.parent_version is None
    assert lineage.window_start == "2026-01-05T00:00Z" and lineage.window_end == "2026-01-13T00:00Z"
    assert lineage.offsets and lineage.data_hash and lineage.schema_hash == stream.fingerprint()
    assert lineage.holdout_metrics["long.f1"] > 0.6
    assert lineage.gate_decision == "promoted" and lineage.gate_reasons


def test_finetune_promotes_on_a_normal_window_and_rerun_changes_nothing(
    settings: Settings, stream: StreamSchema
) -> None:
    s = fast(settings)
    ctx = context(s, stream)
    first = retrain_until(ctx, START + 8 * DAY)
    window = Window(START + 8 * DAY + timedelta(hours=10), START + 8 * DAY + timedelta(hours=11))
    result = finetune_window(ctx, window)
    assert result.rows == 100
    assert result.champion_version == first.challenger_version
    assert result.prequential_accuracy is not None and result.prequential_accuracy > 0.8
    assert result.decision == "promoted", result.reasons
    history = aliases.alias_history(s, stream.name)
    assert [m.alias for m in history if m.to_version == result.challenger_version][-1] == "champion"
    assert_runs_show_their_data(s, stream, [first.run_id, result.run_id])
    description = registry.connect(s).get_registered_model(stream.name).description
    assert "| when | alias | version | from | who | why |" in description
    assert f"| champion | {result.challenger_version} | {first.challenger_version} |" in (
        description
    )

    # The same hour again, in a new process: nothing new, no alias moves.
    versions_before = len(versions.list_versions(s, stream.name))
    moves_before = len(aliases.alias_history(s, stream.name))
    rerun = finetune_window(context(s, stream), window)
    assert rerun.decision == "unchanged", rerun.reasons
    assert len(versions.list_versions(s, stream.name)) == versions_before
    assert len(aliases.alias_history(s, stream.name)) == moves_before


def assert_runs_show_their_data(
    s: Settings, schema: StreamSchema, run_ids: list[str | None]
) -> None:
    """Each training run names its topic and offsets as its dataset, with the lineage's hash."""
    client = registry.connect(s)
    for run_id in run_ids:
        assert run_id is not None
        [version] = client.search_model_versions(f"run_id = '{run_id}'")
        lineage = Lineage.model_validate_json(version.tags["lineage.json"])
        [used] = client.get_run(run_id).inputs.dataset_inputs
        assert [(t.key, t.value) for t in used.tags] == [("mlflow.data.context", "training")]
        source = json.loads(used.dataset.source)["uri"]
        assert source == run_logging.kafka_source(schema.topic, lineage.offsets)
        first, last = lineage.offsets[f"{schema.topic}-0"]
        assert source.startswith(f"kafka://{schema.topic}?partitions=0:{first}-{last}")
        assert used.dataset.digest == lineage.data_hash and used.dataset.source_type == "kafka"
        from mlflow.models import get_model_info

        signature = get_model_info(version.source).signature
        assert signature is not None
        assert {spec.name for spec in signature.inputs.inputs} == {f.name for f in schema.features}
        assert_input_example_feeds_the_model(version.source, schema)


def assert_input_example_feeds_the_model(model_uri: str, schema: StreamSchema) -> None:
    """The logged model carries a few training rows in its input format, and the model loaded
    back from MLflow predicts on them."""
    import mlflow.artifacts
    import mlflow.keras
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(model_uri)
    logged = Model.load(local)
    assert logged.saved_input_example_info is not None
    assert logged.saved_input_example_info["type"] == "ndarray"
    example = logged.load_input_example(local)
    assert set(example) == {f.name for f in schema.features}
    assert {array.shape for array in example.values()} == {(5, 1)}
    assert set(example["store_type"].ravel()) <= set(schema.feature("store_type").values or [])
    proba = np.asarray(mlflow.keras.load_model(model_uri)(example)).reshape(-1)
    assert proba.shape == (5,) and np.all((proba >= 0) & (proba <= 1))


def test_finetune_on_flipped_labels_is_registered_but_not_promoted(
    settings: Settings, stream: StreamSchema
) -> None:
    # Aggressive fine-tuning without replay, so a poisoned window really damages the copy.
    s = fast(settings, replay_samples=0, finetune_epochs=40, finetune_learning_rate=0.02)
    ctx = context(s, stream)
    champion = retrain_until(ctx, START + 8 * DAY).challenger_version
    poisoned = stream.model_copy(update={"topic": f"{stream.topic}-flipped"})
    ensure_topic(s, poisoned.topic, partitions=1)
    hour = START + 8 * DAY + timedelta(hours=10)
    source = read_window(s, stream, Window(hour - 2 * DAY, hour + timedelta(hours=1)))
    flipped = []
    for row in source.frame.drop(columns=["_event_ms", "_partition", "_offset"]).to_dict("records"):
        in_window = row["event_time"] >= hour.strftime("%Y-%m-%dT%H")
        row["busy"] = 1 - row["busy"] if in_window else row["busy"]
        stamp = int(datetime.fromisoformat(row["event_time"]).timestamp() * 1000)
        flipped.append(Raw(str(row["store_id"]).encode(), json.dumps(row).encode(), stamp))
    closer = dict(flipped[-1].__dict__)
    produce(
        s,
        poisoned.topic,
        [*flipped, Raw(b"0", closer["value"], closer["timestamp_ms"] + 7_200_000)],
    )

    ctx = context(s, poisoned)
    result = finetune_window(ctx, Window(hour, hour + timedelta(hours=1)))
    assert result.decision == "kept", result.reasons
    assert result.challenger_version is not None
    assert aliases.get_alias_version(s, poisoned.name, aliases.CHAMPION) == champion
    version = next(
        v
        for v in versions.list_versions(s, poisoned.name)
        if v.version == result.challenger_version
    )
    assert version.lineage is not None and version.lineage.gate_decision == "kept champion"
    reasons = version.lineage.gate_reasons
    assert any("worse" in r or "floor" in r for r in reasons), reasons


def test_rollback_and_reload_predict_the_same(settings: Settings, stream: StreamSchema) -> None:
    s = fast(settings)
    ctx = context(s, stream)
    first = retrain_until(ctx, START + 8 * DAY).challenger_version
    second = retrain_until(ctx, START + 9 * DAY)
    assert second.decision == "promoted", second.reasons
    window = read_window(
        s,
        stream,
        Window(START + 9 * DAY + timedelta(hours=10), START + 9 * DAY + timedelta(hours=11)),
    )
    in_memory = ctx.models[second.challenger_version]
    reloaded = versions.load_keras(s, stream.name, "champion")
    np.testing.assert_allclose(
        predict_proba(in_memory, stream, window.frame),
        predict_proba(reloaded, stream, window.frame),
        rtol=1e-5,
    )

    restored = aliases.rollback(s, stream.name, who="tester", why="testing rollback")
    assert restored == first
    assert aliases.get_alias_version(s, stream.name, aliases.CHAMPION) == first
    history = aliases.alias_history(s, stream.name)
    back = [m for m in history if m.alias == aliases.CHAMPION][-1]
    assert (back.from_version, back.to_version, back.trigger) == (
        second.challenger_version,
        first,
        "rollback",
    )
    assert (back.who, back.reasons) == ("tester", ("testing rollback",))
    # previous-champion is cleared by the same person, so a second rollback cannot undo this one.
    cleared = history[-1]
    assert (cleared.alias, cleared.from_version, cleared.to_version, cleared.who) == (
        aliases.PREVIOUS_CHAMPION,
        first,
        None,
        "tester",
    )


def test_a_new_champion_that_serves_badly_is_rolled_back(
    settings: Settings, stream: StreamSchema
) -> None:
    # No fine-tune may win here (floor 0.99): only the rollback rule moves the champion.
    s = fast(settings, absolute_floor=0.99, rollback_hours=2, rollback_margin=0.05)
    ctx = context(s, stream)
    good = retrain_until(ctx, START + 8 * DAY).challenger_version
    assert good is not None and aliases.get_alias_version(s, stream.name, "champion") is None
    aliases.promote(s, stream.name, good, trigger="test", reasons=["first model"])
    day = START + 8 * DAY
    for hour in (9, 10):
        finetune_window(ctx, Window(day + timedelta(hours=hour), day + timedelta(hours=hour + 1)))

    # A broken model (its output inverted) becomes champion by hand.
    from tasks.model import fine_tune_copy

    broken = fine_tune_copy(versions.load_keras(s, stream.name, good))
    last = broken.layers[-1]
    weights, bias = last.get_weights()
    last.set_weights([-weights, -bias])
    bad, _ = register_by_hand(s, stream, broken, name="an inverted model", window_start=day)
    aliases.promote(s, stream.name, bad, trigger="test", reasons=["a bad promotion"])
    ctx.models.clear()

    outcomes = [
        finetune_window(ctx, Window(day + timedelta(hours=h), day + timedelta(hours=h + 1)))
        for h in (11, 12)
    ]
    assert outcomes[0].decision == "kept"
    assert outcomes[1].decision == "rolled back", outcomes[1].reasons
    assert aliases.get_alias_version(s, stream.name, "champion") == good
    last_move = aliases.alias_history(s, stream.name)
    assert any(m.who == "streamtrain auto-rollback" for m in last_move)
