"""Section 1, the scheduled run: hourly windows as deployment runs on the stack `up` starts.

`streamtrain up --no-simulator` against the benchmark's broker starts MLflow and Prefect
servers, deploys prefect.yaml and starts the worker and the trainer, as on a user's machine.
A first model is trained through the `nightly-retrain` deployment (not timed), then each
window is one new `hourly-finetune` flow run, timed from its creation through the API to its
final state as a client polling every 0.2 s sees it: queueing, the pick-up, the run itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.world import World
from tasks.broker import free_ports
from tasks.windowing import Window, format_instant

POLL_S = 0.2


def run_scheduled(
    world: World, topic: str, first_model_until: str, windows: list[Window]
) -> dict[str, Any]:
    """Start the stack, train the first model, time one deployment run per window; stop it."""
    settings = world.settings("stack")
    mlflow_port, prefect_port = free_ports(2)
    env = world.env(settings, topic) | {
        "STREAMTRAIN_MLFLOW_PORT": str(mlflow_port),
        "STREAMTRAIN_PREFECT_PORT": str(prefect_port),
    }
    api = f"http://127.0.0.1:{prefect_port}/api"
    out: dict[str, Any] = {"runs": [], "ok": False}
    started = time.perf_counter()
    try:
        _streamtrain(env, "up", "--no-simulator", "--json")
        out["stack_start_s"] = time.perf_counter() - started
        first = _timed_run(api, "retrain/nightly-retrain", {"until": first_model_until})
        out["first_model"] = first
        for window in windows:
            hour = {"hour": format_instant(window.start)}
            out["runs"].append(_timed_run(api, "finetune/hourly-finetune", hour))
        out["ok"] = first["state"] == "Completed"
    except Exception as exc:  # the section reports what failed; the other sections go on
        out["error"] = str(exc)[-800:]
    finally:
        subprocess.run(
            [_streamtrain_bin(), "down", "--json"], env=env, capture_output=True, timeout=180
        )
    return out


def _timed_run(api: str, deployment: str, parameters: dict[str, str]) -> dict[str, Any]:
    """Seconds from creating a flow run of `deployment` to seeing it in a final state."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = time.perf_counter()
    with temporary_settings({PREFECT_API_URL: api}):
        run = run_deployment(deployment, parameters=parameters, timeout=900, poll_interval=POLL_S)
    seconds = time.perf_counter() - started
    state = getattr(run, "state", None)  # a FlowRun: this is the synchronous call
    return {
        "deployment": deployment,
        **parameters,
        "seconds": seconds,
        "state": state.name if state else "unknown",
    }


def _streamtrain_bin() -> str:
    return str(Path(sys.executable).parent / "streamtrain")


def _streamtrain(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [_streamtrain_bin(), *args], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"streamtrain {' '.join(args)} failed: {done.stderr[-600:]}")
    return json.loads(done.stdout) if "--json" in args else done.stdout
