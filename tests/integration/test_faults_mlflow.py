"""The MLflow tracking server stops in the middle of a fine-tune: bounded retries, a clean
failure that names the cause, the champion unchanged, and the same hour succeeds once the
server is back."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tasks import aliases, registry, versions
from tasks.broker import free_port
from tasks.cycle import CycleContext, finetune_window, retrain_until
from tasks.schema import load_schema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stages import Stages
from tasks.stream import ensure_topic, produce
from tasks.windowing import Window
from tests.integration.helpers import quick_training, schema_file
from tests.integration.servers import MlflowServer, mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
START = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = START + timedelta(days=8, hours=10)
T = TypeVar("T")


class StopServerBefore(Stages):
    """Stages that stop the MLflow server just before the named step runs."""

    def __init__(self, server: MlflowServer, step: str) -> None:
        super().__init__()
        self.server, self.step = server, step

    def run(
        self, name: str, step: Callable[..., T], *args: Any, retries: int = 0, **kwargs: Any
    ) -> T:
        if name == self.step and self.server.answers():
            self.server.stop()
        return super().run(name, step, *args, retries=retries, **kwargs)


def test_mlflow_outage_mid_finetune_fails_cleanly_and_the_hour_succeeds_later(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    schema_path = schema_file(tmp_path, topic)
    schema = load_schema(schema_path)
    port = free_port()
    s = quick_training(
        settings,
        schema_path=schema_path,
        mlflow_port=port,
        mlflow_tracking_uri=f"http://127.0.0.1:{port}",
        mlflow_http_max_retries=1,
        mlflow_http_backoff_factor=0,
        mlflow_http_timeout_s=5,
    )
    ensure_topic(s, topic)
    produce(s, topic, generate(SimulationConfig(start=START, hours=9 * 24, seed=4)))
    window = Window(HOUR, HOUR + timedelta(hours=1))

    with mlflow_server(s) as server:
        first = retrain_until(CycleContext(settings=s, schema=schema), HOUR)
        assert first.decision == "promoted" and first.challenger_version == "1"
        moves = aliases.alias_history(s, schema.name)

        # Down after the champion was loaded and scored, before anything is registered.
        ctx = CycleContext(settings=s, schema=schema, stages=StopServerBefore(server, "fine-tune"))
        began = time.monotonic()
        with pytest.raises(Exception) as failure:
            finetune_window(ctx, window)
        assert time.monotonic() - began < 60, "retries were not bounded"
        assert not server.answers()
        message = registry.describe_outage(s, failure.value)
        assert message is not None and f"127.0.0.1:{port}" in message and "\n" not in message

        # The CLI says the same in one line, without a traceback.
        env = {
            **cli_env,
            "STREAMTRAIN_SCHEMA": str(schema_path),
            "MLFLOW_TRACKING_URI": s.tracking_uri,
            "STREAMTRAIN_MLFLOW_HTTP_MAX_RETRIES": "1",
            "STREAMTRAIN_MLFLOW_HTTP_BACKOFF_FACTOR": "0",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # a busy CI machine
        }
        done = subprocess.run(
            [STREAMTRAIN, "model", "show"], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert done.stderr.strip().splitlines() == [f"error: {message}"]
        # A real `streamtrain finetune` (Prefect flow): its task retries are bounded too, and the
        # command ends on the same line; the traceback stays in Prefect's run log.
        done = subprocess.run(
            [STREAMTRAIN, "finetune", "--hour", "2026-01-13T10:30Z"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert f"error: {message}" in done.stderr.splitlines(), done.stderr[-3000:]

        server.start()  # back, with the same store
        assert aliases.get_alias_version(s, schema.name, aliases.CHAMPION) == "1"
        assert [v.version for v in versions.list_versions(s, schema.name)] == ["1"]
        assert aliases.alias_history(s, schema.name) == moves

        again = finetune_window(CycleContext(settings=s, schema=schema), window)
        assert again.decision in {"promoted", "kept"}, again.reasons
        assert [v.version for v in versions.list_versions(s, schema.name)] == ["1", "2"]
        champion = aliases.get_alias_version(s, schema.name, aliases.CHAMPION)
        assert champion == ("2" if again.decision == "promoted" else "1")
