"""The model step: a Keras network with its preprocessing inside, trained from a window.

The saved model takes a dict of raw features (one input per schema feature), so serving,
evaluation and fine-tuning never re-implement the preprocessing. Used for both a full retrain
(fresh model) and the hourly fine-tune (a warm copy of the champion).
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before the first import of tensorflow/keras (REFERENCE.md section 6).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tasks.schema import FeatureSpec, StreamSchema
from tasks.settings import Settings

# A categorical with at most this many tokens (OOV included) is one-hot encoded; a larger
# vocabulary gets a learned embedding of `settings.embedding_dim` dimensions.
ONE_HOT_MAX_TOKENS = 32
# An int categorical without a value list but with a min..max range this small is treated as
# closed (e.g. hour 0..23), so its encoding does not depend on which values a window holds.
RANGE_AS_CLOSED_MAX = 64
_LOOKUP_PREFIX = "lookup_"


@dataclass(frozen=True)
class TrainResult:
    """What one call of `train` did: loss per epoch, rows seen, wall time."""

    losses: tuple[float, ...]
    epochs: int
    rows: int
    learning_rate: float
    seconds: float

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


# --- inputs ----------------------------------------------------------------------------------


def _input_dtype(spec: FeatureSpec) -> str:
    if spec.kind == "numeric":
        return "float32"
    return "string" if spec.type == "string" else "int64"


def _column(spec: FeatureSpec, series: pd.Series) -> np.ndarray:
    dtype = _input_dtype(spec)
    if dtype == "string":
        # pandas 3 string columns are Arrow-backed; only to_numpy(dtype=str) gives a plain array.
        return series.to_numpy(dtype=str).reshape(-1, 1)
    return series.to_numpy(dtype=np.int64 if dtype == "int64" else np.float32).reshape(-1, 1)


def to_arrays(schema: StreamSchema, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """One (n, 1) array per feature, typed as the model wants (also its logged input example)."""
    return {spec.name: _column(spec, frame[spec.name]) for spec in schema.features}


def to_inputs(schema: StreamSchema, frame: pd.DataFrame) -> dict[str, tf.Tensor]:
    """The model's inputs for a window: one (n, 1) tensor per feature, typed as the model wants."""
    return {name: tf.constant(array) for name, array in to_arrays(schema, frame).items()}


def to_targets(schema: StreamSchema, frame: pd.DataFrame) -> np.ndarray:
    """1.0 where the label is the positive class, else 0.0 (float32, shape (n,))."""
    return (frame[schema.label.field].to_numpy() == schema.label.positive).astype(np.float32)


# --- building --------------------------------------------------------------------------------


def _vocabulary_of(spec: FeatureSpec, frame: pd.DataFrame) -> list[Any]:
    """Declared values for a closed set (or a small int range), else the window's sorted values."""
    if spec.values is not None:
        return list(spec.values)
    if spec.type == "int" and spec.min is not None and spec.max is not None:
        low, high = int(spec.min), int(spec.max)
        if high - low + 1 <= RANGE_AS_CLOSED_MAX:
            return list(range(low, high + 1))
    seen = np.unique(_column(spec, frame[spec.name]).ravel())
    return [str(v) for v in seen] if spec.type == "string" else [int(v) for v in seen]


def _encode_categorical(
    spec: FeatureSpec, frame: pd.DataFrame, tensor: Any, embedding_dim: int
) -> Any:
    vocab = _vocabulary_of(spec, frame)
    tokens = len(vocab) + 1  # one OOV bucket at index 0
    one_hot = tokens <= ONE_HOT_MAX_TOKENS
    mode = "one_hot" if one_hot else "int"
    name = f"{_LOOKUP_PREFIX}{spec.name}"
    lookup: keras.layers.Layer
    if spec.type == "string":
        lookup = keras.layers.StringLookup(
            vocabulary=vocab, num_oov_indices=1, output_mode=mode, name=name
        )
    else:
        lookup = keras.layers.IntegerLookup(
            vocabulary=vocab, num_oov_indices=1, output_mode=mode, name=name
        )
    encoded = lookup(tensor)
    if one_hot:
        return encoded
    embedded = keras.layers.Embedding(tokens, embedding_dim, name=f"embed_{spec.name}")(encoded)
    return keras.layers.Flatten(name=f"flat_{spec.name}")(embedded)


