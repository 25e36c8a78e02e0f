"""Drift checks: has the data moved away from what the model was trained on, has it stopped working?

Data drift compares a window (and the recent period) with a `ReferenceProfile` saved at
training time: PSI as the size of the change, a KS or chi-square test as its significance.
Concept drift watches the prequential error rate with a Page-Hinkley test (Page 1954).
Pure numpy/scipy: no Kafka, no MLflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats

from tasks.gate import DriftLevel, DriftSignal
from tasks.schema import FeatureSpec, Scalar, StreamSchema

_LEVELS: tuple[DriftLevel, ...] = ("none", "mild", "severe")
_DECILES = np.linspace(0.1, 0.9, 9)
SAMPLE_SIZE = 500  # reference values kept per numeric feature, for the KS test
EPSILON = 1e-4  # PSI smoothing: an empty bin counts as this share, not zero
MIN_EXPECTED = 5.0  # chi-square cells expecting fewer rows are pooled (Cochran's rule)


# --- the reference profile ---------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoricalProfile(_Frozen):
    values: list[Scalar]
    freqs: list[float]


class NumericProfile(_Frozen):
    edges: list[float]  # inner bin edges: the reference's distinct deciles
    freqs: list[float]  # len(edges) + 1 bins, open at both ends
    sample: list[float]  # sorted, evenly spaced by rank, at most SAMPLE_SIZE values


class ReferenceProfile(_Frozen):
    """The training data's distributions, saved with the model version."""

    rows: int
    schema_fingerprint: str
    categorical: dict[str, CategoricalProfile]
    numeric: dict[str, NumericProfile]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        return cls.model_validate_json(text)


def build_reference(schema: StreamSchema, frame: pd.DataFrame) -> ReferenceProfile:
    """Profile every feature of the training rows `frame`."""
    if frame.empty:
        raise ValueError("cannot build a drift reference from an empty frame")
    categorical: dict[str, CategoricalProfile] = {}
    numeric: dict[str, NumericProfile] = {}
    for spec in schema.features:
        column = frame[spec.name].dropna()
        if spec.kind == "categorical":
            counts = _counts(column)
            total = sum(counts.values())
            values = sorted(counts, key=_order)
            freqs = [counts[v] / total for v in values]
            categorical[spec.name] = CategoricalProfile(values=values, freqs=freqs)
        else:
            data = np.sort(column.to_numpy(dtype=float))
            edges = np.unique(np.quantile(data, _DECILES))
            ranks = np.linspace(0, len(data) - 1, min(len(data), SAMPLE_SIZE)).round()
            numeric[spec.name] = NumericProfile(
                edges=edges.tolist(),
                freqs=_bin_shares(data, edges).tolist(),
                sample=data[ranks.astype(int)].tolist(),
            )
    return ReferenceProfile(
        rows=len(frame),
        schema_fingerprint=schema.fingerprint(),
        categorical=categorical,
        numeric=numeric,
    )


def _counts(column: pd.Series) -> dict[Scalar, int]:
    """Value counts with plain Python keys (numpy ints would not match JSON-loaded ones)."""
    out: dict[Scalar, int] = {}
    for value in column.tolist():
        out[value] = out.get(value, 0) + 1
    return out


def _order(value: Scalar) -> tuple[str, Scalar]:
    return (type(value).__name__, value)


def _bin_shares(data: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, data, side="right"), minlength=len(edges) + 1)
    return counts / max(len(data), 1)


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index of two aligned share vectors, smoothed so empty bins count."""
    e = (expected + epsilon) / (1 + epsilon * len(expected))
    a = (actual + epsilon) / (1 + epsilon * len(actual))
    return float(np.sum((a - e) * np.log(a / e)))


# --- data drift --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature compared on one scope ("window" or "recent"); `used` ones decide verdicts."""

    feature: str
    statistic: str  # "psi"
    value: float
    threshold: float  # the PSI threshold the verdict is about
    p_value: float | None  # of `test`; None when the sample was too small for it
    verdict: DriftLevel
    test: str | None = None  # "ks" (numeric) or "chi2" (categorical)
    scope: str = "window"
    rows: int = 0
    used: bool = True
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    overall: DriftLevel
    new_categories: dict[str, list[Scalar]] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """One row per comparison, for an MLflow or Prefect table artifact."""
        return [asdict(f) for f in self.features]

    def to_signal(self, concept_drift_alarm: bool = False) -> DriftSignal:
        """What the promotion gate needs from this report."""
        return DriftSignal(self.overall, concept_drift_alarm, dict(self.new_categories))


