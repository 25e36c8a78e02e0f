"""The pipeline's own log lines reach the Prefect UI of the runs the stack's processes start."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.settings import Settings
from tasks.stack import client_env

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"""getLogger\(\s*["']([\w.]+)["']\s*\)""")


def _pipeline_logger_names() -> set[str]:
    """Every logger the pipeline names itself (`getLogger("...")` in flows/ and tasks/),
    library loggers it only quiets excluded."""
    names: set[str] = set()
    for path in [*ROOT.glob("flows/*.py"), *ROOT.glob("tasks/*.py")]:
        names |= set(NAMED.findall(path.read_text()))
    libraries = ("great_expectations", "mlflow", "prefect", "tensorflow", "absl", "kafka")
    return {n for n in names if not n.startswith(libraries)}


def test_every_pipeline_logger_is_sent_to_prefect(tmp_path: Path) -> None:
    env = client_env(Settings(home=tmp_path))
    extra = env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")
    names = _pipeline_logger_names()
    assert "streamtrain.cycle" in names  # the cycle's per-window lines: the ones users read
    missed = {n for n in names if not any(n == e or n.startswith(e + ".") for e in extra)}
    assert not missed, f"loggers whose lines never reach the Prefect UI: {sorted(missed)}"


def test_the_trainer_terminal_drops_task_run_chatter_but_not_warnings() -> None:
    import logging

    from flows.trainer import without_task_run_chatter

    def record(name: str, level: int) -> logging.LogRecord:
        message = "Finished in state Completed()"
        return logging.LogRecord(name, level, __file__, 1, message, (), None)

    assert not without_task_run_chatter(record("prefect.task_runs", logging.INFO))
    assert without_task_run_chatter(record("prefect.task_runs", logging.WARNING))
    assert without_task_run_chatter(record("prefect.flow_runs", logging.INFO))
    assert without_task_run_chatter(record("streamtrain.cycle", logging.INFO))
