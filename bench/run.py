"""`make bench`: run every section against a private broker and write the report.

Sections 1-4 and 6 run in this process or in child processes against the real broker and
MLflow stores; section 5 runs in a child process beside them (one TensorFlow thread), since it
is the longest and measures accuracy, not time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import report, speed_goals
from bench.world import TRAIN_DAYS, World, finish_child, simulate, start_child, start_instant
from tasks.settings import PROJECT_ROOT, Settings
from tasks.stream import close_readers
from tasks.windowing import Window

log = logging.getLogger("streamtrain.bench")
RESULTS = PROJECT_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    """How much of each section to run; the full plan fits in 20 minutes on two cores."""

    mode: str
    topic_days: int = TRAIN_DAYS + 28 + 1
    warm: int = 20
    cold: int = 3
    scheduled: int = 5  # hourly-finetune deployment runs on a stack of the benchmark's own
    # (timed replay, the replay whose peak memory is set beside it): 4 weeks and 2 weeks.
    replay_hours: tuple[int, int] = (28 * 24, 14 * 24)
    read_days: int = 7
    scoring_backlog: int = 20_000
    scoring_rate: float = 1000.0
    scoring_seconds: float = 10.0
    quality: dict[str, Any] = field(
        default_factory=lambda: {"days": 28, "drift_day": 14, "peers": ["e1", "e2", "lr"]}
    )
    scale_train_days: int = 2
    scale_replay_hours: int = 24
    read_repeats: int = 3
    scale_stores: int = 1000
    scale_partitions: int = 30

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick",
            topic_days=10,
            warm=3,
            cold=0,
            scheduled=0,
            replay_hours=(12, 24),
            read_days=1,
            scoring_backlog=3000,
            scoring_rate=500.0,
            scoring_seconds=4.0,
            quality={
                "days": 3,
                "drift_day": 9,
                "scenarios": ["none", "sudden"],
                "peers": ["e1", "e2", "lr"],
            },
            scale_train_days=2,
            scale_replay_hours=0,
            read_repeats=1,
        )

    @classmethod
    def full(cls, replay_days: int | None = None) -> Plan:
        if replay_days:
            hours = (replay_days * 24, 2 * replay_days * 24)
            return cls(mode="full", topic_days=TRAIN_DAYS + 2 * replay_days + 1, replay_hours=hours)
        return cls(mode="full")


def run(plan: Plan, output: Path, command: str, readme: bool) -> dict[str, Any]:
    """Run every section and write latest.json, latest.md (and the PNG) into `output`."""
    from flows.runtime import configure_environment

    began = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    # One scratch folder per run, so two runs (a test and `make bench`) never share one.
    scratch = PROJECT_ROOT / "bench" / "scratch" / f"{plan.mode}-{os.getpid()}"
    machine = report.machine()
    world = World.start(scratch)
    configure_environment(world.settings("main"))
    sections: dict[str, Any] = {}
    try:
        records = _simulate(world, plan)
        png = output / "quality.png"
        quality_args = {**plan.quality, "png": str(png), "threads": 1}
        quality_env = world.env(world.settings("quality"), "drone-1x")
        quality_started = time.perf_counter()
        quality = start_child(
            ["-m", "bench.child", "quality", json.dumps(quality_args)], quality_env
        )
        sections.update(_timed_sections(world, plan))
        done = finish_child(quality, quality_started)
        sections["quality"] = done.answer or _failed("5. Model quality under drift", done)
    finally:
        close_readers()  # before the broker goes: an idle consumer would retry it
        world.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    duration = time.perf_counter() - began
    result: dict[str, Any] = {
        "mode": plan.mode,
        "command": command,
        "generated_at": report.now_utc(),
        "duration": report.fig(duration / 60, "min", 1),
        "machine": machine,
        "settings": _settings(world.broker, plan, records),
        "sections": sections,
    }
    result["headline"] = _headline(sections)
    result |= goal_figures(sections)
    report.write_json(result, output / "latest.json")
    (output / "latest.md").write_text(report.markdown(result))
    if readme:
        refresh_readme(result, output)
    return result


# Sections that `--section` runs alone against a broker of their own: name -> report key.
BROKER_SECTIONS = {"read": "window_read", "scoring": "scoring"}


def run_broker_section(
    plan: Plan, section: str, output: Path, command: str, readme: bool
) -> dict[str, Any]:
    """Section 3 (`read`) or 4 (`scoring`) alone, on a private broker and the topic it needs,
    merged into the report already in `output` (the other sections of the last run are kept)."""
    from flows.runtime import configure_environment

    began = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    scratch = PROJECT_ROOT / "bench" / "scratch" / f"{section}-{os.getpid()}"
    world = World.start(scratch)
    configure_environment(world.settings("main"))
    try:
        days = TRAIN_DAYS + 3 + plan.read_days if section == "read" else TRAIN_DAYS + 1
        simulate(world, "drone-1x", days=days, partitions=world.broker.kafka_partitions)
        if section == "read":
            found = _read_section(world, plan)
        else:
            _train_champion(world, "drone-1x")
            found = _scoring_section(world, plan)
    finally:
        close_readers()  # before the broker goes: an idle consumer would retry it
        world.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    minutes = (time.perf_counter() - began) / 60
    return _merge_section(
        plan, output, command, readme, BROKER_SECTIONS[section], found, section, minutes
    )


def goal_figures(sections: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys for issue #15's goals, copied from their sections' figures."""

    def pick(section: str, name: str) -> dict[str, Any]:
        return sections.get(section, {}).get("figures", {}).get(name) or report.fig(None, "")

    return {
        "read_window_s_median": pick("window_read", "hourly window: project read_window, median"),
        "read_window_kcat_s_median": pick(
            "window_read", "hourly window: kcat, same offsets, median"
        ),
        "scorer_vs_bare": pick("scoring", "project / bare throughput"),
        "scheduled_run_wall_s_median": pick("hourly_cycle", "scheduled run on the stack, median"),
        "speed_goals": speed_goals.check(sections),
    }


