"""Issue 15's speed goals, checked against the figures of one run, one row per goal.

A goal whose figure is missing (a section not in the plan, a measurement that failed) is not
met, and its row says so: the README then names every goal not met, none silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report import show
from bench.scoring import per_record_us

# (goal as the issue states it, section, figure name or a picker, test on the value, and what
# profiling found standing in its way, or how to read it off the run: shown only when not met)
Why = str | Callable[[dict[str, Any]], str]
Goal = tuple[str, str, str | Callable[[dict[str, Any]], str | None], Callable[[float], bool], Why]
STAGE_TABLE = "Seconds per stage"


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


def _longest_replay(figures: dict[str, Any]) -> str | None:
    """The wall time of the longest replay measured (the 4-week one in the full plan)."""
    walls = [n for n in figures if n.startswith("replay of ") and n.endswith(": wall time")]
    return max(walls, key=lambda n: int(n.split()[2]), default=None)


def _largest_warm_stages(sections: dict[str, Any]) -> str:
    """This run's largest warm stages beside its bare fit + evaluate, from the stage table."""
    cycle = sections.get("hourly_cycle", {})
    bare = cycle.get("figures", {}).get("bare fit + evaluate (project trainer), median")
    table = next((t for t in cycle.get("tables", []) if t["title"].startswith(STAGE_TABLE)), None)
    rows = [r for r in (table or {}).get("rows", []) if r[0] != "whole cycle"]
    timed = [(r[0], r[1]) for r in rows if isinstance(r[1], dict) and r[1].get("value")]
    if not timed or not bare:
        return "the per-stage table is missing from this run"
    largest = sorted(timed, key=lambda pair: -float(pair[1]["value"]))[:3]
    named = ", ".join(f"{stage} {show(value)}" for stage, value in largest)
    return f"largest warm stages in this run: {named}, against {show(bare)} of bare compute"


def _read_beside_kcat(sections: dict[str, Any]) -> str:
    """This run's kcat on the same offsets: how far the read is from the broker's floor."""
    figures = sections.get("window_read", {}).get("figures", {})
    kcat = figures.get("hourly window: kcat, same offsets, median")
    decoding = (
        "kafka-python decodes every record of a fetched batch, those before the seek offset "
        "included"
    )
    if not kcat:
        return decoding
    return f"kcat reading the same offsets takes {show(kcat)} (its start-up included); " + decoding


def _replay_as_warm_cycles(sections: dict[str, Any]) -> str:
    """How much of the longest replay this run's warm cycle accounts for, window by window."""
    figures = sections.get("replay", {}).get("figures", {})
    wall = _longest_replay(figures)
    hours = wall.split()[2] if wall else None
    rate = figures.get(f"replay of {hours} h: windows with rows per minute") if hours else None
    warm = sections.get("hourly_cycle", {}).get("figures", {}).get("warm cycle, median")
    if not (wall and rate and warm and rate.get("value") and warm.get("value")):
        return "every window pays the warm cycle's costs (the first goal); not profiled apart"
    seconds = float(figures[wall]["value"])
    windows = round(seconds * float(rate["value"]) / 60)
    cycles = windows * float(warm["value"])
    text = (
        f"{windows} windows with rows at the warm cycle's median {show(warm)} make "
        f"{cycles:.0f} s of the {seconds:.0f} s"
    )
    runs = sections.get("replay", {}).get("raw") or []
    # The figure is rounded; the raw run is the one that replayed that many hourly windows.
    timed = next((r for r in runs if str(r.get("windows")) == hours), None)
    by_kind = (timed or {}).get("stage_seconds_by_kind")
    if not timed or not by_kind:
        return text + "; the rest is the nightly and drift retrains, not profiled apart"
    parts = []
    for kind, count in (("finetune", timed.get("windows")), ("retrain", timed.get("retrains"))):
        stages = by_kind.get(kind) or {}
        top = sorted(stages.items(), key=lambda pair: -pair[1])[:3]
        named = ", ".join(f"{stage} {value:.0f} s" for stage, value in top)
        parts.append(f"{count} {kind}s {sum(stages.values()):.0f} s ({named})")
    outside = seconds - sum(sum(s.values()) for s in by_kind.values())
    return (
        f"{text}; measured in the replay: {'; '.join(parts)}; {outside:.0f} s outside the "
        "cycles' timed stages"
    )


