"""Run logging: each training cycle as one MLflow run, with its model, dataset and files.

A training run holds the Keras model (with its signature), the rows it trained on as a
dataset, parameters, metrics and lineage; a cycle that ended before training gets a run
without a model. `streamtrain report` reads the cycles back from these runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.input_example import allow_input_examples, input_example
from tasks.lineage import Lineage
from tasks.registry import connect, ensure_experiment, iso_utc
from tasks.schema import StreamSchema
from tasks.settings import Settings

if TYPE_CHECKING:
    import keras
    import pandas as pd
    from mlflow.entities import DatasetInput
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class RunRef:
    """One logged training run and the model it holds."""

    run_id: str
    model_uri: str


def format_run_name(training_kind: str, window_start: datetime | str) -> str:
    """Run names that make the experiment table read like a timeline."""
    return f"{training_kind} {iso_utc(window_start)}"


def pinned_requirements() -> list[str]:
    """Exact pins of what the model needs, so log_model skips its slow inference (~7 s)."""
    pins = []
    for candidates in (("mlflow",), ("keras",), ("tensorflow-cpu", "tensorflow")):
        for dist in candidates:
            with contextlib.suppress(metadata.PackageNotFoundError):
                pins.append(f"{dist}=={metadata.version(dist)}")
                break
    return pins


def log_training_run(
    settings: Settings,
    schema: StreamSchema,
    *,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    metric_series: Mapping[str, Mapping[int, float]],
    tags: Mapping[str, str],
    model: keras.Model,
    lineage: Lineage,
    artifacts: Mapping[str, str | bytes],
    training_rows: pd.DataFrame | None = None,
) -> RunRef:
    """Log one training run: the Keras model, parameters, metrics, lineage and small files.

    `training_rows` become the run's "training" dataset (named by topic and offsets, with the
    lineage's data hash as digest), so MLflow shows which window trained which version.
    """
    import mlflow.keras

    client = connect(settings)
    experiment_id = ensure_experiment(settings, schema.name)
    run_tags = {k: v for k, v in lineage.to_tags().items() if k.startswith("lineage.")}
    del run_tags["lineage.json"]
    run_tags["mlflow.note.content"] = _describe_run(schema, lineage)
    run_tags |= tags
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        run_id = run.info.run_id
        allow_input_examples()
        with _quiet_missing_signature():
            info = mlflow.keras.log_model(
                model,
                name="model",
                signature=model_signature(model),
                input_example=input_example(schema, training_rows),
                pip_requirements=pinned_requirements(),
            )
        if training_rows is not None:
            client.log_inputs(run_id, datasets=[training_input(schema, lineage, training_rows)])
        _log_values(client, run_id, params, metrics, metric_series)
        files = {**artifacts, "lineage.json": lineage.model_dump_json(indent=2)}
        _log_files(client, run_id, files)
    return RunRef(run_id=run_id, model_uri=info.model_uri)


def model_signature(model: keras.Model) -> ModelSignature:
    """Tensor specs of the model's own inputs (one named tensor per feature) and its output.

    Built from the model, not inferred from an input example: inference would predict at log
    time, and Keras 3 refuses the object arrays MLflow would feed string features as.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(tensor: Any, named: bool) -> TensorSpec:
        dtype = np.dtype(object) if tensor.dtype == "string" else np.dtype(tensor.dtype)
        shape = (-1, *(-1 if d is None else int(d) for d in tensor.shape[1:]))
        return TensorSpec(dtype, shape, tensor.name if named else None)

    return ModelSignature(
        inputs=Schema([spec(t, True) for t in model.inputs]),
        outputs=Schema([spec(t, False) for t in model.outputs]),
    )


def kafka_source(topic: str, offsets: Mapping[str, tuple[int, int]]) -> str:
    """'kafka://topic?partitions=0:1043-1181,1:...' from 'topic-partition' -> (first, last)."""
    parts = sorted(
        (int(key.rsplit("-", 1)[1]), first, last) for key, (first, last) in offsets.items()
    )
    ranges = ",".join(f"{p}:{first}-{last}" for p, first, last in parts)
    return f"kafka://{topic}?partitions={ranges}"


