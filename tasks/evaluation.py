"""Evaluation step: binary metrics of a model's scores and a paired bootstrap between two models.

Pure numpy, no model code: it takes labels and probabilities, so the promotion gate and the
live-accuracy checks can use it on any scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

MetricName = Literal["accuracy", "f1", "auc", "precision", "recall", "log_loss"]
_EPS = 1e-7
_CHUNK_CELLS = 500_000


@dataclass(frozen=True)
class Metrics:
    """Metrics of one model on one set of rows; f1/precision/recall are for the positive class."""

    accuracy: float
    f1: float
    auc: float  # nan when the rows hold only one class
    precision: float
    recall: float
    log_loss: float
    n: int
    positives: int


@dataclass(frozen=True)
class DiffInterval:
    """challenger - champion on the same rows, with a percentile bootstrap interval."""

    diff: float
    low: float
    high: float
    samples: int
    confidence: float = 0.95


def _arrays(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    return y, p


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney with tied ranks averaged); nan for one class."""
    positives = int(np.sum(y_true == 1))
    negatives = y_true.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(proba, kind="mergesort")
    ranks = np.empty(proba.size, dtype=np.float64)
    sorted_p = proba[order]
    # Average the ranks of tied scores, as the Mann-Whitney statistic requires.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    rank_sum = float(ranks[y_true == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def binary_metrics(y_true: ArrayLike, proba: ArrayLike, threshold: float = 0.5) -> Metrics:
    """Metrics of scores `proba` against 0/1 labels, predicting positive at `proba >= threshold`."""
    y, p = _arrays(y_true, proba)
    predicted = p >= threshold
    actual = y == 1
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    n = int(y.size)
    # Empty denominators give 0.0, as sklearn's zero_division=0 does.
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    clipped = np.clip(p, _EPS, 1 - _EPS)
    log_loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))) if n else 0.0
    return Metrics(
        accuracy=float(np.mean(predicted == actual)) if n else math.nan,
        f1=f1,
        auc=roc_auc(y, p),
        precision=precision,
        recall=recall,
        log_loss=log_loss,
        n=n,
        positives=int(actual.sum()),
    )


def metric_value(metrics: Metrics, name: str) -> float:
    """One metric by name (as the settings and the gate policy spell it)."""
    if name not in MetricName.__args__:  # type: ignore[attr-defined]
        raise ValueError(f"unknown metric {name!r}")
    return float(getattr(metrics, name))


def _resampled(name: str, y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """The metric on each row of (samples, n) resampled labels/scores, vectorised when it can be."""
    if name == "auc":
        return np.array([roc_auc(yi, pi) for yi, pi in zip(y, p, strict=True)])
    if name == "log_loss":
        clipped = np.clip(p, _EPS, 1 - _EPS)
        return -np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped), axis=1)
    predicted, actual = p >= threshold, y == 1
    tp = np.sum(predicted & actual, axis=1)
    fp = np.sum(predicted & ~actual, axis=1)
    fn = np.sum(~predicted & actual, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "accuracy":
            return np.mean(predicted == actual, axis=1)
        ratios = {
            "f1": (2 * tp, 2 * tp + fp + fn),
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
        }
        num, den = ratios[name]
        return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def paired_bootstrap(
    y_true: ArrayLike,
    proba_challenger: ArrayLike,
    proba_champion: ArrayLike,
    metric: str,
    *,
    samples: int,
    confidence: float,
    seed: int,
    threshold: float = 0.5,
) -> DiffInterval:
    """Percentile interval of metric(challenger) - metric(champion), rows resampled jointly.

    Both models are scored on the same resampled rows, so the interval reflects how much the
    difference varies with the rows, not the much larger variation of each metric alone.
    Resamples where the metric is undefined (AUC on one class) are dropped.
    """
    y, challenger = _arrays(y_true, proba_challenger)
    _, champion = _arrays(y_true, proba_champion)
    if champion.shape != y.shape:
        raise ValueError("both models must be scored on the same rows")
    if y.size == 0:
        raise ValueError("no rows to compare on")
    diff = metric_value(binary_metrics(y, challenger, threshold), metric) - metric_value(
        binary_metrics(y, champion, threshold), metric
    )
    rng = np.random.default_rng(seed)
    draws = np.empty(samples, dtype=np.float64)
    chunk = max(1, _CHUNK_CELLS // y.size)  # bounds memory on long holdouts
    for start in range(0, samples, chunk):
        rows = rng.integers(0, y.size, size=(min(chunk, samples - start), y.size))
        draws[start : start + len(rows)] = _resampled(
            metric, y[rows], challenger[rows], threshold
        ) - _resampled(metric, y[rows], champion[rows], threshold)
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return DiffInterval(diff, math.nan, math.nan, 0, confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return DiffInterval(float(diff), float(low), float(high), int(draws.size), confidence)
