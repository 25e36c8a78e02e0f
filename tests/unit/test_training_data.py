"""Which rows train and which evaluate; the report's per-day totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tasks.report import daily_summary, report_rows, to_csv
from tasks.schema import load_schema
from tasks.training_data import RecentHistory, holdout_mask, replay_sample
from tasks.windowing import Window

SCHEMA = load_schema(Path(__file__).resolve().parents[2] / "schemas" / "drone.yaml")
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "store_id": [i % 100 + 1 for i in range(offset, offset + n)],
            "_event_ms": [1_767_600_000_000 + i * 1000 for i in range(offset, offset + n)],
        }
    )


def test_holdout_is_a_stable_quarter_whatever_frame_a_row_is_in() -> None:
    whole = frame(4000)
    mask = holdout_mask(SCHEMA, whole, seed=7)
    assert 0.22 < mask.mean() < 0.28
    part = holdout_mask(SCHEMA, whole.iloc[1000:2000].reset_index(drop=True), seed=7)
    assert (part == mask[1000:2000]).all()  # a row's fate does not depend on its company
    assert (holdout_mask(SCHEMA, whole, seed=8) != mask).any()


def test_replay_sample_is_deterministic_and_bounded() -> None:
    history = frame(1000)
    a = replay_sample(history, 100, seed=7, salt=3)
    assert len(a) == 100 and a.equals(replay_sample(history, 100, seed=7, salt=3))
    assert not a.equals(replay_sample(history, 100, seed=7, salt=4))
    assert len(replay_sample(history, 5000, seed=7, salt=3)) == 1000
    assert replay_sample(history, 0, seed=7, salt=3).empty


def test_recent_history_keeps_the_last_windows() -> None:
    history = RecentHistory.empty(max_windows=3)
    windows = [Window(T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(5)]
    for i, window in enumerate(windows):
        history.add(window, frame(10, offset=i * 10))
    assert len(history.before(windows[4].shifted(1), 2)) == 20
    assert history.covers(windows[4].shifted(1), 3)
    assert not history.covers(windows[4].shifted(1), 4)  # window 1 was dropped


def test_report_orders_windows_and_sums_days() -> None:
    cycles = [
        {
            "window_start": "2026-01-06T10:00Z",
            "kind": "finetune",
            "rows": 100,
            "prequential_accuracy": 0.9,
            "decision": "promoted",
            "reasons": ["a"],
        },
        {  # a retrain counts on the day its range ends, not the day it starts
            "window_start": "2025-12-23T00:00Z",
            "window_end": "2026-01-06T00:00Z",
            "kind": "retrain",
            "rows": 5000,
            "decision": "promoted",
            "reasons": [],
        },
        {
            "window_start": "2026-01-06T11:00Z",
            "kind": "finetune",
            "rows": 100,
            "prequential_accuracy": 0.8,
            "decision": "rolled back",
            "reasons": ["b", "c"],
        },
    ]
    rows = report_rows(cycles)
    assert [r["kind"] for r in rows] == ["retrain", "finetune", "finetune"]
    (day,) = daily_summary(rows)
    assert day["windows"] == 2 and day["rows"] == 200 and day["retrains"] == 1
    assert day["promotions"] == 2 and day["rollbacks"] == 1
    assert abs(day["prequential_accuracy"] - 0.85) < 1e-9
    assert "b | c" in to_csv(rows)


def test_recent_history_looks_back_hours_of_time_whatever_the_window_length() -> None:
    quarter = timedelta(minutes=15)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    history = RecentHistory.empty(max_windows=100)
    for i in range(16):  # four hours of 15-minute windows, one row each
        window = Window(start + i * quarter, start + (i + 1) * quarter)
        history.add(window, pd.DataFrame({"_event_ms": [window.start_ms]}))
    now = Window(start + 16 * quarter, start + 17 * quarter)
    # Two hours back are eight 15-minute windows, not two.
    assert len(history.before(now, 2)) == 8
    assert history.covers(now, 4) and not history.covers(now, 5)
