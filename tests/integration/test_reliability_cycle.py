"""The training cycle under hostile input, with a secret set, and run twice at once.

Real broker, real MLflow store, real Keras training: a hostile window changes the champion only
through the gate; a secret in the settings reaches no log, MLflow record or Prefect artifact;
two `finetune` runs of one model at once leave one version and a clean alias history.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from pydantic import SecretStr

from flows.runtime import cycle_markdown
from tasks import aliases, registry, versions
from tasks.cycle import CycleContext, CycleResult, finetune_window
from tasks.model import build_model, train
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce, read_window
from tasks.windowing import Window
from tests.integration.gate_audit import assert_champion_moved_only_through_the_gate
from tests.integration.helpers import (
    Raw,
    fresh_schema,
    quick_training,
    register_by_hand,
    schema_file,
)
from tests.integration.hostile import BASE, drone_window, hostile_batch, out_of_range_rows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WINDOW = Window(BASE, BASE + HOUR)
SECRET = "s3cr3t-Pa55-9f4e1c"


@pytest.fixture(scope="module")
def champion_model(kafka_broker: Settings) -> Any:
    """A small model trained once on three simulated days (every test registers its own copy)."""
    schema = fresh_schema(prefix="reliability-history")
    ensure_topic(kafka_broker, schema.topic)
    start = BASE.replace(hour=0) - 3 * DAY
    produce(kafka_broker, schema.topic, generate(SimulationConfig(start=start, hours=72, seed=9)))
    frame = read_window(
        kafka_broker, schema, Window(start, start + 3 * DAY), send_dead_letters=False
    ).frame
    model = build_model(schema, kafka_broker, frame)
    train(model, schema, frame, epochs=6, learning_rate=3e-3, batch_size=64, seed=7)
    return model


@pytest.fixture(scope="module")
def store(kafka_broker: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One MLflow store for the property test's examples (each uses a model name of its own)."""
    home = tmp_path_factory.mktemp("reliability")
    return quick_training(
        kafka_broker.model_copy(
            update={
                "home": home,
                "mlflow_dir": home / "mlflow",
                "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
            }
        )
    )


def new_stream(s: Settings, records: list[Raw], name: str | None = None) -> StreamSchema:
    schema = fresh_schema(prefix="reliability")
    if name is not None:
        schema = schema.model_copy(update={"name": name})
    ensure_topic(s, schema.topic, partitions=2)
    produce(s, schema.topic, records)
    return schema


def crown(s: Settings, schema: StreamSchema, model: Any) -> str:
    version, _ = register_by_hand(s, schema, model, name="champion", window_start=BASE - 2 * DAY)
    aliases.promote(s, schema.name, version, trigger="test", reasons=["first champion"])
    return version


def accounted(result: CycleResult) -> int:
    return result.rows + result.quarantined + result.duplicates + result.malformed + result.late


@settings(max_examples=6)
@given(records=hostile_batch(max_size=30))
@example(records=out_of_range_rows(20))  # a quarter of the rows impossible: window rejected
@example(records=out_of_range_rows(2))  # a few impossible rows: quarantined, the rest used
def test_hostile_window_changes_the_champion_only_through_the_gate(
    store: Settings, champion_model: Any, records: list[Raw]
) -> None:
    schema = new_stream(store, [*drone_window(60), *records], name=f"h-{uuid.uuid4().hex[:8]}")
    champion = crown(store, schema, champion_model)

    result = finetune_window(CycleContext(settings=store, schema=schema), WINDOW)
    event(f"decision: {result.decision}")
    event(f"rows quarantined: {'yes' if result.quarantined else 'no'}")

    now = aliases.get_alias_version(store, schema.name, aliases.CHAMPION)
    if result.decision == "promoted":
        assert now == result.challenger_version != champion
    else:
        assert now == champion, result.reasons
    assert_champion_moved_only_through_the_gate(store, schema.name)
    again = read_window(store, schema, WINDOW, send_dead_letters=False).manifest
    assert accounted(result) == again.records_read, result
    if result.rejected:
        assert result.decision == "rejected" and result.reasons


