"""The best accuracy any learner could reach on a scenario: a ceiling to read the goals against.

An oracle that knows the simulator's busy rules and, at each instant, the chance that a record
follows the shifted rules (`tasks.simulator.shifted_share`) predicts the likelier label of
every record. Label noise it cannot know, so with 5 % noise it scores about 95 %; on the
gradual ramp, where a record follows either rule set at random, it loses what no model can
win back. A strategy's distance to this figure is what better adaptation could still gain.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from bench.strategy import Outcome
from tasks.simulator import RULES_BASE, RULES_SHIFTED, SimulationConfig, is_busy, shifted_share


def oracle_outcome(
    config: SimulationConfig,
    frame: pd.DataFrame,
    evaluate_from_ms: int,
    evaluate_to_ms: int,
    window_ms: int,
) -> Outcome:
    """Per-window counts of the oracle's predictions on the frame's records in the range."""
    rows = frame[(frame["_event_ms"] >= evaluate_from_ms) & (frame["_event_ms"] < evaluate_to_ms)]
    outcome = Outcome()
    for start_ms, hour in rows.groupby(rows["_event_ms"] // window_ms * window_ms, sort=True):
        truth = hour["busy"].to_numpy() == 1
        predicted = np.array(
            [
                _likely_busy(config, int(ms), kind, int(day), int(at))
                for ms, kind, day, at in zip(
                    hour["_event_ms"],
                    hour["store_type"],
                    hour["day_of_week"],
                    hour["hour"],
                    strict=True,
                )
            ],
            dtype=bool,
        )
        outcome.add(int(start_ms), truth, predicted)
    return outcome


def _likely_busy(config: SimulationConfig, event_ms: int, kind: str, day: int, hour: int) -> bool:
    share = shifted_share(config, datetime.fromtimestamp(event_ms / 1000, UTC))
    base, shifted = is_busy(RULES_BASE, kind, day, hour), is_busy(RULES_SHIFTED, kind, day, hour)
    return share * shifted + (1 - share) * base > 0.5
