"""Servers the integration tests run beside the broker, with the project's own stack code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tasks import services
from tasks.settings import Settings
from tasks.stack import mlflow_service, mlflow_url


class MlflowServer:
    """A real `mlflow server` (sqlite store and artifacts under the settings' mlflow_dir)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = mlflow_service(settings)
        self.url = mlflow_url(settings)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        services.start(self.service)
        services.wait_ready(self.service, self.answers, timeout_s=90)

    def stop(self) -> None:
        services.stop(self.service)


@contextmanager
def mlflow_server(settings: Settings) -> Iterator[MlflowServer]:
    """Start the server for `settings` (mlflow_port, mlflow_dir); stop it and its children after."""
    server = MlflowServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
