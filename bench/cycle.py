"""Section 1, the hourly cycle: a warm `finetune` cycle by stage, a cold one, the bare compute.

Warm: `finetune_window` called window after window in one process with the reader and recent
rows kept (as a backfill does). Cold: `streamtrain finetune --hour H --json` from a shell, a new
process per window (imports, Prefect's temporary server, model load). Scheduled: one
`hourly-finetune` deployment run per window on the stack `streamtrain up` starts. Bare: the
same model fit and evaluated on the same rows with nothing else, the floor the cycle is
compared with.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report import fig
from bench.world import TRAIN_DAYS, World, run_child, start_instant
from tasks.windowing import Window, format_instant, windows_between

STAGES = (
    "read window",
    "validate",
    "load champion",
    "prequential score",
    "drift",
    "fine-tune",
    "holdout eval",
    "log and register",
    "gate",
)


def daylight_windows(world_topic_days: int, count: int, skip: int = 0) -> list[Window]:
    """`count` windows with records (daylight hours) after the first model's training range."""
    first = start_instant() + timedelta(days=TRAIN_DAYS)
    last = start_instant() + timedelta(days=world_topic_days)
    hours = range(9, 9 + 8)
    found = [w for w in windows_between(first, last, timedelta(hours=1)) if w.start.hour in hours]
    return found[skip : skip + count]


def _quantiles(values: list[float], unit: str = "s") -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    if not arr.size:
        return {"median": fig(None, unit), "p95": fig(None, unit)}
    return {
        "median": fig(float(np.median(arr)), unit),
        "p95": fig(float(np.percentile(arr, 95)), unit),
    }


def run_hourly_cycle(
    world: World, topic: str, days: int, warm: int, cold: int, scheduled: int = 0
) -> dict[str, Any]:
    """Warm cycles by stage, cold cycles from the shell, scheduled runs on the stack, bare
    fit+evaluate; their ratios."""
    from flows.runtime import cycle_context, quiet_libraries
    from tasks.cycle import finetune_window, retrain_until
    from tasks.stream import window_reader
    from tasks.training_data import RecentHistory

    quiet_libraries()
    settings = world.settings("cycle")
    ctx = cycle_context(as_tasks=False, settings=settings)
    ctx.schema = world.schema(topic)
    retrain_until(ctx, start_instant() + timedelta(days=TRAIN_DAYS), trigger="bench")
    windows = daylight_windows(days, warm + cold)
    keep = max(settings.replay_hours, settings.long_holdout_hours) + 1
    ctx.history = RecentHistory.empty(keep)
    totals: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, "other")}
    bare_fast: list[float] = []
    bare_keras: list[float] = []
    with window_reader(settings) as reader:
        ctx.reader = reader
        for window in windows[:warm]:
            champion = _champion(ctx)
            started = time.perf_counter()
            result = finetune_window(ctx, window, trigger="bench")
            totals.append(time.perf_counter() - started)
            for stage in STAGES:
                stages[stage].append(result.timings.get(stage, 0.0))
            stages["other"].append(totals[-1] - sum(result.timings.values()))
            # Plain Keras retraces per model (seconds each): a few windows show the point.
            fast, plain = _bare_compute(ctx, window, champion, keras_too=len(bare_keras) < 5)
            bare_fast.append(fast)
            if plain is not None:
                bare_keras.append(plain)
        ctx.reader = None
    cold_runs = [_cold_cycle(world, topic, settings, w) for w in windows[warm : warm + cold]]
    summary = _summary(totals, stages, bare_fast, bare_keras, cold_runs, warm, settings)
    _add_scheduled(summary, world, topic, days, scheduled, bare_fast)
    return summary


