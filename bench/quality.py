"""Section 5, model quality under drift: five strategies over the simulator's scenarios.

Every strategy sees the same records in the same order with the same seed: a first model on
week 1 plus the Monday after, then four weeks scored test-then-train, window by window. The
pipeline's strategies run through `bench.replica` (the cycle's own functions, in memory);
River's learners through `bench.peers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.peers import PEERS, river_version, run_peer
from bench.replica import Outcome, Replica, Retrains, Strategy, Stream, simulated_frame
from bench.world import START, TRAIN_DAYS
from tasks.simulator import SimulationConfig
from tasks.training_data import data_hash
from tasks.windowing import Window, parse_instant, windows_between

SCENARIOS = ("none", "sudden", "gradual", "recurring", "new-stores")
STRATEGIES = {
    "a": Strategy("a", "static model trained once", False, False, False),
    "b": Strategy("b", "nightly full retrain only", False, True, False),
    "c": Strategy(
        "c", "hourly fine-tune with the gate + nightly retrain (default)", True, True, False
    ),
    "d": Strategy("d", "(c) plus drift-triggered retrains", True, True, True),
}
RECOVERY_POINTS = 0.02  # "back within 2 points of the pre-drift level"


@dataclass
class Timeline:
    start: Any
    train_end: Any
    eval_end: Any
    drift: Any

    @classmethod
    def of(cls, days: int, drift_day: int) -> Timeline:
        start = parse_instant(START)
        train_end = start + timedelta(days=TRAIN_DAYS)
        return cls(
            start, train_end, train_end + timedelta(days=days), start + timedelta(days=drift_day)
        )


def run_quality(
    days: int = 28,
    drift_day: int = 14,
    scenarios: list[str] | None = None,
    peers: list[str] | None = None,
    png: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Replay each scenario under every strategy; the section's tables, findings and plot."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from tasks.schema import load_schema
    from tasks.settings import get_settings

    began = time.perf_counter()
    settings = get_settings()
    schema = load_schema(settings.schema_path)
    scenarios = list(scenarios or SCENARIOS)
    peers = [p for p in (peers or list(PEERS)) if river_version() is not None]
    line = Timeline.of(days, drift_day)
    frames = {
        name: simulated_frame(
            schema,
            SimulationConfig(
                start=line.start,
                hours=int((line.eval_end - line.start).total_seconds() // 3600),
                scenario=name,
                seed=settings.seed,
                drift_at=line.drift,
            ),
        )
        for name in scenarios
    }
    outcomes, counts, shared = _replay_all(settings, schema, frames, line)
    for name, frame in frames.items():
        for key in peers:
            outcomes[name][key] = run_peer(
                key,
                schema,
                frame,
                Window.containing(line.train_end, schema.window).start_ms,
                Window.containing(line.eval_end, schema.window).start_ms,
                settings.seed,
            )
    from bench.quality_report import quality_section

    return quality_section(
        outcomes,
        line,
        peers,
        counts=counts,
        shared_prefix=shared,
        seconds=time.perf_counter() - began,
        settings=settings,
        png=Path(png) if png else None,
        river=river_version(),
    )


def _replay_all(
    settings: Any, schema: Any, frames: dict[str, Any], line: Timeline
) -> tuple[dict[str, dict[str, Outcome]], dict[str, int], bool]:
    """Strategies (a)-(d) on every scenario; the days before the drift are replayed once when
    all scenarios agree on them (they do: the simulator changes nothing before `drift_at`)."""
    drift_ms = Window.containing(line.drift, schema.window).start_ms
    firsts = {
        data_hash(Stream(f).between(0, drift_ms).drop(columns=["_offset"])) for f in frames.values()
    }
    shared = len(firsts) == 1
    windows = windows_between(line.train_end, line.eval_end, schema.window)
    before = [w for w in windows if w.start_ms < drift_ms]
    after = [w for w in windows if w.start_ms >= drift_ms]
    retrains = Retrains()
    outcomes: dict[str, dict[str, Outcome]] = {}
    if shared:
        first = Stream(next(iter(frames.values())))
        base = _start(settings, schema, first, retrains, line)
        _run(base, first, retrains, before, 0)
    for name, frame in frames.items():
        stream = Stream(frame)
        if shared:
            group = _fork(base)
            _run(group, stream, retrains, after, len(before))
        else:
            group = _start(settings, schema, stream, retrains, line)
            _run(group, stream, retrains, windows, 0)
        d = group["d"]
        if group["c"] is None and d is not None:  # never parted: (c) did what (d) did
            group["c"] = d.fork(STRATEGIES["c"])
        outcomes[name] = {k: r.outcome for k, r in group.items() if r is not None}
    return outcomes, {"retrains_fitted": retrains.fitted}, shared


def _start(
    settings: Any, schema: Any, stream: Stream, retrains: Retrains, line: Timeline
) -> dict[str, Replica | None]:
    first = Replica(settings, schema, STRATEGIES["d"])
    first.retrain(stream, retrains, line.train_end)
    first.outcome = Outcome()
    return {
        "a": first.fork(STRATEGIES["a"]),
        "b": first.fork(STRATEGIES["b"]),
        "c": None,  # follows (d) until (d) first retrains on drift
        "d": first,
    }


def _fork(group: dict[str, Replica | None]) -> dict[str, Replica | None]:
    return {k: (r.fork(r.strategy) if r is not None else None) for k, r in group.items()}


def _run(
    group: dict[str, Replica | None],
    stream: Stream,
    retrains: Retrains,
    windows: list[Window],
    offset: int,
) -> None:
    """Window by window, as `run_backfill` orders it: nightly retrain, then the window."""
    for index, window in enumerate(windows, start=offset):
        if index > 0 and window.start.hour == 0:
            for key in ("b", "c", "d"):
                replica = group[key]
                if replica is not None:
                    replica.retrain(stream, retrains, window.start)
        for key in ("a", "b"):
            replica = group[key]
            assert replica is not None
            replica.serve(stream, retrains, window)
        d = group["d"]
        assert d is not None
        if group["c"] is not None:
            group["c"].serve(stream, retrains, window)
            d.serve(stream, retrains, window)
            continue
        twin = d.fork(STRATEGIES["c"])
        triggered = d.outcome.drift_retrains
        d.serve(stream, retrains, window)
        if d.outcome.drift_retrains > triggered:  # the strategies part here
            twin.serve(stream, retrains, window)
            group["c"] = twin
