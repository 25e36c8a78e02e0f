"""The `streamtrain` command: one entry point for the broker, the simulator, windows and flows.

Heavy libraries (TensorFlow, MLflow, Prefect) are imported inside the commands that need them,
so that `streamtrain --help` and `streamtrain kafka status` answer at once.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError as PydanticSettingsError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.errors import InputError
from tasks.schema import SchemaError, StreamSchema, load_schema
from tasks.settings import (
    Settings,
    SettingsError,
    current_settings,
    describe_settings_error,
    get_settings,
    use_settings,
)

app = typer.Typer(
    help="Continuous training of ML models from Kafka streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kafka_app = typer.Typer(help="The embedded Kafka broker (KRaft, loopback).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")


def wide_console(stderr: bool = False) -> Console:
    """Rich's console, 120 columns wide when not a terminal: at rich's default 80, pipes and
    CI logs get tables with every column cut short."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=max(probe.width, 120))


console = wide_console()
errors = wide_console(stderr=True)

JsonOption: Any = typer.Option(False, "--json", help="Print machine-readable JSON.")


@dataclass
class Context:
    """What every command needs: settings and, on demand, the stream's schema."""

    settings: Settings

    @property
    def schema(self) -> StreamSchema:
        """The stream's schema, checked against the settings; a bad one ends the command."""
        try:
            schema = load_schema(self.settings.schema_path)
            self.settings.check_window(schema.window)
        except (SchemaError, SettingsError) as exc:
            fail(str(exc), code=2)
        return schema


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never wrapped, brackets shown as written) and a non-zero exit."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def explain(exc: BaseException) -> str | None:
    """The one line for an error people can act on (not a bug), or None."""
    from tasks.broker import BrokerError
    from tasks.registry import LockTimeout, describe_outage
    from tasks.stream import StreamError

    if isinstance(exc, BrokerError | StreamError | InputError | LockTimeout):
        return str(exc)
    return describe_outage(current_settings(), exc)


@contextmanager
def expected_errors(runs_flow: bool = False) -> Iterator[None]:
    """Turn the errors people can act on into one clear line, not a traceback.

    The project's own input errors (`InputError`: a bad option, schema or setting) exit 2;
    an outage, a missing topic or a held lock exits 1. Anything else is a bug: it keeps its
    traceback and exits 1, whatever its type (a pydantic, numpy or Keras `ValueError` too).
    """
    if runs_flow:
        from flows.runtime import prepare_local_prefect

        _quiet_expected_tracebacks()
        prepare_local_prefect()
    try:
        yield
    except Exception as exc:
        if (message := explain(exc)) is not None:
            fail(message, code=2 if isinstance(exc, InputError) else 1)
        raise


class _WithoutExpectedTracebacks(logging.Formatter):
    """Prefect's console format, minus the traceback of an error the CLI explains in one line.

    Prefect's run log (API handler) keeps the traceback; only the terminal is spared it.
    """

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or explain(exc) is None:
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _quiet_expected_tracebacks() -> None:
    """Set up Prefect's logging now (later set-ups are incremental) and wrap its console format."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(
            handler.formatter, _WithoutExpectedTracebacks
        ):
            handler.setFormatter(_WithoutExpectedTracebacks(handler.formatter))


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(strict_json(data), indent=2, default=str) + "\n")
    else:
        human()


def strict_json(data: Any) -> Any:
    """NaN and infinities are not JSON: scripts in other languages would refuse them."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    return data


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
        fail(describe_settings_error(exc), code=2)
    except PydanticSettingsError as exc:  # a list or tuple variable that is not JSON
        fail(f"invalid settings: {exc}; lists are written as JSON, e.g. [32, 16]", code=2)
    # Every flow run this command starts in-process uses these settings, not the environment's.
    ctx.with_resource(use_settings(settings))
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
    console.print(
        f"Kafka broker {state} at {status.bootstrap}"
        + (f" (pid {status.pid})" if status.pid else "")
    )
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
    """Start the embedded single-node KRaft broker (harmless when it already runs on the port)."""
    from tasks.broker import start_broker

    settings = _ctx(ctx).settings
    if port is not None:
        settings = settings.model_copy(update={"kafka_port": port})
    with expected_errors():
        status = start_broker(settings)
    emit(_broker_json(status), as_json, lambda: _print_broker(status))