def _add_scheduled(
    summary: dict[str, Any],
    world: World,
    topic: str,
    days: int,
    count: int,
    bare_fast: list[float],
) -> None:
    """Deployment runs on the stack `streamtrain up` starts, one per window (bench/scheduled.py)."""
    from bench.scheduled import run_scheduled

    figures, notes = summary["figures"], summary["notes"]
    if not count:
        figures["scheduled run on the stack, median"] = fig(None, "s")
        notes.append("No scheduled runs in this plan (the quick plan skips the stack).")
        return
    until = format_instant(start_instant() + timedelta(days=TRAIN_DAYS))
    run = run_scheduled(world, topic, until, daylight_windows(days, count))
    ok = [r["seconds"] for r in run["runs"] if r["state"] == "Completed"]
    q, bare = _quantiles(ok), _quantiles(bare_fast)
    figures["scheduled run on the stack, median"] = q["median"]
    figures["scheduled run on the stack, p95"] = q["p95"]
    ratio = q["median"]["value"] / bare["median"]["value"] if ok and bare_fast else None
    figures["scheduled run / bare compute"] = fig(ratio, "x", 1)
    figures["scheduled windows measured"] = fig(len(ok), "windows")
    figures["stack start-up (streamtrain up)"] = fig(run.get("stack_start_s"), "s", 1)
    notes.append(
        f"Scheduled: {len(ok)} windows, each a new `hourly-finetune` flow run created through "
        "the Prefect API of the stack that `streamtrain up --no-simulator` started (MLflow and "
        "Prefect servers, deployments, worker, trainer) against this benchmark's broker, timed "
        "from its creation to its final state (polled every 0.2 s): the wait for the trainer's "
        "poll, the claim, the flow and its task runs, MLflow through its server. The trainer "
        "runs them in one warm process; the first model came from a `nightly-retrain` run "
        "(not timed)."
    )
    if len(ok) < len(run["runs"]) or not run.get("ok"):
        notes.append(f"Scheduled runs failed: {run.get('error', '')} {run['runs'][-1:]}")
    summary["raw"]["scheduled"] = run


def _champion(ctx: Any) -> Any:
    from tasks.cycle import champion_model

    return champion_model(ctx)[1]


