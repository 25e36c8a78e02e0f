"""Section 5, model quality under drift: the pipeline's strategies and peers over six scenarios.

Every strategy sees the same records in the same order with the same seed: a first model on
week 1 plus the Monday after, then four weeks scored test-then-train, window by window. The
pipeline's strategies are `bench.strategy.StrategyUnderTest` objects (today `bench.replica`,
the cycle's public functions in memory); the peers run in `bench.peers`. Work is split into
units (one group of scenarios for the pipeline, one peer on one scenario) that run in worker
processes when `jobs` > 1.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from bench.ceiling import oracle_outcome
from bench.peers import available, river_version, run_peer
from bench.replica import Replica, Retrains, Strategy, Stream, simulated_frame
from bench.strategy import Outcome
from bench.world import START, TRAIN_DAYS
from tasks.settings import Settings
from tasks.simulator import SimulationConfig
from tasks.training_data import data_hash
from tasks.windowing import Window, parse_instant, windows_between

log = logging.getLogger("streamtrain.bench")

SCENARIOS = ("none", "sudden", "gradual", "recurring", "new-stores", "seasonal")
NO_CHANGE = ("none", "seasonal")  # scenarios whose concept never changes
DEFAULT = "default"
STRATEGIES = {
    "a": Strategy("a", "static model trained once", False, False, False),
    "b": Strategy("b", "nightly full retrain only", False, True, False),
    "c": Strategy(
        "c",
        "hourly fine-tune with the gate + nightly retrain, no drift retrains",
        True,
        True,
        False,
    ),
    DEFAULT: Strategy(DEFAULT, "the shipped settings (Settings() defaults)", True, True, True),
}
# Fields that say where things live, not how the model is kept: taken from the base settings.
PLACES = ("home", "schema_path", "kafka_", "mlflow_", "prefect_", "stack_", "dead_letter", "fault_")


def shipped_settings(base: Settings) -> Settings:
    """`base` with every decision setting at its declared default, whatever the environment
    says: what `default` runs is what a user who sets nothing gets."""
    defaults = {
        name: spec.get_default(call_default_factory=True)
        for name, spec in Settings.model_fields.items()
        if not name.startswith(PLACES)
    }
    return base.model_copy(update=defaults)


def settings_for(shipped: Settings, key: str) -> Settings:
    """(c) is the shipped settings with drift retrains switched off; the others as shipped."""
    if key == "c":
        return shipped.model_copy(update={"retrain_on_drift": False})
    return shipped


@dataclass
class Timeline:
    start: datetime
    train_end: datetime
    eval_end: datetime
    drift: datetime

    @classmethod
    def of(cls, days: int, drift_day: int) -> Timeline:
        start = parse_instant(START)
        train_end = start + timedelta(days=TRAIN_DAYS)
        return cls(
            start, train_end, train_end + timedelta(days=days), start + timedelta(days=drift_day)
        )


def scenario_config(line: Timeline, name: str, seed: int) -> SimulationConfig:
    hours = int((line.eval_end - line.start).total_seconds() // 3600)
    return SimulationConfig(
        start=line.start, hours=hours, scenario=name, seed=seed, drift_at=line.drift
    )


def scenario_frame(schema: Any, line: Timeline, name: str, seed: int) -> pd.DataFrame:
    return simulated_frame(schema, scenario_config(line, name, seed))


def ceilings(
    schema: Any, line: Timeline, frames: dict[str, pd.DataFrame], seed: int
) -> dict[str, Outcome]:
    """What the oracle that knows the simulator's rules scores on each scenario's replay."""
    first = Window.containing(line.train_end, schema.window)
    last = Window.containing(line.eval_end, schema.window).start_ms
    return {
        name: oracle_outcome(
            scenario_config(line, name, seed),
            frame,
            first.start_ms,
            last,
            first.end_ms - first.start_ms,
        )
        for name, frame in frames.items()
    }


def run_quality(
    days: int = 28,
    drift_day: int = 14,
    scenarios: list[str] | None = None,
    peers: list[str] | None = None,
    png: str | None = None,
    threads: int | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Replay each scenario under every strategy and peer; the section's tables and plot."""
    from tasks.schema import load_schema
    from tasks.settings import get_settings

    began = time.perf_counter()
    base = get_settings()
    schema = load_schema(base.schema_path)
    scenarios = list(scenarios or SCENARIOS)
    peers = available(list(peers or ["e1", "e2", "lr"]))
    line = Timeline.of(days, drift_day)
    seed = shipped_settings(base).seed
    frames = {name: scenario_frame(schema, line, name, seed) for name in scenarios}
    units = [
        ("pipeline", part)
        for group in _groups(schema, frames, line)
        for part in _split(group, jobs)
    ]
    units += [(peer, [name]) for name in scenarios for peer in peers]
    results = _run_units(units, days, drift_day, threads, jobs, frames)
    best = ceilings(schema, line, frames, seed)
    outcomes: dict[str, dict[str, Outcome]] = {name: {} for name in scenarios}
    fitted = 0
    for by_scenario, count in results:
        fitted += count
        for name, by_key in by_scenario.items():
            outcomes[name].update({k: Outcome.from_dict(v) for k, v in by_key.items()})
    from bench.quality_report import quality_section

    return quality_section(
        outcomes,
        line,
        peers,
        counts={"retrains_fitted": fitted, "jobs": jobs},
        shared_prefix=any(len(g) > 1 for k, g in units if k == "pipeline"),
        seconds=time.perf_counter() - began,
        settings=shipped_settings(base),
        png=Path(png) if png else None,
        ceilings=best,
        river=river_version(),
    )


