"""`streamtrain up | down | status | window-clock`: the always-on local stack from the shell."""

from __future__ import annotations

from typing import Any

import typer

from flows.cli import JsonOption, _ctx, configure_environment, console, emit, errors, fail

stack_app = typer.Typer()


def _print_parts(parts: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("part", "state", "address", "pid", "log", box=None)
    for part in parts:
        if not part["running"]:
            state = "[yellow]stopped[/]"
        elif part["answers"]:
            state = "[green]up[/]" if part["managed"] else "[green]external[/]"
        else:
            state = "[red]not answering[/]"
        table.add_row(
            part["name"], state, part["address"], str(part["pid"] or "-"), part["log_file"] or "-"
        )
    console.print(table)


@stack_app.command()
def up(
    ctx: typer.Context,
    simulator: bool = typer.Option(True, help="Start the live simulator too."),
    window_events: bool = typer.Option(
        False, help="Start the window clock: a Prefect event per closed window (event trigger)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Start Kafka, MLflow and Prefect servers, deploy, start a worker and the simulator."""
    from tasks import stack
    from tasks.broker import BrokerError
    from tasks.services import ServiceError

    settings = _ctx(ctx).settings
    say = (lambda _: None) if as_json else (lambda text: errors.print(f"[dim]{text}[/]"))
    try:
        parts = [
            p.to_dict()
            for p in stack.up(settings, simulator=simulator, window_clock=window_events, say=say)
        ]
    except (ServiceError, BrokerError) as exc:
        fail(f"{exc}\nNothing was left running that this command started.")

    def human() -> None:
        _print_parts(parts)
        console.print(f"\nPrefect UI: {stack.prefect_ui_url(settings)}")
        console.print(f"MLflow UI:  {stack.mlflow_url(settings)}")
        console.print(
            "Use the stack from this shell: export "
            f"PREFECT_API_URL={stack.prefect_api_url(settings)} "
            f"MLFLOW_TRACKING_URI={stack.mlflow_url(settings)}"
        )
        console.print("Stop it all: streamtrain down")

    emit(parts, as_json, human)


@stack_app.command()
def down(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Stop every part `streamtrain up` started."""
    from tasks import stack

    stopped = stack.down(_ctx(ctx).settings)
    emit(
        {"stopped": stopped},
        as_json,
        lambda: console.print(
            f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running."
        ),
    )


@stack_app.command()
def status(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Each part of the stack: state, address, port, pid and log file."""
    from tasks import stack

    parts = [p.to_dict() for p in stack.status(_ctx(ctx).settings)]
    emit(parts, as_json, lambda: _print_parts(parts))


@stack_app.command("window-clock")
def window_clock(ctx: typer.Context) -> None:
    """Emit a Prefect event whenever the stream's time closes a window (runs until stopped)."""
    context = _ctx(ctx)
    configure_environment(context.settings)
    from flows.window_clock import run_window_clock

    if not context.settings.prefect_api_url:
        fail("the window clock needs a Prefect server: set PREFECT_API_URL", code=2)
    try:
        run_window_clock(context.settings, context.schema)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@stack_app.command()
def trainer(ctx: typer.Context) -> None:
    """Run the training deployments' flow runs in this one warm process (runs until stopped)."""
    import logging
    import sys

    from tasks import stack

    context = _ctx(ctx)
    if not context.settings.prefect_api_url:
        fail("the trainer needs a Prefect server: set PREFECT_API_URL", code=2)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    for name in ("streamtrain.trainer", "streamtrain.cycle"):
        logging.getLogger(name).setLevel(logging.INFO)
    from flows.trainer import run_trainer

    try:
        run_trainer(
            context.settings, pool=stack.work_pool_name(), queue=stack.training_queue_name()
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
