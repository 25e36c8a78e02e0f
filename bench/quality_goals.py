"""Issue 13's goals for section 5, checked against the measured figures, one row per goal.

A goal whose figure is missing (a scenario not in the plan, a recovery that never happened)
is not met; the row says what was measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# scenario -> (mean accuracy floor in %, [(goal, field of `default`, test)])
Check = tuple[str, str, Callable[[Any], bool]]


def _at_most(limit: int) -> Callable[[Any], bool]:
    return lambda value: value is not None and value <= limit


GOALS: dict[str, tuple[float, list[Check]]] = {
    "none": (
        94.0,
        [
            ("0 alarms", "concept_alarms", _at_most(0)),
            ("0 drift retrains", "drift_retrains", _at_most(0)),
        ],
    ),
    "sudden": (
        92.0,
        [
            ("alarm within 2 windows", "alarm_delay_windows", _at_most(2)),
            ("back within 8 windows", "windows_to_recover", _at_most(8)),
        ],
    ),
    "gradual": (90.0, []),
    "recurring": (
        92.0,
        [
            (
                "returning concept recovered within 2 windows",
                "windows_to_recover_on_return",
                _at_most(2),
            )
        ],
    ),
    "new-stores": (94.0, [("at most 2 drift retrains", "drift_retrains", _at_most(2))]),
    "seasonal": (
        94.0,
        [
            ("0 concept alarms", "concept_alarms", _at_most(0)),
            ("at most 1 drift retrain", "drift_retrains", _at_most(1)),
        ],
    ),
}


def check(stats: dict[str, dict[str, Any]], peers: list[str]) -> list[dict[str, Any]]:
    """One row per goal of the scenarios measured: {scenario, goal, measured, met}."""
    from bench.quality import DEFAULT

    rows = []
    for scenario, by in stats.items():
        if scenario not in GOALS or DEFAULT not in by:
            continue
        ours = by[DEFAULT]
        floor, others = GOALS[scenario]
        accuracy = ours["mean_accuracy"]["value"]
        best = by.get("ceiling", {})
        ceiling = best.get("mean_accuracy", {}).get("value")
        measured = _pct(accuracy) + ("" if ceiling is None else f" (ceiling {_pct(ceiling)})")
        rows.append(
            _row(
                scenario,
                f"mean accuracy >= {floor:.0f} %",
                measured,
                accuracy is not None and accuracy >= floor,
            )
        )
        for goal, name, test in others:
            value = ours.get(name)
            shown = "none" if value is None else str(value)
            if name in best:  # the oracle's own figure on the same measure
                shown += f" (ceiling {'none' if best[name] is None else best[name]})"
            rows.append(_row(scenario, goal, shown, test(value)))
        for peer in peers:
            theirs = by[peer]["mean_accuracy"]["value"]
            beaten = accuracy is not None and theirs is not None and accuracy > theirs
            rows.append(
                _row(
                    scenario,
                    f"beats peer ({peer}) on mean accuracy",
                    f"{_pct(accuracy)} vs {_pct(theirs)}",
                    beaten,
                )
            )
    return rows


def _row(scenario: str, goal: str, measured: str, met: bool) -> dict[str, Any]:
    return {"scenario": scenario, "goal": goal, "measured": measured, "met": bool(met)}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def table(goals: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "title": "Goals of issue 13, for (default): met or not",
        "header": ["scenario", "goal", "measured", "met"],
        "rows": [
            [g["scenario"], g["goal"], g["measured"], "yes" if g["met"] else "NO"] for g in goals
        ],
    }


def summary(goals: list[dict[str, Any]]) -> str:
    # "measured" may carry its ceiling in parentheses already: no second pair around it.
    missed = [
        f"{g['scenario']}: {g['goal']}, measured {g['measured']}" for g in goals if not g["met"]
    ]
    met = len(goals) - len(missed)
    if not missed:
        return f"All {len(goals)} goals of issue 13 measured here are met."
    return f"{met} of {len(goals)} goals of issue 13 are met; not met: " + "; ".join(missed) + "."
