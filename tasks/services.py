"""Background services of the local stack: start detached, find again, probe, stop with children.

Each service runs in a session of its own (setsid), with a pid file and a log file under the
project's runtime folder. The pid file also records the process's start time, so a recycled pid
never gets our signals; stopping signals the whole process group and then any stray children
(MLflow's server, for one, leaves workers behind when only its launcher is killed).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class ServiceError(RuntimeError):
    """A service could not start or stop; the message says which, why and where the log is."""


@dataclass(frozen=True)
class Service:
    """How to run one background service."""

    name: str
    command: Sequence[str]
    run_dir: Path  # pid and log files live here
    env: Mapping[str, str]
    cwd: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def running_pid(service: Service) -> int | None:
    """The service's pid if the process it started is still alive; clears a stale pid file."""
    try:
        recorded = json.loads(service.pid_file.read_text())
        pid, started = int(recorded["pid"]), float(recorded["started"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    try:
        process = psutil.Process(pid)
        alive = abs(process.create_time() - started) < 1.0 and process.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        alive = False
    if not alive:
        service.pid_file.unlink(missing_ok=True)
        return None
    return pid


def start(service: Service) -> int:
    """Launch the service detached (its own session), appending to its log; returns the pid."""
    if (pid := running_pid(service)) is not None:
        return pid
    service.run_dir.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.name}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(service.command),
                cwd=service.cwd,
                env=dict(service.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"{service.name} could not be launched: {exc}") from None
    started = psutil.Process(process.pid).create_time()
    service.pid_file.write_text(json.dumps({"pid": process.pid, "started": started}))
    return process.pid


def wait_ready(
    service: Service, ready: Callable[[], bool], timeout_s: float, what: str = "answer"
) -> None:
    """Poll `ready` until it holds; fail with the log's tail if the process exits or times out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if running_pid(service) is None:
            raise ServiceError(
                f"{service.name} exited during start-up; see {service.log_file}\n"
                + tail(service.log_file)
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{service.name} did not {what} within {timeout_s:g} s; see {service.log_file}\n"
                + tail(service.log_file)
            )
        time.sleep(0.3)


def stop(service: Service, timeout_s: float = 20) -> bool:
    """SIGTERM the service's process group, SIGKILL what is left; True if it was running."""
    pid = running_pid(service)
    if pid is None:
        return False
    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=timeout_s)
    for process in alive:  # children that left the group, or ignored SIGTERM
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    service.pid_file.unlink(missing_ok=True)
    return True


def tail(log_file: Path, lines: int = 15) -> str:
    """The last lines of a log, to show next to an error."""
    if not log_file.exists():
        return "(no log output)"
    text = log_file.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:]) or "(no log output)"
