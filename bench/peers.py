"""Strategy (e): learners a user might pick instead, scored on the same records in order.

River's Hoeffding adaptive tree and adaptive random forest with their default parameters, fed
each record as it arrives (strings as nominal values, numbers as numbers), test-then-train;
and a windowed scikit-learn logistic regression, refitted before every window on the last
7 days (categoricals one-hot, numbers standardised, no feature crosses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.strategy import Outcome
from tasks.schema import StreamSchema

PEERS = {
    "e1": "River Hoeffding adaptive tree (online, one record at a time)",
    "e2": "River adaptive random forest, 10 trees (online, one record at a time)",
    "lr": "scikit-learn logistic regression refitted each window on the last 7 days",
}
RIVER_PEERS = ("e1", "e2")
LR_DAYS = 7
DAY_MS = 86_400_000


def river_version() -> str | None:
    try:
        import river
    except ImportError:
        return None
    return str(river.__version__)


def available(peers: list[str]) -> list[str]:
    """The peers that can run here (River's need river installed)."""
    return [p for p in peers if p not in RIVER_PEERS or river_version() is not None]


def run_peer(
    key: str,
    schema: StreamSchema,
    frame: pd.DataFrame,
    evaluate_from_ms: int,
    evaluate_to_ms: int,
    seed: int,
) -> Outcome:
    if key == "lr":
        return run_windowed_logistic(schema, frame, evaluate_from_ms, evaluate_to_ms, seed)
    return run_river(key, schema, frame, evaluate_from_ms, evaluate_to_ms, seed)


def _river_model(key: str, seed: int) -> Any:
    from river import forest, tree

    if key == "e1":
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    return forest.ARFClassifier(seed=seed)


def run_river(
    key: str,
    schema: StreamSchema,
    frame: pd.DataFrame,
    evaluate_from_ms: int,
    evaluate_to_ms: int,
    seed: int,
) -> Outcome:
    """Learn every record before `evaluate_from_ms`, then predict-then-learn each record."""
    model = _river_model(key, seed)
    features = schema.feature_names
    positive = schema.label.positive
    times = frame["_event_ms"].to_numpy()
    windows = times // schema.window_ms * schema.window_ms
    records = frame[features].to_dict("records")
    labels = (frame[schema.label.field] == positive).to_numpy()
    outcome = Outcome()
    current: int | None = None
    truth: list[bool] = []
    predicted: list[bool] = []
    for i, x in enumerate(records):
        y = bool(labels[i])
        if evaluate_from_ms <= times[i] < evaluate_to_ms:
            if current is not None and windows[i] != current and truth:
                outcome.add(current, np.asarray(truth), np.asarray(predicted))
                truth, predicted = [], []
            current = int(windows[i])
            truth.append(y)
            predicted.append(bool(model.predict_one(x)))
        model.learn_one(x, y)
    if current is not None and truth:
        outcome.add(current, np.asarray(truth), np.asarray(predicted))
    return outcome


def _logistic(schema: StreamSchema, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore"),
                [f.name for f in schema.categorical_features],
            ),
            ("numeric", StandardScaler(), [f.name for f in schema.numeric_features]),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=1000, random_state=seed))


def run_windowed_logistic(
    schema: StreamSchema,
    frame: pd.DataFrame,
    evaluate_from_ms: int,
    evaluate_to_ms: int,
    seed: int,
) -> Outcome:
    """Before each window, fit on the rows of the last 7 days; then score the window."""
    times = frame["_event_ms"].to_numpy()
    labels = (frame[schema.label.field] == schema.label.positive).to_numpy()
    features = frame[schema.feature_names].astype(
        {f.name: str for f in schema.categorical_features}
    )
    outcome = Outcome()
    for start in range(evaluate_from_ms, evaluate_to_ms, schema.window_ms):
        lo, hi = np.searchsorted(times, [start, start + schema.window_ms], side="left")
        past = np.searchsorted(times, start - LR_DAYS * DAY_MS, side="left")
        if hi == lo or lo == past or len(set(labels[past:lo])) < 2:
            continue
        model = _logistic(schema, seed).fit(features.iloc[past:lo], labels[past:lo])
        predicted = np.asarray(model.predict(features.iloc[lo:hi]), dtype=bool)
        outcome.add(start, labels[lo:hi], predicted)
    return outcome
