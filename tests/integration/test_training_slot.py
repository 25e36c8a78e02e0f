"""Under a Prefect server, a training run always holds the model's one training slot."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks import services, stack
from tasks.broker import free_ports
from tasks.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# Enters the slot of a model whose limit nobody created, and says what the server holds.
IN_SLOT = """
import json, sys
from prefect import get_client
from flows.runtime import training_slot
from tasks.settings import Settings
from tasks.stack import training_limit_name

settings = Settings(prefect_api_url=sys.argv[1])
with training_slot(settings, "sensor-alarm"):
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(training_limit_name("sensor-alarm"))
    print(json.dumps({"limit": limit.limit, "active_slots": limit.active_slots}))
"""


@pytest.fixture
def prefect_server(settings: Settings) -> Iterator[str]:
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


def test_a_missing_training_limit_is_created_and_held_not_skipped(
    prefect_server: str, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", IN_SLOT, prefect_server],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"limit": 1, "active_slots": 1}


# The fallback retrain (no `nightly-retrain` deployment on this server), with the retrain
# itself replaced by a probe of the server's slot count: the slot is what is under test.
FALLBACK = """
import json, sys
from datetime import UTC, datetime
from prefect import get_client
import tasks.cycle
from flows.runtime import request_retrain
from tasks.cycle import CycleContext, CycleResult
from tasks.schema import load_schema
from tasks.settings import Settings
from tasks.stack import training_limit_name

seen = {}

def probe(ctx, until, *, trigger):
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(training_limit_name(ctx.model_name))
    seen["active_slots"], seen["trigger"] = limit.active_slots, trigger
    return CycleResult("retrain", "2026-03-02T00:00Z", "2026-03-04T00:00Z")

tasks.cycle.retrain_until = probe
settings = Settings(prefect_api_url=sys.argv[1], home=sys.argv[2], mlflow_dir=sys.argv[3])
ctx = CycleContext(settings=settings, schema=load_schema("tests/fixtures/sensor.yaml"))
request_retrain(ctx, datetime(2026, 3, 4, tzinfo=UTC), "drift:concept-alarm@2026-03-03T10:00Z")
print(json.dumps(seen))
"""


def test_the_fallback_retrain_holds_the_training_slot(prefect_server: str, tmp_path: Path) -> None:
    """When the retrain deployment cannot be started, the in-process retrain still runs inside
    the model's cluster-wide slot (before, only under the file lock)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FALLBACK,
            prefect_server,
            str(tmp_path / "home"),
            str(tmp_path / "mlflow"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Could not start the retrain deployment" in done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"active_slots": 1, "trigger": "drift:concept-alarm@2026-03-03T10:00Z"}
