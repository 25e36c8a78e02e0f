"""What every training flow shares: building the cycle context and publishing its outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.cycle import CycleContext, CycleResult
from tasks.schema import load_schema
from tasks.settings import Settings, current_settings
from tasks.stages import RetryPolicy, Stages

EPHEMERAL_STARTUP_TIMEOUT_S = "120"


def cycle_context(as_tasks: bool, settings: Settings | None = None) -> CycleContext:
    settings = settings or current_settings()
    configure_environment(settings)  # a flow run started by a worker gets the same quiet logs
    schema = load_schema(settings.schema_path)
    settings.check_window(schema.window)
    stages = Stages(as_tasks=as_tasks, retry=RetryPolicy(settings.stage_retry_delays_s))
    ctx = CycleContext(settings=settings, schema=schema, stages=stages)
    if _WARM_MODELS is not None:
        ctx.models = _WARM_MODELS.setdefault((settings.tracking_uri, ctx.model_name), {})
    return ctx


# Champion models kept between flow runs of a long-lived process (the trainer): per registry
# and model name, keyed by version inside. A version never changes once registered, and the
# cycle looks the champion alias up on every run, so a moved alias loads the new champion.
_WARM_MODELS: dict[tuple[str, str], dict[str, Any]] | None = None


def keep_models_warm() -> None:
    """Let every later cycle context of this process share its loaded models (the trainer)."""
    global _WARM_MODELS
    if _WARM_MODELS is None:
        _WARM_MODELS = {}


def cycle_markdown(result: CycleResult, run_link: str | None = None) -> str:
    """The Prefect artifact of a cycle: what was read, measured and decided, and why."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"## {result.kind} {result.window_start} .. {result.window_end}",
        "",
        "| what | value |",
        "|---|---|",
        f"| rows used | {result.rows} |",
        f"| set aside | {result.duplicates} duplicate, {result.malformed} malformed, "
        f"{result.late} late |",
        f"| validation | {result.quarantined} quarantined"
        f"{', window rejected' if result.rejected else ''} |",
        f"| data drift | {result.data_drift} |",
        f"| new categories | {result.new_categories or '-'} |",
        f"| concept-drift alarm | {'yes' if result.concept_drift_alarm else 'no'} |",
        f"| retrain triggered | {result.retrain_trigger or 'no'} |",
        f"| serving champion | {result.champion_version or '-'} |",
        f"| prequential accuracy | {fmt(result.prequential_accuracy)} |",
        f"| challenger (primary metric) | {fmt(result.challenger_metric)} |",
        f"| champion (primary metric) | {fmt(result.champion_metric)} |",
        f"| new version | {result.challenger_version or '-'} |",
        f"| decision | **{result.decision}** |",
        f"| MLflow run | {_run_cell(result.run_id, run_link)} |",
        "",
        "### Reasons",
        *[f"- {reason}" for reason in result.reasons],
    ]
    return "\n".join(lines)


def _run_cell(run_id: str | None, link: str | None) -> str:
    if run_id and link:
        return f"[{run_id}]({link})"
    return run_id or "-"


def publish_cycle(ctx: CycleContext, result: CycleResult) -> None:
    """Leave a markdown artifact on the flow run (only inside a Prefect run)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = f"{result.kind}-{ctx.model_name}".lower().replace("_", "-").replace(".", "-")
    link = None
    if result.run_id and ctx.settings.tracking_uri.startswith("http"):
        from tasks.run_logging import run_url

        link = run_url(ctx.settings, result.run_id)
    create_markdown_artifact(
        markdown=cycle_markdown(result, link),
        key=key,
        description=f"{result.kind} {result.window_start}: {result.decision}",
    )
    if result.drift_table:
        create_table_artifact(
            table=[{k: _cell(v) for k, v in row.items()} for row in result.drift_table],
            key=f"{key}-drift",
            description=f"Data drift per feature, window {result.window_start}",
        )


def _cell(value: object) -> object:
    """Table cells JSON can carry (NaN p-values become empty)."""
    return None if isinstance(value, float) and value != value else value


def stream_now(ctx: CycleContext, now: datetime) -> datetime:
    """The stream's present: the wall clock, or the stream's watermark (the slowest partition
    with data) if that is older."""
    from tasks.stream import watermark

    slowest = watermark(ctx.settings, ctx.schema.topic)
    return min(now, slowest) if slowest else now


def configure_environment(settings: Settings) -> None:
    """Quiet, local defaults for the libraries, set before they are first imported.

    Only defaults: anything the user exported wins. Prefect keeps its state under the project's
    runtime folder rather than ~/.prefect, and TensorFlow/MLflow keep their banners to themselves.
    """
    import os

    defaults = {
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PREFECT_HOME": str(settings.home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # Prefect's temporary server gets 20 s to start by default: a busy two-core machine
        # (a training beside it, a cold disk) takes longer, and the command then fails.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_S,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)


def prepare_local_prefect() -> None:
    """Migrate the local Prefect database and register its block types once, under a lock,
    before a flow starts on it.

    Without a server each command starts Prefect's temporary server on PREFECT_HOME's SQLite
    file, which migrates it and registers Prefect's block types on start: two commands at
    once on a new home race on the migration ("duplicate column name") and on the block
    schemas (a UNIQUE constraint), and one of them prints a wall of traceback. Registering
    here writes Prefect's memo of it, so the temporary servers skip that step.
    """
    import asyncio
    import fcntl
    import os

    if os.environ.get("PREFECT_API_URL"):
        return
    import prefect

    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    marker = home / f".migrated-{prefect.__version__}"

    def migrated() -> bool:
        return marker.exists() and (home / "prefect.db").exists()

    if migrated():
        return
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if migrated():
            return  # another command migrated it while this one waited
        from prefect.server.database import provide_database_interface

        asyncio.run(provide_database_interface().create_db())
        asyncio.run(_register_block_types())
        marker.touch()


async def _register_block_types() -> None:
    """Prefect's start-up block registration, memoised as its server memoises it."""
    from prefect.server.api.server import _memoize_block_auto_registration
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    @_memoize_block_auto_registration
    async def register() -> None:
        async with await provide_database_interface().session() as session:
            await run_block_auto_registration(session=session)

    await register()


