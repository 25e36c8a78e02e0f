"""The accuracy timeline: prequential accuracy per window, with drift alarms, retrains and
promotions marked. A PNG that backfills and nightly retrains log to MLflow."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from tasks.report import as_of


def _when(row: dict[str, Any]) -> float:
    """Matplotlib's date number of the row's moment."""
    from matplotlib.dates import date2num

    return float(date2num(datetime.fromisoformat(as_of(row).replace("Z", "+00:00"))))


def accuracy_timeline_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Render report rows (window order) as a PNG; empty rows give an empty, labelled chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["kind"] == "finetune" and r["prequential_accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    try:
        ax.plot(
            [_when(r) for r in scored],
            [r["prequential_accuracy"] for r in scored],
            ".-",
            lw=0.8,
            ms=2,
            label="prequential accuracy (champion, before training)",
        )
        marks = [
            ("concept-drift alarm", "tab:red", [r for r in rows if r["concept_drift_alarm"]]),
            ("retrain", "tab:purple", [r for r in rows if r["kind"] == "retrain"]),
            ("promotion", "tab:green", [r for r in rows if r["decision"] == "promoted"]),
        ]
        styles = {"concept-drift alarm": "-", "retrain": "--", "promotion": ":"}
        for label, color, picked in marks:
            for index, row in enumerate(picked):
                ax.axvline(
                    _when(row),
                    color=color,
                    ls=styles[label],
                    lw=0.9,
                    alpha=0.7,
                    label=label if index == 0 else None,
                )
        ax.xaxis_date()
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)
