"""Section 3's figures: records per second of each reader, and the ratios between them."""

from __future__ import annotations

from typing import Any

from bench.report import fig


def read_section(reads: dict[str, Any], span_days: int) -> dict[str, Any]:
    hourly, span = reads["hourly windows"], reads["one multi-day span"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    project_s, kcat_s = hourly.get("window_s_median"), hourly.get("kcat_window_s_median")
    figures = {
        "hourly window: project read_window, median": fig(project_s, "s", 4),
        "hourly window: kcat, same offsets, median": fig(kcat_s, "s", 4),
        "hourly window: project / kcat time": fig(ratio(project_s, kcat_s), "x", 2),
        "hourly windows: project read_window": fig(hourly["project"], "records/s", 0),
        "hourly windows: bare kafka-python, same offsets": fig(hourly["bare"], "records/s", 0),
        "hourly windows: project / bare": fig(ratio(hourly["project"], hourly["bare"]), "x", 2),
        "span: project read_window": fig(span["project"], "records/s", 0),
        "span: bare kafka-python, same offsets": fig(span["bare"], "records/s", 0),
        "span: kcat, same offsets": fig(span["kcat"], "records/s", 0),
        "span: project / bare": fig(ratio(span["project"], span["bare"]), "x", 2),
        "span: project / kcat": fig(ratio(span["project"], span["kcat"]), "x", 3),
        "span: bare / kcat": fig(ratio(span["bare"], span["kcat"]), "x", 3),
    }
    notes = [
        f"Hourly: {hourly['windows']} daylight windows ({hourly['records']:,} records) read one "
        f"by one with one reused consumer. Span: {span_days} day(s) ({span['records']:,} "
        f"records) read as one event-time span, as a retrain reads. Median of "
        f"{hourly['repeats']} run(s); "
        "every reader reads the offsets the project's reader covered (its scan starts up to "
        "the allowed clock skew before the window, so it reads a few records of the previous "
        "window and stops at the first record past the end plus the lateness).",
        "The project's reader decodes and type-checks every record, applies the window "
        "membership rule, drops duplicates and builds a DataFrame; the bare consumer only "
        "fetches; kcat (librdkafka, C) prints offsets, one process per partition, start-up "
        "included.",
        "Seconds per hourly window: each of the hourly windows read on its own, the median "
        "over all windows and runs; kcat reads the same window's offsets with one process "
        "per partition, all at once, so its figure is the floor for one window including "
        "process start-up. kafka-python decodes every record of a fetched batch, including "
        "those before the seek offset; the simulated topic was written in large batches, so "
        "an hourly read decodes several hours of records.",
    ]
    findings = _window_findings(hourly, project_s, kcat_s)
    if span["kcat"] is None:
        notes.append("kcat not installed: its figures are n/a (`apt-get install kcat`).")
    else:
        findings.append(
            f"kcat reads the span {span['kcat'] / span['project']:.1f}x as fast as the project's "
            f"reader and {span['kcat'] / span['bare']:.1f}x as fast as bare kafka-python: most "
            "of the gap to the floor is the Python client, not the project's bookkeeping."
            if span["bare"] and span["project"]
            else "kcat figures are incomplete."
        )
    if hourly["bare"] and hourly["project"] and hourly["project"] < hourly["bare"]:
        findings.append(
            "On hourly windows the project's reader reaches "
            f"{hourly['project'] / hourly['bare']:.2f}x the bare consumer's records per second."
        )
    return {
        "title": "3. Window read",
        "figures": figures,
        "findings": findings,
        "notes": notes,
        "raw": reads,
    }


# The goal of issue #15 for one hourly window read.
WINDOW_GOAL_S = 0.03


def _window_findings(hourly: dict[str, Any], project_s: Any, kcat_s: Any) -> list[str]:
    if project_s is None:
        return []
    met = "meets" if project_s <= WINDOW_GOAL_S else "misses"
    text = (
        f"One hourly window ({hourly['records'] / max(1, hourly['windows']):.0f} records) "
        f"takes {project_s * 1000:.1f} ms to read: it {met} the goal of "
        f"{WINDOW_GOAL_S * 1000:.0f} ms"
    )
    if kcat_s:
        text += f"; kcat reads the same offsets in {kcat_s * 1000:.1f} ms"
    return [text + "."]