def run_quality_only(
    plan: Plan, output: Path, command: str, readme: bool, jobs: int
) -> dict[str, Any]:
    """Section 5 alone (no broker), merged into the report already in `output` when there is
    one, so the other sections of the last full run are kept."""
    from bench.quality import run_quality

    began = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    quality = run_quality(**plan.quality, png=str(output / "quality.png"), threads=1, jobs=jobs)
    minutes = (time.perf_counter() - began) / 60
    return _merge_section(plan, output, command, readme, "quality", quality, "quality", minutes)


def _merge_section(
    plan: Plan,
    output: Path,
    command: str,
    readme: bool,
    key: str,
    found: dict[str, Any],
    label: str,
    minutes: float,
) -> dict[str, Any]:
    """One section run alone, merged into the report already in `output` (the other sections
    of the last run are kept), or a report of its own when there is none yet."""
    path = output / "latest.json"
    result: dict[str, Any] = (
        json.loads(path.read_text())
        if path.exists()
        else {
            "mode": f"{plan.mode} ({label} only)",
            "command": command,
            "generated_at": report.now_utc(),
            "duration": report.fig(minutes, "min", 1),
            "machine": report.machine(),
            "settings": {f"plan.{k}": v for k, v in asdict(plan).items()},
            "sections": {},
        }
    )
    result["sections"][key] = found
    result[f"{label}_regenerated"] = (
        f"`{command}` at {report.now_utc()} in {minutes:.1f} min, plan {plan.mode}"
    )
    result["headline"] = _headline(result["sections"])
    result |= goal_figures(result["sections"])
    report.write_json(result, path)
    (output / "latest.md").write_text(report.markdown(result))
    if readme:
        refresh_readme(result, output)
    return {**result, "duration": report.fig(minutes, "min", 1)}


