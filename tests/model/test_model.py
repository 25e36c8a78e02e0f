"""The model step: determinism, save/load, warm copies, unseen categories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import model as m
from tasks.schema import StreamSchema, load_schema
from tasks.settings import PROJECT_ROOT, Settings

SETTINGS = Settings(hidden_units=(16, 8), seed=11)
STORE_TYPES = ["cafe", "restaurant", "grocery", "pharmacy", "bakery"]


@pytest.fixture(scope="module")
def schema() -> StreamSchema:
    return load_schema(PROJECT_ROOT / "schemas" / "drone.yaml")


def window(rows: int, seed: int, stores: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    store_type = rng.choice(STORE_TYPES, rows)
    hour = rng.integers(7, 21, rows)
    busy = ((store_type == "cafe") & (hour == 9)) | ((store_type == "restaurant") & (hour == 12))
    return pd.DataFrame(
        {
            "event_time": ["2024-05-06T09:00:00+00:00"] * rows,
            "store_id": rng.integers(1, stores + 1, rows),
            "day_of_week": rng.integers(1, 8, rows),
            "hour": hour,
            "store_type": pd.array(store_type, dtype="str"),
            "suburb": pd.array(rng.choice(["Carlton", "Fitzroy", "Richmond"], rows), dtype="str"),
            "avg_delivery_minutes": rng.uniform(5, 60, rows),
            "avg_distance_km": rng.uniform(0, 12, rows),
            "avg_rating": rng.uniform(1, 5, rows),
            "busy": busy.astype(int),
        }
    )


def fresh(schema: StreamSchema, frame: pd.DataFrame, epochs: int = 2) -> m.keras.Model:
    model = m.build_model(schema, SETTINGS, frame)
    m.train(model, schema, frame, epochs=epochs, learning_rate=3e-3, batch_size=64, seed=11)
    return model


@pytest.fixture(scope="module")
def trained(schema: StreamSchema) -> m.keras.Model:
    return fresh(schema, window(400, 0))


def test_training_neither_reads_nor_resets_the_process_random_state(schema: StreamSchema) -> None:
    """A fit used to reseed Python, NumPy and TensorFlow globally (which also cleared
    TensorFlow's kernel caches: 0.2 s a fine-tune); its result must come from the model, the
    rows and the seed alone, dropout included, and leave the caller's random state alone."""
    frame = window(200, 4)
    settings = SETTINGS.model_copy(update={"dropout": 0.3})
    base = m.build_model(schema, settings, frame)
    weights = []
    for global_seed in (1, 2):
        m.keras.utils.set_random_seed(global_seed)  # Python, NumPy and TensorFlow
        first_draw = np.random.RandomState(global_seed).random_sample()
        copy = m.fine_tune_copy(base)
        m.train(copy, schema, frame, epochs=2, learning_rate=1e-2, batch_size=64, seed=5)
        assert np.random.random() == first_draw, "train reseeded NumPy's global generator"
        weights.append(copy.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_epoch_in_one_graph_call_steps_every_batch_in_order(schema: StreamSchema) -> None:
    """The epoch loop runs inside the graph: it must take the same batches, the short last one
    included, as stepping them one by one does."""
    frame = window(150, 3)  # 64 + 64 + 22 rows
    fitted = m.build_model(schema, SETTINGS, frame)
    reference = m.build_model(schema, SETTINGS, frame)
    result = m.train(fitted, schema, frame, epochs=2, learning_rate=3e-3, batch_size=64, seed=5)

    m.keras.utils.set_random_seed(5)
    reference.optimizer.build(reference.trainable_variables)
    reference.optimizer.learning_rate.assign(3e-3)
    trainer = m._trainer_for(reference)
    x, y = m.to_inputs(schema, frame), m.tf.constant(m.to_targets(schema, frame))
    w = m.tf.ones(len(frame))
    m._assign(trainer.template.variables, reference.variables)
    m._assign(trainer.template.optimizer.variables, reference.optimizer.variables)
    losses = []
    for order in m._epoch_orders(len(frame), 2, 5):
        steps = [order[i : i + 64] for i in range(0, len(order), 64)]
        total = sum(float(trainer._train_step(x, y, w, m.tf.constant(s))) * len(s) for s in steps)
        losses.append(total / len(order))
    m._assign(reference.variables, trainer.template.variables)

    assert int(fitted.optimizer.iterations.numpy()) == 2 * 3
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    for a, b in zip(fitted.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_same_seed_and_data_give_identical_weights_and_predictions(schema: StreamSchema) -> None:
    frame = window(300, 1)
    first, second = fresh(schema, frame), fresh(schema, frame)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        m.predict_proba(first, schema, frame), m.predict_proba(second, schema, frame)
    )


def test_training_reports_a_loss_per_epoch_and_advances_the_optimizer(
    schema: StreamSchema,
) -> None:
    frame = window(130, 2)
    model = m.build_model(schema, SETTINGS, frame)
    result = m.train(model, schema, frame, epochs=3, learning_rate=1e-2, batch_size=64, seed=1)
    assert len(result.losses) == 3 and result.losses[-1] < result.losses[0]
    assert int(model.optimizer.iterations) == 3 * 3  # ceil(130 / 64) steps per epoch
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)


def test_saved_model_predicts_the_same_and_keeps_optimizer_state(
    schema: StreamSchema, trained: m.keras.Model, tmp_path: Path
) -> None:
    frame = window(50, 3)
    path = m.save_model(trained, tmp_path / "champion.keras")
    loaded = m.load_model(path)
    np.testing.assert_allclose(
        m.predict_proba(loaded, schema, frame), m.predict_proba(trained, schema, frame), atol=1e-6
    )
    uncompiled = m.keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(
        m.predict_proba(uncompiled, schema, frame),
        m.predict_proba(loaded, schema, frame),
        atol=1e-6,
    )
    steps = int(trained.optimizer.iterations)
    assert int(loaded.optimizer.iterations) == steps > 0
    m.train(loaded, schema, frame, epochs=1, learning_rate=1e-3, batch_size=64, seed=0)
    assert int(loaded.optimizer.iterations) == steps + 1


def test_save_needs_keras_extension(trained: m.keras.Model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.keras"):
        m.save_model(trained, tmp_path / "champion.h5")


def test_fine_tune_copy_leaves_the_champion_untouched(
    schema: StreamSchema, trained: m.keras.Model
) -> None:
    frame = window(120, 4)
    before = [w.copy() for w in trained.get_weights()]
    steps = int(trained.optimizer.iterations)
    proba = m.predict_proba(trained, schema, frame)
    copy = m.fine_tune_copy(trained)
    np.testing.assert_array_equal(m.predict_proba(copy, schema, frame), proba)
    assert int(copy.optimizer.iterations) == steps
    m.train(copy, schema, frame, epochs=2, learning_rate=1e-2, batch_size=64, seed=0)
    for a, b in zip(before, trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(trained.optimizer.iterations) == steps
    assert int(copy.optimizer.iterations) == steps + 4
    np.testing.assert_array_equal(m.predict_proba(trained, schema, frame), proba)
    assert not np.array_equal(m.predict_proba(copy, schema, frame), proba)


def test_unseen_categories_do_not_crash(schema: StreamSchema, trained: m.keras.Model) -> None:
    frame = window(5, 5)
    frame["store_id"] = [9001, 9002, 9003, 1, 2]
    frame["suburb"] = pd.array(["Atlantis", "Carlton", "", "Richmond", "Nowhere"], dtype="str")
    frame["store_type"] = pd.array(["cafe", "florist", "bakery", "cafe", "cafe"], dtype="str")
    frame["hour"] = [3, 9, 23, 9, 99]
    proba = m.predict_proba(trained, schema, frame)
    assert proba.shape == (5,) and np.all(np.isfinite(proba))
    assert np.all((proba >= 0) & (proba <= 1))


def test_vocabulary_lists_known_categories(trained: m.keras.Model) -> None:
    assert m.vocabulary(trained, "store_type") == STORE_TYPES
    assert m.vocabulary(trained, "suburb") == ["Carlton", "Fitzroy", "Richmond"]
    assert m.vocabulary(trained, "hour") == list(range(24))  # a small declared range is closed
    stores = m.vocabulary(trained, "store_id")
    assert all(type(store) is int for store in stores) and 9001 not in stores
    with pytest.raises(KeyError):
        m.vocabulary(trained, "avg_rating")


def test_large_open_vocabulary_is_embedded(trained: m.keras.Model) -> None:
    names = {layer.name for layer in trained.layers}
    assert "embed_store_id" in names  # 60 stores: too many for one-hot
    assert "embed_suburb" not in names


def test_targets_mark_the_positive_class(schema: StreamSchema) -> None:
    frame = window(20, 6)
    np.testing.assert_array_equal(m.to_targets(schema, frame), frame["busy"].to_numpy())


def test_empty_frame_predicts_nothing(schema: StreamSchema, trained: m.keras.Model) -> None:
    assert m.predict_proba(trained, schema, window(0, 7)).shape == (0,)


def test_fresh_models_of_one_architecture_share_one_traced_trainer(schema: StreamSchema) -> None:
    """Keras names each new optimizer apart ("adam", "adam_1", ...); the trainer cache keyed on
    that name traced a trainer per retrain (about 0.5 s each, most of the quality bench)."""
    frame = window(100, 6)
    first, second = (m.build_model(schema, SETTINGS, frame) for _ in range(2))
    assert first.optimizer.name != second.optimizer.name  # what Keras does, the premise
    assert m._trainer_for(first) is m._trainer_for(second)
    other = m.build_model(schema, SETTINGS.model_copy(update={"hidden_units": (8,)}), frame)
    assert m._trainer_for(other) is not m._trainer_for(first)


def test_models_that_differ_only_in_normalization_share_a_trainer_and_keep_their_own(
    schema: StreamSchema,
) -> None:
    """Each retrain fits new means and variances; they were constants of the traced step, so
    every retrain traced a trainer of its own (about 0.5 s, a third of a retrain's fit)."""
    low, high = window(300, 8), window(300, 9)
    high["avg_delivery_minutes"] += 40.0  # another mean for one Normalization layer
    first, second = fresh(schema, low), fresh(schema, high)
    assert m._trainer_for(first) is m._trainer_for(second)
    probe = window(50, 10)
    inputs = m.to_inputs(schema, probe)
    for model in (first, second, first):  # the shared trainer loads each model's statistics
        own = np.asarray(model(inputs, training=False), dtype=np.float64).reshape(-1)
        np.testing.assert_allclose(m.predict_proba(model, schema, probe), own, atol=1e-6)
    vocabulary = window(300, 11, stores=200)  # another store list: another architecture
    assert m._trainer_for(m.build_model(schema, SETTINGS, vocabulary)) is not m._trainer_for(first)
