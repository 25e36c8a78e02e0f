"""One real Kafka broker per test session, started by the project's own broker code.

Tests get `settings` that point at it as an external cluster (`KAFKA_BOOTSTRAP_SERVERS`), so
nothing a test does can start, stop or reconfigure the session broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.broker import free_ports, start_broker, stop_broker
from tasks.settings import Settings
from tasks.stream import close_readers


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of the session's embedded broker: a temp home and free ports."""
    port, controller_port = free_ports(2)
    home = tmp_path_factory.mktemp("kafka-session")
    broker = Settings(home=home, kafka_port=port, kafka_controller_port=controller_port)
    start_broker(broker)
    try:
        yield broker
    finally:
        stop_broker(broker)


@pytest.fixture(autouse=True)
def no_shared_readers() -> Iterator[None]:
    """Close the process's shared Kafka consumers after each test: a test's own broker stops
    with it, and a consumer left connected to it would keep retrying in the background."""
    yield
    close_readers()


@pytest.fixture
def settings(kafka_broker: Settings, tmp_path: Path) -> Settings:
    """Per-test settings: a fresh home and MLflow store, the session broker as external cluster."""
    return kafka_broker.model_copy(
        update={
            "home": tmp_path,
            "mlflow_dir": tmp_path / "mlflow",
            "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
        }
    )


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running `streamtrain` as a subprocess against the test's settings."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMTRAIN_", "PREFECT_API"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "STREAMTRAIN_HOME": str(settings.home),
            "STREAMTRAIN_MLFLOW_DIR": str(settings.mlflow_dir),
            "STREAMTRAIN_SCHEMA": str(settings.schema_path),
        }
    )
    return env