def _steps(costs: dict[str, float]) -> str:
    """Steps largest first, as '<step> <n> us'."""
    ranked = sorted(costs.items(), key=lambda pair: -pair[1])
    return ", ".join(f"{step} {cost:.0f} us" for step, cost in ranked)


def _scorer_beside_bare(sections: dict[str, Any]) -> str:
    """This run's time per record, step by step, in the scorer and in the bare loop."""
    raw = sections.get("scoring", {}).get("raw", {})
    ours, bare = (
        per_record_us(raw.get("project_backlog", {})),
        per_record_us(raw.get("bare_backlog", {})),
    )
    if not ours or not bare:
        return "the loops' per-step times are missing from this run"
    return (
        f"per record on the backlog the scorer spends {sum(ours.values()):.0f} us "
        f"({_steps(ours)}) and the bare loop {sum(bare.values()):.0f} us ({_steps(bare)}); "
        "both pay kafka-python's pure-Python send and fetch decoding per record, which the "
        "scorer's schema decoding and prediction come on top of"
    )


def _paced_latency_beside_bare(sections: dict[str, Any]) -> str:
    """This run's bare consume-produce loop at the same pace, and the scorer's cost a batch."""
    scoring = sections.get("scoring", {})
    figures = scoring.get("figures", {})
    bare = figures.get("bare loop latency p99 (paced)")
    added = figures.get("latency added by the project, p50")
    if not bare:
        return "the bare loop's paced latency is missing from this run"
    text = f"the bare consume-produce loop at the same pace: p99 {show(bare)}"
    text += f"; the scorer adds {show(added)} at p50" if added else ""
    paced = scoring.get("raw", {}).get("project_paced", {})
    batches, stages = paced.get("batches"), paced.get("stage_seconds") or {}
    if batches and stages:
        busy = {k: v * 1000 / batches for k, v in stages.items() if k != "poll"}
        text += (
            f"; each of its {batches} batches of about {paced['records'] // batches} records "
            f"costs {sum(busy.values()):.1f} ms besides polling ("
            + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(busy.items(), key=lambda p: -p[1]))
            + "), and a record waits for its batch"
        )
    return text


GOALS: list[Goal] = [
    (
        "warm cycle / bare fit + evaluate <= 2x",
        "hourly_cycle",
        "warm cycle / bare compute",
        _at_most(2.0),
        _largest_warm_stages,
    ),
    (
        "read of one hourly window <= 0.03 s",
        "window_read",
        "hourly window: project read_window, median",
        _at_most(0.03),
        _read_beside_kcat,
    ),
    (
        "scheduled hourly run on the stack <= 6 s per window",
        "hourly_cycle",
        "scheduled run on the stack, median",
        _at_most(6.0),
        "in the trainer's warm process, most of a run is MLflow server round trips (alias "
        "moves, registered-model lookups) and re-reading 72 h of replay history from Kafka",
    ),
    (
        "scorer / bare consume-produce loop >= 0.9x",
        "scoring",
        "project / bare throughput",
        _at_least(0.9),
        _scorer_beside_bare,
    ),
    (
        "scorer p99 latency paced at 1,000/s <= 50 ms",
        "scoring",
        "project scorer latency p99 (paced)",
        _at_most(0.05),
        _paced_latency_beside_bare,
    ),
    (
        "4-week replay <= 200 s",
        "replay",
        _longest_replay,
        _at_most(200.0),
        _replay_as_warm_cycles,
    ),
]


def check(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: {goal, figure, measured, met}; `met` is False when not measured."""
    rows = []
    for goal, section, name, test, why in GOALS:
        figures = sections.get(section, {}).get("figures", {})
        key = name(figures) if callable(name) else name
        figure = figures.get(key) if key else None
        value = figure.get("value") if figure else None
        if value is not None and figure and figure.get("unit") == "ms":
            value = value / 1000  # the goals are stated in seconds
        met = value is not None and test(float(value))
        explained = why(sections) if callable(why) else why
        reason = "" if met else ("not measured in this run" if value is None else explained)
        rows.append(
            {"goal": goal, "figure": key, "measured": show(figure), "met": met, "why": reason}
        )
    return rows


def table(sections: dict[str, Any]) -> dict[str, Any]:
    """The goals as a report table (the Markdown report and README render it)."""
    rows = check(sections)
    return {
        "title": "Goals of issue 15 (speed): met or not",
        "header": ["goal", "measured", "met", "why not (what profiling found)"],
        "rows": [[r["goal"], r["measured"], "yes" if r["met"] else "NO", r["why"]] for r in rows],
    }
