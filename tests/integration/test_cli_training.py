"""The training commands end to end: real Prefect flow runs, real broker, real MLflow store."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tests.integration.helpers import schema_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")


def run(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [STREAMTRAIN, *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(done.stdout, parse_constant=refuse)


def test_retrain_finetune_report_show_history_rollback(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    schema_path = schema_file(tmp_path, topic)
    ensure_topic(settings, topic)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    produce(settings, topic, generate(SimulationConfig(start=start, hours=9 * 24, seed=4)))
    env = {
        **cli_env,
        "STREAMTRAIN_SCHEMA": str(schema_path),
        "STREAMTRAIN_RETRAIN_DAYS": "8",
        "STREAMTRAIN_HOLDOUT_HOURS": "16",
        "STREAMTRAIN_RETRAIN_EPOCHS": "8",
    }

    first = run(env, "retrain", "--until", "2026-01-13T00:00Z")
    assert first["decision"] == "promoted" and first["challenger_version"] == "1"
    from tasks import registry

    artifacts = registry.connect(settings).list_artifacts(first["run_id"])
    assert "accuracy_timeline.png" in [a.path for a in artifacts]
    tuned = run(env, "finetune", "--hour", "2026-01-13T10:30Z")
    assert tuned["window_start"] == "2026-01-13T10:00Z" and tuned["rows"] == 100
    assert tuned["champion_version"] == "1" and tuned["decision"] in {"promoted", "kept"}

    rows = run(env, "report")
    assert [r["kind"] for r in rows] == ["retrain", "finetune"]
    for key in (
        "window_start",
        "rows",
        "champion_version",
        "prequential_accuracy",
        "challenger_metric",
        "champion_metric",
        "decision",
        "reasons",
        "data_drift",
        "concept_drift_alarm",
        "retrain_triggered",
        "quarantined",
        "rejected",
    ):
        assert key in rows[1], key
    assert rows[1]["prequential_accuracy"] == pytest.approx(tuned["prequential_accuracy"])

    shown = run(env, "model", "show")
    assert [v["version"] for v in shown["versions"]] == ["1", "2"]
    assert shown["versions"][0]["lineage"]["training_kind"] == "retrain"
    history = run(env, "model", "history")
    assert history and history[0]["alias"] in {"champion", "challenger"}
    if tuned["decision"] == "promoted":
        back = run(env, "model", "rollback", "--reason", "cli test")
        assert back == {"champion": "1"}

    # On the clock (no --hour): the hours after the last one fine-tuned, in order, capped.
    caught_up = run({**env, "STREAMTRAIN_CATCH_UP_MAX_WINDOWS": "2"}, "finetune")
    assert [c["window_start"] for c in caught_up] == ["2026-01-13T11:00Z", "2026-01-13T12:00Z"]
    assert [r["kind"] for r in run(env, "report")].count("finetune") == 3
