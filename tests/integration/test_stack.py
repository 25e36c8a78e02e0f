"""The local stack end to end: `streamtrain up` on free ports, deployments run by the worker,
the event trigger, `streamtrain down` with no process left behind."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tasks.broker import free_ports
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tests.integration.helpers import fresh_schema, schema_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def stack_env(home: Path, schema: Path, **extra: str) -> dict[str, str]:
    """A stack of its own: every port free, state and MLflow store under the test's folder."""
    kafka, controller, mlflow, prefect = free_ports(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMTRAIN_", "PREFECT_", "MLFLOW_", "KAFKA_"))
    }
    env.update(
        {
            "STREAMTRAIN_HOME": str(home),
            "STREAMTRAIN_MLFLOW_DIR": str(home / "mlflow"),
            "STREAMTRAIN_SCHEMA": str(schema),
            "STREAMTRAIN_KAFKA_PORT": str(kafka),
            "STREAMTRAIN_KAFKA_CONTROLLER_PORT": str(controller),
            "STREAMTRAIN_MLFLOW_PORT": str(mlflow),
            "STREAMTRAIN_PREFECT_PORT": str(prefect),
            # Quick training for the worker's flow runs (they read settings from this env).
            "STREAMTRAIN_RETRAIN_DAYS": "8",
            "STREAMTRAIN_HOLDOUT_HOURS": "16",
            "STREAMTRAIN_RETRAIN_EPOCHS": "8",
            "STREAMTRAIN_BOOTSTRAP_SAMPLES": "200",
            **extra,
        }
    )
    return env


