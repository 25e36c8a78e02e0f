"""Which rows train and which evaluate: a fixed holdout split, replay samples, recent history.

The holdout split is a hash of each row's identity (entity key and event time) and the seed,
so a row is either always held out or always trainable, whichever model looks at it: the
champion and the challenger are compared on rows neither was trained on.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.windowing import Window, windows_in

HOLDOUT_SHARE = 0.25


def history_hours(settings: Settings) -> int:
    """Hours of history a fine-tune looks back on: its replay pool and its long holdout."""
    return max(settings.replay_hours, settings.long_holdout_hours)


def history_windows(settings: Settings, length: timedelta) -> int:
    """That history as a number of windows of the schema's length."""
    return windows_in(timedelta(hours=history_hours(settings)), length)


def holdout_mask(schema: StreamSchema, frame: pd.DataFrame, seed: int) -> np.ndarray:
    """True for rows held out for evaluation (a stable ~25% of rows)."""
    if frame.empty:
        return np.zeros(0, dtype=bool)
    keys = frame[schema.key].astype(str) if schema.key else pd.Series([""] * len(frame))
    identities = keys.to_numpy(dtype=str)
    stamps = frame["_event_ms"].to_numpy()
    draws = [
        int.from_bytes(hashlib.blake2b(f"{seed}|{k}|{t}".encode(), digest_size=8).digest()) / 2**64
        for k, t in zip(identities, stamps, strict=True)
    ]
    return np.asarray(draws) < HOLDOUT_SHARE


def data_hash(frame: pd.DataFrame) -> str:
    """A short content hash of the rows a model saw, recorded in its lineage."""
    return hashlib.sha256(
        pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy().tobytes()
    ).hexdigest()[:16]


def replay_sample(history: pd.DataFrame, size: int, seed: int, salt: int) -> pd.DataFrame:
    """A deterministic sample of recent history, mixed into a fine-tune so it does not forget."""
    if history.empty or size <= 0:
        return history.iloc[:0]
    if len(history) <= size:
        return history
    rng = np.random.default_rng([seed, salt])
    picks = np.sort(rng.choice(len(history), size=size, replace=False))
    return history.iloc[picks]


@dataclass
class RecentHistory:
    """The last few windows' rows, kept in memory by a backfill instead of re-reading Kafka."""

    max_windows: int
    _frames: OrderedDict[Window, pd.DataFrame]

    @classmethod
    def empty(cls, max_windows: int) -> RecentHistory:
        return cls(max_windows, OrderedDict())

    def add(self, window: Window, frame: pd.DataFrame) -> None:
        self._frames[window] = frame
        self._frames.move_to_end(window)
        while len(self._frames) > self.max_windows:
            self._frames.popitem(last=False)

    def before(self, window: Window, hours: int) -> pd.DataFrame:
        """Rows of windows that start in [window.start - hours, window.start) (hours of time,
        whatever the window length)."""
        earliest = window.start - timedelta(hours=hours)
        parts = [f for w, f in self._frames.items() if earliest <= w.start < window.start]
        parts = [p for p in parts if not p.empty]
        if not parts:
            return pd.DataFrame()
        return pd.concat(parts, ignore_index=True)

    def prime(self, span: Window, frame: pd.DataFrame, length: timedelta) -> None:
        """Fill with the windows of `span` from one read of the whole span."""
        starts = (
            frame["_event_ms"] // int(length.total_seconds() * 1000) if not frame.empty else None
        )
        window = Window(span.start, span.start + length)
        while window.start < span.end:
            rows = (
                frame.iloc[:0]
                if starts is None
                else frame[starts == window.start_ms // int(length.total_seconds() * 1000)]
            )
            self.add(window, rows.reset_index(drop=True))
            window = window.shifted(1)

    def covers(self, window: Window, hours: int) -> bool:
        earliest = window.start - timedelta(hours=hours)
        return any(w.start <= earliest for w in self._frames)
