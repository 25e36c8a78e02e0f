"""A missing topic is final at once; a dropped connection is retried, in both modes of `Stages`."""

from __future__ import annotations

import itertools
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow

from tasks.schema import load_schema
from tasks.settings import Settings
from tasks.stages import RetryPolicy, Stages
from tasks.stream import MissingTopic, StreamError, read_window
from tasks.windowing import Window, parse_instant

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
SENSOR = ROOT / "tests" / "fixtures" / "sensor.yaml"
HOUR = "2026-03-02T10:05Z"


@pytest.fixture(autouse=True)
def own_prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows these tests run keep their Prefect database in the test's folder."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))


def missing_topic_schema(tmp_path: Path) -> Path:
    path = tmp_path / "sensor.yaml"
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    path.write_text(SENSOR.read_text().replace("topic: sensor-readings", f"topic: {topic}"))
    return path


@pytest.mark.parametrize("as_tasks", [True, False], ids=["prefect-task", "plain-call"])
def test_a_missing_topic_fails_the_read_at_once(
    settings: Settings, tmp_path: Path, as_tasks: bool
) -> None:
    schema = load_schema(missing_topic_schema(tmp_path))
    window = Window.containing(parse_instant(HOUR), schema.window)
    stages = Stages(as_tasks=as_tasks)  # the default delays: 2 s before the first retry

    @flow(name="read-missing-topic")
    def read_it() -> float:
        start = time.perf_counter()
        with pytest.raises(MissingTopic, match=f"topic '{schema.topic}' does not exist"):
            stages.run("read window", read_window, settings, schema, window, retries=3)
        return time.perf_counter() - start

    assert read_it() < 1.5


@pytest.mark.parametrize("as_tasks", [True, False], ids=["prefect-task", "plain-call"])
def test_a_dropped_connection_is_retried(as_tasks: bool) -> None:
    calls: list[float] = []

    def flaky_read() -> str:
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise StreamError("connection to the broker dropped")
        return "rows"

    stages = Stages(
        as_tasks=as_tasks,
        retry=RetryPolicy(Settings(stage_retry_delays_s=(0.2,)).stage_retry_delays_s),
    )

    @flow(name="read-through-drops")
    def read_it() -> str:
        return stages.run("read window", flaky_read, retries=3)

    assert read_it() == "rows"
    assert len(calls) == 3
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(calls))


def test_cli_says_at_once_that_the_topic_is_missing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    schema = missing_topic_schema(tmp_path)
    topic = load_schema(schema).topic
    env = {k: v for k, v in cli_env.items() if k != "STREAMTRAIN_SCHEMA"}
    for command in (["window", "--hour", HOUR], ["finetune", "--hour", HOUR]):
        done = subprocess.run(
            [STREAMTRAIN, "--schema", str(schema), *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr and "Retry 1/3" not in done.stderr, done.stderr
        said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(said) == 1 and f"topic '{topic}' does not exist" in said[0], done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "--hour", HOUR],
        ["backfill", "--start", "2026-03-02T10:00Z", "--end", "2026-03-02T11:00Z"],
    ],
    ids=["validate", "backfill"],
)
def test_commands_read_the_schema_option_stream(
    cli_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    """Commands that pass the CLI's settings on read the --schema stream's topic."""
    schema = missing_topic_schema(tmp_path)
    topic = load_schema(schema).topic
    env = {k: v for k, v in cli_env.items() if k != "STREAMTRAIN_SCHEMA"}
    done = subprocess.run(
        [STREAMTRAIN, "--schema", str(schema), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and f"topic '{topic}' does not exist" in said[0], done.stderr
