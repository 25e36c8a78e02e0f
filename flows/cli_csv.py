"""`streamtrain schema infer` and `streamtrain produce`: a CSV file becomes a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from flows.cli import JsonOption, _ctx, app, console, emit, expected_errors, fail

schema_app = typer.Typer(help="Draft a stream schema from data.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


@schema_app.command("infer")
def schema_infer(
    csv_file: Path = typer.Option(..., "--csv", help="The CSV file to draft a schema from."),
    no_header: bool = typer.Option(
        False, "--no-header", help="The first row is data; columns are named col0, col1, ..."
    ),
    label: str | None = typer.Option(None, "--label", help="The label column (two classes)."),
    time: str | None = typer.Option(
        None,
        "--time",
        help="The event-time column (ISO 8601 or epoch s/ms). Without it the schema gets an "
        "event_time field that `produce --start --every` fills in.",
    ),
    key: str | None = typer.Option(
        None, "--key", help="The entity column (e.g. a shop id): records are keyed by it."
    ),
    output: Path | None = typer.Option(
        None, "--output", help="Write the draft here (default: print it)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Draft a schema from a CSV: types, ranges, categoricals, label classes, time format."""
    from tasks.csv_source import read_csv
    from tasks.schema_infer import infer_schema

    with expected_errors():
        table = read_csv(csv_file, header=not no_header)
        draft = infer_schema(table, label=label, time=time, key=key, name=csv_file.stem)
    text = draft.to_yaml()
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"{output}: cannot write the schema ({exc.strerror})")
    data = {
        "schema": draft.schema,
        "output": str(output) if output else None,
        "guesses": [vars(g) for g in draft.guesses],
        "rows": len(table.rows),
        "rows_skipped": draft.skipped_lines,
    }
    emit(data, as_json, lambda: _print_draft(data, text))


def _print_draft(data: dict[str, Any], text: str) -> None:
    used = data["rows"] - len(data["rows_skipped"])
    console.print(f"Read {data['rows']:,} rows; guessed from the {used:,} with every field:")
    for guess in data["guesses"]:
        console.print(
            f"  {escape(guess['column'])}: {escape(guess['guess'])} ({escape(guess['why'])})"
        )
    if data["rows_skipped"]:
        lines = ", ".join(str(n) for n in data["rows_skipped"][:10])
        console.print(
            f"Left out {len(data['rows_skipped'])} rows with another field count (lines {lines})."
        )
    if data["output"]:
        console.print(
            f"Wrote {data['output']}: check it, edit it, then "
            f"`streamtrain --schema {data['output']} produce --csv ...`."
        )
    else:
        console.print(text, markup=False, highlight=False)


@app.command()
def produce(
    ctx: typer.Context,
    csv_file: Path = typer.Option(..., "--csv", help="The CSV file to write to the topic."),
    topic: str | None = typer.Option(None, "--topic", help="Topic (default: the schema's)."),
    time_from: str | None = typer.Option(
        None,
        "--time-from",
        help="Take event times from this column: the schema's event-time field, read in the "
        "schema's format (the default when the file has that column).",
    ),
    start: str | None = typer.Option(
        None, "--start", help="Event time of the first rows (ISO 8601), with --every."
    ),
    every: str | None = typer.Option(
        None,
        "--every",
        help="Event-time step between consecutive groups of rows (1h, 15m, 90s). With a key "
        "in the schema, a group is a run of rows whose key values do not repeat: a new group "
        "begins when a key value comes again (100 shops per hour, sorted by hour: --every 1h "
        "gives each hour's 100 rows one event time, the next 100 the next hour). Without a "
        "key, every row is a group of its own.",
    ),
    rate: str | None = typer.Option(
        None, "--rate", help="Records per second, e.g. 200/s (default: as fast as possible)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write each CSV row as one JSON record, keyed and stamped with its event time.

    The first row is a header when it names the schema's label field. A row that does not fit
    the schema (a field too few or too many, a value that does not parse) is still written as
    it is, and the window reader sets it aside as malformed; their count and first lines are
    reported.
    """
    from flows.produce import run_produce
    from tasks.csv_source import read_csv_for

    context = _ctx(ctx)
    schema = context.schema
    with expected_errors():
        table = read_csv_for(csv_file, schema)
        timing = _timing(schema, table.names, time_from, start, every)
        summary = run_produce(
            context.settings,
            schema,
            table,
            timing,
            topic=topic,
            rate=_rate(rate),
            progress=not as_json,
        ).to_dict()
    emit(summary, as_json, lambda: _print_produced(summary))


def _rate(text: str | None) -> float | None:
    from tasks.csv_source import parse_rate

    return parse_rate(text) if text is not None else None


def _timing(
    schema: Any, names: list[str], time_from: str | None, start: str | None, every: str | None
) -> Any:
    """Where event times come from; a missing or contradictory choice is one clear error."""
    from tasks.csv_source import FromColumn, Steps, parse_duration
    from tasks.errors import InputError
    from tasks.windowing import parse_instant

    if time_from is not None and (start or every):
        raise InputError("use either --time-from COL or --start ISO --every DURATION, not both")
    if start or every:
        if not (start and every):
            raise InputError("--start and --every go together")
        return Steps(parse_instant(start), parse_duration(every))
    column = time_from or schema.event_time.field
    if column not in names:
        raise InputError(
            f"the CSV has no {column!r} column for event times: pass --time-from COL, or "
            "--start ISO --every DURATION to fill them in"
        )
    if column != schema.event_time.field:
        raise InputError(
            f"--time-from {column!r}: the schema's event time is {schema.event_time.field!r} "
            f"(run `schema infer --time {column}` for a schema that reads it)"
        )
    return FromColumn(column)


def _print_produced(summary: dict[str, Any]) -> None:
    console.print(
        f"Produced {summary['records']:,} records to '{escape(summary['topic'])}' "
        f"(event times {summary['first_event']} .. {summary['last_event']})."
    )
    count = summary["rows_not_fitting"]
    if not count:
        console.print("Every row fits the schema.")
        return
    console.print(
        f"{count:,} row{'s' if count > 1 else ''} did not fit the schema, produced as "
        f"{'they are' if count > 1 else 'it is'}; the window reader sets "
        f"{'them' if count > 1 else 'it'} aside as malformed:"
    )
    shown = summary["rows_not_fitting_first"]
    for item in shown:
        console.print(f"  line {item['line']}: {escape(item['problem'])}")
    if count > len(shown):
        console.print(f"  ... and {count - len(shown):,} more")
