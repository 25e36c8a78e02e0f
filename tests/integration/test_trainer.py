"""The trainer runs the training deployments' flow runs in one warm process, and its champion
cache follows the champion alias."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tasks import aliases, services, stack, versions
from tasks.broker import free_ports
from tasks.settings import Settings
from tasks.stream import ensure_topic, produce
from tests.integration.helpers import ROOT, sensor_readings, sensor_schema_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
DAY = datetime(2026, 3, 2, tzinfo=UTC)
LOADED = "Loaded champion version"


@pytest.fixture
def prefect_api(settings: Settings) -> Iterator[str]:
    """A Prefect server of the test's own (home, port), stopped afterwards; its API URL."""
    (port,) = free_ports(1)
    own = settings.model_copy(update={"prefect_port": port})
    server = stack.prefect_service(own)
    services.start(server)
    try:
        services.wait_ready(server, lambda: stack._prefect_answers(own), 180)
        yield stack.prefect_api_url(own)
    finally:
        services.stop(server)


def streamtrain(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [STREAMTRAIN, *args, "--json"], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def run_window(api: str, hour: str) -> Any:
    """One `hourly-finetune` flow run for the window of `hour`, waited for."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        return run_deployment(
            "finetune/hourly-finetune", parameters={"hour": hour}, timeout=300, poll_interval=1
        )


@pytest.mark.timeout(1200)  # a Prefect server, a first model and three flow runs
def test_the_trainer_runs_windows_warm_and_reloads_when_the_champion_moves(
    settings: Settings, cli_env: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    topic, model = f"sensor-{uuid.uuid4().hex[:8]}", f"sensor-{uuid.uuid4().hex[:6]}"
    schema = sensor_schema_file(tmp_path, topic, model)
    ensure_topic(settings, topic)
    produce(settings, topic, sensor_readings(DAY, 3 * 24 * 60))
    env = {
        **cli_env,
        "STREAMTRAIN_SCHEMA": str(schema),
        "STREAMTRAIN_RETRAIN_DAYS": "2",
        "STREAMTRAIN_HOLDOUT_HOURS": "6",
        "STREAMTRAIN_RETRAIN_EPOCHS": "6",
        "STREAMTRAIN_BOOTSTRAP_SAMPLES": "100",
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
    }
    first = streamtrain(env, "retrain", "--until", "2026-03-04T00:00Z")
    assert first["decision"] == "promoted", first["reasons"]
    ours = settings.model_copy(update={"schema_path": schema, "prefect_api_url": prefect_api})
    stack.deploy(ours)  # the work pool, the training limit and prefect.yaml's deployments

    log_file = tmp_path / "trainer.log"
    with log_file.open("w") as log:
        trainer = subprocess.Popen([STREAMTRAIN, "trainer"], env=env, stderr=log, stdout=log)
    try:
        for hour in ("2026-03-04T00:10Z", "2026-03-04T00:20Z"):
            done = run_window(prefect_api, hour)
            assert done.state.is_completed(), (done.state, log_file.read_text()[-3000:])
        text = log_file.read_text()
        # Two windows, one model load: the second run found the champion in memory.
        assert text.count(LOADED) == 1, text[-3000:]

        # Someone moves the champion to another version: the next run must load and use it.
        current = aliases.get_alias_version(ours, model, aliases.CHAMPION)
        other = next(v.version for v in versions.list_versions(ours, model) if v.version != current)
        aliases.promote(ours, model, other, trigger="manual", reasons=["test: move the alias"])
        done = run_window(prefect_api, "2026-03-04T00:35Z")
        assert done.state.is_completed(), (done.state, log_file.read_text()[-3000:])
        text = log_file.read_text()
        assert text.count(LOADED) == 2 and f"{LOADED} {other} " in text, text[-3000:]
        trained = versions.find_version(
            ours,
            model,
            window_start="2026-03-04T00:30Z",
            parent_version=other,
            training_kind="finetune",
        )
        assert trained is not None, "the third window was not fine-tuned from the moved champion"
    finally:
        trainer.terminate()
        trainer.wait(timeout=60)
    text = log_file.read_text()
    assert "Traceback" not in text
    # One "Finished in state" line per flow run (the engine's), not one per task run as well.
    assert text.count("Finished in state") <= 3, text[-3000:]
