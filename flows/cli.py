"""The `streamtrain` command: one entry point for the broker, the simulator, windows and flows.

Heavy libraries (TensorFlow, MLflow, Prefect) are imported inside the commands that need them,
so that `streamtrain --help` and `streamtrain kafka status` answer at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tasks.schema import SchemaError, StreamSchema, load_schema
from tasks.settings import Settings, get_settings

app = typer.Typer(
    help="Continuous training of ML models from Kafka streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kafka_app = typer.Typer(help="The embedded Kafka broker (KRaft, loopback).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")

console = Console()
errors = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


@dataclass
class Context:
    """What every command needs: settings and, on demand, the stream's schema."""

    settings: Settings

    @property
    def schema(self) -> StreamSchema:
        return load_schema(self.settings.schema_path)


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def expected_errors() -> Iterator[None]:
    """Turn the errors people can act on into one clear line, not a traceback."""
    from tasks.broker import BrokerError
    from tasks.stream import StreamError

    try:
        yield
    except (BrokerError, StreamError, SchemaError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), code=2)


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


@app.callback()
def main(
    ctx: typer.Context,
    schema: Path | None = typer.Option(
        None, "--schema", envvar="STREAMTRAIN_SCHEMA", help="The stream's schema file."
    ),
) -> None:
    """Continuous training of ML models from Kafka streams."""
    try:
        settings = get_settings(schema_path=schema)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid settings: {problems}", code=2)
    ctx.obj = Context(settings=settings)


def _ctx(ctx: typer.Context) -> Context:
    assert isinstance(ctx.obj, Context)
    return ctx.obj


# --- kafka ---------------------------------------------------------------------------------


def _print_broker(status: Any) -> None:
    state = "[green]running[/]" if status.running else "[yellow]stopped[/]"
    if not status.embedded:
        state = "[green]answering[/]" if status.answering else "[red]not answering[/]"
        console.print(f"External Kafka cluster at {status.bootstrap}: {state}")
        return
    console.print(f"Kafka broker {state} at {status.bootstrap}" + (f" (pid {status.pid})" if status.pid else ""))
    console.print(f"  log:  {status.log_file}")
    console.print(f"  data: {status.data_dir}")


def _broker_json(status: Any) -> dict[str, Any]:
    return {
        "running": status.running,
        "answering": status.answering,
        "embedded": status.embedded,
        "pid": status.pid,
        "bootstrap": status.bootstrap,
        "log_file": str(status.log_file),
        "data_dir": str(status.data_dir),
    }


@kafka_app.command("start")
def kafka_start(
    ctx: typer.Context,
    port: int | None = typer.Option(None, "--port", help="Broker port (STREAMTRAIN_KAFKA_PORT)."),
    as_json: bool = JsonOption,
) -> None:
    """Start the embedded single-node KRaft broker (harmless when it already runs)."""
    from tasks.broker import start_broker

    settings = _ctx(ctx).settings
    if port is not None:
        settings = settings.model_copy(update={"kafka_port": port})
    with expected_errors():
        status = start_broker(settings)
    emit(_broker_json(status), as_json, lambda: _print_broker(status))