def _groups(schema: Any, frames: dict[str, pd.DataFrame], line: Timeline) -> list[list[str]]:
    """Scenarios whose records before the drift are identical: the pipeline replays those
    days once per group and forks (the simulator changes nothing before `drift_at`, except
    in `seasonal`, which changes from the start)."""
    drift_ms = Window.containing(line.drift, schema.window).start_ms
    groups: dict[str, list[str]] = {}
    for name, frame in frames.items():
        prefix = Stream(frame).between(0, drift_ms).drop(columns=["_offset"])
        groups.setdefault(data_hash(prefix), []).append(name)
    return list(groups.values())


def _split(group: list[str], jobs: int) -> list[list[str]]:
    """A group cut into up to `jobs` parts, so workers share it (each part replays the shared
    days again: that costs less than one worker doing every scenario)."""
    size = max(1, -(-len(group) // max(1, jobs)))
    return [group[i : i + size] for i in range(0, len(group), size)]


def _run_units(
    units: list[tuple[str, list[str]]],
    days: int,
    drift_day: int,
    threads: int | None,
    jobs: int,
    frames: dict[str, pd.DataFrame],
) -> list[tuple[dict[str, dict[str, Any]], int]]:
    """Every unit's outcomes as plain data, in this process or in `jobs` worker processes
    (spawned, not forked: TensorFlow does not survive a fork)."""
    if jobs <= 1:
        _set_threads(threads)
        return [run_unit(kind, group, days, drift_day, frames) for kind, group in units]
    # The pipeline units are the longest: start them first.
    order = sorted(range(len(units)), key=lambda i: units[i][0] != "pipeline")
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=get_context("spawn"),
        initializer=_set_threads,
        initargs=(threads or 1,),
    ) as pool:
        futures = {pool.submit(run_unit, *units[i], days, drift_day): i for i in order}
        results = {}
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            results[i] = future.result()
            log.info("section 5: %s on %s done (%d of %d)", *units[i], done, len(units))
        return [results[i] for i in range(len(units))]


def _set_threads(threads: int | None) -> None:
    """TensorFlow's thread pools for this process; its retracing notices are not for people."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_unit(
    kind: str,
    group: list[str],
    days: int,
    drift_day: int,
    frames: dict[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, dict[str, Any]], int]:
    """One unit of work: the pipeline's strategies on a group of scenarios, or one peer on
    one scenario. Returns {scenario: {strategy: outcome as plain data}} and retrains fitted."""
    from tasks.schema import load_schema
    from tasks.settings import get_settings

    base = get_settings()
    shipped = shipped_settings(base)
    schema = load_schema(base.schema_path)
    line = Timeline.of(days, drift_day)
    given = frames or {}
    streams = {
        name: given[name] if name in given else scenario_frame(schema, line, name, shipped.seed)
        for name in group
    }
    if kind != "pipeline":
        (name,) = group
        frame = streams[name]
        first = Window.containing(line.train_end, schema.window).start_ms
        last = Window.containing(line.eval_end, schema.window).start_ms
        outcome = run_peer(kind, schema, frame, first, last, shipped.seed)
        return {name: {kind: outcome.to_dict()}}, 0
    retrains = Retrains()
    replayed = _replay_group(
        shipped, schema, {n: Stream(f) for n, f in streams.items()}, line, retrains
    )
    plain = {n: {k: o.to_dict() for k, o in by.items()} for n, by in replayed.items()}
    return plain, retrains.fitted


def _replay_group(
    shipped: Settings,
    schema: Any,
    streams: dict[str, Stream],
    line: Timeline,
    retrains: Retrains,
) -> dict[str, dict[str, Outcome]]:
    """Strategies a, b, c and default on scenarios that share the days before the drift:
    those days are replayed once (on the first stream) and the state forked per scenario."""
    drift_ms = Window.containing(line.drift, schema.window).start_ms
    windows = windows_between(line.train_end, line.eval_end, schema.window)
    before = [w for w in windows if w.start_ms < drift_ms]
    after = [w for w in windows if w.start_ms >= drift_ms]
    first = next(iter(streams.values()))
    base = _start(shipped, schema, first, retrains, line)
    _run(base, before, 0)
    out = {}
    for name, stream in streams.items():
        group = {
            k: (r.fork(r.strategy, stream) if r is not None else None) for k, r in base.items()
        }
        _run(group, after, len(before))
        ours = group[DEFAULT]
        assert ours is not None
        if group["c"] is None:  # never parted: (c) did what default did
            group["c"] = _as_c(ours, shipped)
        out[name] = {k: r.outcome for k, r in group.items() if r is not None}
    return out


def _as_c(replica: Replica, shipped: Settings) -> Replica:
    twin = replica.fork(STRATEGIES["c"])
    twin.settings = settings_for(shipped, "c")
    return twin


def _start(
    shipped: Settings, schema: Any, stream: Stream, retrains: Retrains, line: Timeline
) -> dict[str, Replica | None]:
    first = Replica(shipped, schema, STRATEGIES[DEFAULT], stream, retrains)
    first.retrain(line.train_end)
    first.outcome = Outcome()
    return {
        "a": first.fork(STRATEGIES["a"]),
        "b": first.fork(STRATEGIES["b"]),
        "c": None,  # follows default until default first retrains on drift
        DEFAULT: first,
    }


def _run(group: dict[str, Replica | None], windows: list[Window], offset: int) -> None:
    """Window by window, as `run_backfill` orders it: nightly retrain, then the window."""
    for index, window in enumerate(windows, start=offset):
        if index > 0 and window.start.hour == 0:
            for replica in group.values():
                if replica is not None:
                    replica.nightly(window.start)
        for key in ("a", "b"):
            replica = group[key]
            assert replica is not None
            replica.step(window)
        ours = group[DEFAULT]
        assert ours is not None
        c = group["c"]
        if c is not None:
            c.step(window)
            ours.step(window)
            continue
        twin = _as_c(ours, ours.settings)
        triggered = ours.outcome.drift_retrains
        ours.step(window)
        if ours.outcome.drift_retrains > triggered:  # the strategies part here
            twin.step(window)
            group["c"] = twin