@kafka_app.command("stop")
def kafka_stop(
    ctx: typer.Context,
    port: int | None = typer.Option(
        None, "--port", help="Stop only a broker on this port (default: whichever runs)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Stop the embedded broker cleanly."""
    from tasks.broker import stop_broker

    with expected_errors():
        stopped = stop_broker(_ctx(ctx).settings, port=port)
    emit(
        {"stopped": stopped},
        as_json,
        lambda: console.print(
            "Kafka broker stopped." if stopped else "Kafka broker was not running."
        ),
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
    scenario: str = typer.Option(
        "none", help="none|sudden|gradual|recurring|new-stores|corrupt|seasonal"
    ),
    seed: int | None = typer.Option(None, help="Random seed (default STREAMTRAIN_SEED)."),
    stores: int = typer.Option(100, min=1, help="Number of stores."),
    daylight_hours: int = typer.Option(8, min=1, max=24, help="Observed hours per day."),
    drift_at: str | None = typer.Option(None, help="When drift starts (default: week 3)."),
    topic: str | None = typer.Option(None, help="Output topic (default: the schema's)."),
    realtime: float | None = typer.Option(
        None, help="Pace in real time, sped up by this factor (e.g. 60 = one hour a minute)."
    ),
    live: bool = typer.Option(
        False,
        "--live",
        help="Continue the topic's stream from its last hour, paced at STREAMTRAIN_LIVE_SPEEDUP "
        "(for `streamtrain up`; --start is used only when the topic is empty); hours without "
        "records (the simulated nights) pass at once, so windows keep closing.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Produce drone-delivery observations to Kafka (same seed, same bytes)."""
    from flows.simulate import live_start, run_simulation

    context = _ctx(ctx)
    with expected_errors():
        if live:
            start = live_start(context.settings, context.schema, topic, default=start)
            realtime = realtime or context.settings.live_speedup
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
            skip_nights=live,
            progress=not (as_json or live),
        )
    emit(
        summary,
        as_json,
        lambda: console.print(
            f"Produced {summary['records']:,} records to '{summary['topic']}' "
            f"({summary['first_event']} .. {summary['last_event']}, "
            f"scenario {summary['scenario']})."
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
    rows = frame.drop(columns=["_event_ms", "_partition", "_offset"], errors="ignore")
    if output.suffix == ".parquet":
        rows.to_parquet(output, index=False)
    elif output.suffix == ".csv":
        rows.to_csv(output, index=False)
    else:
        raise InputError(f"--output must end in .parquet or .csv, not '{output.suffix}'")


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


# --- training ------------------------------------------------------------------------------

model_app = typer.Typer(
    help="The registered model: versions, aliases, history, rollback.", no_args_is_help=True
)
app.add_typer(model_app, name="model")


def _print_cycle(result: dict[str, Any]) -> None:
    from rich.markdown import Markdown

    from flows.runtime import cycle_markdown
    from tasks.cycle import CycleResult

    fields = {k: v for k, v in result.items() if k in CycleResult.__dataclass_fields__}
    console.print(Markdown(cycle_markdown(CycleResult(**fields))))


@app.command()
def retrain(
    ctx: typer.Context,
    until: str | None = typer.Option(None, "--until", help="End of the training range (ISO)."),
    as_json: bool = JsonOption,
) -> None:
    """Train from scratch on the last days up to HOUR, evaluate, gate and register."""
    _ = _ctx(ctx).schema  # refuse a bad schema before any flow starts
    configure_environment(_ctx(ctx).settings)
    from flows.retrain import retrain as retrain_flow

    with expected_errors(runs_flow=True):
        result = retrain_flow(until=until)
    emit(result, as_json, lambda: _print_cycle(result))


@app.command()
def finetune(
    ctx: typer.Context,
    hour: str | None = typer.Option(None, "--hour", help="Any instant in the window (ISO)."),
    as_json: bool = JsonOption,
) -> None:
    """Test-then-train one window: score the champion, fine-tune, gate, register.

    Without --hour: every closed window after the last one fine-tuned, oldest first (JSON: a
    list of cycles); with --hour, that window only (JSON: one cycle).
    """
    _ = _ctx(ctx).schema  # refuse a bad schema before any flow starts
    configure_environment(_ctx(ctx).settings)
    from flows.finetune import finetune as finetune_flow

    with expected_errors(runs_flow=True):
        results = finetune_flow(hour=hour)
    if hour is not None:
        emit(results[0], as_json, lambda: _print_cycle(results[0]))
        return

    def human() -> None:
        for result in results:
            _print_cycle(result)
        if not results:
            console.print("No closed window is waiting to be fine-tuned.")

    emit(results, as_json, human)


@app.command()
def backfill(
    ctx: typer.Context,
    start: str = typer.Option(..., "--start", help="First window (ISO)."),
    end: str = typer.Option(..., "--end", help="End of the range, exclusive (ISO)."),
    retrain_every: int = typer.Option(
        24, help="Hours between retrains inside the replay; 0: none."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Replay a range of windows in order in one warm process, with periodic retrains."""
    from rich.progress import Progress

    settings = _ctx(ctx).settings
    configure_environment(settings)
    from flows.backfill import run_backfill
    from flows.runtime import cycle_context
    from tasks.windowing import parse_instant, windows_between

    with expected_errors():
        cycle = cycle_context(as_tasks=False, settings=settings)
        first, last = parse_instant(start), parse_instant(end)
        total = len(windows_between(first, last, cycle.schema.window))
        with Progress(transient=True, disable=as_json) as bar:
            job = bar.add_task("Replaying windows", total=total)

            def advance(result: Any) -> None:
                if result.kind == "finetune":
                    bar.advance(job)

            results = run_backfill(
                cycle, first, last, retrain_every_hours=retrain_every or None, on_window=advance
            )
    rows = [r.to_dict() for r in results]
    emit(rows, as_json, lambda: print_daily_summary(rows))


def print_daily_summary(rows: list[dict[str, Any]], change: str | None = None) -> None:
    """The per-day table and the alarm and recovery line (counted from `change` if known)."""
    from tasks.report import DAILY_COLUMNS, daily_table, recovery_line

    table = Table(title="Per day")
    for column in DAILY_COLUMNS.values():
        table.add_column(column, justify="right", no_wrap=True)
    for day in daily_table(rows):
        table.add_row(*day.values())
    console.print(table)
    console.print(recovery_line(rows, change))


@app.command()
def report(
    ctx: typer.Context,
    as_json: bool = JsonOption,
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    last: int | None = typer.Option(None, help="Only the last N windows."),
) -> None:
    """Per-window table: rows, prequential accuracy, holdout metrics, decision and reasons."""
    from tasks.report import report_rows, to_csv
    from tasks.run_logging import cycle_runs

    context = _ctx(ctx)
    with expected_errors():
        rows = report_rows(cycle_runs(context.settings, context.schema.name))
    if last:
        rows = rows[-last:]
    if as_csv:
        sys.stdout.write(to_csv(rows))
        return
    emit(rows, as_json, lambda: _print_report(rows))


def _print_report(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Training report")
    for column in (
        "window",
        "kind",
        "rows",
        "champion",
        "preq. acc",
        "challenger",
        "champion m.",
        "decision",
        "reasons",
    ):
        # The window and the decision stay whole; long reasons wrap instead.
        table.add_column(column, no_wrap=column in {"window", "kind", "decision"})
    for row in rows:
        table.add_row(
            row["window_start"],
            row["kind"],
            str(row["rows"]),
            row["champion_version"] or "-",
            _num(row["prequential_accuracy"]),
            _num(row["challenger_metric"]),
            _num(row["champion_metric"]),
            row["decision"],
            "; ".join(row["reasons"])[:120],
        )
    console.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@model_app.command("show")
def model_show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Aliases, versions, their metrics and lineage."""
    from tasks.versions import list_versions

    context = _ctx(ctx)
    with expected_errors():
        versions = list_versions(context.settings, context.schema.name)
    data = [
        {
            "version": v.version,
            "created_at": v.created_at.isoformat(),
            "aliases": list(v.aliases),
            "run_id": v.run_id,
            "description": v.description,
            "lineage": v.lineage.model_dump(mode="json") if v.lineage else None,
        }
        for v in versions
    ]
    emit({"model": context.schema.name, "versions": data}, as_json, lambda: _print_versions(data))


def _print_versions(data: list[dict[str, Any]]) -> None:
    table = Table(title="Model versions")
    for column in ("version", "aliases", "kind", "window", "parent", "decision", "holdout"):
        table.add_column(column)
    for v in data:
        lineage = v.get("lineage") or {}
        holdout = lineage.get("holdout_metrics", {})
        table.add_row(
            str(v["version"]),
            ", ".join(v.get("aliases", [])),
            lineage.get("training_kind", "-"),
            lineage.get("window_start", "-"),
            lineage.get("parent_version") or "-",
            lineage.get("gate_decision") or "-",
            ", ".join(
                f"{k} {val:.3f}" for k, val in sorted(holdout.items()) if k.startswith("long")
            ),
        )
    console.print(table)


@model_app.command("history")
def model_history(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Every alias move: time, alias, versions, trigger, reasons, who."""
    from dataclasses import asdict

    from tasks.aliases import alias_history

    context = _ctx(ctx)
    with expected_errors():
        moves = [asdict(m) for m in alias_history(context.settings, context.schema.name)]

    def human() -> None:
        table = Table(title="Alias history")
        for column in ("time", "alias", "from", "to", "trigger", "who", "reasons"):
            table.add_column(column)
        for m in moves:
            table.add_row(
                str(m["at"]),
                m["alias"],
                m["from_version"] or "-",
                m["to_version"] or "-",
                m["trigger"],
                m["who"],
                "; ".join(m["reasons"])[:100],
            )
        console.print(table)

    emit(moves, as_json, human)


@model_app.command("rollback")
def model_rollback(
    ctx: typer.Context,
    reason: str = typer.Option("manual rollback", "--reason", help="Why (recorded)."),
    as_json: bool = JsonOption,
) -> None:
    """Give the champion alias back to the previous champion, recording who and why."""
    import getpass

    from tasks.aliases import rollback
    from tasks.registry import RegistryError

    context = _ctx(ctx)
    try:
        restored = rollback(
            context.settings, context.schema.name, who=getpass.getuser(), why=reason
        )
    except RegistryError as exc:
        fail(str(exc))
    emit(
        {"champion": restored},
        as_json,
        lambda: console.print(f"Champion is now version {restored} ({reason})."),
    )


# --- score ---------------------------------------------------------------------------------


@app.command()
def score(
    ctx: typer.Context,
    input_topic: str = typer.Option(..., "--input", help="Topic of feature records to score."),
    output_topic: str = typer.Option(..., "--output", help="Topic the predictions go to."),
    group: str | None = typer.Option(
        None, "--group", help="Consumer group (default: streamtrain-scorer-<model name>)."
    ),
    max_records: int | None = typer.Option(
        None, "--max-records", min=1, help="Stop after reading this many records."
    ),
    idle_exit: float | None = typer.Option(
        None,
        "--idle-exit",
        min=0,
        help="Exit after this many seconds without records "
        "(or without a champion); counted from the start, group join included.",
    ),
    reload_interval: float = typer.Option(
        5.0, "--reload-interval", min=0.1, help="Seconds between checks of the champion alias."
    ),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Records per poll."),
    as_json: bool = JsonOption,
) -> None:
    """Score records with the champion as they arrive; follow the alias without restarting."""
    context = _ctx(ctx)
    configure_environment(context.settings)
    from flows.score import run_scoring

    with expected_errors():
        summary = run_scoring(
            context.settings,
            context.schema,
            input_topic=input_topic,
            output_topic=output_topic,
            group_id=group,
            max_records=max_records,
            idle_exit_s=idle_exit,
            reload_interval_s=reload_interval,
            batch_size=batch_size,
        )
    emit(
        summary,
        as_json,
        lambda: console.print(
            f"Scored {summary['records_in']:,} records from '{input_topic}' into "
            f"'{output_topic}' ({summary['dead_lettered']} dead-lettered, versions "
            f"{summary['versions_used'] or '-'}, {summary['records_per_s']:,.0f} records/s)."
        ),
    )


@app.command()
def monitor(
    ctx: typer.Context,
    predictions: str = typer.Option(..., "--predictions", help="The scorer's output topic."),
    hour: str | None = typer.Option(None, "--hour", help="Any instant in the window (ISO)."),
    as_json: bool = JsonOption,
) -> None:
    """Join served predictions with their labels; log live accuracy per served version."""
    context = _ctx(ctx)
    configure_environment(context.settings)
    from flows.monitor import run_monitor
    from tasks.windowing import parse_instant

    with expected_errors():
        summary = run_monitor(
            context.settings,
            context.schema,
            predictions_topic=predictions,
            hour=parse_instant(hour) if hour else None,
        )
    emit(summary, as_json, lambda: console.print_json(json.dumps(summary, default=str)))


@app.command()
def validate(
    ctx: typer.Context,
    hour: str = typer.Option(..., "--hour", help="Any instant inside the window (ISO 8601)."),
    docs: bool = typer.Option(False, "--docs", help="Also build GX Data Docs HTML for it."),
    as_json: bool = JsonOption,
) -> None:
    """Validate one window with the schema's expectations (an inspection: sends no dead letters)."""
    from tasks.stream import read_window
    from tasks.validation import build_data_docs, validate_window
    from tasks.windowing import Window, parse_instant

    context = _ctx(ctx)
    configure_environment(context.settings)
    with expected_errors():
        schema = context.schema
        target = Window.containing(parse_instant(hour), schema.window)
        read = read_window(context.settings, schema, target, send_dead_letters=False)
        outcome = validate_window(
            schema, read.frame, max_failing_share=context.settings.max_failing_share
        )
        manifest = read.manifest
        summary: dict[str, Any] = {
            "window_start": manifest.to_dict()["window_start"],
            "window_end": manifest.to_dict()["window_end"],
            "success": outcome.success,
            "rows": len(outcome.kept),
            "quarantined": len(read.frame) if outcome.rejected else len(outcome.quarantined),
            "rejected": outcome.rejected,
            "failed_expectations": outcome.failed_expectations,
            "reasons": outcome.reasons,
            "duplicates": manifest.duplicates,
            "malformed": manifest.malformed,
            "late": manifest.late,
            "records_read": manifest.records_read,
        }
        if docs:
            folder = context.settings.home / "data-docs" / target.label().replace(":", "")
            summary["docs"] = str(build_data_docs(schema, read.frame, folder))

    def human() -> None:
        verdict = (
            "rejected"
            if summary["rejected"]
            else ("passed" if summary["success"] else "passed with quarantine")
        )
        console.print(
            f"Window {summary['window_start']}: {verdict}; {summary['rows']} rows kept, "
            f"{summary['quarantined']} quarantined, {summary['duplicates']} duplicate, "
            f"{summary['malformed']} malformed, {summary['late']} late."
        )
        for reason in summary["reasons"] or summary["failed_expectations"]:
            console.print(f"  - {reason}")
        if "docs" in summary:
            console.print(f"Data Docs: {summary['docs']}")

    emit(summary, as_json, human)


def configure_environment(settings: Settings) -> None:
    from flows.runtime import configure_environment as configure

    configure(settings)


# The stack's commands live in their own module; importing it here registers them.
from flows.cli_stack import stack_app  # noqa: E402

app.add_typer(stack_app)

# `schema infer` and `produce` (a CSV file as a stream) register themselves on import.
import flows.cli_csv  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
