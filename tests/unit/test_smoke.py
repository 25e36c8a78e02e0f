"""Cheap checks that catch real breakage: entrypoints import, mlflow is the library."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_prefect_entrypoint_imports_a_flow(deployment: dict[str, str]) -> None:
    from prefect import Flow

    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    assert flow.name == name  # file, function and flow share one name


def test_import_mlflow_is_the_library_not_the_store_folder() -> None:
    import mlflow

    assert mlflow.__file__ is not None and "site-packages" in mlflow.__file__
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_the_cli_gives_prefects_temporary_server_two_minutes_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's own 20 s was not enough on a busy CI machine; Prefect must read our value."""
    from prefect.settings import Settings as PrefectSettings

    from flows.runtime import configure_environment
    from tasks.settings import Settings

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    for name in ("PREFECT_HOME", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.setenv(name, str(tmp_path / "prefect") if name == "PREFECT_HOME" else "3")
    configure_environment(Settings(home=tmp_path))
    assert PrefectSettings().server.ephemeral.startup_timeout_seconds == 120

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "45")
    configure_environment(Settings(home=tmp_path))
    assert PrefectSettings().server.ephemeral.startup_timeout_seconds == 45  # the user's wins
