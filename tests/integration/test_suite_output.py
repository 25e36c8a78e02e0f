"""The test run's own output speaks to people: a run that starts Prefect's temporary server
ends with pytest's summary, not with Prefect's 'Logging error' tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FLOW_TEST = """
from prefect import flow


@flow
def tiny() -> int:
    return 1


def test_a_flow_runs_on_the_temporary_server() -> None:
    assert tiny() == 1
"""


def test_a_run_that_ran_a_flow_ends_without_prefects_logging_errors(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(FLOW_TEST)
    # The suite's own conftest (its session-end hook is what is under test), in a new folder.
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "1 passed" in output
    for noise in ("Logging error", "Error logging to API", "Traceback", "Still processing"):
        assert noise not in output, output
