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
