"""Sample weights of training rows: recent rows count more, and old rows only where valid.

Pure numpy over frames with `_event_ms`; the planner (tasks/plan.py) composes them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tasks.schema import StreamSchema
from tasks.settings import Settings

HOUR_MS = 3_600_000

Model = Callable[[pd.DataFrame], np.ndarray]  # rows -> probabilities of the positive class


def recency_weights(event_ms: np.ndarray, now_ms: int, half_life_hours: float) -> np.ndarray:
    """1 for a row at `now_ms`, halving every `half_life_hours` into the past."""
    age_hours = np.maximum(now_ms - np.asarray(event_ms, dtype=np.int64), 0) / HOUR_MS
    return np.power(0.5, age_hours / half_life_hours)


def targets(schema: StreamSchema, frame: pd.DataFrame) -> np.ndarray:
    return (frame[schema.label.field].to_numpy() == schema.label.positive).astype(float)


def agreement(schema: StreamSchema, frame: pd.DataFrame, model: Model) -> np.ndarray:
    """True for rows whose label a model of the new concept predicts: old rows still valid."""
    if frame.empty:
        return np.zeros(0, dtype=bool)
    predicted = np.asarray(model(frame), dtype=float).reshape(-1) >= 0.5
    return predicted == (targets(schema, frame) == 1.0)


def weighted_replay(
    pool: pd.DataFrame, new_weight: float, size: int, settings: Settings, now_ms: int, salt: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """A replay drawn towards the present, weighted so the new rows keep their share.

    Rows are drawn without replacement with probability proportional to their recency weight;
    their sample weights are then scaled so that the window's own rows (total `new_weight`)
    carry at least `replay_new_share` of the fine-tune's weight.
    """
    if pool.empty or size <= 0:
        return pool.iloc[:0], np.zeros(0)
    recency = recency_weights(
        pool["_event_ms"].to_numpy(), now_ms, settings.recency_half_life_hours
    )
    picks = np.arange(len(pool))
    if len(pool) > size:
        rng = np.random.default_rng([settings.seed, salt])
        picks = np.sort(rng.choice(len(pool), size=size, replace=False, p=recency / recency.sum()))
    chosen, weights = pool.iloc[picks], recency[picks]
    share = settings.replay_new_share
    budget = new_weight * (1.0 - share) / share
    if weights.sum() > budget:
        weights = weights * (budget / weights.sum())
    return chosen, weights