def _train_and_holdout(ctx: Any, window: Window) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The rows the cycle trained and evaluated on for `window` (same functions, same seed)."""
    from tasks.stream import read_window
    from tasks.training_data import holdout_mask, replay_sample
    from tasks.windowing import to_ms

    s, schema = ctx.settings, ctx.schema
    rows = read_window(s, schema, window, send_dead_letters=False).frame
    hours = max(s.replay_hours, s.long_holdout_hours)
    span = Window(window.start - hours * window.length, window.start)
    history = read_window(s, schema, span, send_dead_letters=False).frame
    seed = s.seed + to_ms(window.start) // 3_600_000
    held = holdout_mask(schema, rows, s.seed)
    hist_held = holdout_mask(schema, history, s.seed)
    pool = history[~hist_held]
    pool = pool[pool["_event_ms"] >= to_ms(window.start - timedelta(hours=s.replay_hours))]
    train_rows = pd.concat(
        [rows[~held], replay_sample(pool, s.replay_samples, s.seed, seed)], ignore_index=True
    )
    since = to_ms(window.end - timedelta(hours=s.long_holdout_hours))
    holdout = pd.concat(
        [history[hist_held & (history["_event_ms"] >= since).to_numpy()], rows[held]],
        ignore_index=True,
    )
    return train_rows, holdout, seed


def _bare_compute(
    ctx: Any, window: Window, champion: Any, keras_too: bool
) -> tuple[float, float | None]:
    """Seconds to fit and evaluate the champion's copy on the cycle's rows: with the project's
    trainer (the floor), and with plain Keras `fit` + `evaluate` (what one would write first)."""
    import keras
    import tensorflow as tf

    from tasks.evaluation import binary_metrics
    from tasks.model import fine_tune_copy, predict_proba, to_inputs, to_targets, train

    s, schema = ctx.settings, ctx.schema
    train_rows, holdout, seed = _train_and_holdout(ctx, window)
    copy = fine_tune_copy(champion)
    started = time.perf_counter()
    train(
        copy,
        schema,
        train_rows,
        epochs=s.finetune_epochs,
        learning_rate=s.finetune_learning_rate,
        batch_size=s.batch_size,
        seed=seed,
    )
    binary_metrics(to_targets(schema, holdout), predict_proba(copy, schema, holdout))
    fast = time.perf_counter() - started
    if not keras_too:
        return fast, None
    plain = fine_tune_copy(champion)
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    plain.optimizer.learning_rate.assign(s.finetune_learning_rate)
    x = to_inputs(schema, train_rows)
    y = tf.constant(to_targets(schema, train_rows))
    plain.fit(x, y, epochs=s.finetune_epochs, batch_size=s.batch_size, verbose=0)
    plain.evaluate(to_inputs(schema, holdout), tf.constant(to_targets(schema, holdout)), verbose=0)
    return fast, time.perf_counter() - started


def _cold_cycle(world: World, topic: str, settings: Any, window: Window) -> dict[str, Any]:
    env = world.env(settings, topic)
    streamtrain = str(Path(sys.executable).parent / "streamtrain")  # the installed command
    args = [streamtrain, "finetune", "--hour", format_instant(window.start), "--json"]
    run = run_child(args, env, timeout_s=600)
    return {
        "seconds": run.seconds,
        "ok": run.returncode == 0,
        "timings": run.answer.get("timings", {}),
        "decision": run.answer.get("decision"),
        "error": "" if run.returncode == 0 else run.stderr_tail[-400:],
    }


def _summary(
    totals: list[float],
    stages: dict[str, list[float]],
    bare_fast: list[float],
    bare_keras: list[float],
    cold_runs: list[dict[str, Any]],
    warm: int,
    settings: Any,
) -> dict[str, Any]:
    ok_cold = [r for r in cold_runs if r["ok"]]
    cold_total = [r["seconds"] for r in ok_cold]
    cold_stages = {s: [r["timings"].get(s, 0.0) for r in ok_cold] for s in STAGES}
    warm_q, cold_q = _quantiles(totals), _quantiles(cold_total)
    fast_q, keras_q = _quantiles(bare_fast), _quantiles(bare_keras)

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
        return a["value"] / b["value"] if a["value"] and b["value"] else None

    rows = []
    for stage in (*STAGES, "other"):
        w = _quantiles(stages[stage])
        c = _quantiles(cold_stages.get(stage, [])) if stage != "other" else None
        rows.append(
            [stage, w["median"], w["p95"], c["median"] if c else "-", c["p95"] if c else "-"]
        )
    rows.append(["whole cycle", warm_q["median"], warm_q["p95"], cold_q["median"], cold_q["p95"]])
    figures = {
        "warm cycle, median": warm_q["median"],
        "warm cycle, p95": warm_q["p95"],
        "cold cycle (process wall time), median": cold_q["median"],
        "cold cycle (process wall time), p95": cold_q["p95"],
        "bare fit + evaluate (project trainer), median": fast_q["median"],
        "bare fit + evaluate (plain Keras fit/evaluate, first 5 windows), median": keras_q[
            "median"
        ],
        "warm cycle / bare compute": fig(ratio(warm_q["median"], fast_q["median"]), "x", 1),
        "cold cycle / bare compute": fig(ratio(cold_q["median"], fast_q["median"]), "x", 1),
        "cold / warm": fig(ratio(cold_q["median"], warm_q["median"]), "x", 1),
        "plain Keras / project trainer": fig(ratio(keras_q["median"], fast_q["median"]), "x", 1),
        "warm windows measured": fig(len(totals), "windows"),
        "cold windows measured": fig(len(cold_total), "windows"),
    }
    notes = [
        f"Warm: {len(totals)} consecutive daylight windows after the first model (trained on "
        f"week 1 plus the Monday after), each a real `finetune_window` against the broker and "
        "a fresh MLflow sqlite store, steps called directly (no Prefect task runs), the Kafka "
        "consumer and the last 72 hours of rows kept in memory, as `backfill` does.",
        f"Cold: {len(cold_total)} windows, each `streamtrain finetune --hour H --json` in a new "
        "process: Python and TensorFlow imports, Prefect's temporary server, the model loaded "
        "from MLflow, each step a Prefect task. Stage times are those the flow reported; the "
        "process wall time also holds start-up and shut-down.",
        "Bare compute: a copy of the champion fine-tuned on exactly the rows the cycle trained "
        f"on (window minus its holdout plus the replay sample; {settings.finetune_epochs} "
        f"epochs, batch {settings.batch_size}) and scored on the long holdout, with nothing "
        "else (no Kafka, validation, drift, bootstrap, MLflow). 'other' is bookkeeping outside "
        "the named stages (live-accuracy and detector tags, run tags).",
    ]
    if len(cold_runs) > len(ok_cold):
        notes.append(f"{len(cold_runs) - len(ok_cold)} cold runs failed: {cold_runs[-1]['error']}")
    if not cold_runs:
        notes.append("No cold cycles in this plan (the quick plan skips them).")
    elif len(cold_total) < 20:
        notes.append(
            f"The issue asks for at least 20 windows; the cold figures use {len(cold_total)} "
            "because each cold process costs tens of seconds of start-up on this machine and "
            "the whole benchmark must fit in 20 minutes."
        )
    return {
        "title": "1. Hourly cycle",
        "figures": figures,
        "tables": [
            {
                "title": "Seconds per stage (warm: in-process; cold: as reported by the flow)",
                "header": ["stage", "warm median", "warm p95", "cold median", "cold p95"],
                "rows": rows,
            }
        ],
        "notes": notes,
        "raw": {"warm_s": totals, "cold": cold_runs, "bare_fast_s": bare_fast},
    }