@dataclass(frozen=True)
class _Thresholds:
    psi_mild: float
    psi_severe: float
    p_value: float
    min_rows: int


def check_data_drift(
    schema: StreamSchema,
    reference: ReferenceProfile,
    frame: pd.DataFrame,
    *,
    recent: pd.DataFrame | None = None,
    psi_mild: float = 0.1,
    psi_severe: float = 0.25,
    p_value: float = 0.01,
    min_rows_for_test: int = 50,
) -> DriftReport:
    """Compare the window (and the recent period) with the reference, feature by feature.

    A feature drifts when its PSI reaches a threshold and, where the sample is large enough for
    a test, the test agrees (p < `p_value`): PSI alone on a hundred rows is noisy. The recent
    period decides when the window has fewer than `min_rows_for_test` rows.
    """
    limits = _Thresholds(psi_mild, psi_severe, p_value, min_rows_for_test)
    use_recent = recent is not None and len(frame) < min_rows_for_test
    rows: list[FeatureDrift] = []
    for spec in schema.features:
        if not spec.drift_check:
            continue
        rows.append(_compare(spec, reference, frame, "window", not use_recent, limits))
        if recent is not None:
            rows.append(_compare(spec, reference, recent, "recent", use_recent, limits))
    verdicts = [r.verdict for r in rows if r.used]
    overall: DriftLevel = max(verdicts, key=_LEVELS.index, default="none")
    return DriftReport(rows, overall, new_categories(schema, reference, frame))


def new_categories(
    schema: StreamSchema, reference: ReferenceProfile, frame: pd.DataFrame
) -> dict[str, list[Scalar]]:
    """Values of categorical features that neither the reference nor the schema knows, by feature.

    A value the schema declares (in `values`, or inside a closed `min`..`max` range) is known
    to the model whatever the reference saw, and `drift_check: false` features are skipped:
    a young stream's first Wednesday is not a new day of the week.
    """
    out: dict[str, list[Scalar]] = {}
    for spec in schema.categorical_features:
        if not spec.drift_check or spec.name not in reference.categorical or spec.name not in frame:
            continue
        known = set(reference.categorical[spec.name].values)
        unseen = {v for v in _counts(frame[spec.name].dropna()) if v not in known}
        unseen = {v for v in unseen if not declared(spec, v)}
        if unseen:
            out[spec.name] = sorted(unseen, key=_order)
    return out


def declared(spec: FeatureSpec, value: Scalar) -> bool:
    """Whether the schema declares `value` for this feature: a `values` member or inside a
    closed `min`..`max` range (an open-ended range, such as store ids from 1, declares none)."""
    if spec.values is not None:
        return value in spec.values
    if spec.min is None or spec.max is None or isinstance(value, (str, bool)):
        return False
    return spec.min <= float(value) <= spec.max


def reference_for_range(schema: StreamSchema, frame: pd.DataFrame) -> ReferenceProfile:
    """The reference profile of a whole retrain range, holdout period included, from the
    feature values only (never the labels): the next windows are compared with all of it."""
    return build_reference(schema, frame[schema.feature_names])


def _compare(
    spec: FeatureSpec,
    reference: ReferenceProfile,
    frame: pd.DataFrame,
    scope: str,
    used: bool,
    limits: _Thresholds,
) -> FeatureDrift:
    column = frame[spec.name].dropna() if spec.name in frame else pd.Series([], dtype=float)
    if spec.kind == "numeric":
        value, test, p = _numeric(reference.numeric[spec.name], column, limits.min_rows)
    else:
        value, test, p = _categorical(reference.categorical[spec.name], column, limits.min_rows)
    level: DriftLevel = (
        "severe" if value >= limits.psi_severe else "mild" if value >= limits.psi_mild else "none"
    )
    note = ""
    if len(column) < limits.min_rows:
        level, note = "none", f"fewer than {limits.min_rows} rows: no verdict"
    elif p is not None and p >= limits.p_value and level != "none":
        level, note = "none", f"{test} p={p:.3g} not significant"
    threshold = limits.psi_severe if level == "severe" else limits.psi_mild
    return FeatureDrift(
        spec.name, "psi", value, threshold, p, level, test, scope, len(column), used, note
    )


