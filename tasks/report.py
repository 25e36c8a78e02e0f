"""The per-window report: rows of what each cycle read, measured and decided, and day totals."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

REPORT_FIELDS = (
    "window_start",
    "window_end",
    "kind",
    "rows",
    "champion_version",
    "prequential_accuracy",
    "challenger_version",
    "challenger_metric",
    "champion_metric",
    "decision",
    "reasons",
    "trigger",
    "data_drift",
    "concept_drift_alarm",
    "retrain_triggered",
    "quarantined",
    "rejected",
    "window_closed",
)


def report_rows(cycles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cycle records in window order (retrains before the fine-tune of the same hour)."""
    rows = [{name: cycle.get(name) for name in REPORT_FIELDS} for cycle in cycles]
    for row in rows:
        row["reasons"] = list(row["reasons"] or [])
    return sorted(rows, key=lambda r: (as_of(r), r["kind"] != "retrain"))


def as_of(row: dict[str, Any]) -> str:
    """When a cycle's result became available: a retrain at the end of its range."""
    if row["kind"] == "retrain" and row.get("window_end"):
        return str(row["window_end"])
    return str(row["window_start"])


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(REPORT_FIELDS))
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "reasons": " | ".join(row["reasons"])})
    return out.getvalue()


def daily_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per day: windows, rows, mean prequential accuracy, promotions, retrains, rollbacks."""
    days: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "windows": 0,
            "rows": 0,
            "acc": [],
            "promotions": 0,
            "retrains": 0,
            "drift_retrains": 0,
            "alarms": 0,
            "rollbacks": 0,
        }
    )
    for row in rows:
        day = days[as_of(row)[:10]]
        if row["kind"] == "retrain":
            day["retrains"] += 1
            day["drift_retrains"] += str(row.get("trigger") or "").startswith("drift:")
        else:
            day["windows"] += 1
            day["rows"] += row.get("rows") or 0
            if row.get("prequential_accuracy") is not None:
                day["acc"].append(row["prequential_accuracy"])
        day["promotions"] += row["decision"] == "promoted"
        day["rollbacks"] += row["decision"] == "rolled back"
        day["alarms"] += bool(row.get("concept_drift_alarm"))
    out = []
    for name in sorted(days):
        day = days[name]
        acc = day.pop("acc")
        out.append(
            {"day": name, **day, "prequential_accuracy": sum(acc) / len(acc) if acc else None}
        )
    return out


def drift_recovery(rows: list[dict[str, Any]], points: float = 0.02) -> dict[str, Any] | None:
    """When the first concept-drift alarm fired and how many windows until prequential
    accuracy was back within `points` of its level over the day before the alarm."""
    tuned = [
        r for r in rows if r["kind"] == "finetune" and r.get("prequential_accuracy") is not None
    ]
    alarm_at = next((i for i, r in enumerate(tuned) if r.get("concept_drift_alarm")), None)
    if alarm_at is None:
        return None
    before = [r["prequential_accuracy"] for r in tuned[max(0, alarm_at - 16) : alarm_at - 4]]
    if not before:
        return {"alarm": tuned[alarm_at]["window_start"], "baseline": None, "recovered": None}
    baseline = sum(before) / len(before)
    for later in range(alarm_at + 1, len(tuned) - 3):
        # four windows in a row back near the baseline, so one lucky hour does not count
        if all(r["prequential_accuracy"] >= baseline - points for r in tuned[later : later + 4]):
            return {
                "alarm": tuned[alarm_at]["window_start"],
                "baseline": baseline,
                "recovered": tuned[later]["window_start"],
                "windows": later - alarm_at,
            }
    return {"alarm": tuned[alarm_at]["window_start"], "baseline": baseline, "recovered": None}


DAILY_COLUMNS = {
    "day": "day",
    "windows": "windows",
    "rows": "rows",
    "prequential_accuracy": "preq. acc",
    "promotions": "promoted",
    "retrains": "retrains",
    "drift_retrains": "by drift",
    "alarms": "alarms",
    "rollbacks": "rollbacks",
}


def daily_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The per-day table as printed (column label to cell text): the terminal and the
    replay's Prefect artifact show the same numbers."""
    table = []
    for day in daily_summary(rows):
        acc = day["prequential_accuracy"]
        cells = {key: str(day[key]) for key in DAILY_COLUMNS if key != "prequential_accuracy"}
        cells["prequential_accuracy"] = "-" if acc is None else f"{acc:.3f}"
        table.append({label: cells[key] for key, label in DAILY_COLUMNS.items()})
    return table


def recovery_line(rows: list[dict[str, Any]]) -> str:
    """One sentence: when concept drift was detected and when accuracy recovered."""
    recovery = drift_recovery(rows)
    if recovery is None:
        return "No concept-drift alarm."
    if recovery["recovered"] is None:
        return (
            f"Concept drift detected at {recovery['alarm']}; accuracy has not yet "
            "recovered to its earlier level."
        )
    return (
        f"Concept drift detected at {recovery['alarm']}; prequential accuracy was back "
        f"within 2 points of its earlier level ({recovery['baseline']:.3f}) at "
        f"{recovery['recovered']}, {recovery['windows']} observed hours later."
    )
