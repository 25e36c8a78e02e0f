"""Test-wide environment: quiet TensorFlow and Prefect, no telemetry, no user state."""

from __future__ import annotations

import os

from hypothesis import settings as hypothesis_settings

# Before any import of tensorflow, keras, mlflow or prefect.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Flows run in the test process start Prefect's temporary server on a new PREFECT_HOME; on a
# busy CI machine that took longer than Prefect's 20 s default (a RuntimeError, not a failure
# of ours). The same value the CLI sets for its users.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Tests never use a broker, cluster or server the user configured.
for _name in ("KAFKA_BOOTSTRAP_SERVERS", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
    os.environ.pop(_name, None)

# Property tests run the same examples on every machine (CI is deterministic); no deadline,
# since examples talk to a real broker. HYPOTHESIS_PROFILE=explore draws new examples.
hypothesis_settings.register_profile(
    "streamtrain", derandomize=True, deadline=None, database=None, print_blob=True
)
hypothesis_settings.register_profile("explore", deadline=None, max_examples=200)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "streamtrain"))


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Stop Prefect's event and log senders, then its temporary server, while pytest's output
    streams are still open.

    Prefect does both at interpreter exit, when pytest has closed the stream its console
    handler writes to: the server's stop message, and the events client failing to reconnect
    to the stopped server, then ended every run with 'Logging error' tracebacks.
    """
    import logging
    import sys

    server = sys.modules.get("prefect.server.api.server")
    if server is None:  # no test ran a flow in this process
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # "Stopping temporary server on ...", "Still processing items" while draining: not news.
    # (Prefect's queue services log under their class names, outside the "prefect" tree.)
    quiet = [logging.getLogger(n) for n in ("prefect", "EventsWorker", "APILogWorker")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        for worker in (EventsWorker, APILogWorker):
            worker.drain_all(timeout=10)
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