def _numeric(
    profile: NumericProfile, column: pd.Series, min_rows: int
) -> tuple[float, str | None, float | None]:
    data = column.to_numpy(dtype=float)
    if not len(data):
        return 0.0, None, None
    edges = np.asarray(profile.edges)
    value = psi(np.asarray(profile.freqs), _bin_shares(data, edges))
    if len(data) < min_rows:
        return value, None, None
    p = float(stats.ks_2samp(profile.sample, data).pvalue)
    return value, "ks", p


def _categorical(
    profile: CategoricalProfile, column: pd.Series, min_rows: int
) -> tuple[float, str | None, float | None]:
    counts = _counts(column)
    n = sum(counts.values())
    if not n:
        return 0.0, None, None
    observed = np.array([counts.get(v, 0) for v in profile.values] + [0], dtype=float)
    observed[-1] = n - observed[:-1].sum()  # the last cell holds values never seen before
    expected = np.array([*profile.freqs, 0.0])
    value = psi(expected, observed / n)
    if n < min_rows:
        return value, None, None
    return value, *_chi_square(observed, expected * n)


def _chi_square(observed: np.ndarray, expected: np.ndarray) -> tuple[str | None, float | None]:
    """Chi-square goodness of fit, cells expecting fewer than MIN_EXPECTED rows pooled."""
    big = expected >= MIN_EXPECTED
    obs = [*observed[big], observed[~big].sum()]
    exp = [*expected[big], expected[~big].sum()]
    if obs[-1] == 0 and exp[-1] < MIN_EXPECTED:
        obs, exp = obs[:-1], exp[:-1]
    if len(obs) < 2:
        return None, None
    exp_arr = np.maximum(np.asarray(exp), EPSILON * sum(obs))
    exp_arr *= sum(obs) / exp_arr.sum()
    return "chi2", float(stats.chisquare(obs, exp_arr).pvalue)


# --- concept drift -----------------------------------------------------------------------------


@dataclass
class ConceptDriftDetector:
    """Page-Hinkley test for a rise in the error rate (Page 1954; River's formulation).

    `update(rate, weight)` is fed the window's prequential error rate and its row count, and
    behaves as if `weight` records with error `rate` arrived one by one, so thresholds are in
    records and a small window weighs little. With ~100 rows per window the defaults alarm
    about 4 windows into a sustained fall of accuracy from 0.9 to 0.7, while per-window noise
    of 0.03-0.06 around 0.9 practically never alarms. After an alarm, the next update starts
    afresh (as River does).
    """

    min_instances: int = 30
    delta: float = 0.02  # tolerated rise of the error per record
    threshold: float = 60.0  # lambda: alarm when the cumulative excess reaches it
    alpha: float = 1 - 0.0001  # forgetting factor of the cumulative sum, per record
    sample_count: int = 1
    mean: float = 0.0
    sum: float = 0.0
    alarmed: bool = False

    @property
    def alarm(self) -> bool:
        return self.alarmed

    def update(self, error_rate: float, weight: int = 1) -> bool:
        """Add `weight` records with mean error `error_rate`; return whether the test alarms."""
        if not 0.0 <= error_rate <= 1.0 or not math.isfinite(error_rate):
            raise ValueError(f"error rate {error_rate!r} is not in [0, 1]")
        if self.alarmed:
            self.reset()
        for _ in range(weight):
            self.mean += (error_rate - self.mean) / self.sample_count
            self.sum = max(0.0, self.alpha * self.sum + (error_rate - self.mean - self.delta))
            self.sample_count += 1
            if self.sample_count >= self.min_instances and self.sum >= self.threshold:
                self.alarmed = True
        return self.alarmed

    def reset(self) -> None:
        """Forget the stream (keep the parameters), e.g. after a retrain."""
        self.sample_count, self.mean, self.sum, self.alarmed = 1, 0.0, 0.0, False

    def warm_start(self, error_rate: float, records: int) -> None:
        """Start as if `records` records at `error_rate` had been seen (a model's holdout
        error), so the first bad window after a promotion is measured against a baseline."""
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error rate {error_rate!r} is not in [0, 1]")
        self.sample_count, self.mean = max(1, records) + 1, error_rate
        self.sum, self.alarmed = 0.0, False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> ConceptDriftDetector:
        return cls(**json.loads(text))
