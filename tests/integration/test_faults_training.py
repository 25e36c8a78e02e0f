"""A `streamtrain finetune` killed (SIGKILL) at each stage, then the hour rerun (or, after a kill
between registration and the alias moves, the next hour run): the registry ends as after
uninterrupted runs, with no duplicate promotion and no alias on a half-written version. The
kill comes from the fault-injection hook (`STREAMTRAIN_FAULT_KILL_AT`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks import guards, model_state, registry, run_logging
from tasks.aliases import ALIASES, alias_history, get_alias_version
from tasks.cycle import CycleContext, finetune_window, retrain_until
from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tasks.versions import list_versions, load_keras
from tasks.windowing import Window
from tests.integration.helpers import quick_training, schema_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
HOUR = START + timedelta(days=8, hours=10)
STAGES = ("after_read", "during_fit", "after_register")
# The quick training settings, as environment variables for the subprocess.
QUICK = {"retrain_days": 8, "holdout_hours": 16, "retrain_epochs": 8, "bootstrap_samples": 200}


def store(settings: Settings, root: Path, name: str) -> Settings:
    """Settings with a home and MLflow store of their own under `root/name`."""
    home = root / name
    return settings.model_copy(update={"home": home, "mlflow_dir": home / "mlflow"})


def copy_store(source: Settings, target: Settings) -> None:
    """A consistent copy of the sqlite store (artifacts stay where the experiment put them)."""
    target.mlflow_dir.mkdir(parents=True)
    with (
        contextlib.closing(sqlite3.connect(source.mlflow_dir / "mlflow.db")) as src,
        contextlib.closing(sqlite3.connect(target.mlflow_dir / "mlflow.db")) as dst,
    ):
        src.backup(dst)


def registry_state(settings: Settings, schema: StreamSchema) -> dict[str, Any]:
    """What an uninterrupted run and a crashed-then-rerun one must agree on."""
    name = schema.name
    versions = []
    for v in list_versions(settings, name):
        lineage = v.lineage
        assert lineage is not None
        versions.append(
            (
                v.version,
                lineage.parent_version,
                lineage.training_kind,
                lineage.window_start,
                lineage.data_hash,
                lineage.offsets,
                lineage.gate_decision,
                {k: round(m, 6) for k, m in lineage.holdout_metrics.items()},
                v.tags.get("live.accuracy"),
            )
        )
    moves = [
        (m.alias, m.from_version, m.to_version, m.trigger, m.reasons, m.who)
        for m in alias_history(settings, name)
    ]
    aliases = {a: get_alias_version(settings, name, a) for a in ALIASES}
    detector = model_state.get_model_tag(settings, name, guards.DETECTOR_TAG)
    return {"versions": versions, "moves": moves, "aliases": aliases, "detector": detector}


def assert_aliases_loadable(settings: Settings, schema: StreamSchema) -> None:
    """Every alias points at a version whose model loads (no half-written version)."""
    for alias in ALIASES:
        if get_alias_version(settings, schema.name, alias) is not None:
            load_keras(settings, schema.name, alias)


def test_a_finetune_killed_at_any_stage_reruns_to_the_uninterrupted_state(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"faults-{uuid.uuid4().hex[:8]}"
    schema_path = schema_file(tmp_path, topic)
    schema = load_schema(schema_path)
    s = quick_training(settings.model_copy(update={"schema_path": schema_path}))
    ensure_topic(s, topic)
    produce(s, topic, generate(SimulationConfig(start=START, hours=9 * 24, seed=4)))
    window = Window(HOUR, HOUR + timedelta(hours=1))

    base = store(s, tmp_path, "base")
    champion = retrain_until(CycleContext(settings=base, schema=schema), HOUR).challenger_version
    assert champion == "1" and get_alias_version(base, schema.name, "champion") == "1"

    twin = store(s, tmp_path, "twin")
    copy_store(base, twin)
    expected = finetune_window(CycleContext(settings=twin, schema=schema), window)
    assert expected.decision in {"promoted", "kept"}, expected.reasons
    want = registry_state(twin, schema)
    # The next hour after an uninterrupted one: what the hourly catch-up must also reach.
    following = Window(window.end, window.end + timedelta(hours=1))
    twin_next = store(s, tmp_path, "twin-next")
    copy_store(twin, twin_next)
    finetune_window(CycleContext(settings=twin_next, schema=schema), following)
    want_next = registry_state(twin_next, schema)

    crashed = {stage: store(s, tmp_path, stage) for stage in STAGES}
    processes = {}
    for stage, target in crashed.items():
        copy_store(base, target)
        env = {
            **cli_env,
            "STREAMTRAIN_HOME": str(target.home),
            "STREAMTRAIN_MLFLOW_DIR": str(target.mlflow_dir),
            "STREAMTRAIN_SCHEMA": str(schema_path),
            "STREAMTRAIN_FAULT_KILL_AT": stage,
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # three start at once
            **{f"STREAMTRAIN_{k.upper()}": str(v) for k, v in QUICK.items()},
        }
        processes[stage] = subprocess.Popen(
            [STREAMTRAIN, "finetune", "--hour", "2026-01-13T10:30Z", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group includes Prefect's temporary server
        )
    for stage, process in processes.items():
        try:
            process.wait(timeout=300)
        finally:
            # Prefect's temporary server outlives its killed parent and holds the pipes open.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, f"{stage}: {stderr[-3000:]}"
        assert f"SIGKILL at {stage}" in stderr, stderr[-3000:]

    for stage, target in crashed.items():
        left = registry_state(target, schema)
        assert left["aliases"]["champion"] == "1", (stage, left)  # nothing promoted yet
        assert_aliases_loadable(target, schema)
        if stage == "after_register":  # registered, gate decided, aliases not yet moved
            assert [v[0] for v in left["versions"]] == ["1", "2"]
            assert left["aliases"]["challenger"] is None
            # The catch-up goes on with the next hour: it first makes the moves left undone.
            caught_up = store(s, tmp_path, "caught-up")
            copy_store(target, caught_up)
            finetune_window(CycleContext(settings=caught_up, schema=schema), following)
            assert registry_state(caught_up, schema) == want_next
        else:
            assert [v[0] for v in left["versions"]] == ["1"], stage

        rerun = finetune_window(CycleContext(settings=target, schema=schema), window)
        assert rerun.decision == expected.decision, (stage, rerun.reasons)
        assert registry_state(target, schema) == want, stage
        assert_aliases_loadable(target, schema)
        again = finetune_window(CycleContext(settings=target, schema=schema), window)
        assert again.decision == "unchanged", (stage, again.reasons)
        assert registry_state(target, schema) == want, stage


def test_a_run_that_died_while_logging_does_not_count_as_done(
    settings: Settings, tmp_path: Path
) -> None:
    schema = load_schema(schema_file(tmp_path, "unused"))
    client = registry.connect(settings)
    experiment = registry.ensure_experiment(settings, schema.name)
    tags = {"streamtrain.kind": "finetune", "streamtrain.window_end": "2026-01-13T11:00Z"}
    done = client.create_run(
        experiment, tags={**tags, "streamtrain.window_start": "2026-01-13T09:00Z"}
    )
    client.set_terminated(done.info.run_id)
    # A later hour whose process died after its MLflow run began: the run stays RUNNING.
    client.create_run(experiment, tags={**tags, "streamtrain.window_start": "2026-01-13T10:00Z"})
    last = run_logging.last_finetuned_window(settings, schema.name)
    assert last is not None and last[0] == datetime(2026, 1, 13, 9, tzinfo=UTC)
