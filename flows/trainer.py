"""The trainer: one long-lived process that runs the training deployments' flow runs in turn.

A Prefect process worker (and `flow.serve`, which spawns a fresh interpreter per run too) pays
Python, TensorFlow, MLflow and Great Expectations imports and a model load from the registry
on every run: about 20 s for one hourly window. The trainer instead polls the training work
queue of the stack's pool (so the pool and queue show as polled in the UI), claims each due run
the way a worker does (a Pending proposal, so deployment concurrency limits hold), and runs it
with Prefect's flow engine in this interpreter: the run, its task runs, logs and artifacts
appear in the UI as any worker's would. Imports, the GX checkpoints and the champion model
(cached by registry, model and version, so a moved champion alias loads the new one) stay
warm between runs.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tasks.settings import Settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("streamtrain.trainer")

POLL_S = 1.0  # how often the queue is asked for due runs: the most a run waits to start
TASK_RUN_LOGGERS = "prefect.task_runs"


def without_task_run_chatter(record: logging.LogRecord) -> bool:
    """A console filter: each window's dozen "Finished in state Completed()" task-run lines
    stay in the Prefect UI (the API handler still gets them), not in the trainer's terminal;
    a task run's warnings and errors still show."""
    quiet = record.name.startswith(TASK_RUN_LOGGERS) and record.levelno < logging.WARNING
    return not quiet


class Trainer:
    """Claims and runs the due flow runs of one work queue, one at a time, in this process."""

    def __init__(self, client: SyncPrefectClient, pool: str, queue: str) -> None:
        self.client = client
        self.pool = pool
        self.queue = queue
        self._flows: dict[UUID, Any] = {}  # deployment id -> its flow, imported once

    def due_runs(self) -> list[FlowRun]:
        """The queue's scheduled runs whose time has come, oldest first."""
        responses = self.client.get_scheduled_flow_runs_for_work_pool(
            self.pool, work_queue_names=[self.queue], scheduled_before=datetime.now(UTC)
        )
        runs = [r.flow_run for r in responses]
        return sorted(runs, key=lambda r: r.expected_start_time or datetime.min.replace(tzinfo=UTC))

    def claim(self, run: FlowRun) -> bool:
        """Propose Pending, as a worker does: the server refuses it when a limit is full."""
        from prefect.exceptions import Abort
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state_sync

        try:
            state = propose_state_sync(self.client, Pending(), flow_run_id=run.id)
        except Abort as exc:
            log.info("Flow run %s not claimed: %s", run.name, exc)
            return False
        return state.is_pending()

    def flow_of(self, run: FlowRun) -> Any:
        """The deployment's flow, loaded from its entrypoint on its first run."""
        from prefect.flows import load_flow_from_entrypoint

        assert run.deployment_id is not None
        if run.deployment_id not in self._flows:
            deployment = self.client.read_deployment(run.deployment_id)
            assert deployment.entrypoint is not None
            self._flows[run.deployment_id] = load_flow_from_entrypoint(deployment.entrypoint)
        return self._flows[run.deployment_id]

    def run(self, run: FlowRun) -> str:
        """Run one claimed flow run with Prefect's engine here; returns its final state's name."""
        from prefect.flow_engine import run_flow
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        started = time.perf_counter()
        try:
            flow = self.flow_of(run)
            fresh = self.client.read_flow_run(run.id)  # Pending now, with its parameters
            # No heartbeat thread: joining it costs up to a second per run, and heartbeats only
            # serve an automation that detects crashed runs, which this stack does not create.
            with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                state = run_flow(flow, flow_run=fresh, return_type="state")
            name = getattr(state, "name", "Completed")
        except Exception as exc:  # the engine itself failed: mark the run, keep serving
            log.error("Flow run %s could not run: %s", run.name, exc)
            _fail(self.client, run, exc)
            name = "Failed"
        log.info("Flow run %s: %s in %.1f s", run.name, name, time.perf_counter() - started)
        return str(name)

    def poll_once(self) -> int:
        """Run every due run of the queue; returns how many ran."""
        ran = 0
        for run in self.due_runs():
            if self.claim(run):
                self.run(run)
                ran += 1
        return ran


def _fail(client: SyncPrefectClient, run: FlowRun, exc: Exception) -> None:
    from prefect.states import Failed

    try:
        client.set_flow_run_state(run.id, Failed(message=f"the trainer could not run it: {exc}"))
    except Exception as again:
        log.warning("Could not mark flow run %s failed: %s", run.name, again)


def run_trainer(
    settings: Settings,
    *,
    pool: str,
    queue: str,
    poll_s: float = POLL_S,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Serve the queue until stopped (SIGTERM or Ctrl-C end it between runs)."""
    from prefect import get_client

    from flows.runtime import configure_environment, keep_models_warm

    configure_environment(settings)
    keep_models_warm()
    for handler in logging.getLogger().handlers:  # the terminal's, not Prefect's API handler
        handler.addFilter(without_task_run_chatter)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    _preload()
    with get_client(sync_client=True) as client:
        trainer = Trainer(client, pool, queue)
        log.info("Trainer serving work queue %r of pool %r", queue, pool)
        while not stopping and keep_going():
            try:
                ran = trainer.poll_once()
            except Exception as exc:  # the server restarting: say so, try again
                log.warning("Could not poll the Prefect server (%s); retrying", exc)
                ran = 0
            if not ran:
                time.sleep(poll_s)
    log.info("Trainer stopped")


def _preload() -> None:
    """Import the training code and its libraries before the first run needs them."""
    started = time.perf_counter()
    import great_expectations  # noqa: F401
    import keras  # noqa: F401
    import mlflow  # noqa: F401

    import flows.finetune
    import flows.retrain  # noqa: F401

    log.info("Trainer ready (imports took %.1f s)", time.perf_counter() - started)
