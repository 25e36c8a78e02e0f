"""What every training flow shares: building the cycle context and publishing its outcome."""

from __future__ import annotations

from tasks.cycle import CycleContext, CycleResult
from tasks.schema import load_schema
from tasks.settings import Settings, get_settings
from tasks.stages import Stages


def cycle_context(as_tasks: bool, settings: Settings | None = None) -> CycleContext:
    settings = settings or get_settings()
    return CycleContext(
        settings=settings,
        schema=load_schema(settings.schema_path),
        stages=Stages(as_tasks=as_tasks),
    )


def cycle_markdown(result: CycleResult) -> str:
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
        f"| serving champion | {result.champion_version or '-'} |",
        f"| prequential accuracy | {fmt(result.prequential_accuracy)} |",
        f"| challenger (primary metric) | {fmt(result.challenger_metric)} |",
        f"| champion (primary metric) | {fmt(result.champion_metric)} |",
        f"| new version | {result.challenger_version or '-'} |",
        f"| decision | **{result.decision}** |",
        f"| MLflow run | {result.run_id or '-'} |",
        "",
        "### Reasons",
        *[f"- {reason}" for reason in result.reasons],
    ]
    return "\n".join(lines)


def publish_cycle(ctx: CycleContext, result: CycleResult) -> None:
    """Leave a markdown artifact on the flow run (only inside a Prefect run)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    create_markdown_artifact(
        markdown=cycle_markdown(result),
        key=f"{result.kind}-{ctx.model_name}".lower().replace("_", "-").replace(".", "-"),
        description=f"{result.kind} {result.window_start}: {result.decision}",
    )


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
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