def refresh_readme(result: dict[str, Any], output: Path = RESULTS) -> None:
    """Rewrite README's Performance section from a report written into `output`."""
    path = str((output / "latest.md").relative_to(PROJECT_ROOT))
    report.update_readme(PROJECT_ROOT / "README.md", report.readme_section(result, path))


def _simulate(world: World, plan: Plan) -> dict[str, int]:
    base = world.broker.kafka_partitions
    return {
        "drone-1x": simulate(world, "drone-1x", days=plan.topic_days, partitions=base),
        "drone-10x": simulate(
            world,
            "drone-10x",
            days=plan.scale_train_days + 1,
            stores=plan.scale_stores,
            partitions=plan.scale_partitions,
        ),
    }


def _timed_sections(world: World, plan: Plan) -> dict[str, Any]:
    from bench.cycle import run_hourly_cycle
    from bench.replay import replay, replay_section, scale_section

    out: dict[str, Any] = {}
    log.info("section 1: hourly cycle")
    out["hourly_cycle"] = run_hourly_cycle(
        world, "drone-1x", plan.topic_days, plan.warm, plan.cold, plan.scheduled
    )
    out["window_read"] = _read_section(world, plan)
    out["scoring"] = _scoring_section(world, plan)
    log.info("section 6: scale")
    out["scale"] = scale_section(
        world,
        ("drone-1x", world.broker.kafka_partitions),
        ("drone-10x", plan.scale_partitions),
        plan.scale_replay_hours,
        plan.scale_train_days,
        plan.scale_stores,
        plan.read_repeats,
    )
    log.info("section 2: replay")
    timed = replay(world, "drone-1x", "replay-timed", plan.replay_hours[0])
    other = replay(world, "drone-1x", "replay-other", plan.replay_hours[1])
    out["replay"] = replay_section(timed, other, plan.replay_hours)
    return out


def _read_section(world: World, plan: Plan) -> dict[str, Any]:
    from bench.read import compare_reads
    from bench.read_report import read_section

    log.info("section 3: window read")
    day = start_instant() + timedelta(days=TRAIN_DAYS)
    hourly = [Window(day + timedelta(hours=h), day + timedelta(hours=h + 1)) for h in range(9, 17)]
    hourly += [w.shifted(24) for w in hourly] if plan.mode == "full" else []
    hourly += [w.shifted(48) for w in hourly[:8]] if plan.mode == "full" else []
    span = Window(day, day + timedelta(days=plan.read_days))
    settings = world.settings("read")
    reads = compare_reads(settings, world.schema("drone-1x"), hourly, span, plan.read_repeats)
    return read_section(reads, plan.read_days)


def _scoring_section(world: World, plan: Plan) -> dict[str, Any]:
    """The scorer against the champion in the `cycle` store (section 1's, or `_train_champion`)."""
    from bench.scoring import run_scoring

    log.info("section 4: scoring")
    return run_scoring(
        world.settings("cycle"),
        world.schema("drone-1x"),
        plan.scoring_backlog,
        plan.scoring_rate,
        plan.scoring_seconds,
    )


def _train_champion(world: World, topic: str) -> None:
    """The first model, as section 1 trains it, when the scoring section runs alone."""
    from flows.runtime import cycle_context, quiet_libraries
    from tasks.cycle import retrain_until

    quiet_libraries()
    ctx = cycle_context(as_tasks=False, settings=world.settings("cycle"))
    ctx.schema = world.schema(topic)
    retrain_until(ctx, start_instant() + timedelta(days=TRAIN_DAYS), trigger="bench")


def _failed(title: str, done: Any) -> dict[str, Any]:
    return {
        "title": title,
        "figures": {},
        "notes": [
            f"The section's process failed (exit {done.returncode}): {done.stderr_tail[-800:]}"
        ],
    }


