"""Section 5's numbers: daily prequential accuracy and F1, recovery after drift, the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.peers import PEERS
from bench.replica import Outcome
from bench.report import fig

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TRAILING = 8  # windows: one simulated day of daylight hours
RECOVERY_POINTS = 0.02


def labels(peers: list[str]) -> dict[str, str]:
    from bench.quality import STRATEGIES

    out = {k: f"({k}) {s.label}" for k, s in STRATEGIES.items()}
    out |= {k: f"(e) {PEERS[k]}" for k in peers}
    return out


def daily(outcome: Outcome) -> list[tuple[int, float, float | None, int]]:
    """(day start ms, accuracy, F1 of the positive class or None, rows) per simulated day."""
    days: dict[int, list[int]] = {}
    for start, n, correct, tp, fp, fn in outcome.windows:
        tally = days.setdefault(start // DAY_MS * DAY_MS, [0, 0, 0, 0, 0])
        for i, v in enumerate((n, correct, tp, fp, fn)):
            tally[i] += v
    out = []
    for day, (n, correct, tp, fp, fn) in sorted(days.items()):
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
        out.append((day, correct / n if n else 0.0, f1, n))
    return out


def recovery_hours(outcome: Outcome, drift_ms: int) -> tuple[float | None, str]:
    """Hours from the drift until the trailing day's accuracy is back within 2 points of the
    accuracy before the drift; (None, why) when it cannot be said."""
    before = [w for w in outcome.windows if w[0] < drift_ms]
    after = [w for w in outcome.windows if w[0] >= drift_ms]
    if not before or len(after) < TRAILING:
        return None, "too few windows"
    level = sum(w[2] for w in before) / sum(w[1] for w in before)
    for i in range(TRAILING - 1, len(after)):
        span = after[i - TRAILING + 1 : i + 1]
        accuracy = sum(w[2] for w in span) / sum(w[1] for w in span)
        if accuracy >= level - RECOVERY_POINTS:
            if i == TRAILING - 1:
                return 0.0, "no dip beyond 2 points"
            return (span[-1][0] + HOUR_MS - drift_ms) / HOUR_MS, ""
    hours = (after[-1][0] + HOUR_MS - drift_ms) / HOUR_MS
    return None, f"not within {hours:.0f} h"


def summarize(outcome: Outcome, drift_ms: int, scenario: str) -> dict[str, Any]:
    days = daily(outcome)
    accuracy = [a for _, a, _, _ in days]
    f1 = [f for _, _, f, _ in days if f is not None]
    hours, why = recovery_hours(outcome, drift_ms) if scenario != "none" else (None, "no drift")
    return {
        "mean_accuracy": fig(float(np.mean(accuracy)) * 100 if accuracy else None, "%", 1),
        "worst_day_accuracy": fig(float(np.min(accuracy)) * 100 if accuracy else None, "%", 1),
        "mean_f1": fig(float(np.mean(f1)) * 100 if f1 else None, "%", 1),
        "worst_day_f1": fig(float(np.min(f1)) * 100 if f1 else None, "%", 1),
        "hours_to_recover": fig(hours, "h", 0),
        "recovery_note": why,
        "retrains": outcome.retrains,
        "drift_retrains": outcome.drift_retrains,
        "promotions": outcome.promotions,
        "rollbacks": outcome.rollbacks,
    }


def quality_section(
    outcomes: dict[str, dict[str, Outcome]],
    line: Any,
    peers: list[str],
    *,
    counts: dict[str, int],
    shared_prefix: bool,
    seconds: float,
    settings: Any,
    png: Path | None,
    river: str | None,
) -> dict[str, Any]:
    from tasks.windowing import to_ms

    drift_ms = to_ms(line.drift)
    names = labels(peers)
    stats = {
        sc: {k: summarize(o, drift_ms, sc) for k, o in by.items()} for sc, by in outcomes.items()
    }
    keys = [k for k in names if all(k in stats[sc] for sc in stats)]
    compact = [
        [
            names[k],
            *[
                f"{_v(stats[sc][k]['mean_accuracy'])} ({_v(stats[sc][k]['worst_day_accuracy'])})"
                for sc in stats
            ],
        ]
        for k in keys
    ]
    detail = []
    for sc in stats:
        for k in keys:
            s = stats[sc][k]
            recover = (
                s["hours_to_recover"]
                if s["hours_to_recover"]["value"] is not None
                else s["recovery_note"]
            )
            detail.append(
                [
                    sc,
                    names[k],
                    s["mean_accuracy"],
                    s["worst_day_accuracy"],
                    s["mean_f1"],
                    s["worst_day_f1"],
                    recover,
                    str(s["retrains"]),
                    str(s["promotions"]),
                ]
            )
    findings = _findings(stats, keys, names)
    images = []
    if png is not None:
        _plot(outcomes, keys, names, drift_ms, png)
        images.append(png.name)
    notes = [
        "Method: strategies (a)-(d) replay the simulator's records in memory through the "
        "pipeline's own functions (tasks/model.py build, fit and fine-tune; the holdout split "
        "and replay sample of tasks/training_data.py; the drift checks and Page-Hinkley "
        "detector of tasks/drift.py; compare_on_holdouts and the gate's decide_promotion and "
        "decide_rollback), in the order run_backfill uses (nightly retrain at 00:00 UTC, then "
        "the window; a drift-triggered retrain right after its window). Not exercised here: "
        "Kafka reads, GX validation (these scenarios have no broken records) and MLflow "
        "logging. Sections 1-2 run the real thing.",
        f"Settings are the pipeline's defaults: fine-tune {settings.finetune_epochs} epochs at "
        f"lr {settings.finetune_learning_rate}, retrain {settings.retrain_epochs} epochs at lr "
        f"{settings.retrain_learning_rate} on {settings.retrain_days} days, batch "
        f"{settings.batch_size}, replay {settings.replay_samples} rows of "
        f"{settings.replay_hours} h, primary metric {settings.primary_metric}, tolerance "
        f"{settings.tolerance}, seed {settings.seed}.",
        "Mean = mean over the days of the daily prequential accuracy (or F1 of the busy class); "
        "worst day = the lowest day. Hours to recover = clock hours from the drift until the "
        "accuracy of the last 8 daylight windows (one day) is back within 2 points of the "
        "strategy's own accuracy before the drift (8 h is the shortest measurable).",
        "(c) and (d) share their history until (d) first retrains on drift; all scenarios share "
        f"the days before the drift (identical records: {shared_prefix}); a retrain of the same "
        f"rows is fitted once and reused ({counts['retrains_fitted']} distinct retrains).",
        f"Replay took {seconds:.0f} s in its own process.",
    ]
    if river is None:
        notes.append(
            "River is not installed, so strategy (e) is missing: `make bench` installs it "
            "(river 0.23.0 declares pandas<3, so it is installed with --no-deps beside the "
            "pinned pandas 3.1.1)."
        )
    else:
        notes.append(
            f"River {river}, default parameters, features as decoded (strings nominal, numbers "
            "numeric), learned on the training days record by record, then predict-then-learn."
        )
    return {
        "title": "5. Model quality under drift",
        "method": (
            f"Simulated drone stream (100 stores), first model on {line.start:%Y-%m-%d} .. "
            f"{line.train_end:%Y-%m-%d} (week 1 plus the Monday after), then "
            f"{(line.eval_end - line.train_end).days} days scored test-then-train; drift at "
            f"{line.drift:%Y-%m-%d %H:%M}Z. Same records, order and seed for every strategy."
        ),
        "figures": _headline_figures(stats, keys),
        "tables": [
            {
                "title": "Mean daily prequential accuracy (worst day), per scenario",
                "header": ["strategy", *stats.keys()],
                "rows": compact,
            },
            {
                "title": "Per scenario and strategy",
                "header": [
                    "scenario",
                    "strategy",
                    "mean accuracy",
                    "worst-day accuracy",
                    "mean F1 (busy)",
                    "worst-day F1 (busy)",
                    "hours to recover",
                    "retrains",
                    "promotions",
                ],
                "rows": detail,
            },
        ],
        "findings": findings,
        "notes": notes,
        "images": images,
        "raw": {sc: {k: v for k, v in by.items()} for sc, by in stats.items()},
    }


def _v(figure: dict[str, Any]) -> str:
    return "n/a" if figure["value"] is None else f"{figure['value']:.1f} %"


def _headline_figures(stats: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out = {}
    for sc, by in stats.items():
        if "c" not in by:
            continue
        ours = by["c"]["mean_accuracy"]["value"]
        for k in keys:
            if k == "c" or ours is None or by[k]["mean_accuracy"]["value"] is None:
                continue
            out[f"{sc}: (c) minus ({k}) mean accuracy"] = fig(
                ours - by[k]["mean_accuracy"]["value"], "points", 1
            )
    return out


def _findings(stats: dict[str, Any], keys: list[str], names: dict[str, str]) -> list[str]:
    wins, losses = [], []
    for sc, by in stats.items():
        ours = by["c"]["mean_accuracy"]["value"]
        for k in keys:
            theirs = by[k]["mean_accuracy"]["value"]
            if k == "c" or ours is None or theirs is None:
                continue
            gap = ours - theirs
            short = names[k].split(" ", 1)[0] if k in ("a", "b", "d") else names[k][4:]
            if gap < -0.05:
                losses.append(f"{sc}: we lose to {short} by {-gap:.1f} points of mean accuracy")
            elif gap > 0.05:
                wins.append(f"{sc}: (c) beats {short} by {gap:.1f} points")
    out = []
    if losses:
        out.append("Where the default (c) loses: " + "; ".join(losses) + ".")
    else:
        out.append("The default (c) loses to no strategy or peer on mean accuracy here.")
    if wins:
        out.append("Where it wins: " + "; ".join(wins) + ".")
    return out


def _plot(
    outcomes: dict[str, dict[str, Outcome]],
    keys: list[str],
    names: dict[str, str],
    drift_ms: int,
    png: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_, axes = plt.subplots(len(outcomes), 1, figsize=(10, 2.4 * len(outcomes) + 1), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (sc, by) in zip(axes, outcomes.items(), strict=True):
        for k in keys:
            days = daily(by[k])
            x = [(d - drift_ms) / DAY_MS for d, _, _, _ in days]
            ax.plot(x, [a * 100 for _, a, _, _ in days], marker=".", label=names[k][:48])
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"scenario: {sc}", fontsize=10)
        ax.set_ylabel("daily accuracy %")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("days since the drift point")
    axes[0].legend(fontsize=7, loc="lower left", ncol=2)
    fig_.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig_.savefig(png, dpi=90)
    plt.close(fig_)
