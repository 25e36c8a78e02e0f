"""Issue 15's speed goals, checked against the figures of one run, one row per goal.

A goal whose figure is missing (a section not in the plan, a measurement that failed) is not
met, and its row says so: the README then names every goal not met, none silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report import show

# (goal as the issue states it, section, figure name or a picker, test on the value, why)
Goal = tuple[str, str, str | Callable[[dict[str, Any]], str | None], Callable[[float], bool]]


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


def _longest_replay(figures: dict[str, Any]) -> str | None:
    """The wall time of the longest replay measured (the 4-week one in the full plan)."""
    walls = [n for n in figures if n.startswith("replay of ") and n.endswith(": wall time")]
    return max(walls, key=lambda n: int(n.split()[2]), default=None)


GOALS: list[Goal] = [
    (
        "warm cycle / bare fit + evaluate <= 2x",
        "hourly_cycle",
        "warm cycle / bare compute",
        _at_most(2.0),
    ),
    (
        "read of one hourly window <= 0.03 s",
        "window_read",
        "hourly window: project read_window, median",
        _at_most(0.03),
    ),
    (
        "scheduled hourly run on the stack <= 6 s per window",
        "hourly_cycle",
        "scheduled run on the stack, median",
        _at_most(6.0),
    ),
    (
        "scorer / bare consume-produce loop >= 0.9x",
        "scoring",
        "project / bare throughput",
        _at_least(0.9),
    ),
    (
        "scorer p99 latency paced at 1,000/s <= 50 ms",
        "scoring",
        "project scorer latency p99 (paced)",
        _at_most(0.05),
    ),
    ("4-week replay <= 200 s", "replay", _longest_replay, _at_most(200.0)),
]


def check(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: {goal, figure, measured, met}; `met` is False when not measured."""
    rows = []
    for goal, section, name, test in GOALS:
        figures = sections.get(section, {}).get("figures", {})
        key = name(figures) if callable(name) else name
        figure = figures.get(key) if key else None
        value = figure.get("value") if figure else None
        if value is not None and figure and figure.get("unit") == "ms":
            value = value / 1000  # the goals are stated in seconds
        met = value is not None and test(float(value))
        rows.append({"goal": goal, "figure": key, "measured": show(figure), "met": met})
    return rows


def table(sections: dict[str, Any]) -> dict[str, Any]:
    """The goals as a report table (the Markdown report and README render it)."""
    rows = check(sections)
    return {
        "title": "Goals of issue 15 (speed): met or not",
        "header": ["goal", "measured", "met"],
        "rows": [[r["goal"], r["measured"], "yes" if r["met"] else "NO"] for r in rows],
    }
