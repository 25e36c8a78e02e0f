"""Live accuracy: how did the versions that actually served do, hour by hour?

Joins the scorer's predictions with the labelled records of the same key and event time once
the window's labels have arrived, and logs each serving version's accuracy to its long-lived
MLflow run "serving v<version>" (metric `live_accuracy`, step = the window's start in epoch
minutes).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tasks import serving_runs
from tasks.errors import InputError
from tasks.schema import MalformedRecord, StreamSchema, parse_event_time
from tasks.settings import Settings
from tasks.stream import read_predictions, read_window
from tasks.windowing import Window

log = logging.getLogger(__name__)


JoinKey = tuple[str, int]  # (the schema's key as text, event time in epoch ms)


@dataclass(frozen=True)
class VersionAccuracy:
    """One model version's predictions in a window, joined with their labels."""

    version: str
    joined: int = 0
    correct: int = 0
    unmatched_predictions: int = 0  # predicted, but no labelled record (yet) for key and time
    duplicates: int = 0  # repeated predictions of one record, counted once

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.joined if self.joined else None


@dataclass(frozen=True)
class JoinResult:
    """The join of one window's predictions with its labelled records."""

    versions: dict[str, VersionAccuracy]
    unmatched_labels: int  # labelled records that no prediction was found for
    unreadable_predictions: int = 0  # no key or event time: cannot be joined
    other_models: int = 0  # predictions of another model on the same topic


@dataclass(frozen=True)
class MonitorResult:
    """What `monitor_window` found and logged for one window."""

    window: Window
    join: JoinResult
    labelled_rows: int
    labels_closed: bool  # False: the labelled window was still open, labels may be missing
    predictions_read: int
    run_ids: dict[str, str] = field(default_factory=dict)  # version -> "serving v<version>" run

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window.start.isoformat(),
            "labelled_rows": self.labelled_rows,
            "labels_closed": self.labels_closed,
            "predictions_read": self.predictions_read,
            "unmatched_labels": self.join.unmatched_labels,
            "versions": {
                v: {
                    "joined": a.joined,
                    "correct": a.correct,
                    "accuracy": a.accuracy,
                    "unmatched_predictions": a.unmatched_predictions,
                    "duplicates": a.duplicates,
                    "run_id": self.run_ids.get(v),
                }
                for v, a in sorted(self.join.versions.items())
            },
        }


# --- the join (pure) -----------------------------------------------------------------------


def labels_by_key(schema: StreamSchema, labelled: pd.DataFrame) -> dict[JoinKey, Any]:
    """The label of each (key, event time) of a window frame (as `read_window` returns it)."""
    if schema.key is None:
        raise InputError(f"schema {schema.name} has no key: predictions cannot be joined")
    keys = labelled[schema.key].astype(str)
    times = labelled["_event_ms"].astype("int64")
    return dict(zip(zip(keys, times, strict=True), labelled[schema.label.field], strict=True))


@dataclass
class Deduplicated:
    """Predictions reduced to one per (key, event time), and what was left out."""

    kept: dict[JoinKey, Mapping[str, Any]] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)  # per version
    unreadable: int = 0
    other_models: int = 0


def first_predictions(
    schema: StreamSchema, predictions: Iterable[Mapping[str, Any]]
) -> Deduplicated:
    """One prediction per (key, event time): the first one scored.

    A re-scored input offset (at-least-once) or a repeated input record of the same key and
    event time is a duplicate: it is counted against its version but not joined again.
    """
    out = Deduplicated()
    seen_inputs: set[tuple[Any, Any, Any]] = set()
    for p in sorted(predictions, key=lambda p: p.get("scored_at_ms", 0)):
        if p.get("model_name", schema.name) != schema.name:
            out.other_models += 1
            continue
        try:
            join_key = (str(p["key"]), parse_event_time(schema.event_time, p["event_time"]))
        except (KeyError, MalformedRecord):
            out.unreadable += 1
            continue
        source = (p.get("input_topic"), p.get("input_partition"), p.get("input_offset"))
        if join_key in out.kept or (source[2] is not None and source in seen_inputs):
            out.duplicates[str(p["model_version"])] += 1
            continue
        seen_inputs.add(source)
        out.kept[join_key] = p
    return out


def join_predictions(
    schema: StreamSchema, labelled: pd.DataFrame, predictions: Iterable[Mapping[str, Any]]
) -> JoinResult:
    """Join predictions with labelled records on (key as text, event time); count per version.

    A prediction is correct when the class it served (`predicted`) equals the label.
    """
    labels = labels_by_key(schema, labelled)
    deduped = first_predictions(schema, predictions)
    joined: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    unmatched: Counter[str] = Counter()
    for join_key, p in deduped.kept.items():
        version = str(p["model_version"])
        if join_key not in labels:
            unmatched[version] += 1
            continue
        joined[version] += 1
        correct[version] += int(p["predicted"] == labels[join_key])
    served = sorted(set(joined) | set(unmatched) | set(deduped.duplicates))
    versions = {
        v: VersionAccuracy(v, joined[v], correct[v], unmatched[v], deduped.duplicates[v])
        for v in served
    }
    return JoinResult(
        versions=versions,
        unmatched_labels=len(labels.keys() - deduped.kept.keys()),
        unreadable_predictions=deduped.unreadable,
        other_models=deduped.other_models,
    )


def window_metrics(join: JoinResult, version: str) -> dict[str, float]:
    """What a serving run records for one window (accuracy only when something joined)."""
    acc = join.versions[version]
    metrics: dict[str, float] = {
        "live_joined": acc.joined,
        "live_correct": acc.correct,
        "live_unmatched_predictions": acc.unmatched_predictions,
        "live_duplicates": acc.duplicates,
        # Labels without a prediction belong to no version: each serving run of the window
        # records the window's count, so a run shows how complete its window's join was.
        "live_unmatched_labels": join.unmatched_labels,
    }
    if acc.accuracy is not None:
        metrics["live_accuracy"] = acc.accuracy
    return metrics


def window_step(window: Window) -> int:
    """The MLflow step of a window: its start in epoch minutes, unique for any window length
    (four 15-minute windows would share one epoch hour and overwrite each other's value)."""
    return window.start_ms // 60_000


# --- the step --------------------------------------------------------------------------------


def monitor_window(
    settings: Settings, schema: StreamSchema, window: Window, *, predictions_topic: str
) -> MonitorResult:
    """Join one window's predictions with its labels and log each serving version's accuracy."""
    labelled = read_window(settings, schema, window, send_dead_letters=False)
    predictions = read_predictions(settings, schema, window, topic=predictions_topic)
    join = join_predictions(schema, labelled.frame, predictions)
    if not labelled.manifest.closed:
        log.warning("labels of %s are still arriving: live accuracy may change", window)
    run_ids: dict[str, str] = {}
    for version in join.versions:
        run_ids[version] = serving_runs.serving_run(settings, schema, version)
        serving_runs.log_serving_window(
            settings, run_ids[version], window_step(window), window_metrics(join, version)
        )
    result = MonitorResult(
        window=window,
        join=join,
        labelled_rows=len(labelled.frame),
        labels_closed=labelled.manifest.closed,
        predictions_read=len(predictions),
        run_ids=run_ids,
    )
    log.info("live accuracy of %s: %s", window, result.to_dict()["versions"])
    return result
