"""The fault-injection hook and the one-line description of an MLflow outage."""

from __future__ import annotations

import signal
import subprocess
import sys

import requests
from mlflow.exceptions import MlflowException

from tasks.registry import describe_outage
from tasks.settings import Settings

URL = "http://127.0.0.1:5999"


def test_checkpoint_does_nothing_unless_its_stage_is_named() -> None:
    # In a child process: a checkpoint that wrongly fires would SIGKILL the test runner itself.
    code = (
        "from tasks import faults; from tasks.settings import Settings; "
        "faults.checkpoint(Settings(), 'after_read'); "
        "faults.checkpoint(Settings(fault_kill_at='during_fit'), 'after_read'); "
        "print('survived')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "survived"


def test_checkpoint_kills_the_process_at_its_stage() -> None:
    code = (
        "from tasks import faults; from tasks.settings import Settings; "
        "faults.checkpoint(Settings(fault_kill_at='after_register'), 'after_register'); "
        "print('survived')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout


def mlflow_gave_up(cause: Exception) -> MlflowException:
    """What MLflow raises after its retries: the requests error only as implicit context."""
    try:
        try:
            raise cause
        except requests.exceptions.RequestException as exc:
            raise MlflowException(f"API request to {URL}/api/2.0/x failed with exception {exc}")  # noqa: B904
    except MlflowException as exc:
        return exc


def test_an_unreachable_tracking_server_is_named_in_one_line() -> None:
    settings = Settings(mlflow_tracking_uri=URL, mlflow_http_max_retries=2)
    refused = mlflow_gave_up(requests.exceptions.ConnectionError("Max retries exceeded"))
    message = describe_outage(settings, refused)
    assert message is not None and "\n" not in message
    assert message.startswith(f"MLflow at {URL} did not answer") and "2 retries" in message
    assert "run the same hour again" in message

    try:  # wrapped further up (a Prefect task, a step of ours): still recognised
        raise RuntimeError("step failed") from refused
    except RuntimeError as wrapped:
        assert describe_outage(settings, wrapped) == message

    slow = describe_outage(settings, mlflow_gave_up(requests.exceptions.ReadTimeout("timeout")))
    assert slow is not None and "timed out" in slow


def test_other_failures_are_not_called_an_outage() -> None:
    settings = Settings(mlflow_tracking_uri=URL)
    assert describe_outage(settings, ValueError("bad window")) is None
    missing = MlflowException("Registered Model with name=x not found")
    assert describe_outage(settings, missing) is None