def _encode_numeric(spec: FeatureSpec, frame: pd.DataFrame, tensor: Any) -> Any:
    values = _column(spec, frame[spec.name]).astype(np.float64).ravel()
    mean = float(values.mean()) if values.size else 0.0
    variance = float(values.var()) if values.size else 1.0
    # Statistics computed here rather than by adapt(): same result, deterministic and faster.
    layer = keras.layers.Normalization(
        mean=mean, variance=max(variance, 1e-6), name=f"norm_{spec.name}"
    )
    return layer(tensor)


def build_model(schema: StreamSchema, settings: Settings, frame: pd.DataFrame) -> keras.Model:
    """A fresh compiled model for `schema`, its preprocessing fitted on `frame`."""
    keras.utils.set_random_seed(settings.seed)
    inputs: dict[str, Any] = {}
    encoded: list[Any] = []
    for spec in schema.features:
        tensor = keras.Input(shape=(1,), dtype=_input_dtype(spec), name=spec.name)
        inputs[spec.name] = tensor
        if spec.kind == "categorical":
            encoded.append(_encode_categorical(spec, frame, tensor, settings.embedding_dim))
        else:
            encoded.append(_encode_numeric(spec, frame, tensor))
    x = keras.layers.Concatenate(name="features")(encoded)
    for i, units in enumerate(settings.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if settings.dropout > 0:
            x = keras.layers.Dropout(settings.dropout, seed=settings.seed + i, name=f"drop_{i}")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="p_positive")(x)
    model = keras.Model(inputs=inputs, outputs=output, name=f"{schema.name}-classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.retrain_learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile=False,
    )
    return model


# --- training and scoring ----------------------------------------------------------------------


