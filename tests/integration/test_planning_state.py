"""The planner's state as the cycle keeps it in the registry, read back by the next run."""

from __future__ import annotations

import pytest

from bench.replica import simulated_frame
from tasks import guards
from tasks.cycle import CycleContext
from tasks.drift_policy import DriftEpisodes
from tasks.model import build_model
from tasks.plan import new_alarm
from tasks.settings import Settings
from tasks.simulator import SimulationConfig
from tasks.windowing import to_ms
from tests.integration.helpers import fresh_schema, quick_training, register_by_hand
from tests.integration.hostile import BASE

pytestmark = pytest.mark.integration


def test_a_reuse_is_stored_with_the_alarm_and_read_back_by_the_next_run(
    settings: Settings,
) -> None:
    """The nightly retrain after a reuse runs in another process: it must still know that the
    serving line was brought back for the current change, so the old rows are judged by that
    champion rather than by a probe of the few days since the change."""
    s = quick_training(settings)
    schema = fresh_schema(prefix="reuse-state")
    frame = simulated_frame(schema, SimulationConfig(start=BASE, hours=24, seed=3))
    register_by_hand(s, schema, build_model(schema, s, frame), name="past", window_start=BASE)
    change = to_ms(BASE)
    alarm = new_alarm(s, 0.95)
    assert alarm.update(0.4, 100, change).alarm
    ctx = CycleContext(settings=s, schema=schema)
    ctx.cache["alarm"], ctx.cache["episodes"] = alarm, DriftEpisodes()
    guards.alarm_for_new_champion(ctx, 0.93, fine_tuned=False, reused=True)

    later = CycleContext(settings=s, schema=schema)  # a new run: nothing cached
    assert guards.change_start(later) == change
    assert guards.serves_returned_concept(later)
    guards.alarm_for_new_champion(later, 0.9, fine_tuned=False)  # a retrain of the same change
    assert guards.serves_returned_concept(CycleContext(settings=s, schema=schema))

    other = fresh_schema(prefix="retrain-state")
    register_by_hand(s, other, build_model(other, s, frame), name="past", window_start=BASE)
    plain = CycleContext(settings=s, schema=other)
    plain.cache["alarm"], plain.cache["episodes"] = new_alarm(s, 0.95), DriftEpisodes()
    plain.cache["alarm"].update(0.4, 100, change)
    guards.alarm_for_new_champion(plain, 0.93, fine_tuned=False)  # a retrain, not a reuse
    assert not guards.serves_returned_concept(CycleContext(settings=s, schema=other))
