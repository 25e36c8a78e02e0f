"""`make demo`: four simulated weeks with a sudden drift, trained and replayed in Prefect.

Brings the local stack's servers up first (Kafka, MLflow, Prefect, the deployments), simulates
four weeks of the drone-delivery world with a sudden change of the busy rules in week 3, trains
the first model on week 1 as a `retrain` flow run and replays the rest hour by hour as a
`backfill` flow run on the stack's Prefect server (its page shows the progress, the per-day
table, the accuracy timeline and the drift alarm), prints the table per day, then starts the
worker, the live simulator and the window clock: each closed window of the live stream gets a
`window-finetune` run. Re-running it reuses what is already there.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flows.cli import wide_console
from flows.runtime import configure_environment, cycle_context
from tasks.settings import Settings, current_settings
from tasks.windowing import format_instant, parse_instant

DEMO_START = "2026-01-05T00:00Z"  # a Monday
DEMO_DAYS = 28
TRAIN_DAYS = 8  # week 1 plus a day: the holdout (the last day) is a weekday seen in training
DEMO_SCENARIO = "sudden"

console = wide_console()


def main(days: int = DEMO_DAYS) -> None:
    """The demo over `days` simulated days (the first TRAIN_DAYS train the first model)."""
    if days <= TRAIN_DAYS:
        console.print(f"[bold red]error:[/] the demo needs more than {TRAIN_DAYS} days")
        raise SystemExit(2)
    settings = current_settings()
    configure_environment(settings)
    from flows.cli import print_daily_summary
    from tasks import run_logging
    from tasks.report import report_rows

    bring_up(settings, live=False)
    ctx = cycle_context(as_tasks=False, settings=settings)
    simulate_unless_there(settings, days)
    done = report_rows(run_logging.cycle_runs(settings, ctx.model_name))
    resume = replay_resume_point(done, days)
    if not done:
        with on_stack_prefect(settings):
            train_and_replay(days)
    elif resume is not None:
        console.print(f"The replay stopped before {resume}; going on from there.")
        with on_stack_prefect(settings):
            replay(resume, days)
    else:
        console.print("The demo already ran; showing its results (delete mlflow/ to start over).")
    done = report_rows(run_logging.cycle_runs(settings, ctx.model_name))
    print_daily_summary(done, change=drift_instant(days))
    bring_up(settings, live=True)
    say_what_to_open(settings, ctx.model_name)


def simulate_unless_there(settings: Settings, days: int) -> None:
    """Simulate the demo's days into the topic, unless it already holds them."""
    from flows.simulate import run_simulation
    from tasks.schema import load_schema
    from tasks.stream import topic_size

    schema = load_schema(settings.schema_path)
    if topic_size(settings, schema.topic) > 0:
        console.print(f"Topic '{schema.topic}' already holds the simulated weeks; reusing them.")
        return
    summary = run_simulation(
        settings,
        schema,
        start=DEMO_START,
        hours=days * 24,
        scenario=DEMO_SCENARIO,
        seed=settings.seed,
        progress=True,
    )
    drift = drift_instant(days)
    note = f" ({DEMO_SCENARIO} drift at {drift})" if drift else ""
    console.print(f"Simulated {summary['records']:,} observations{note} into '{summary['topic']}'.")


def drift_instant(days: int) -> str | None:
    """When the simulated world changes (the simulator's default: two weeks in), if the demo
    lasts that long."""
    drift = parse_instant(DEMO_START) + timedelta(weeks=2)
    return format_instant(drift) if days > 14 else None


def train_and_replay(days: int) -> None:
    """The first model as a `retrain` flow run, then the replay as a `backfill` flow run."""
    from flows.retrain import retrain

    replay_from = parse_instant(DEMO_START) + timedelta(days=TRAIN_DAYS)
    console.print(f"Training the first model on the first {TRAIN_DAYS} days ...")
    first = retrain(until=format_instant(replay_from), trigger="demo:initial")
    console.print(
        f"  version {first['challenger_version']}: {first['decision']} "
        f"({'; '.join(first['reasons'])})"
    )
    replay(format_instant(replay_from), days)


