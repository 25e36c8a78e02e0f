"""The registry writes of one fine-tune window, counted on a real MLflow store and broker.

The commit step writes the registry at one point, after training: the planner's state (two
registered-model tags, as MLflow has no call that sets several), the champion's live accuracy
(one version tag), the run's version tag (one batched request) and one alias session.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tasks import aliases, judge
from tasks.cycle import CycleContext, finetune_window
from tasks.model import build_model, train
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce, read_window
from tasks.windowing import Window
from tests.integration.helpers import fresh_schema, quick_training, register_by_hand
from tests.integration.hostile import BASE

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
# MlflowClient methods that write tags or the model's description, and what each writes.
TAG_WRITES = {
    "set_registered_model_tag": "model tag",
    "set_model_version_tag": "version tag",
    "set_tag": "run tag",
    "log_batch": "run tag",  # counted when it carries tags
    "update_registered_model": "description",
}


def count_writes(monkeypatch: pytest.MonkeyPatch, fitted: list[bool]) -> Counter[str]:
    """Count the MlflowClient's tag writes from now on; each must come after the fit began."""
    from mlflow.tracking import MlflowClient

    writes: Counter[str] = Counter()
    for method, kind in TAG_WRITES.items():
        real = getattr(MlflowClient, method)

        def spy(self: Any, *args: Any, _real: Any = real, _kind: str = kind, **kw: Any) -> Any:
            key = str(args[1]) if _kind == "model tag" else ""
            batch_tags = kw.get("tags") or (args[3] if len(args) > 3 else None)
            counted = _real.__name__ != "log_batch" or bool(batch_tags)
            if counted and not key.startswith("alias_history."):  # alias moves: see below
                assert fitted, f"a {_kind} was written before the fit"
                writes[_kind] += 1
            return _real(self, *args, **kw)

        monkeypatch.setattr(MlflowClient, method, spy)
    return writes


def test_a_finetune_window_writes_the_registry_once_after_the_fit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = quick_training(settings)
    schema = fresh_schema(prefix="writes")
    ensure_topic(s, schema.topic)
    start = BASE.replace(hour=0) - 2 * DAY
    produce(s, schema.topic, generate(SimulationConfig(start=start, hours=60, seed=9)))
    frame = read_window(s, schema, Window(start, start + 2 * DAY), send_dead_letters=False).frame
    model = build_model(schema, s, frame)
    train(model, schema, frame, epochs=2, learning_rate=3e-3, batch_size=64, seed=7)
    version, _ = register_by_hand(s, schema, model, name="champion", window_start=start)
    aliases.promote(s, schema.name, version, trigger="test", reasons=["first champion"])

    fitted: list[bool] = []
    real_copy = judge.fine_tune_copy  # the fine-tune step copies the champion first

    def fine_tune_copy(champion: Any) -> Any:
        fitted.append(True)
        return real_copy(champion)

    monkeypatch.setattr(judge, "fine_tune_copy", fine_tune_copy)
    writes = count_writes(monkeypatch, fitted)
    ctx = CycleContext(settings=s, schema=schema)
    result = finetune_window(ctx, Window(BASE, BASE + timedelta(hours=1)))

    assert result.decision in {"promoted", "kept"}, result.reasons
    promoted = result.decision == "promoted"
    # Before: 3 model tags (+1 for a promotion's alarm), 2 description updates (two alias
    # sessions), all of the planner's state and the live accuracy written before the fit.
    assert writes == {
        "model tag": 2 + promoted,  # planner state and its rerun copy (+ the new champion's)
        "version tag": 1,  # the serving champion's live accuracy
        "run tag": 1,  # the run learns its version number
        "description": 1,  # one alias session for the gate's moves
    }, (result.decision, writes)
    moves = [(m.alias, m.to_version) for m in aliases.alias_history(s, schema.name)][1:]
    new = result.challenger_version
    assert moves[0] == (aliases.CHALLENGER, new)
    if promoted:
        assert moves[1:] == [
            (aliases.PREVIOUS_CHAMPION, version),
            (aliases.CHAMPION, new),
            (aliases.CHALLENGER, None),
        ]
