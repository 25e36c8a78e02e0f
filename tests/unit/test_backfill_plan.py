"""The backfill's loop decisions: when a periodic retrain is due, and whose trigger a
fine-tune carries (no Kafka or MLflow: the cycle steps are stand-ins)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import flows.backfill as backfill
from tasks.cycle import CycleContext, CycleResult
from tasks.schema import load_schema
from tasks.settings import Settings
from tasks.windowing import Window, format_instant, windows_between
from tests.integration.helpers import DRONE, SENSOR

DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize("length", [timedelta(minutes=15), timedelta(hours=1)])
def test_a_periodic_retrain_is_due_once_per_period_whatever_the_window_length(
    length: timedelta,
) -> None:
    windows = windows_between(DAY, DAY + timedelta(days=2), length)
    due = [w for w in windows if backfill.retrain_due(w, 24, 0)]
    assert [w.start for w in due] == [DAY, DAY + timedelta(days=1)]
    six_hourly = [w.start.hour for w in windows if backfill.retrain_due(w, 6, 2)]
    assert six_hourly == [2, 8, 14, 20] * 2
    assert not any(backfill.retrain_due(w, None, 0) for w in windows)


def test_only_the_drift_retrain_carries_the_drift_trigger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a drift retrain in a replay, the next fine-tunes keep the replay's own trigger."""
    schema = load_schema(DRONE)
    ctx = CycleContext(settings=Settings(), schema=schema)
    seen: list[tuple[str, str]] = []

    def finetune(ctx: CycleContext, window: Window, *, trigger: str) -> CycleResult:
        seen.append(("finetune", trigger))
        result = CycleResult("finetune", format_instant(window.start), format_instant(window.end))
        if window.start.hour == 10:
            result.retrain_triggered = True
            result.retrain_trigger = f"drift:concept@{format_instant(window.start)}"
        return result

    def retrain(ctx: CycleContext, until: datetime, *, trigger: str) -> CycleResult:
        seen.append(("retrain", trigger))
        return CycleResult("retrain", format_instant(until), format_instant(until))

    @contextmanager
    def nothing(*args: Any, **kwargs: Any) -> Iterator[None]:
        yield None

    monkeypatch.setattr(backfill, "finetune_window", finetune)
    monkeypatch.setattr(backfill, "retrain_until", retrain)
    monkeypatch.setattr(backfill, "window_reader", nothing)
    monkeypatch.setattr(backfill, "training_lock", nothing)
    monkeypatch.setattr(backfill, "_prime_history", lambda *args: None)
    backfill.run_backfill(ctx, DAY + timedelta(hours=9), DAY + timedelta(hours=13))
    assert seen == [
        ("finetune", "backfill"),
        ("finetune", "backfill"),
        ("retrain", "drift:concept@2026-03-02T10:00Z"),
        ("finetune", "backfill"),
        ("finetune", "backfill"),
    ]


def test_monitor_steps_differ_for_every_window_of_an_hour() -> None:
    from tasks.monitor import window_step

    schema = load_schema(SENSOR)
    windows = windows_between(DAY, DAY + timedelta(hours=1), schema.window)
    assert len({window_step(w) for w in windows}) == 4