def test_a_secret_reaches_no_log_mlflow_record_or_report(
    settings: Settings,
    champion_model: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = quick_training(settings).model_copy(
        update={"kafka_sasl_username": "streamtrain", "kafka_sasl_password": SecretStr(SECRET)}
    )
    schema = new_stream(s, drone_window(60))
    crown(s, schema, champion_model)
    for name in ("streamtrain", "tasks", "flows", "mlflow", "prefect"):
        caplog.set_level(logging.DEBUG, logger=name)

    ctx = CycleContext(settings=s, schema=schema)
    logging.getLogger("streamtrain.test").info("settings in use: %s (%r)", s, ctx)
    result = finetune_window(ctx, WINDOW)
    assert result.challenger_version is not None, result.reasons

    client = registry.connect(s)
    experiment = client.get_experiment_by_name(schema.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs
    seen = [caplog.text, *capsys.readouterr(), cycle_markdown(result), json.dumps(result.to_dict())]
    for run in runs:
        seen += [json.dumps(run.data.params), json.dumps(run.data.tags)]
    model = client.get_registered_model(schema.name)
    seen += [json.dumps(model.tags), model.description or ""]
    for version in versions.list_versions(s, schema.name):
        seen += [json.dumps(version.tags), version.description]
    assert all(SECRET not in text for text in seen)
    assert_no_file_holds(SECRET, s.mlflow_dir, s.home)


def assert_no_file_holds(secret: str, *folders: Path) -> None:
    """The store's database and artifacts, Prefect's database, lock files: byte by byte."""
    needle = secret.encode()
    scanned = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert needle not in path.read_bytes(), path
    assert scanned


# --- two finetune runs of one model at once ------------------------------------------------


def start_finetune(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [STREAMTRAIN, "finetune", "--hour", "2026-01-05T10:30Z", "--json"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )


def wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_finetunes_at_once_one_waits_and_the_registry_stays_consistent(
    settings: Settings, cli_env: dict[str, str], champion_model: Any, tmp_path: Path
) -> None:
    s = quick_training(settings)
    schema = new_stream(s, drone_window(60))
    champion = crown(s, schema, champion_model)
    env = {
        **cli_env,
        "STREAMTRAIN_SCHEMA": str(schema_file(tmp_path, schema.topic)),
        "STREAMTRAIN_BOOTSTRAP_SAMPLES": "200",
        "PREFECT_HOME": str(s.home / "prefect"),  # its database (artifacts, logs) is scanned
        # A secret in the environment, as in production: it must show up nowhere below.
        "STREAMTRAIN_KAFKA_SASL_USERNAME": "streamtrain",
        "STREAMTRAIN_KAFKA_SASL_PASSWORD": SECRET,
    }
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    # Hold the lock until both runs wait for it, so that they surely overlap.
    with registry.training_lock(s, schema.name, timeout_s=5):
        runs = [start_finetune(env, log) for log in logs]
        waiting = "training lock drone-busy.train.lock is held by pid"
        wait_for(lambda: all(waiting in log.read_text() for log in logs), 120, "both to wait")
    outputs = [
        (run.communicate(timeout=400)[0], log.read_text())
        for run, log in zip(runs, logs, strict=True)
    ]

    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
        assert "Traceback" not in err and SECRET not in out + err
    results = [json.loads(out) for out, _ in outputs]
    results = [r[0] if isinstance(r, list) else r for r in results]
    decisions = sorted(r["decision"] for r in results)
    # The second waited for the training lock, then found the window done from this champion.
    assert decisions[1] == "unchanged" and decisions[0] in {"kept", "promoted"}, results
    new = next(r["challenger_version"] for r in results if r["decision"] != "unchanged")
    assert {r["challenger_version"] for r in results} <= {new, champion}

    finetuned = [
        v
        for v in versions.list_versions(s, schema.name)
        if v.lineage is not None and v.lineage.training_kind == "finetune"
    ]
    assert [v.version for v in finetuned] == [new]  # one version for the window
    history = aliases.alias_history(s, schema.name)
    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    moves = [(m.alias, m.from_version, m.to_version) for m in history]
    assert len(moves) == len(set(moves)), moves  # no move recorded twice
    assert moves.count((aliases.CHALLENGER, None, new)) == 1
    assert_champion_moved_only_through_the_gate(s, schema.name)
    prefect_files = [p.read_bytes() for p in (s.home / "prefect").rglob("*") if p.is_file()]
    assert any(b"| rows used |" in data for data in prefect_files)  # the artifacts are in there
    assert_no_file_holds(SECRET, s.mlflow_dir, s.home)


def test_runs_sharing_a_store_exclude_each_other_whatever_their_home(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mine = Settings(home=tmp_path / "one", mlflow_dir=store)
    theirs = Settings(home=tmp_path / "two", mlflow_dir=store)
    elsewhere = Settings(home=tmp_path / "one", mlflow_dir=tmp_path / "other-store")
    with registry.training_lock(mine, "m", timeout_s=1):
        held = pytest.raises(registry.LockTimeout, match=r"m\.train\.lock is held by pid \d+")
        with held, registry.training_lock(theirs, "m", timeout_s=0.2):
            pass
        with registry.training_lock(elsewhere, "m", timeout_s=0.2):
            pass  # another store: another lock