def training_input(schema: StreamSchema, lineage: Lineage, rows: pd.DataFrame) -> DatasetInput:
    """The rows a version was trained on as an MLflow dataset input of context "training"."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.utils import _infer_schema

    class KafkaSource(DatasetSource):
        """A topic and the offsets read; MLflow has no source type for Kafka."""

        def __init__(self, uri: str) -> None:
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "kafka"

        def load(self) -> Any:
            raise NotImplementedError("read the window again with `streamtrain window`")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> KafkaSource:
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> KafkaSource:
            return cls(str(source_dict["uri"]))

    columns = [f.name for f in schema.features] + [schema.label.field]
    with warnings.catch_warnings():
        # "Inferred schema contains integer column(s)": a hint about missing values, which
        # validated rows never have; once per training run it would bury the demo's output.
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        dataset = from_pandas(
            rows[[c for c in columns if c in rows.columns]],
            source=KafkaSource(kafka_source(schema.topic, lineage.offsets)),
            targets=schema.label.field if schema.label.field in rows.columns else None,
            name=f"{schema.topic} {lineage.window_start}..{lineage.window_end}",
            digest=lineage.data_hash,
        )
        dataset.__dict__["schema"] = _infer_schema(dataset.df.head(200))
    # (The schema above: MLflow infers column types by scanning every value, ~0.5 s for 20,000
    # rows; a sample's types are the same, since the window reader already typed the columns.)
    tags = [InputTag(key="mlflow.data.context", value="training")]
    return DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)


@contextlib.contextmanager
def _quiet_missing_signature() -> Iterator[None]:
    # No signature on purpose: the models take a dict of raw features (strings included), and
    # inferring one needs an input example, i.e. a prediction at log time.
    def keep(record: logging.LogRecord) -> bool:
        return "without specifying model signature" not in record.getMessage()

    logger = logging.getLogger("mlflow.keras.save")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _describe_run(schema: StreamSchema, lineage: Lineage) -> str:
    parent = f"version {lineage.parent_version}" if lineage.parent_version else "scratch"
    return (
        f"{lineage.training_kind} of {schema.name} from {parent} on window "
        f"{lineage.window_start}..{lineage.window_end} (trigger: {lineage.trigger})"
    )


def _log_values(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    metric_series: Mapping[str, Mapping[int, float]],
) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    points += [
        Metric(k, float(v), now, int(step))
        for k, series in metric_series.items()
        for step, v in sorted(series.items())
    ]
    entries = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(entries), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(run_id, params=entries[i : i + 100])
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i : i + 1000])


def _log_files(client: MlflowClient, run_id: str, files: Mapping[str, str | bytes]) -> None:
    for artifact_file, content in files.items():
        if isinstance(content, str):
            client.log_text(run_id, content, artifact_file)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            local.write_bytes(content)
            folder = str(Path(artifact_file).parent)
            client.log_artifact(run_id, str(local), None if folder == "." else folder)


def tag_run(settings: Settings, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on a run in one request."""
    from mlflow.entities import RunTag

    connect(settings).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def run_url(settings: Settings, run_id: str) -> str:
    """The run's page in the MLflow UI of the tracking server."""
    run = connect(settings).get_run(run_id)
    base = settings.tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def attach_files(settings: Settings, run_id: str, files: Mapping[str, str | bytes]) -> None:
    """Add files (text or bytes, such as a PNG) to an existing run's artifacts."""
    _log_files(connect(settings), run_id, files)


def log_cycle_run(
    settings: Settings,
    schema: StreamSchema,
    *,
    run_name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: Mapping[str, str | bytes],
) -> str:
    """A run without a model: a cycle that ended before training (a rejected window)."""
    client = connect(settings)
    experiment_id = ensure_experiment(settings, schema.name)
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, {}, metrics, {})
        _log_files(client, run_id, artifacts)
    finally:
        client.set_terminated(run_id)
    return str(run_id)


def cycle_runs(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every training cycle logged for the model, as report rows (window order)."""
    client = connect(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    rows = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            "tags.`streamtrain.kind` != ''",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags, metrics = run.data.tags, run.data.metrics
            rows.append(
                {
                    "window_start": tags.get("streamtrain.window_start"),
                    "window_end": tags.get("streamtrain.window_end"),
                    "kind": tags.get("streamtrain.kind"),
                    "rows": int(metrics.get("rows", 0)),
                    "champion_version": None
                    if run.data.params.get("parent") in (None, "none")
                    else run.data.params["parent"],
                    "prequential_accuracy": metrics.get("prequential_accuracy"),
                    "challenger_version": tags.get("streamtrain.version"),
                    "challenger_metric": metrics.get("challenger_metric"),
                    "champion_metric": metrics.get("champion_metric"),
                    "decision": tags.get("streamtrain.decision"),
                    "reasons": json.loads(tags.get("streamtrain.reasons", "[]")),
                    "trigger": tags.get("streamtrain.trigger"),
                    "run_id": run.info.run_id,
                    "data_drift": tags.get("report.data_drift", "none"),
                    "concept_drift_alarm": tags.get("report.concept_drift_alarm") == "true",
                    "retrain_triggered": tags.get("report.retrain_triggered") == "true",
                    "quarantined": int(tags.get("report.quarantined", "0")),
                    "rejected": tags.get("report.rejected") == "true",
                    "window_closed": tags.get("report.window_closed") != "false",
                }
            )
        token = page.token
        if not token:
            return rows


def last_finetuned_window(settings: Settings, name: str) -> tuple[datetime, datetime] | None:
    """Start and end of the newest window a fine-tune cycle ran on (its lineage, not the clock)."""
    client = connect(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    # Only finished runs: one that died (or lost MLflow) while logging stays RUNNING, and its
    # hour must be run again rather than count as done.
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`streamtrain.kind` = 'finetune' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["tags.`streamtrain.window_start` DESC"],
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    start, end = tags["streamtrain.window_start"], tags["streamtrain.window_end"]
    return (
        datetime.fromisoformat(start.replace("Z", "+00:00")),
        datetime.fromisoformat(end.replace("Z", "+00:00")),
    )