def streamtrain(env: dict[str, str], *args: str, timeout: float = 400) -> Any:
    done = subprocess.run(
        [STREAMTRAIN, *args, "--json"], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def process_tree(pids: list[int]) -> list[psutil.Process]:
    tree = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            tree += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return tree


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    schema = fresh_schema(prefix="stack")
    env = stack_env(tmp_path, schema_file(tmp_path, schema.topic))
    try:
        yield env
    finally:
        subprocess.run([STREAMTRAIN, "down"], env=env, capture_output=True, timeout=120)


def wait_for_run(client_url: str, deployment: str, parameters: dict[str, str]) -> Any:
    """Trigger a deployment through the Prefect API and wait until the worker has run it."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: client_url}):
        return run_deployment(deployment, parameters=parameters, timeout=420, poll_interval=2)


def mlflow_versions(url: str, name: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    return list(
        MlflowClient(tracking_uri=url, registry_uri=url).search_model_versions(f"name='{name}'")
    )


def retrain_run_id(url: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id], "tags.`streamtrain.kind` = 'retrain'")
    return str(run.info.run_id)


def check_uis_in_a_browser(
    prefect_ui: str, mlflow_ui: str, model: str, champion: str | None
) -> None:
    """Headless Chromium: the MLflow UI shows the champion alias and its version; the Prefect
    UI shows the deployments and a completed run."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("REQUIRE_BROWSER_TEST"):
            raise AssertionError("the browser test needs chromium and playwright")
        pytest.skip("chromium or playwright is not installed (.ci/run installs them)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{mlflow_ui}/#/models/{model}")
            expect(page.get_by_text(f"Version {champion}", exact=True).first).to_be_visible(
                timeout=30_000
            )
            expect(page.get_by_text("@ champion", exact=True)).to_be_visible()
            # The alias chip sits in the champion version's row: after its name, before the next.
            text = page.inner_text("body").replace("\xa0", " ")  # the chip may use a nbsp
            row = text[text.index(f"Version {champion}") :]
            assert "@ champion" in row.split("\nVersion ")[0], row[:2000]
            page.goto(f"{prefect_ui}/deployments")
            for deployment in ("hourly-finetune", "nightly-retrain", "window-finetune"):
                expect(page.get_by_text(deployment).first).to_be_visible(timeout=30_000)
            page.goto(f"{prefect_ui}/runs")
            expect(page.get_by_text("Completed").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("hourly-finetune").first).to_be_visible()
        finally:
            browser.close()


def test_stack_runs_the_hourly_finetune_through_the_worker_and_stops_clean(
    stack: dict[str, str],
) -> None:
    parts = {p["name"]: p for p in streamtrain(stack, "up", "--no-simulator")}
    for name in ("kafka", "mlflow", "prefect", "worker", "trainer"):
        assert parts[name]["running"] and parts[name]["answers"], parts[name]
    assert not parts["simulator"]["running"]
    # Up again is a no-op: same processes.
    again = {p["name"]: p for p in streamtrain(stack, "up", "--no-simulator")}
    assert {n: p["pid"] for n, p in again.items()} == {n: p["pid"] for n, p in parts.items()}
    status = {p["name"]: p for p in streamtrain(stack, "status")}
    assert status["prefect"]["port"] == int(stack["STREAMTRAIN_PREFECT_PORT"])
    assert status["mlflow"]["address"].endswith(f":{stack['STREAMTRAIN_MLFLOW_PORT']}")
    tree = process_tree([p["pid"] for p in status.values() if p["pid"]])

    settings = Settings(
        home=Path(stack["STREAMTRAIN_HOME"]),
        kafka_port=int(stack["STREAMTRAIN_KAFKA_PORT"]),
        schema_path=Path(stack["STREAMTRAIN_SCHEMA"]),
    )
    from tasks.schema import load_schema

    schema = load_schema(settings.schema_path)
    ensure_topic(settings, schema.topic)
    produce(settings, schema.topic, generate(SimulationConfig(start=START, hours=10 * 24, seed=5)))

    api = f"{status['prefect']['address']}/api"
    mlflow_url = status["mlflow"]["address"]
    retrain = wait_for_run(api, "retrain/nightly-retrain", {"until": "2026-01-13T00:00Z"})
    assert retrain.state.is_completed(), retrain.state
    hourly = wait_for_run(api, "finetune/hourly-finetune", {"hour": "2026-01-13T10:00Z"})
    assert hourly.state.is_completed(), hourly.state

    versions = mlflow_versions(mlflow_url, schema.name)
    kinds = {
        (v.tags.get("lineage.training_kind"), v.tags.get("lineage.window_start")) for v in versions
    }
    assert ("finetune", "2026-01-13T10:00Z") in kinds, kinds
    from tasks import aliases, registry

    store = Settings(mlflow_tracking_uri=mlflow_url)
    timeline = registry.connect(store).list_artifacts(retrain_run_id(mlflow_url, schema.name))
    assert "accuracy_timeline.png" in [a.path for a in timeline]
    champion = aliases.get_alias_version(store, schema.name, aliases.CHAMPION)
    check_uis_in_a_browser(status["prefect"]["address"], mlflow_url, schema.name, champion)

    # The event path: a window-closed event starts `window-finetune` for exactly that window.
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.window_clock import emit_window_closed
    from tasks.windowing import Window, parse_instant

    window = Window.containing(parse_instant("2026-01-13T11:00Z"), schema.window)
    with temporary_settings({PREFECT_API_URL: api}):
        emit_window_closed(schema.name, window)
        emit_window_closed(schema.name, window)  # a repeat is the same event
        EventsWorker.drain_all()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        kinds = {
            v.tags.get("lineage.window_start")
            for v in mlflow_versions(mlflow_url, schema.name)
            if v.tags.get("lineage.trigger") == "event"
        }
        if "2026-01-13T11:00Z" in kinds:
            break
        time.sleep(2)
    assert "2026-01-13T11:00Z" in kinds

    stopped = streamtrain(stack, "down")["stopped"]
    assert set(stopped) == {"trainer", "worker", "prefect", "mlflow", "kafka"}
    _, alive = psutil.wait_procs(tree, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
    assert all(not p["running"] for p in streamtrain(stack, "status"))


def test_a_port_in_use_is_refused_and_nothing_is_left_running(stack: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(stack["STREAMTRAIN_PREFECT_PORT"])))
        squatter.listen()
        done = subprocess.run([STREAMTRAIN, "up"], env=stack, capture_output=True, text=True)
    assert done.returncode == 1
    assert "STREAMTRAIN_PREFECT_PORT" in done.stderr and "Traceback" not in done.stderr
    assert all(not p["running"] for p in streamtrain(stack, "status"))


def test_a_part_that_fails_to_start_stops_what_was_started(stack: dict[str, str]) -> None:
    env = {**stack, "STREAMTRAIN_STACK_START_TIMEOUT_S": "0.5"}  # MLflow cannot answer so fast
    done = subprocess.run([STREAMTRAIN, "up"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "mlflow did not answer" in done.stderr and "Nothing was left running" in done.stderr
    assert all(not p["running"] for p in streamtrain(stack, "status"))


def backfill_run_id(api: str) -> str:
    """The id of the demo's replay flow run, as recorded on the stack's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["backfill"])))
    assert runs, "no backfill flow run on the stack's Prefect server"
    return str(runs[0].id)


def finetune_run(url: str, name: str) -> tuple[str, str]:
    """(experiment id, run id) of one fine-tune run of the replay."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`streamtrain.kind` = 'finetune'", max_results=1
    )
    assert runs, "the replay logged no fine-tune run"
    return experiment.experiment_id, runs[0].info.run_id


def browser_or_skip() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("REQUIRE_BROWSER_TEST"):
            raise AssertionError("the browser test needs chromium and playwright")
        pytest.skip("chromium or playwright is not installed (.ci/run installs them)")
    return chromium


def test_a_short_demo_tells_its_story_in_the_prefect_and_mlflow_uis(
    stack: dict[str, str],
) -> None:
    """The demo's replay is a Prefect flow run with its per-day table artifact, and a fine-tune's
    MLflow run page names the Kafka data it trained on (issue #14)."""
    chromium = browser_or_skip()
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows.demo", "--days", "9"],
        cwd=ROOT,
        env=stack,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    status = {p["name"]: p for p in streamtrain(stack, "status")}
    prefect_ui, mlflow_ui = status["prefect"]["address"], status["mlflow"]["address"]
    assert prefect_ui in done.stdout and mlflow_ui in done.stdout, done.stdout[-2000:]
    run_id = backfill_run_id(f"{prefect_ui}/api")
    from tasks.schema import load_schema

    schema = load_schema(Path(stack["STREAMTRAIN_SCHEMA"]))
    experiment_id, finetune_id = finetune_run(mlflow_ui, schema.name)
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{prefect_ui}/runs")
            expect(page.get_by_text("backfill").first).to_be_visible(timeout=60_000)
            page.goto(f"{prefect_ui}/runs/flow-run/{run_id}")
            expect(page.get_by_text("Completed").first).to_be_visible(timeout=60_000)
            page.get_by_text("Artifacts", exact=True).first.click(timeout=30_000)
            expect(page.get_by_text("Per day, replay").first).to_be_visible(timeout=60_000)
            page.goto(f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{finetune_id}")
            dataset = page.get_by_text(f"{schema.topic} 2026-01-").first
            expect(dataset).to_be_visible(timeout=60_000)
            dataset.click()
            # MLflow's data drawer names the dataset (topic and window), its role and digest;
            # it renders no source for a source type of its own (kafka://), so none is asserted.
            drawer = page.get_by_role("dialog")
            expect(drawer.get_by_text("datasets used")).to_be_visible(timeout=30_000)
            expect(drawer.get_by_text("training").first).to_be_visible()
            expect(drawer.get_by_text("Digest:")).to_be_visible()
        finally:
            browser.close()
