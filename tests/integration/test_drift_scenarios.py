"""The simulator's scenarios through the real pipeline: bad data, sudden drift, new stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.backfill import run_backfill
from tasks import aliases, run_logging
from tasks.cycle import CycleContext, finetune_window, retrain_until
from tasks.model import vocabulary
from tasks.schema import StreamSchema, load_schema
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tasks.versions import list_versions, load_keras, version_lineage
from tasks.windowing import Window, to_ms
from tests.integration.helpers import Raw, dead_letters, own_topic
from tests.integration.helpers import quick_training as fast

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def simulated(settings: Settings, scenario: str, days: int, **config: object) -> StreamSchema:
    schema = load_schema(ROOT / "schemas" / "drone.yaml")
    schema = own_topic(schema, scenario)
    ensure_topic(settings, schema.topic)
    sim = SimulationConfig(start=START, hours=days * 24, scenario=scenario, seed=3, **config)  # type: ignore[arg-type]
    produce(settings, schema.topic, generate(sim))
    return schema


def test_corrupt_rows_are_quarantined_and_every_record_accounted(settings: Settings) -> None:
    s = fast(settings)
    schema = simulated(s, "corrupt", 2, drift_at=START, corrupt_share=0.08)
    ctx = CycleContext(settings=s, schema=schema)
    totals = {"read": 0, "accounted": 0, "quarantined": 0}
    for hour in range(9, 17):
        window = Window(START + hour * HOUR, START + (hour + 1) * HOUR)
        result = finetune_window(ctx, window)
        assert not result.rejected, result.reasons
        accounted = (
            result.rows + result.quarantined + result.duplicates + result.malformed + result.late
        )
        totals["accounted"] += accounted
        totals["read"] += 100
        totals["quarantined"] += result.quarantined
    assert totals["accounted"] == totals["read"]  # every simulated record, in its window
    assert totals["quarantined"] > 0
    quarantined = [d for d in dead_letters(s, schema) if d["kind"] == "quarantined"]
    assert len(quarantined) == totals["quarantined"]
    assert all("expect_column" in str(d["reason"]) for d in quarantined)


def _champion(settings: Settings, schema: StreamSchema) -> str:
    """A champion trained on days 0-7: every weekday seen before its holdout day."""
    result = retrain_until(CycleContext(settings=settings, schema=schema), START + WEEK + DAY)
    assert result.decision == "promoted", result.reasons
    assert result.challenger_version is not None
    return result.challenger_version


def test_broken_window_is_rejected_and_champion_unchanged(settings: Settings) -> None:
    s = fast(settings)
    schema = simulated(s, "none", 8)
    champion = _champion(s, schema)
    day8 = START + WEEK + timedelta(days=1)
    broken = []
    for store in range(1, 101):
        when = day8 + 10 * HOUR + timedelta(seconds=store * 30)
        value = {
            "event_time": when.isoformat().replace("+00:00", "Z"),
            "store_id": store,
            "day_of_week": 2,
            "hour": 10,
            "store_type": "cafe",
            "suburb": "Riverside",
            "avg_delivery_minutes": 500.0,
            "avg_distance_km": -4.0,
            "avg_rating": 9.5,
            "busy": 1,
        }
        broken.append(Raw(str(store).encode(), json.dumps(value).encode(), to_ms(when)))
    closer = Raw(b"1", broken[0].value, to_ms(day8 + 13 * HOUR))
    produce(s, schema.topic, [*broken, closer])

    result = finetune_window(
        CycleContext(settings=s, schema=schema), Window(day8 + 10 * HOUR, day8 + 11 * HOUR)
    )
    assert result.rejected and result.decision == "rejected"
    assert result.quarantined == 100 and result.rows == 0
    assert any("rejected" in reason for reason in result.reasons)
    assert aliases.get_alias_version(s, schema.name, aliases.CHAMPION) == champion
    assert len(list_versions(s, schema.name)) == 1
    rejected = [d for d in dead_letters(s, schema) if d["kind"] == "rejected"]
    assert len(rejected) == 100
    rows = run_logging.cycle_runs(s, schema.name)
    assert any(r["rejected"] and r["decision"] == "rejected" for r in rows)


@pytest.mark.slow
def test_sudden_drift_raises_an_alarm_within_12_hours_and_a_retrain_follows(
    settings: Settings,
) -> None:
    s = fast(settings)
    drift_at = START + WEEK + 2 * DAY  # a day of normal serving first: the detector's baseline
    schema = simulated(s, "sudden", 11, drift_at=drift_at)
    _champion(s, schema)
    ctx = CycleContext(settings=s, schema=schema)
    results = run_backfill(ctx, drift_at - DAY, drift_at + 2 * DAY, retrain_every_hours=None)
    alarms = [r for r in results if r.kind == "finetune" and r.concept_drift_alarm]
    assert alarms, [(r.window_start, r.prequential_accuracy) for r in results if r.rows]
    first = datetime.fromisoformat(alarms[0].window_start.replace("Z", "+00:00"))
    daylight_hours_late = sum(
        1
        for r in results
        if r.kind == "finetune"
        and r.rows
        and drift_at.isoformat()[:13] <= r.window_start < alarms[0].window_start
    )
    assert first >= drift_at
    assert daylight_hours_late <= 12
    index = results.index(alarms[0])
    follow = results[index + 1]
    assert follow.kind == "retrain" and follow.trigger.startswith("drift:")
    lineage = version_lineage(s, schema.name, str(follow.challenger_version))
    assert lineage is not None and lineage.trigger.startswith("drift:")


@pytest.mark.slow
def test_two_weeks_without_drift_raise_no_alarm(settings: Settings) -> None:
    s = fast(settings, finetune_epochs=3)
    schema = simulated(s, "none", 22)
    _champion(s, schema)
    results = run_backfill(
        CycleContext(settings=s, schema=schema),
        START + WEEK + DAY,
        START + 3 * WEEK + DAY,
        retrain_every_hours=None,
    )
    finetunes = [r for r in results if r.kind == "finetune" and r.rows]
    assert len(finetunes) == 14 * 8
    assert not [r.window_start for r in finetunes if r.concept_drift_alarm]


def test_new_stores_are_reported_by_name_and_a_retrain_learns_them(settings: Settings) -> None:
    s = fast(settings)
    schema = simulated(s, "new-stores", 9, drift_at=START + WEEK + timedelta(days=1))
    _champion(s, schema)
    ctx = CycleContext(settings=s, schema=schema)
    day8 = START + WEEK + timedelta(days=1)
    result = finetune_window(ctx, Window(day8 + 9 * HOUR, day8 + 10 * HOUR))
    assert result.new_categories["store_id"] == list(range(101, 121))
    assert result.new_categories["suburb"] == ["Harbourside"]
    assert result.retrain_triggered
    retrained = retrain_until(ctx, day8 + 17 * HOUR, trigger=result.retrain_trigger or "")
    model = load_keras(s, schema.name, str(retrained.challenger_version))
    assert {101, 120} <= set(vocabulary(model, "store_id"))
    assert "Harbourside" in vocabulary(model, "suburb")


@pytest.mark.slow
def test_fine_tunes_after_a_drift_retrain_in_a_backfill_keep_their_own_trigger(
    settings: Settings,
) -> None:
    s = fast(settings, finetune_epochs=2)
    day8 = START + WEEK + timedelta(days=1)
    schema = simulated(s, "new-stores", 9, drift_at=day8)
    _champion(s, schema)
    ctx = CycleContext(settings=s, schema=schema)
    results = run_backfill(ctx, day8 + 9 * HOUR, day8 + 13 * HOUR, retrain_every_hours=None)
    drift = next(i for i, r in enumerate(results) if r.kind == "retrain")
    assert results[drift].trigger.startswith("drift:")
    later = [r for r in results[drift + 1 :] if r.kind == "finetune" and r.challenger_version]
    assert later, [(r.kind, r.window_start, r.decision) for r in results]
    assert [r.trigger for r in later] == ["backfill"] * len(later)
    for r in later:
        lineage = version_lineage(s, schema.name, str(r.challenger_version))
        assert lineage is not None and lineage.trigger == "backfill"
    versions = {str(r.challenger_version) for r in later}
    # The moves that put these versions in place (a later promotion, drift retrains
    # included, moves previous-champion onto them with its own trigger).
    moves = [
        m
        for m in aliases.alias_history(s, schema.name)
        if m.to_version in versions and m.alias != aliases.PREVIOUS_CHAMPION
    ]
    assert moves and {m.trigger for m in moves} == {"backfill"}