def _epoch_orders(rows: int, epochs: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation per epoch: a different order each epoch, the same on every run."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(rows).astype(np.int32) for _ in range(epochs)]


class _Trainer:
    """A traced training step and forward pass for one architecture, shared by its models.

    Each hourly fine-tune works on a new copy of the champion, and tracing a training step for
    a new model object costs 0.5-1 s, several times the training itself. The step is traced
    once, on a private template model; a model to train lends the template its weights and
    optimizer state and takes them back afterwards (cheap assignments), so no later call
    retraces. Batches are gathered inside the graph from the whole window's tensors, which is
    cheaper per step than a tf.data pipeline for windows of a few hundred rows, and a whole
    epoch is one graph call (a retrain's 3,500 steps paid a Python dispatch each: one graph
    call an epoch fits the same weights in a third of the time). This is what `fit` would do
    (Adam on binary cross-entropy, one seeded shuffle per epoch) without its per-model tracing
    and per-call callback set-up.
    """

    def __init__(self, model: keras.Model) -> None:
        self.template = keras.models.clone_model(model)
        self.template.compile_from_config(model.get_compile_config())
        self.template.optimizer.build(self.template.trainable_variables)
        self.lock = threading.Lock()
        # A Normalization layer given its mean and variance holds them as constants, which a
        # traced step would bake in: every retrain (new statistics) would trace again, about
        # 0.5 s each. The template holds them in variables instead, loaded from each model.
        self._statistics = []
        for layer in _normalizers(self.template):
            for name in _STATISTICS:
                held = tf.Variable(getattr(layer, name), trainable=False)
                object.__setattr__(layer, name, held)  # not a Keras weight: not saved, not tracked
                self._statistics.append(held)
        features = {
            tensor.name: tf.TensorSpec((None, 1), tf.as_dtype(tensor.dtype), name=tensor.name)
            for tensor in model.inputs
        }
        rows = tf.TensorSpec((None,), tf.float32)
        index = tf.TensorSpec((None,), tf.int32)
        size = tf.TensorSpec((), tf.int32)
        self._epoch = tf.function(
            self._train_epoch, input_signature=[features, rows, rows, index, size]
        )
        self._forward = tf.function(self._predict, input_signature=[features])

    def _predict(self, x: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.reshape(self.template(x, training=False), (-1,))

    def _load_statistics(self, model: keras.Model) -> None:
        _assign(self._statistics, [getattr(n, k) for n in _normalizers(model) for k in _STATISTICS])

    def predict(self, model: keras.Model, x: dict[str, tf.Tensor]) -> np.ndarray:
        with self.lock:
            self._load_statistics(model)
            _assign(self.template.weights, model.weights)
            return np.asarray(self._forward(x), dtype=np.float64)

    def _train_step(
        self, x: dict[str, tf.Tensor], y: tf.Tensor, w: tf.Tensor, index: tf.Tensor
    ) -> tf.Tensor:
        model = self.template
        batch = {name: tf.gather(tensor, index) for name, tensor in x.items()}
        target = tf.reshape(tf.gather(y, index), (-1, 1))
        weight = tf.gather(w, index)  # normalised to a mean of 1 over the frame
        with tf.GradientTape() as tape:
            proba = model(batch, training=True)
            loss = tf.reduce_mean(keras.losses.binary_crossentropy(target, proba) * weight)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss

    def _train_epoch(
        self,
        x: dict[str, tf.Tensor],
        y: tf.Tensor,
        w: tf.Tensor,
        order: tf.Tensor,
        batch_size: tf.Tensor,
    ) -> tf.Tensor:
        """Every batch of one epoch in `order`; the epoch's mean loss per row."""
        rows = tf.shape(order)[0]
        total = tf.constant(0.0, tf.float64)
        for batch in tf.range((rows + batch_size - 1) // batch_size):
            start = batch * batch_size
            index = order[start : tf.minimum(start + batch_size, rows)]
            loss = self._train_step(x, y, w, index)
            total += tf.cast(loss, tf.float64) * tf.cast(tf.shape(index)[0], tf.float64)
        return total / tf.cast(rows, tf.float64)

    def fit(
        self,
        model: keras.Model,
        x: dict[str, tf.Tensor],
        y: tf.Tensor,
        w: tf.Tensor,
        orders: list[np.ndarray],
        batch_size: int,
    ) -> list[float]:
        losses = []
        with self.lock:
            self._load_statistics(model)
            _assign(self.template.variables, model.variables)
            _assign(self.template.optimizer.variables, model.optimizer.variables)
            size = tf.constant(batch_size, tf.int32)
            for order in orders:
                losses.append(float(self._epoch(x, y, w, tf.constant(order), size)))
            _assign(model.variables, self.template.variables)
            _assign(model.optimizer.variables, self.template.optimizer.variables)
        return losses


def _assign(targets: list[Any], sources: list[Any]) -> None:
    for target, source in zip(targets, sources, strict=True):
        target.assign(source)


_STATISTICS = ("mean", "variance")  # a Normalization layer's, fitted on the training range


def _normalizers(model: keras.Model) -> list[keras.layers.Normalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]


def _without_statistics(config: dict[str, Any]) -> dict[str, Any]:
    """A model's config less its Normalization statistics: models that differ only there
    share one traced trainer."""
    layers = []
    for layer in config["layers"]:
        if layer.get("class_name") == "Normalization":
            inner = {k: v for k, v in layer["config"].items() if k not in _STATISTICS}
            layer = {**layer, "config": inner}
        layers.append(layer)
    return {**config, "layers": layers}


_TRAINERS: OrderedDict[str, _Trainer] = OrderedDict()
_TRAINERS_KEPT = 4  # architectures kept traced (champion's, a retrain's, ...)
_TRAINERS_LOCK = threading.Lock()


# A model's architecture key, by model: rendering a config costs more than a window's forward
# pass, and a model's layers and optimizer kind never change.
_ARCHITECTURES: weakref.WeakKeyDictionary[keras.Model, str] = weakref.WeakKeyDictionary()


def _architecture(model: keras.Model) -> str:
    key = _ARCHITECTURES.get(model)
    if key is None:
        # Not the learning rate (set per call) nor the name: Keras numbers each new optimizer
        # ("adam", "adam_1", ...), so every fresh model would get, and trace, a trainer of its own.
        optimizer = {
            k: v
            for k, v in model.optimizer.get_config().items()
            if k not in ("learning_rate", "name")
        }
        config = _without_statistics(model.get_config())
        key = json.dumps([config, optimizer], sort_keys=True, default=str)
        _ARCHITECTURES[model] = key
    return key


def _trainer_for(model: keras.Model) -> _Trainer:
    """The cached trainer for `model`'s architecture (layers, vocabularies, optimizer kind;
    not the normalization statistics, which the trainer loads per call)."""
    key = _architecture(model)
    with _TRAINERS_LOCK:
        trainer = _TRAINERS.get(key)
        if trainer is None:
            trainer = _TRAINERS[key] = _Trainer(model)
            while len(_TRAINERS) > _TRAINERS_KEPT:
                _TRAINERS.popitem(last=False)
        _TRAINERS.move_to_end(key)
        return trainer


def train(
    model: keras.Model,
    schema: StreamSchema,
    frame: pd.DataFrame,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> TrainResult:
    """Fit `model` in place on `frame` (a fresh model for a retrain, a warm copy to fine-tune).

    `sample_weight` (one per row, the planner's) scales each row's loss; it is normalised to a
    mean of 1, so the learning rate means the same whatever the weights' scale.
    """
    if frame.empty:
        raise ValueError("cannot train on an empty frame")
    weights = np.ones(len(frame)) if sample_weight is None else np.asarray(sample_weight, float)
    bad = not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0
    if len(weights) != len(frame) or bad:
        raise ValueError("sample_weight needs one finite, non-negative weight per row")
    weights = weights / weights.mean()
    start = time.perf_counter()
    # No global reseed here: tf.random.set_seed clears TensorFlow's kernel caches, and every
    # traced step then pays about 0.2 s to set up again, the whole cost of a fine-tune. The
    # batch order comes from `seed`, dropout from the model's own seed generators (part of
    # model.variables, carried over to the trainer with the weights).
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.optimizer.learning_rate.assign(learning_rate)
    x = to_inputs(schema, frame)
    y = tf.constant(to_targets(schema, frame))
    orders = _epoch_orders(len(frame), epochs, seed)
    w = tf.constant(weights, dtype=tf.float32)
    losses = _trainer_for(model).fit(model, x, y, w, orders, batch_size)
    return TrainResult(
        losses=tuple(losses),
        epochs=epochs,
        rows=len(frame),
        learning_rate=learning_rate,
        seconds=time.perf_counter() - start,
    )


def predict_proba(model: keras.Model, schema: StreamSchema, frame: pd.DataFrame) -> np.ndarray:
    """P(positive class) per row, shape (n,): a traced call, without predict()'s overhead."""
    if frame.empty:
        return np.zeros(0, dtype=np.float64)
    inputs = to_inputs(schema, frame)
    if getattr(model, "optimizer", None) is None:  # loaded without compile: no shared trainer
        return np.asarray(model(inputs, training=False), dtype=np.float64).reshape(-1)
    return _trainer_for(model).predict(model, inputs)


# --- copies, files, introspection --------------------------------------------------------------


def fine_tune_copy(model: keras.Model) -> keras.Model:
    """An independent copy with the same weights and optimizer state; `model` stays untouched."""
    # Rebuild from the config and copy the state in memory, without a .keras round trip;
    # from_config builds the same layers in about 60 % of clone_model's time (measured).
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.compile_from_config(model.get_compile_config())
    if model.optimizer.built:
        copy.optimizer.build(copy.trainable_variables)
        for target, source in zip(copy.optimizer.variables, model.optimizer.variables, strict=True):
            target.assign(source)
    if model in _ARCHITECTURES:
        _ARCHITECTURES[copy] = _ARCHITECTURES[model]
    return copy


def save_model(model: keras.Model, path: str | Path) -> Path:
    """Write a `.keras` file (architecture, preprocessing state, weights, optimizer state)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def load_model(path: str | Path) -> keras.Model:
    """Load a `.keras` file; the compiled optimizer (with its iteration count) comes back too."""
    return keras.saving.load_model(Path(path))


def vocabulary(model: keras.Model, feature: str) -> list[Any]:
    """The categories the model knows for a categorical feature (the OOV token excluded)."""
    try:
        layer = model.get_layer(f"{_LOOKUP_PREFIX}{feature}")
    except ValueError:
        raise KeyError(f"{feature!r} is not a categorical feature of this model") from None
    vocab = layer.get_vocabulary(include_special_tokens=False)
    return [
        v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in vocab
    ]