def _settings(broker: Settings, plan: Plan, records: dict[str, int]) -> dict[str, Any]:
    s = broker
    keep = (
        "seed",
        "retrain_epochs",
        "finetune_epochs",
        "retrain_learning_rate",
        "finetune_learning_rate",
        "batch_size",
        "hidden_units",
        "retrain_days",
        "holdout_hours",
        "replay_hours",
        "replay_samples",
        "primary_metric",
        "tolerance",
        "bootstrap_samples",
        "recent_holdout_hours",
        "long_holdout_hours",
        "kafka_partitions",
        "allowed_lateness_s",
        "retrain_on_drift",
        "kafka_heap",
    )
    out: dict[str, Any] = {f"settings.{k}": getattr(s, k) for k in keep}
    out |= {f"plan.{k}": v for k, v in asdict(plan).items()}
    out |= {f"records in topic {k}": v for k, v in records.items()}
    out["env.TF_ENABLE_ONEDNN_OPTS"] = "0"
    return out


def _headline(sections: dict[str, Any]) -> list[dict[str, Any]]:
    def pick(section: str, name: str) -> dict[str, Any]:
        return sections.get(section, {}).get("figures", {}).get(name) or report.fig(None, "")

    rows = [
        (
            "hourly cycle, warm / bare compute",
            "hourly_cycle",
            "warm cycle / bare compute",
            "what a warm cycle costs beyond fitting and scoring the same rows",
        ),
        (
            "hourly cycle, cold / warm",
            "hourly_cycle",
            "cold / warm",
            "a new process per hour (imports, Prefect, model load) against a warm one",
        ),
        (
            "window read, one hourly window",
            "window_read",
            "hourly window: project read_window, median",
            "seconds to read one hourly window (about 100 records, 3 partitions); goal 0.03 s",
        ),
        (
            "window read, hourly window project / kcat",
            "window_read",
            "hourly window: project / kcat time",
            "against librdkafka's kcat reading the same offsets (its start-up included)",
        ),
        (
            "hourly cycle, scheduled run / bare compute",
            "hourly_cycle",
            "scheduled run / bare compute",
            "a deployment run on the stack (the trainer's warm process) against the same compute",
        ),
        (
            "window read, project / bare consumer",
            "window_read",
            "hourly windows: project / bare",
            "context: records per second against a bare kafka-python loop on the same offsets",
        ),
        (
            "window read, project / kcat",
            "window_read",
            "span: project / kcat",
            "against librdkafka's kcat, the floor for this broker (one multi-day span)",
        ),
        (
            "scoring, project / bare throughput",
            "scoring",
            "project / bare throughput",
            "the scorer against a bare consume-produce loop",
        ),
        (
            "replay, peak memory longer / shorter",
            "replay",
            "peak memory, longer / shorter replay",
            "1.0 means memory does not grow with the length of the stream",
        ),
        (
            "scale 10x, read cost per record",
            "scale",
            "read cost per record, 10x / 1x",
            "below 1: larger windows are cheaper per record",
        ),
        (
            "scale 10x, replay cost per record",
            "scale",
            "replay cost per record, 10x / 1x",
            "below 1: per-window costs spread over more rows",
        ),
    ]
    out = [{"name": n, "figure": pick(s, f), "meaning": m} for n, s, f, m in rows]
    quality = sections.get("quality", {}).get("figures", {})
    who = {
        "a": "the static model",
        "e1": "River's Hoeffding adaptive tree",
        "e2": "River's adaptive random forest",
        "lr": "a windowed logistic regression",
    }
    for scenario in ("sudden", "none"):
        for other, name in who.items():
            key = f"{scenario}: (default) minus ({other}) mean accuracy"
            if key in quality:
                out.append(
                    {
                        "name": f"quality, {scenario}: default minus ({other})",
                        "figure": quality[key],
                        "meaning": f"mean daily prequential accuracy of the shipped settings "
                        f"against {name}",
                    }
                )
    return out
