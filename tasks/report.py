"""The per-window report: rows of what each cycle read, measured and decided, and day totals."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

REPORT_FIELDS = (
    "window_start",
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
)


def report_rows(cycles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cycle records in window order (retrains before the fine-tune of the same hour)."""
    rows = [{name: cycle.get(name) for name in REPORT_FIELDS} for cycle in cycles]
    for row in rows:
        row["reasons"] = list(row["reasons"] or [])
    return sorted(rows, key=lambda r: (r["window_start"], r["kind"] != "retrain"))


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
        lambda: {"windows": 0, "rows": 0, "acc": [], "promotions": 0, "retrains": 0, "rollbacks": 0}
    )
    for row in rows:
        day = days[row["window_start"][:10]]
        if row["kind"] == "retrain":
            day["retrains"] += 1
        else:
            day["windows"] += 1
            day["rows"] += row.get("rows") or 0
            if row.get("prequential_accuracy") is not None:
                day["acc"].append(row["prequential_accuracy"])
        day["promotions"] += row["decision"] == "promoted"
        day["rollbacks"] += row["decision"] == "rolled back"
    out = []
    for name in sorted(days):
        day = days[name]
        acc = day.pop("acc")
        out.append(
            {"day": name, **day, "prequential_accuracy": sum(acc) / len(acc) if acc else None}
        )
    return out
