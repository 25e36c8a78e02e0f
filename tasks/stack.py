"""The always-on local stack: Kafka, MLflow and Prefect servers, the deployments, a worker, the
trainer, the live simulator and the window clock, started in the background by `streamtrain up`.

Every part's address comes from settings; a part whose address names an existing service
(`KAFKA_BOOTSTRAP_SERVERS`, an http `MLFLOW_TRACKING_URI`, `PREFECT_API_URL`) is used, not started.
`up` is idempotent and all-or-nothing: a part that fails to start stops what this call started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tasks import services
from tasks.broker import broker_status, start_broker, stop_broker
from tasks.services import Service, ServiceError
from tasks.settings import PROJECT_ROOT, Settings

LOOPBACK = "127.0.0.1"
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class PartStatus:
    """One part of the stack as `streamtrain status` shows it."""

    name: str
    address: str
    port: int | None
    log_file: str | None
    pid: int | None
    managed: bool  # started by the stack (False: an external service that is only used)
    running: bool
    answers: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- addresses --------------------------------------------------------------------------------


def run_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def prefect_api_url(settings: Settings) -> str:
    return settings.prefect_api_url or f"http://{LOOPBACK}:{settings.prefect_port}/api"


def prefect_ui_url(settings: Settings) -> str:
    return prefect_api_url(settings).removesuffix("/api")


def mlflow_url(settings: Settings) -> str:
    uri = settings.mlflow_tracking_uri
    return uri if uri and uri.startswith("http") else f"http://{LOOPBACK}:{settings.mlflow_port}"


def _manages_mlflow(settings: Settings) -> bool:
    uri = settings.mlflow_tracking_uri
    return not (uri and uri.startswith("http"))


def _manages_prefect(settings: Settings) -> bool:
    return settings.prefect_api_url is None


def work_pool_name() -> str:
    """The pool named in prefect.yaml: the one place it is written."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return str(config["definitions"]["work_pool"]["name"])


def training_queue_name() -> str:
    """The work queue of the training deployments, which the trainer serves (prefect.yaml)."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return str(config["definitions"]["training_pool"]["work_queue_name"])


def default_queue_name() -> str:
    """The work queue the process worker serves: every deployment but the training ones."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return str(config["definitions"]["work_pool"]["work_queue_name"])


def training_limit_name(model_name: str) -> str:
    """The Prefect global concurrency limit that keeps one model's training runs apart."""
    return f"training-{model_name}"