def quiet_libraries() -> None:
    """Keep the libraries' chatter (table creation, event-loop timings, retracing) off screen."""
    import logging

    for name, level in {
        "mlflow": logging.WARNING,
        "mlflow.store.model_registry.abstract_store": logging.WARNING,
        "alembic": logging.WARNING,
        "kafka": logging.ERROR,
        "tensorflow": logging.ERROR,
        "absl": logging.ERROR,
        "great_expectations": logging.ERROR,
    }.items():
        logging.getLogger(name).setLevel(level)


@contextmanager
def training_slot(settings: Settings, model_name: str) -> Iterator[None]:
    """One training run per model across machines: a Prefect global concurrency limit.

    Only under a Prefect server; the training lock in `tasks.registry` still excludes runs on
    one machine, with or without a server. A limit that does not exist yet (a server that
    `streamtrain up` did not set up) is created with one slot rather than skipped: Prefect's
    `strict=False` would run the block without any limit and only log a warning.
    """
    if not settings.prefect_api_url:
        yield
        return
    from prefect.concurrency.sync import concurrency

    from tasks.stack import training_limit_name

    name = training_limit_name(model_name)
    ensure_training_limit(name)
    with concurrency(name, occupy=1, strict=True):
        yield


def ensure_training_limit(name: str) -> None:
    """Create the global concurrency limit `name` with one slot unless it exists."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


def request_retrain(ctx: CycleContext, until: datetime, trigger: str) -> None:
    """Start a full retrain: through the deployment under a server, else in this process.

    In this process it runs like the `retrain` flow, inside the training slot and the lock,
    so that it never overlaps another training run of the model on any machine.
    """
    import logging

    from tasks.cycle import retrain_until
    from tasks.registry import training_lock
    from tasks.windowing import format_instant

    log = logging.getLogger("streamtrain.flows")
    if ctx.settings.prefect_api_url:
        from prefect.deployments import run_deployment

        try:
            run_deployment(
                "retrain/nightly-retrain",
                parameters={"until": format_instant(until), "trigger": trigger},
                timeout=0,
            )
            log.info("Retrain requested through the deployment (%s)", trigger)
            return
        except Exception as exc:  # the deployment may not exist: fall back, say why
            log.warning("Could not start the retrain deployment (%s); retraining here", exc)
    with (
        training_slot(ctx.settings, ctx.model_name),
        training_lock(ctx.settings, ctx.model_name, timeout_s=1800),
    ):
        result = retrain_until(ctx, until, trigger=trigger)
    publish_cycle(ctx, result)


TIMELINE_PNG = "accuracy_timeline.png"


def log_accuracy_timeline(
    ctx: CycleContext, since: datetime, until: datetime, run_id: str | None = None
) -> str:
    """Log the accuracy timeline of [since, until) as a PNG: to `run_id`, or to a run of its own.

    Returns the run id. A run of its own carries no `streamtrain.kind` tag, so the per-window
    report does not count it as a training cycle.
    """
    from tasks import run_logging
    from tasks.plots import accuracy_timeline_png
    from tasks.report import as_of, report_rows
    from tasks.windowing import format_instant

    span = f"{format_instant(since)} .. {format_instant(until)}"
    rows = [
        r
        for r in report_rows(run_logging.cycle_runs(ctx.settings, ctx.model_name))
        if format_instant(since) <= as_of(r) <= format_instant(until)
    ]
    png = accuracy_timeline_png(rows, f"{ctx.model_name}: accuracy {span}")
    if run_id is None:
        return run_logging.log_cycle_run(
            ctx.settings,
            ctx.schema,
            run_name=f"timeline {span}",
            tags={"streamtrain.timeline": span},
            metrics={"windows": float(sum(r["kind"] == "finetune" for r in rows))},
            artifacts={TIMELINE_PNG: png},
        )
    run_logging.attach_files(ctx.settings, run_id, {TIMELINE_PNG: png})
    return run_id