@kafka_app.command("stop")
def kafka_stop(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Stop the embedded broker cleanly."""
    from tasks.broker import stop_broker

    with expected_errors():
        stopped = stop_broker(_ctx(ctx).settings)
    emit(
        {"stopped": stopped},
        as_json,
        lambda: console.print("Kafka broker stopped." if stopped else "Kafka broker was not running."),
    )


@kafka_app.command("status")
def kafka_status(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Say whether the broker runs and answers."""
    from tasks.broker import broker_status

    with expected_errors():
        status = broker_status(_ctx(ctx).settings)
    emit(_broker_json(status), as_json, lambda: _print_broker(status))


# --- simulate ------------------------------------------------------------------------------


@app.command()
def simulate(
    ctx: typer.Context,
    start: str = typer.Option("2026-01-05T00:00Z", help="First simulated hour (ISO 8601)."),
    hours: int = typer.Option(168, min=1, help="Hours of the world to simulate."),
    scenario: str = typer.Option("none", help="none|sudden|gradual|recurring|new-stores|corrupt"),
    seed: int | None = typer.Option(None, help="Random seed (default STREAMTRAIN_SEED)."),
    stores: int = typer.Option(100, min=1, help="Number of stores."),
    daylight_hours: int = typer.Option(8, min=1, max=24, help="Observed hours per day."),
    drift_at: str | None = typer.Option(None, help="When drift starts (default: week 3)."),
    topic: str | None = typer.Option(None, help="Output topic (default: the schema's)."),
    realtime: float | None = typer.Option(
        None, help="Pace in real time, sped up by this factor (e.g. 60 = one hour a minute)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Produce drone-delivery observations to Kafka (same seed, same bytes)."""
    from flows.simulate import run_simulation

    context = _ctx(ctx)
    with expected_errors():
        summary = run_simulation(
            context.settings,
            context.schema,
            start=start,
            hours=hours,
            scenario=scenario,
            seed=context.settings.seed if seed is None else seed,
            stores=stores,
            daylight_hours=daylight_hours,
            drift_at=drift_at,
            topic=topic,
            realtime=realtime,
            progress=not as_json,
        )
    emit(
        summary,
        as_json,
        lambda: console.print(
            f"Produced {summary['records']:,} records to '{summary['topic']}' "
            f"({summary['first_event']} .. {summary['last_event']}, scenario {summary['scenario']})."
        ),
    )


# --- window --------------------------------------------------------------------------------


@app.command()
def window(
    ctx: typer.Context,
    hour: str = typer.Option(..., "--hour", help="Any instant inside the window (ISO 8601)."),
    topic: str | None = typer.Option(None, help="Topic to read (default: the schema's)."),
    output: Path | None = typer.Option(None, "--output", help="Write rows to .parquet or .csv."),
    as_json: bool = JsonOption,
) -> None:
    """Summarise one event-time window: rows, labels, offsets and what was set aside."""
    from tasks.stream import read_window
    from tasks.windowing import Window, parse_instant

    context = _ctx(ctx)
    with expected_errors():
        schema = context.schema
        target = Window.containing(parse_instant(hour), schema.window)
        result = read_window(context.settings, schema, target, topic=topic)
        if output is not None:
            write_rows(result.frame, output)
    summary = result.manifest.to_dict()
    if output is not None:
        summary["output"] = str(output)
    emit(summary, as_json, lambda: print_window_summary(summary))


def write_rows(frame: Any, output: Path) -> None:
    rows = frame.drop(columns=["_event_ms"], errors="ignore")
    if output.suffix == ".parquet":
        rows.to_parquet(output, index=False)
    elif output.suffix == ".csv":
        rows.to_csv(output, index=False)
    else:
        raise ValueError(f"--output must end in .parquet or .csv, not '{output.suffix}'")


def print_window_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Window {summary['window_start']} .. {summary['window_end']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rows used", str(summary["rows"]))
    labels = ", ".join(f"{k}: {v}" for k, v in summary["label_counts"].items()) or "-"
    table.add_row("labels", labels)
    for name in ("duplicates", "malformed", "late", "records_read"):
        table.add_row(name.replace("_", " "), str(summary[name]))
    table.add_row("closed", "yes" if summary["closed"] else "no (stream time has not passed it)")
    offsets = ", ".join(f"{tp} [{a}..{b}]" for tp, (a, b) in summary["offsets"].items()) or "-"
    table.add_row("offsets", offsets)
    console.print(table)
    for reason, count in summary.get("set_aside_reasons", {}).items():
        console.print(f"  {count} x {reason}")
    if "output" in summary:
        console.print(f"Rows written to {summary['output']}")


if __name__ == "__main__":  # pragma: no cover
    app()
