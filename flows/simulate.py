"""Flow `simulate`: produce the drone-delivery world to Kafka, as fast as possible or paced."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from rich.progress import Progress

from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings, current_settings
from tasks.simulator import (
    PacingClock,
    SimRecord,
    SimulationConfig,
    expected_counts,
    generate,
)
from tasks.stream import ensure_topic, latest_timestamp, produce
from tasks.windowing import Window, format_instant, from_ms, parse_instant


def paced(
    records: Iterable[SimRecord],
    start: datetime,
    speedup: float,
    *,
    skip_empty_hours: bool = False,
) -> Iterator[SimRecord]:
    """Release each record when its event time comes, with the clock sped up by `speedup`
    (and, with `skip_empty_hours`, no waiting through hours without records)."""
    wall_start = time.monotonic()
    clock = PacingClock(int(start.timestamp() * 1000), skip_empty_hours=skip_empty_hours)
    for record in records:
        due = wall_start + clock.offset_ms(record.timestamp_ms) / 1000 / speedup
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield record


def live_start(settings: Settings, schema: StreamSchema, topic: str | None, default: str) -> str:
    """The hour after the topic's newest record, so a live run continues the stream's time."""
    newest = latest_timestamp(settings, topic or schema.topic)
    if newest is None:
        return default
    return format_instant(Window.containing(newest, timedelta(hours=1)).end)


def run_simulation(
    settings: Settings,
    schema: StreamSchema,
    *,
    start: str,
    hours: int,
    scenario: str,
    seed: int,
    stores: int = 100,
    daylight_hours: int = 8,
    drift_at: str | None = None,
    topic: str | None = None,
    realtime: float | None = None,
    skip_nights: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the scenario and write it to the topic; returns a summary for people and scripts.

    `skip_nights` (the live simulator's): paced, the hours without records pass at once, so a
    closed window, and its fine-tune, comes every stream hour of daylight.
    """
    begin = parse_instant(start)
    config = SimulationConfig(
        start=begin,
        hours=hours,
        scenario=scenario,
        seed=seed,
        stores=stores,
        daylight_hours=daylight_hours,
        drift_at=parse_instant(drift_at) if drift_at else None,
    )
    topic = topic or schema.topic
    ensure_topic(settings, topic)
    total = expected_counts(config)
    first: list[int] = []
    last: list[int] = []

    def tracked(records: Iterable[SimRecord]) -> Iterator[SimRecord]:
        for record in records:
            if not first:
                first.append(record.timestamp_ms)
            last[:] = [record.timestamp_ms]
            yield record

    stream: Iterable[SimRecord] = tracked(generate(config))
    if realtime:
        stream = paced(stream, begin, realtime, skip_empty_hours=skip_nights)
    if progress:
        with Progress(transient=True) as bar:
            job = bar.add_task(f"Producing to {topic}", total=total)
            sent = produce(settings, topic, stream, on_sent=lambda n: bar.advance(job, n))
    else:
        sent = produce(settings, topic, stream)
    return {
        "topic": topic,
        "records": sent,
        "scenario": scenario,
        "seed": seed,
        "start": format_instant(begin),
        "hours": hours,
        "first_event": format_instant(from_ms(first[0])) if first else None,
        "last_event": format_instant(from_ms(last[0])) if last else None,
    }


@flow(name="simulate", log_prints=True)
def simulate(
    start: str = "2026-01-05T00:00Z",
    hours: int = 168,
    scenario: str = "none",
    seed: int = 7,
    realtime: float | None = None,
    live: bool = False,
) -> dict[str, Any]:
    """Produce simulated observations (`simulate-live` continues the stream in real time).

    Args:
        start: First simulated hour (ISO 8601); with `live`, only when the topic is empty.
        hours: Hours of the world to simulate.
        scenario: none, sudden, gradual, recurring, new-stores, corrupt or seasonal.
        seed: Random seed: the same seed gives the same records.
        realtime: Pace records in real time, sped up by this factor; empty: as fast as possible.
        live: Continue the topic from the hour after its newest record.
    """
    settings = current_settings()
    schema = load_schema(settings.schema_path)
    if live:
        start = live_start(settings, schema, None, default=start)
        realtime = realtime or settings.live_speedup
    return run_simulation(
        settings,
        schema,
        start=start,
        hours=hours,
        scenario=scenario,
        seed=seed,
        realtime=realtime,
        skip_nights=live,
    )
