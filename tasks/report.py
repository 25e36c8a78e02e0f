"""The per-window report: rows of what each cycle read, measured and decided, and day totals."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tasks.adaptation import (
    ScoredWindow,
    alarm_delay_windows,
    pre_change_level,
    windows_to_recover,
)
from tasks.windowing import format_instant, parse_instant, to_ms

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


@dataclass(frozen=True)
class DriftRecovery:
    """When the concept-drift alarm fired after a change and how many windows accuracy took
    to be back within 2 points of the day before the change, for 4 windows in a row."""

    change: str  # the known change, or (when none is known) the first alarm's window
    change_known: bool
    alarm: str | None
    alarm_delay: int | None  # windows from the change to the alarm
    level: float | None  # accuracy over the day before the change
    windows: int | None  # windows from the change to the recovery; None: not recovered
    recovered: str | None  # the first window of the recovered run


def scored_windows(rows: list[dict[str, Any]]) -> list[tuple[str, ScoredWindow]]:
    """The fine-tuned windows that were scored, with their start, in stream order."""
    out = []
    for row in rows:
        acc, count = row.get("prequential_accuracy"), row.get("rows") or 0
        if row["kind"] != "finetune" or acc is None or count <= 0:
            continue
        start = str(row["window_start"])
        out.append(
            (
                start,
                ScoredWindow(
                    to_ms(parse_instant(start)),
                    int(count),
                    round(acc * count),
                    bool(row.get("concept_drift_alarm")),
                ),
            )
        )
    return sorted(out, key=lambda pair: pair[1].start_ms)


def drift_recovery(rows: list[dict[str, Any]], change: str | None = None) -> DriftRecovery | None:
    """The alarm and recovery after `change` (ISO 8601), with the measures `make bench`
    reports; without a known change, counted from the first alarm. None: no change known and
    no alarm."""
    scored = scored_windows(rows)
    if change is None:
        change = next((start for start, w in scored if w.alarm), None)
        if change is None:
            return None
        known = False
    else:
        change, known = format_instant(parse_instant(change)), True
    change_ms = to_ms(parse_instant(change))
    windows = [w for _, w in scored]
    starts = [start for start, w in scored if w.start_ms >= change_ms]
    delay = alarm_delay_windows(windows, change_ms)
    level = pre_change_level(windows, change_ms)
    recover = windows_to_recover(windows, change_ms, level)
    return DriftRecovery(
        change=change,
        change_known=known,
        alarm=None if delay is None else starts[delay],
        alarm_delay=delay,
        level=level,
        windows=recover,
        recovered=None if recover is None else starts[recover],
    )


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


def recovery_line(rows: list[dict[str, Any]], change: str | None = None) -> str:
    """One sentence: when the concept-drift alarm fired after the change, and how many windows
    accuracy took to recover (the demo's summary line and its replay artifact)."""
    found = drift_recovery(rows, change)
    if found is None:
        return "No concept-drift alarm."
    if found.change_known:
        head = f"Drift at {found.change}: "
        if found.alarm is None:
            head += "no concept-drift alarm fired after it"
        else:
            head += (
                f"the concept-drift alarm fired at {found.alarm} "
                f"({_windows(found.alarm_delay)} after the change)"
            )
        since = "the change"
    else:
        head, since = f"Concept-drift alarm at {found.alarm}", "the alarm"
    if found.level is None:
        return f"{head}; no windows the day before {since} to measure recovery against."
    level = f"within 2 points of the day before's {found.level:.3f}"
    if found.windows is None:
        return f"{head}; accuracy never came back {level} (for 4 windows in a row)."
    return (
        f"{head}; accuracy was back {level} {_windows(found.windows)} after {since} "
        f"(from {found.recovered}, 4 windows in a row)."
    )


def _windows(count: int | None) -> str:
    return f"{count} window" if count == 1 else f"{count} windows"
