"""What the benchmarks run against: a private embedded broker, simulated topics, MLflow stores.

Everything lives under one scratch directory and on free ports, so a benchmark never touches
the user's broker, topics or MLflow store. Child processes (cold cycles, replays) get the same
world through the environment, as `streamtrain` run from a shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.broker import free_ports, start_broker, stop_broker
from tasks.schema import StreamSchema, load_schema
from tasks.settings import PROJECT_ROOT, Settings

START = "2026-01-05T00:00Z"  # a Monday, as in the demo
TRAIN_DAYS = 8  # the first model: week 1 plus the Monday after (as the demo does)


@dataclass
class World:
    """The broker, the scratch directory and the base settings shared by every section."""

    root: Path
    broker: Settings
    topics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path) -> World:
        root.mkdir(parents=True, exist_ok=True)
        port, controller = free_ports(2)
        broker = Settings(home=root / "broker", kafka_port=port, kafka_controller_port=controller)
        start_broker(broker)
        return cls(root=root, broker=broker)

    def stop(self) -> None:
        stop_broker(self.broker)

    def settings(self, name: str, **changes: Any) -> Settings:
        """Settings for one purpose: its own home and MLflow store, the broker as a cluster."""
        home = self.root / name
        return self.broker.model_copy(
            update={
                "home": home,
                "mlflow_dir": home / "mlflow",
                "kafka_bootstrap_servers": self.broker.bootstrap_servers,
                **changes,
            }
        )

    def schema(self, topic: str) -> StreamSchema:
        return load_schema(self.broker.schema_path).model_copy(update={"topic": topic})

    def schema_file(self, topic: str) -> Path:
        """A copy of the schema file naming `topic` (for commands run in a child process)."""
        path = self.root / f"schema-{topic}.yaml"
        text = Path(self.broker.schema_path).read_text()
        path.write_text(text.replace("topic: drone-observations", f"topic: {topic}"))
        return path

    def env(self, settings: Settings, topic: str) -> dict[str, str]:
        """The environment a child process needs to see `settings` and the topic's schema."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STREAMTRAIN_", "PREFECT_"))
        }
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "STREAMTRAIN_HOME": str(settings.home),
                "STREAMTRAIN_MLFLOW_DIR": str(settings.mlflow_dir),
                "STREAMTRAIN_SCHEMA": str(self.schema_file(topic)),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "TF_ENABLE_ONEDNN_OPTS": "0",
                "PYTHONPATH": str(PROJECT_ROOT),
            }
        )
        return env


def simulate(
    world: World,
    topic: str,
    *,
    days: int,
    stores: int = 100,
    partitions: int | None = None,
    scenario: str = "none",
) -> int:
    """Produce `days` of the simulated world to `topic` (created with `partitions`)."""
    from flows.simulate import run_simulation
    from tasks.stream import ensure_topic

    settings = world.settings("producer")
    ensure_topic(settings, topic, partitions=partitions)
    summary = run_simulation(
        settings,
        world.schema(topic),
        start=START,
        hours=days * 24,
        scenario=scenario,
        seed=settings.seed,
        stores=stores,
        topic=topic,
    )
    world.topics[topic] = f"{days} days, {stores} stores, scenario {scenario}"
    return int(summary["records"])


def start_instant() -> datetime:
    from tasks.windowing import parse_instant

    return parse_instant(START)


@dataclass(frozen=True)
class ChildRun:
    """What a child process returned: its JSON answer, wall time and exit code."""

    answer: dict[str, Any]
    seconds: float
    returncode: int
    stderr_tail: str


def run_child(args: list[str], env: dict[str, str], timeout_s: float = 3600) -> ChildRun:
    """Run `python -m bench.child ...` (or any module), parse the last JSON line of stdout."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.perf_counter() - started
    return ChildRun(_last_json(done.stdout), seconds, done.returncode, done.stderr[-2000:])


def start_child(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a child in the background (read it with `finish_child`)."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_child(proc: subprocess.Popen[str], started: float, timeout_s: float = 3600) -> ChildRun:
    out, err = proc.communicate(timeout=timeout_s)
    return ChildRun(_last_json(out), time.perf_counter() - started, proc.returncode, err[-2000:])


def _last_json(stdout: str) -> dict[str, Any]:
    """The last line of stdout that parses as a JSON object (commands may print before it)."""
    text = stdout.strip()
    if text.startswith(("{", "[")):
        try:
            whole = json.loads(text)
            return whole if isinstance(whole, dict) else {"result": whole}
        except ValueError:
            pass
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return {}
