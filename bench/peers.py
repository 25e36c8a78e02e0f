"""Strategy (e): an online learner a user might pick instead, learning one record at a time.

River's Hoeffding adaptive tree and adaptive random forest, with their default parameters,
fed each record as it arrives (strings as nominal values, numbers as numbers), test-then-train
on the same records in the same order as the other strategies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.replica import Outcome
from tasks.schema import StreamSchema

PEERS = {
    "e1": "River Hoeffding adaptive tree (online, one record at a time)",
    "e2": "River adaptive random forest, 10 trees (online, one record at a time)",
}


def river_version() -> str | None:
    try:
        import river
    except ImportError:
        return None
    return str(river.__version__)


def _model(key: str, seed: int) -> Any:
    from river import forest, tree

    if key == "e1":
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    return forest.ARFClassifier(seed=seed)


def run_peer(
    key: str,
    schema: StreamSchema,
    frame: pd.DataFrame,
    evaluate_from_ms: int,
    evaluate_to_ms: int,
    seed: int,
) -> Outcome:
    """Learn every record before `evaluate_from_ms`, then predict-then-learn each record."""
    model = _model(key, seed)
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