def client_env(settings: Settings) -> dict[str, str]:
    """The environment of every process the stack runs: the stack's own addresses."""
    env = dict(os.environ)
    env.update(
        {
            "STREAMTRAIN_HOME": str(settings.home),
            "STREAMTRAIN_SCHEMA": str(settings.schema_path),
            "STREAMTRAIN_ROOT": str(PROJECT_ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "MLFLOW_TRACKING_URI": mlflow_url(settings),
            "PREFECT_API_URL": prefect_api_url(settings),
            "PREFECT_HOME": str(settings.home / "prefect-server"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
            # The pipeline's own log lines (per cycle: rows, champion, decision) reach the
            # Prefect UI of runs the worker starts.
            "PREFECT_LOGGING_EXTRA_LOGGERS": "streamtrain,tasks,flows",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_ENABLE_ONEDNN_OPTS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _bin(name: str) -> str:
    """A console script of this environment (the venv's, not whatever PATH finds first)."""
    return str(Path(sys.executable).parent / name)


# --- the services -----------------------------------------------------------------------------


def _service(settings: Settings, name: str, command: list[str]) -> Service:
    """A stack part: its pid and log under the stack's folder, the stack's environment."""
    return Service(name, command, run_dir(settings), client_env(settings), PROJECT_ROOT)


def _flags(options: dict[str, str]) -> list[str]:
    return [part for option in options.items() for part in option]


def mlflow_service(settings: Settings) -> Service:
    store = settings.mlflow_dir.resolve()
    options = {
        "--backend-store-uri": f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination": str(store / "artifacts"),
        "--workers": "1",
        "--host": LOOPBACK,
        "--port": str(settings.mlflow_port),
    }
    return _service(settings, "mlflow", [_bin("mlflow"), "server", *_flags(options)])


def prefect_service(settings: Settings) -> Service:
    options = {"--host": LOOPBACK, "--port": str(settings.prefect_port)}
    command = [_bin("prefect"), "server", "start", "--analytics-off", *_flags(options)]
    return _service(settings, "prefect", command)


def worker_service(settings: Settings) -> Service:
    options = {
        "--pool": work_pool_name(),
        "--type": "process",
        "--name": f"streamtrain-{os.uname().nodename}",
        "--work-queue": default_queue_name(),
        "--limit": "2",
    }
    return _service(settings, "worker", [_bin("prefect"), "worker", "start", *_flags(options)])


def trainer_service(settings: Settings) -> Service:
    """The long-lived process that runs the training deployments (see flows/trainer.py)."""
    return _service(settings, "trainer", [_bin("streamtrain"), "trainer"])


def simulator_service(settings: Settings) -> Service:
    return _service(
        settings,
        "simulator",
        [_bin("streamtrain"), "simulate", "--live", "--hours", "720", "--scenario", "sudden"],
    )


def window_clock_service(settings: Settings) -> Service:
    return _service(settings, "window-clock", [_bin("streamtrain"), "window-clock"])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _mlflow_answers(settings: Settings) -> bool:
    return _answers(f"{mlflow_url(settings)}/health")


def _prefect_answers(settings: Settings) -> bool:
    return _answers(f"{prefect_api_url(settings)}/health")


# --- up, down, status -------------------------------------------------------------------------


def up(
    settings: Settings,
    *,
    simulator: bool = True,
    window_clock: bool = False,
    worker: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> list[PartStatus]:
    """Start every part that is not running yet; on failure stop what this call started.

    Without the worker, simulator and window clock the servers still answer and the
    deployments exist, but nothing runs on its own (the demo's replay comes first).
    """
    _check_ports(settings)
    started: list[Callable[[], object]] = []
    try:
        if settings.embedded_kafka and not broker_status(settings).running:
            say(f"starting Kafka on {settings.bootstrap_servers}")
            start_broker(settings)
            started.append(lambda: stop_broker(settings))
        if _manages_mlflow(settings):
            _start_server(settings, mlflow_service(settings), _mlflow_answers, started, say)
        if _manages_prefect(settings):
            _start_server(settings, prefect_service(settings), _prefect_answers, started, say)
        say("creating the work pool and deploying prefect.yaml")
        deploy(settings)
        optional = [(worker_service(settings), worker), (trainer_service(settings), worker)]
        optional.append((simulator_service(settings), simulator))
        optional.append((window_clock_service(settings), window_clock))
        for service, wanted in optional:
            if wanted and services.running_pid(service) is None:
                say(f"starting the {service.name}")
                services.start(service)
                started.append(lambda service=service: services.stop(service))  # type: ignore[misc]
    except BaseException:
        for undo in reversed(started):
            undo()
        raise
    return status(settings)


def _start_server(
    settings: Settings,
    service: Service,
    answers: Callable[[Settings], bool],
    started: list[Callable[[], object]],
    say: Callable[[str], None],
) -> None:
    if services.running_pid(service) is not None:
        return
    say(f"starting the {service.name} server")
    services.start(service)
    started.append(lambda: services.stop(service))
    services.wait_ready(service, lambda: answers(settings), settings.stack_start_timeout_s)


def _check_ports(settings: Settings) -> None:
    """Refuse at once if another program holds a port a part of ours needs."""
    wanted = []
    if settings.embedded_kafka and not broker_status(settings).running:
        wanted.append((settings.kafka_port, "STREAMTRAIN_KAFKA_PORT", "Kafka"))
        wanted.append((settings.controller_port, "STREAMTRAIN_KAFKA_CONTROLLER_PORT", "Kafka"))
    if _manages_mlflow(settings) and services.running_pid(mlflow_service(settings)) is None:
        wanted.append((settings.mlflow_port, "STREAMTRAIN_MLFLOW_PORT", "MLflow"))
    if _manages_prefect(settings) and services.running_pid(prefect_service(settings)) is None:
        wanted.append((settings.prefect_port, "STREAMTRAIN_PREFECT_PORT", "Prefect"))
    for port, variable, part in wanted:
        if services.port_in_use(LOOPBACK, port):
            raise ServiceError(
                f"port {port} is in use by another program, so the {part} server cannot start "
                f"there; stop that program or set {variable} to a free port"
            )


def deploy(settings: Settings) -> None:
    """Create the work pool and the training concurrency limit, then `prefect deploy --all`."""
    from tasks.schema import load_schema

    limit = training_limit_name(load_schema(settings.schema_path).name)
    _prefect_cli(
        settings, ["work-pool", "create", work_pool_name(), "--type", "process", "--overwrite"]
    )
    try:
        _prefect_cli(settings, ["global-concurrency-limit", "create", limit, "--limit", "1"])
    except ServiceError as exc:
        if "already exists" not in str(exc):
            raise
    _prefect_cli(settings, ["--no-prompt", "deploy", "--all"])


def _prefect_cli(settings: Settings, args: list[str]) -> str:
    result = subprocess.run(
        [_bin("prefect"), *args],
        cwd=PROJECT_ROOT,
        env=client_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ServiceError(f"`prefect {' '.join(args)}` failed:\n" + "\n".join(output))
    return result.stdout


def down(settings: Settings) -> list[str]:
    """Stop every part the stack started, newest first; returns the names of those stopped."""
    stopped = []
    for service in (
        window_clock_service(settings),
        simulator_service(settings),
        trainer_service(settings),
        worker_service(settings),
        prefect_service(settings),
        mlflow_service(settings),
    ):
        if services.stop(service):
            stopped.append(service.name)
    if stop_broker(settings):
        stopped.append("kafka")
    return stopped


def status(settings: Settings) -> list[PartStatus]:
    """Each part with its address, port, log, and whether it answers."""
    kafka = broker_status(settings)
    parts = [
        PartStatus(
            "kafka",
            kafka.bootstrap,
            settings.kafka_port if settings.embedded_kafka else None,
            str(kafka.log_file) if kafka.embedded else None,
            kafka.pid,
            kafka.embedded,
            kafka.running,
            kafka.answering,
        ),
        _server_status(
            settings,
            mlflow_service(settings),
            mlflow_url(settings),
            settings.mlflow_port,
            _manages_mlflow(settings),
            _mlflow_answers,
        ),
        _server_status(
            settings,
            prefect_service(settings),
            prefect_ui_url(settings),
            settings.prefect_port,
            _manages_prefect(settings),
            _prefect_answers,
        ),
    ]
    served = {
        "worker": f"pool {work_pool_name()}, queue {default_queue_name()}",
        "trainer": f"pool {work_pool_name()}, queue {training_queue_name()}",
    }
    for service in (
        worker_service(settings),
        trainer_service(settings),
        simulator_service(settings),
        window_clock_service(settings),
    ):
        pid = services.running_pid(service)
        parts.append(
            PartStatus(
                service.name,
                served.get(service.name, "-"),
                None,
                str(service.log_file),
                pid,
                True,
                pid is not None,
                pid is not None,
            )
        )
    return parts


def _server_status(
    settings: Settings,
    service: Service,
    address: str,
    port: int,
    managed: bool,
    answers: Callable[[Settings], bool],
) -> PartStatus:
    pid = services.running_pid(service) if managed else None
    return PartStatus(
        service.name,
        address,
        port if managed else None,
        str(service.log_file) if managed else None,
        pid,
        managed,
        pid is not None if managed else True,
        answers(settings),
    )