def replay(since: str, days: int) -> None:
    """The replay from `since` to the demo's end as a `backfill` flow run."""
    from flows.backfill import backfill

    end = parse_instant(DEMO_START) + timedelta(days=days)
    console.print("Replaying the rest hour by hour, with nightly retrains ...")
    backfill(
        start=since,
        end=format_instant(end),
        retrain_every_hours=24,
        show_progress=True,
        drift_at=drift_instant(days),
    )


def replay_resume_point(rows: list[dict[str, Any]], days: int) -> str | None:
    """Where an interrupted replay goes on (the end of its last fine-tuned window); None when
    nothing was trained yet or the replay reached the demo's last day."""
    tuned = [str(r["window_end"]) for r in rows if r["kind"] == "finetune" and r["window_end"]]
    if not rows:
        return None
    if not tuned:
        return format_instant(parse_instant(DEMO_START) + timedelta(days=TRAIN_DAYS))
    newest = max(parse_instant(t) for t in tuned)
    return None if newest >= last_observed_hour_end(days) else format_instant(newest)


def last_observed_hour_end(days: int) -> datetime:
    """The end of the demo's last hour with records (the simulated last day's daylight)."""
    from tasks.simulator import SimulationConfig

    start = parse_instant(DEMO_START)
    daylight = SimulationConfig(start=start).daylight
    return start + timedelta(days=days - 1, hours=max(daylight) + 1)


@contextmanager
def on_stack_prefect(settings: Settings) -> Iterator[None]:
    """Flow runs of this process are recorded on the stack's Prefect server.

    The terminal keeps each flow run's start (with its link) and end, not a line per task.
    """
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.stack import prefect_api_url

    logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url(settings)}):
        yield


def bring_up(settings: Settings, *, live: bool) -> None:
    """The stack's servers and deployments; with `live` also the worker, the live simulator
    and the window clock (a fine-tune run per closed window), which must wait for the replay."""
    from tasks import stack
    from tasks.broker import BrokerError
    from tasks.services import ServiceError

    if live:
        console.print("\nStarting the worker, the live simulator and the window clock ...")
    else:
        console.print("Starting the local stack (Kafka, MLflow and Prefect servers) ...")
    try:
        stack.up(
            settings,
            simulator=live,
            window_clock=live,
            worker=live,
            say=lambda text: console.print(f"  [dim]{text}[/]"),
        )
    except (ServiceError, BrokerError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(1) from None


def say_what_to_open(settings: Settings, model: str) -> None:
    from tasks import stack

    console.print(f"\n  MLflow UI:  {stack.mlflow_url(settings)}  (registry: Models > {model})")
    console.print(
        f"  Prefect UI: {stack.prefect_ui_url(settings)}/runs  (the replay 'backfill' with its "
        "artifacts; a 'finetune' run per closed window of the live stream)"
    )
    console.print("  per-window table: .venv/bin/streamtrain report")
    console.print("  what runs:        .venv/bin/streamtrain status")
    console.print("  stop it all:      .venv/bin/streamtrain down   (or make down)")


def parse_days(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__)
    parser.add_argument(
        "--days", type=int, default=DEMO_DAYS, help="Simulated days (default: four weeks)."
    )
    return int(parser.parse_args(argv).days)


def run(days: int) -> None:
    """The demo, stopped by Ctrl-C with one line that says what is still running."""
    try:
        main(days)
    except KeyboardInterrupt:
        console.print(f"\n{interrupted_line(running_parts())}", soft_wrap=True)
        raise SystemExit(130) from None


def running_parts() -> list[str]:
    """The stack's parts running in the background (they outlive the demo's process)."""
    from tasks import stack

    try:
        return [p.name for p in stack.status(current_settings()) if p.managed and p.running]
    except Exception:  # only for a last line on the way out: never a second traceback
        return []


def interrupted_line(running: list[str]) -> str:
    """What Ctrl-C leaves behind, and how to go on or stop it."""
    if not running:
        return (
            "Stopped (Ctrl-C). Nothing is left running; `make demo` starts over where it stopped."
        )
    return (
        f"Stopped (Ctrl-C). Still running in the background: {', '.join(running)}. "
        "`make demo` goes on where it stopped; `make down` (streamtrain down) stops them."
    )


if __name__ == "__main__":
    run(parse_days())
