"""The decision steps shared by the cycle and the benchmark: gate, reuse, expected accuracy.

Real Keras models on a small synthetic stream: concept A (cafes busy at 9) is what the
champion learned, concept B (cafes busy at 14) is the new world of the alarm window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import model as m
from tasks.cycle import CycleContext
from tasks.detector import AlarmVerdict
from tasks.drift_policy import DriftEpisodes, RetrainRequest
from tasks.gate import DriftSignal
from tasks.judge import holdout_accuracy, judge_retrain, judge_window, scorer
from tasks.plan import CURRENT, RetrainPlan, WindowPlan, new_alarm
from tasks.schema import StreamSchema, load_schema
from tasks.settings import PROJECT_ROOT, Settings
from tasks.windowing import Window, parse_instant

SETTINGS = Settings(
    hidden_units=(16, 8), seed=11, finetune_epochs=30, finetune_learning_rate=0.01, dropout=0.0
)
TYPES = ["cafe", "restaurant", "grocery", "pharmacy", "bakery"]
WINDOW = Window(parse_instant("2024-05-06T10:00:00Z"), parse_instant("2024-05-06T11:00:00Z"))


@pytest.fixture(scope="module")
def schema() -> StreamSchema:
    return load_schema(PROJECT_ROOT / "schemas" / "drone.yaml")


def rows(concept: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kind = rng.choice(TYPES, n)
    hour = rng.choice([9, 14], n)
    busy = (kind == "cafe") & (hour == (9 if concept == "A" else 14))
    return pd.DataFrame(
        {
            "event_time": ["2024-05-06T10:00:00+00:00"] * n,
            "store_id": rng.integers(1, 41, n),
            "day_of_week": np.full(n, 1),
            "hour": hour,
            "store_type": pd.array(kind, dtype="str"),
            "suburb": pd.array(["Carlton"] * n, dtype="str"),
            "avg_delivery_minutes": rng.uniform(5, 60, n),
            "avg_distance_km": rng.uniform(0, 12, n),
            "avg_rating": rng.uniform(1, 5, n),
            "busy": busy.astype(int),
        }
    )


def fitted(schema: StreamSchema, concept: str) -> m.keras.Model:
    frame = rows(concept, 600, seed=1 if concept == "A" else 2)
    model = m.build_model(schema, SETTINGS, frame)
    m.train(model, schema, frame, epochs=15, learning_rate=1e-2, batch_size=64, seed=11)
    return model


def alarm_plan(schema: StreamSchema) -> WindowPlan:
    """An alarm window of concept B: train on it, judge and weigh reuse on other B rows."""
    train, held = rows("B", 300, seed=3), rows("B", 200, seed=4)
    return WindowPlan(
        train=train,
        weights=np.ones(len(train)),
        holdouts={CURRENT: held},
        judge_on=(CURRENT,),
        alarm=AlarmVerdict(True, "wilson", True, ("accuracy fell",)),
        alarm_state=new_alarm(SETTINGS, 0.95),
        episodes=DriftEpisodes(),
        retrain=RetrainRequest(True, "concept-alarm", ("the alarm asks for a retrain",)),
        change_start_ms=WINDOW.start_ms,
        consider_reuse=True,
        reuse_rows=held,
        reuse_floor=0.0,
        reasons=(),
    )


def test_a_promoted_fine_tune_serves_when_no_past_champion_is_clearly_better(
    schema: StreamSchema,
) -> None:
    """The cycle used to refuse every fine-tune of an alarm window once past champions were
    weighed, even when none was chosen: the window's adaptation was thrown away."""
    ctx = CycleContext(settings=SETTINGS, schema=schema)
    champion, plan = fitted(schema, "A"), alarm_plan(schema)
    past = {"3": scorer(schema, champion)}  # an old-concept version: no better than the champion
    judged = judge_window(
        ctx, WINDOW, plan, champion, DriftSignal(concept_drift_alarm=True), lambda: past
    )
    assert judged.reuse is not None and judged.reused is None
    assert judged.decision.promote, judged.decision.reasons
    assert any("not reused" in r for r in judged.decision.reasons)
    assert judged.expected_accuracy == holdout_accuracy(judged.comparisons, plan.judge_on)
    assert judged.retrain == plan.retrain  # the alarm's retrain still runs


def test_a_past_champion_of_the_returning_concept_is_brought_back_instead(
    schema: StreamSchema,
) -> None:
    ctx = CycleContext(settings=SETTINGS.model_copy(update={"finetune_epochs": 1}), schema=schema)
    champion, plan = fitted(schema, "A"), alarm_plan(schema)
    knew_b = fitted(schema, "B")
    asked = []

    def past() -> dict[str, m.keras.Model]:
        asked.append(True)
        return {"2": scorer(schema, champion), "5": scorer(schema, knew_b)}

    judged = judge_window(ctx, WINDOW, plan, champion, DriftSignal(concept_drift_alarm=True), past)
    assert judged.reused == "5" and not judged.decision.promote
    held = plan.reuse_rows
    truth = held["busy"].to_numpy() == 1
    own = float(np.mean((m.predict_proba(knew_b, schema, held) >= 0.5) == truth))
    assert judged.expected_accuracy == pytest.approx(own)  # what it scored on the fall's rows
    assert judged.retrain is not None and not judged.retrain.retrain  # the reuse answered it
    assert asked == [True]


def test_without_an_alarm_no_past_champion_is_loaded(schema: StreamSchema) -> None:
    ctx = CycleContext(settings=SETTINGS.model_copy(update={"finetune_epochs": 1}), schema=schema)
    champion = fitted(schema, "A")
    plan = alarm_plan(schema)
    quiet = WindowPlan(**{**plan.__dict__, "consider_reuse": False})

    def past() -> dict[str, m.keras.Model]:
        raise AssertionError("past champions loaded without an alarm")

    judged = judge_window(ctx, WINDOW, quiet, champion, DriftSignal(), past)
    assert judged.reuse is None and judged.reused is None


def test_a_retrain_is_judged_on_the_plan_holdouts_and_expects_its_accuracy(
    schema: StreamSchema,
) -> None:
    ctx = CycleContext(settings=SETTINGS, schema=schema)
    champion = fitted(schema, "A")
    train, held = rows("B", 600, seed=5), rows("B", 200, seed=6)
    plan = RetrainPlan(
        train=train,
        weights=np.ones(len(train)),
        holdouts={CURRENT: held},
        judge_on=(CURRENT,),
        vocabulary=pd.concat([train, held]),
        change_start_ms=None,
        reasons=(),
    )
    judged = judge_retrain(ctx, plan, champion, lambda r, seen, w: fitted(schema, "B"))
    assert judged.decision.promote, judged.decision.reasons
    assert judged.expected_accuracy == holdout_accuracy(judged.comparisons, plan.judge_on)
    assert judged.expected_accuracy > 0.9 and judged.retrain is None
