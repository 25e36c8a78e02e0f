"""`make demo`: four simulated weeks with a sudden drift, trained and replayed hour by hour.

Starts the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS names a cluster), simulates four
weeks of the drone-delivery world with a sudden change of the busy rules in week 3, trains the
first model on week 1, replays weeks 2-4 hour by hour with nightly retrains, prints a table
per day, and leaves the local stack running (`streamtrain up`): the MLflow and Prefect UIs on
the demo's results, a worker on the schedules, and the simulator continuing the stream live.
Re-running it reuses what is already there.
"""

from __future__ import annotations

from datetime import timedelta

from rich.progress import Progress

from flows.cli import wide_console
from flows.runtime import configure_environment, cycle_context, log_accuracy_timeline
from tasks.settings import Settings, get_settings
from tasks.windowing import format_instant, parse_instant, windows_between

DEMO_START = "2026-01-05T00:00Z"  # a Monday
DEMO_WEEKS = 4
DEMO_SCENARIO = "sudden"

console = wide_console()


def main() -> None:
    settings = get_settings()
    configure_environment(settings)
    from flows.backfill import run_backfill
    from flows.cli import print_daily_summary
    from flows.simulate import run_simulation
    from tasks import registry
    from tasks.broker import start_broker
    from tasks.cycle import retrain_until
    from tasks.report import report_rows
    from tasks.stream import topic_size

    status = start_broker(settings)
    console.print(
        f"Kafka: {status.bootstrap}" + (f" (log {status.log_file})" if status.embedded else "")
    )
    ctx = cycle_context(as_tasks=False, settings=settings)
    start = parse_instant(DEMO_START)
    day = timedelta(days=1)
    week = 7 * day
    end = start + DEMO_WEEKS * week
    hours = DEMO_WEEKS * 7 * 24
    if topic_size(settings, ctx.schema.topic) == 0:
        summary = run_simulation(
            settings,
            ctx.schema,
            start=DEMO_START,
            hours=hours,
            scenario=DEMO_SCENARIO,
            seed=settings.seed,
            progress=True,
        )
        console.print(
            f"Simulated {summary['records']:,} observations ({DEMO_SCENARIO} drift at "
            f"{format_instant(start + 2 * week)}) into '{summary['topic']}'."
        )
    else:
        console.print(
            f"Topic '{ctx.schema.topic}' already holds the simulated weeks; reusing them."
        )

    done = report_rows(registry.cycle_runs(settings, ctx.model_name))
    if not done:
        # Week 1 plus a day: the holdout (the last day) is then a weekday seen in training.
        console.print("Training the first model on week 1 (and the Monday after) ...")
        first = retrain_until(ctx, start + week + day, trigger="demo:initial")
        console.print(
            f"  version {first.challenger_version}: {first.decision} ({'; '.join(first.reasons)})"
        )
        total = len(windows_between(start + week + day, end, ctx.schema.window))
        with Progress(transient=True) as bar:
            job = bar.add_task("Replaying weeks 2-4 hour by hour", total=total)
            run_backfill(
                ctx,
                start + week + day,
                end,
                retrain_every_hours=24,
                on_window=lambda r: bar.advance(job) if r.kind == "finetune" else None,
            )
        done = report_rows(registry.cycle_runs(settings, ctx.model_name))
    else:
        console.print("The demo already ran; showing its results (delete mlflow/ to start over).")
    print_daily_summary(done)
    log_accuracy_timeline(ctx, start, end)
    leave_stack_up(settings, ctx.model_name)


def leave_stack_up(settings: Settings, model: str) -> None:
    """End with the always-on stack running on the demo's store, and say what to open."""
    from tasks import stack
    from tasks.services import ServiceError

    console.print(
        "\nStarting the always-on stack (MLflow and Prefect servers, a worker, the live "
        "simulator) ..."
    )
    try:
        stack.up(settings, say=lambda text: console.print(f"  [dim]{text}[/]"))
    except ServiceError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(1) from None
    console.print(f"\n  MLflow UI:  {stack.mlflow_url(settings)}  (registry: Models > {model})")
    console.print(f"  Prefect UI: {stack.prefect_ui_url(settings)}  (deployments, runs, artifacts)")
    console.print("  per-window table: .venv/bin/streamtrain report")
    console.print("  what runs:        .venv/bin/streamtrain status")
    console.print("  stop it all:      .venv/bin/streamtrain down   (or make down)")


if __name__ == "__main__":
    main()
