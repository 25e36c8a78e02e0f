"""Binary metrics against sklearn, and the paired bootstrap's determinism and sense."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from tasks.evaluation import binary_metrics, metric_value, paired_bootstrap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    proba = np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1)
    proba[:20] = 0.5  # ties and the threshold itself
    predicted = (proba >= 0.5).astype(int)
    got = binary_metrics(y, proba)
    assert got.accuracy == pytest.approx(skm.accuracy_score(y, predicted))
    assert got.f1 == pytest.approx(skm.f1_score(y, predicted))
    assert got.precision == pytest.approx(skm.precision_score(y, predicted))
    assert got.recall == pytest.approx(skm.recall_score(y, predicted))
    assert got.auc == pytest.approx(skm.roc_auc_score(y, proba))
    assert got.log_loss == pytest.approx(skm.log_loss(y, proba), rel=1e-4)
    assert (got.n, got.positives) == (300, int(y.sum()))


def test_one_class_gives_nan_auc_and_zero_division_as_zero() -> None:
    got = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(got.auc)
    assert (got.accuracy, got.f1, got.precision, got.recall) == (1.0, 0.0, 0.0, 0.0)


def test_metric_value_by_name() -> None:
    got = binary_metrics([0, 1, 1], [0.2, 0.9, 0.4])
    assert metric_value(got, "recall") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value(got, "r2")


def _two_models(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(y * 0.6 + rng.uniform(0, 0.4, n), 0, 1)  # always right
    noisy = rng.uniform(0, 1, n)  # a coin
    return y, good, noisy


@pytest.mark.parametrize("metric", ["accuracy", "f1", "auc", "precision", "recall", "log_loss"])
def test_bootstrap_is_deterministic_given_seed(metric: str) -> None:
    y, good, noisy = _two_models(0)
    first = paired_bootstrap(y, good, noisy, metric, samples=200, confidence=0.9, seed=3)
    again = paired_bootstrap(y, good, noisy, metric, samples=200, confidence=0.9, seed=3)
    other = paired_bootstrap(y, good, noisy, metric, samples=200, confidence=0.9, seed=4)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low <= first.diff <= first.high


@pytest.mark.parametrize("metric", ["accuracy", "f1", "auc"])
def test_clearly_better_model_has_interval_above_zero(metric: str) -> None:
    y, good, noisy = _two_models(1)
    result = paired_bootstrap(y, good, noisy, metric, samples=300, confidence=0.95, seed=0)
    assert result.low > 0
    reverse = paired_bootstrap(y, noisy, good, metric, samples=300, confidence=0.95, seed=0)
    assert reverse.high < 0


def test_bootstrap_of_identical_models_is_zero() -> None:
    y, good, _ = _two_models(2)
    result = paired_bootstrap(y, good, good, "f1", samples=100, confidence=0.95, seed=0)
    assert (result.diff, result.low, result.high) == (0.0, 0.0, 0.0)


def test_bootstrap_needs_rows_scored_by_both() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [0.9, 0.1], [0.5], "f1", samples=50, confidence=0.9, seed=0)
