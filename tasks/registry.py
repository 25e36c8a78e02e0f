"""The model registry: MLflow runs, registered versions, aliases and their history.

Every MLflow call in streamtrain lives here. A training run becomes one MLflow run holding the
Keras model; registering it adds a version of the schema's model with its lineage as tags; the
aliases `champion`, `challenger` and `previous-champion` say which version does what, and each
alias move is kept as a run of the model's history experiment (the newest also in the
registered model's tags and description) because MLflow keeps no history of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.input_example import allow_input_examples, input_example
from tasks.schema import StreamSchema
from tasks.settings import Settings

if TYPE_CHECKING:
    import keras
    import pandas as pd
    from mlflow.entities import DatasetInput
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)

_NONE = "none"  # tag value standing for "no version" (tag values cannot be null)
_HISTORY_PREFIX = "alias_history."
# registered_model_tags.value is VARCHAR(5000) on MySQL/PostgreSQL (sqlite ignores lengths and
# MLflow's own check allows 100,000), so a history entry stays well below 5000 characters.
_HISTORY_ENTRY_LIMIT = 4000
_HISTORY_KEPT = 20  # newest moves kept in the registered model's tags; all are archived as runs
_MOVE_TAG = "alias_move."  # tags of an archived move's run
_HISTORY_HEADING = "## Recent alias moves"
_DESCRIPTION_LIMIT = 4900  # registered_models.description is VARCHAR(5000)
_LOCK_POLL_S = 0.05


class RegistryError(RuntimeError):
    """A registry request that cannot be honoured; the message says why."""


class NoPreviousChampion(RegistryError):
    """Rollback asked for, but no version holds the `previous-champion` alias."""


class LockTimeout(TimeoutError):
    """Another process holds a lock for longer than the caller was willing to wait."""


# --- values ---------------------------------------------------------------------------------


def iso_utc(value: datetime | str) -> str:
    """Canonical UTC text of a time ('2026-01-05T10:00Z'), so tags compare equal in searches."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value.second or value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{value.microsecond:06d}Z" if value.microsecond else "Z"
        )
    return value.strftime("%Y-%m-%dT%H:%MZ")


def format_run_name(training_kind: str, window_start: datetime | str) -> str:
    """Run names that make the experiment table read like a timeline."""
    return f"{training_kind} {iso_utc(window_start)}"


class Lineage(BaseModel):
    """Where a version comes from and why it was (or was not) promoted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parent_version: str | None = None
    training_kind: Literal["retrain", "finetune"]
    window_start: str
    window_end: str
    trained_windows: tuple[str, ...] = ()
    offsets: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="'topic-partition' -> [first, last] offset read."
    )
    data_hash: str
    schema_hash: str
    seed: int
    trigger: str = "schedule"
    holdout_metrics: dict[str, float] = Field(default_factory=dict)
    holdout_rows: dict[str, int] = Field(
        default_factory=dict, description="Rows of each holdout, so the gate can be recomputed."
    )
    champion_version: str | None = Field(default=None, description="The version compared with.")
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    gate_decision: str | None = None
    gate_reasons: tuple[str, ...] = ()

    @field_validator("window_start", "window_end", mode="before")
    @classmethod
    def _canonical_time(cls, value: object) -> object:
        return iso_utc(value) if isinstance(value, str | datetime) else value

    @field_validator("trained_windows", mode="before")
    @classmethod
    def _canonical_times(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(iso_utc(v) if isinstance(v, str | datetime) else v for v in value)
        return value

    @field_validator("parent_version", "champion_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    def to_tags(self) -> dict[str, str]:
        """Flat string tags readable in the MLflow UI, plus the whole record as JSON."""
        tags = {
            "lineage.parent_version": self.parent_version or _NONE,
            "lineage.training_kind": self.training_kind,
            "lineage.window_start": self.window_start,
            "lineage.window_end": self.window_end,
            "lineage.trained_windows": compact_windows(self.trained_windows),
            "lineage.offsets": ", ".join(
                f"{tp}:{first}-{last}" for tp, (first, last) in sorted(self.offsets.items())
            ),
            "lineage.data_hash": self.data_hash,
            "lineage.schema_hash": self.schema_hash,
            "lineage.seed": str(self.seed),
            "lineage.trigger": self.trigger,
            "gate.compared_with": self.champion_version or _NONE,
            "gate.decision": self.gate_decision or "pending",
            "gate.reasons": "; ".join(self.gate_reasons),
            "lineage.json": self.model_dump_json(),
        }
        tags |= {f"metrics.holdout.{k}": f"{v:.6g}" for k, v in self.holdout_metrics.items()}
        tags |= {f"metrics.champion.{k}": f"{v:.6g}" for k, v in self.champion_metrics.items()}
        return tags


def compact_windows(starts: Iterable[str]) -> str:
    """'A..B (n windows)' for each run of evenly spaced window starts, e.g. 14 days in one line."""
    times = sorted({datetime.fromisoformat(s.replace("Z", "+00:00")) for s in starts})
    if not times:
        return ""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    step = min(gaps) if gaps else None
    runs: list[list[datetime]] = [[times[0]]]
    for gap, stamp in zip(gaps, times[1:], strict=True):
        if gap == step:
            runs[-1].append(stamp)
        else:
            runs.append([stamp])
    parts = []
    for run in runs:
        if len(run) == 1:
            parts.append(iso_utc(run[0]))
        else:
            parts.append(f"{iso_utc(run[0])}..{iso_utc(run[-1])} ({len(run)} windows)")
    return ", ".join(parts)


@dataclass(frozen=True)
class RunRef:
    """One logged training run and the model it holds."""

    run_id: str
    model_uri: str


@dataclass(frozen=True)
class AliasMove:
    """One recorded move of an alias (MLflow itself keeps no alias history)."""

    seq: int
    at: str
    alias: str
    from_version: str | None
    to_version: str | None
    trigger: str
    reasons: tuple[str, ...]
    who: str
    truncated: bool = False


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as `streamtrain model show` lists it."""

    version: str
    created_at: datetime
    run_id: str | None
    description: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    lineage: Lineage | None = None


# --- connection -----------------------------------------------------------------------------


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow (client and fluent API) at the configured store; quiet its progress bars."""
    import mlflow.environment_variables as env
    from mlflow.tracking import MlflowClient, set_registry_uri, set_tracking_uri

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not env.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.defined:
        env.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set("false")
    # MLflow reads its HTTP retry policy from the environment on every request.
    env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.set(str(settings.mlflow_http_max_retries))
    env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.set(str(settings.mlflow_http_backoff_factor))
    env.MLFLOW_HTTP_REQUEST_TIMEOUT.set(str(settings.mlflow_http_timeout_s))
    # set_tracking_uri also exports MLFLOW_TRACKING_URI into os.environ, where every
    # later Settings() of this process would read it and ignore its own store: restore it.
    exported = (env.MLFLOW_TRACKING_URI, env.MLFLOW_REGISTRY_URI)
    saved = [(var, var.get_raw()) for var in exported]
    set_tracking_uri(uri)
    set_registry_uri(uri)
    for var, value in saved:
        var.unset() if value is None else var.set(value)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def describe_outage(settings: Settings, exc: BaseException) -> str | None:
    """One line naming the cause when `exc` means the tracking server did not answer, else None.

    MLflow raises a bare MlflowException ("API request to ... failed") after its retries, with
    the requests error only as the implicit context; both are recognised.
    """
    import requests
    from mlflow.exceptions import MlflowException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException) or (
            isinstance(seen, MlflowException) and str(seen.message).startswith("API request to")
        ):
            cause = "timed out" if "timeout" in str(seen).lower() else "refused or dropped"
            return (
                f"MLflow at {settings.tracking_uri} did not answer (connection {cause}, "
                f"{settings.mlflow_http_max_retries} retries): start the tracking server, then "
                "run the same hour again"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def ensure_experiment(settings: Settings, name: str) -> str:
    """The experiment's id, creating it with a pinned artifact location for a local store."""
    from mlflow.exceptions import MlflowException

    client = connect(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # Without a pinned location a sqlite store puts artifacts in ./mlruns of the cwd;
        # a tracking server decides for itself (mlflow-artifacts:/...).
        location = None
        if settings.tracking_uri.startswith("sqlite:"):
            location = (settings.mlflow_artifacts_dir.resolve() / name).as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            assert experiment is not None
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def pinned_requirements() -> list[str]:
    """Exact pins of what the model needs, so log_model skips its slow inference (~7 s)."""
    pins = []
    for candidates in (("mlflow",), ("keras",), ("tensorflow-cpu", "tensorflow")):
        for dist in candidates:
            with contextlib.suppress(metadata.PackageNotFoundError):
                pins.append(f"{dist}=={metadata.version(dist)}")
                break
    return pins


# --- runs and versions ----------------------------------------------------------------------


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


def register_version(
    settings: Settings, schema: StreamSchema, run_ref: RunRef, lineage: Lineage, description: str
) -> str:
    """Register the run's model as a version of `schema.name`, tagged with its lineage.

    Safe to retry: a run that already has a version gets that version back, not a second one.
    """
    client = connect(settings)
    _ensure_registered_model(client, schema)
    done = _search_versions(client, f"name = '{schema.name}' and run_id = '{run_ref.run_id}'")
    if done:
        return str(min(int(v.version) for v in done))
    model_id = run_ref.model_uri.removeprefix("models:/")
    version = client.create_model_version(
        name=schema.name,
        source=run_ref.model_uri,
        run_id=run_ref.run_id,
        tags=lineage.to_tags(),
        description=description,
        model_id=model_id if model_id.startswith("m-") else None,
    )
    return str(version.version)


def _ensure_registered_model(client: MlflowClient, schema: StreamSchema) -> None:
    from mlflow.exceptions import MlflowException

    description = (
        f"{schema.description}\n\nTrained continuously from Kafka topic '{schema.topic}'. "
        f"Aliases: '{CHAMPION}' serves, '{CHALLENGER}' is the latest candidate, "
        f"'{PREVIOUS_CHAMPION}' is the rollback target. The newest alias moves are also in the "
        f"tags '{_HISTORY_PREFIX}NNNNNN'."
    ).strip()
    try:
        client.create_registered_model(schema.name, description=description)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def find_version(
    settings: Settings,
    name: str,
    *,
    window_start: datetime | str,
    parent_version: str | None,
    training_kind: str,
) -> str | None:
    """The newest version already trained on this window from this parent (idempotent reruns)."""
    found = _search_versions(
        connect(settings),
        f"name = '{name}'"
        f" and tags.`lineage.window_start` = '{iso_utc(window_start)}'"
        f" and tags.`lineage.parent_version` = '{parent_version or _NONE}'"
        f" and tags.`lineage.training_kind` = '{training_kind}'",
    )
    return str(max(int(v.version) for v in found)) if found else None


def latest_version(settings: Settings, name: str) -> str | None:
    """The newest registered version of a model (None when it has none)."""
    found = connect(settings).search_model_versions(
        f"name = '{name}'", max_results=1, order_by=["version_number DESC"]
    )
    return str(found[0].version) if found else None


def list_versions(settings: Settings, name: str) -> list[VersionInfo]:
    """All versions of a model, oldest first, with lineage and the aliases they hold."""
    client = connect(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in _aliases(_registered(client, name)).items():
        by_version.setdefault(version, []).append(alias)
    infos = []
    for mv in sorted(_search_versions(client, f"name = '{name}'"), key=lambda v: int(v.version)):
        tags = dict(mv.tags)
        lineage = (
            Lineage.model_validate_json(tags["lineage.json"]) if "lineage.json" in tags else None
        )
        infos.append(
            VersionInfo(
                version=str(mv.version),
                created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                run_id=mv.run_id,
                description=mv.description or "",
                aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                tags=tags,
                lineage=lineage,
            )
        )
    return infos


def _search_versions(client: MlflowClient, filter_string: str) -> list[ModelVersion]:
    found: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(filter_string, max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


# --- loading --------------------------------------------------------------------------------


def model_uri(name: str, alias_or_version: str | int) -> str:
    """'models:/name/3' for a version, 'models:/name@champion' for an alias."""
    ref = str(alias_or_version)
    return f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}@{ref}"


def _resolve(settings: Settings, name: str, alias_or_version: str | int) -> str:
    ref = str(alias_or_version)
    if ref.isdigit():
        return ref
    version = get_alias_version(settings, name, ref)
    if version is None:
        raise RegistryError(f"model {name!r} has no version with alias {ref!r}")
    return version


def load_keras(settings: Settings, name: str, alias_or_version: str | int) -> keras.Model:
    """The Keras model of a version or alias, compiled with its optimizer state (fit continues)."""
    import mlflow.keras

    version = _resolve(settings, name, alias_or_version)
    loaded: keras.Model = mlflow.keras.load_model(model_uri(name, version))
    return loaded


def load_pyfunc(settings: Settings, name: str, alias_or_version: str | int) -> PyFuncModel:
    """The generic pyfunc model for serving; Keras progress bars are switched off."""
    import keras
    import mlflow.pyfunc

    version = _resolve(settings, name, alias_or_version)
    keras.utils.disable_interactive_logging()  # pyfunc.predict would print a bar per call
    return mlflow.pyfunc.load_model(model_uri(name, version))


# --- aliases and their history --------------------------------------------------------------


def _registered(client: MlflowClient, name: str) -> RegisteredModel | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases(registered: RegisteredModel | None) -> dict[str, str]:
    """Alias -> version as text (the sqlite store gives ints, REST gives strings)."""
    if registered is None:
        return {}
    return {alias: str(version) for alias, version in registered.aliases.items()}


def get_alias_version(settings: Settings, name: str, alias: str) -> str | None:
    """The version holding an alias, or None (also when the model does not exist yet).

    Asks for that one alias, not for the registered model with all its tags: the scorer polls
    this every few seconds.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = connect(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc.message)
        ):
            return None
        raise
    return str(found.version)


def history_experiment(name: str) -> str:
    """The experiment that keeps every alias move of a model, one run per move."""
    return f"{name} alias history"


class _AliasSession:
    """Alias moves of one model under its alias lock; each move is recorded as it happens.

    The full history grows as runs of the model's history experiment (one per move); the
    registered model's tags keep only the newest `_HISTORY_KEPT` moves, so reading the model
    stays cheap however long it has been promoted.
    """

    def __init__(self, settings: Settings, client: MlflowClient, name: str) -> None:
        self.settings, self.client, self.name = settings, client, name
        registered = _registered(client, name)
        self.aliases = _aliases(registered)
        self.recent = _read_history(registered)
        self.description = (registered.description or "") if registered is not None else ""
        self.history_id = _history_experiment_id(client, name)
        archived = _newest_archived_seq(client, self.history_id)
        # Moves only in tags (a store from before the archive) are archived before any trim.
        for move in self.recent:
            if move.seq > archived:
                self.archive(move)
        self.next_seq = max([archived, *(m.seq for m in self.recent)]) + 1
        self.moved = False

    def move(
        self, alias: str, to: str | None, *, trigger: str, reasons: Sequence[str], who: str
    ) -> None:
        before = self.aliases.get(alias)
        if before == to:
            return
        if to is None:
            self.client.delete_registered_model_alias(self.name, alias)
            self.aliases.pop(alias, None)
        else:
            self.client.set_registered_model_alias(self.name, alias, to)
            self.aliases[alias] = to
        record = AliasMove(
            seq=self.next_seq,
            at=iso_utc(datetime.now(UTC).replace(microsecond=0)),
            alias=alias,
            from_version=before,
            to_version=to,
            trigger=trigger,
            reasons=tuple(reasons),
            who=who,
        )
        # The archive first: a crash before the tag loses nothing, and next_seq sees the run.
        self.archive(record)
        key = f"{_HISTORY_PREFIX}{record.seq:06d}"
        self.client.set_registered_model_tag(self.name, key, _encode_move(record))
        self.recent.append(record)
        self.next_seq += 1
        self.moved = True

    def archive(self, move: AliasMove) -> None:
        if self.history_id is None:
            self.history_id = ensure_experiment(self.settings, history_experiment(self.name))
        _archive_move(self.client, self.history_id, self.name, move)

    def trim(self) -> None:
        """Drop the tags of all but the newest moves (they stay in the archive)."""
        for move in sorted(self.recent, key=lambda m: m.seq)[:-_HISTORY_KEPT]:
            self.client.delete_registered_model_tag(self.name, f"{_HISTORY_PREFIX}{move.seq:06d}")
        self.recent = sorted(self.recent, key=lambda m: m.seq)[-_HISTORY_KEPT:]

    def describe(self) -> None:
        """Show the newest moves as a table in the registered model's description."""
        text = describe_with_history(self.description, self.name, self.recent)
        if text != self.description:
            self.client.update_registered_model(self.name, description=text)
            self.description = text


@contextlib.contextmanager
def _alias_session(settings: Settings, name: str) -> Iterator[_AliasSession]:
    # Alias moves read, then write: the lock keeps two movers on this machine from interleaving.
    with _file_lock(_lock_dir(settings) / f"{name}.aliases.lock", 30.0, "alias lock"):
        session = _AliasSession(settings, connect(settings), name)
        yield session
        if session.moved or len(session.recent) > _HISTORY_KEPT:
            session.trim()
            session.describe()


def promote(
    settings: Settings,
    name: str,
    version: str | int,
    *,
    trigger: str,
    reasons: Sequence[str],
    who: str = "streamtrain",
) -> None:
    """Make `version` champion; the old champion becomes previous-champion. No-op if already."""
    version = str(version)
    with _alias_session(settings, name) as session:
        old = session.aliases.get(CHAMPION)
        if old == version:
            return
        if old is not None:
            session.move(PREVIOUS_CHAMPION, old, trigger=trigger, reasons=reasons, who=who)
        session.move(CHAMPION, version, trigger=trigger, reasons=reasons, who=who)
        if session.aliases.get(CHALLENGER) == version:
            session.move(CHALLENGER, None, trigger=trigger, reasons=["promoted"], who=who)


def set_challenger(
    settings: Settings,
    name: str,
    version: str | int,
    *,
    trigger: str,
    reasons: Sequence[str] = (),
    who: str = "streamtrain",
) -> None:
    """Point `challenger` at the latest candidate version."""
    with _alias_session(settings, name) as session:
        session.move(CHALLENGER, str(version), trigger=trigger, reasons=reasons, who=who)


def rollback(settings: Settings, name: str, *, who: str, why: str) -> str:
    """Give `champion` back to previous-champion (which is then cleared); returns that version."""
    with _alias_session(settings, name) as session:
        previous = session.aliases.get(PREVIOUS_CHAMPION)
        current = session.aliases.get(CHAMPION)
        if previous is None:
            raise NoPreviousChampion(
                f"cannot roll back model {name!r}: no version holds the "
                f"'{PREVIOUS_CHAMPION}' alias (champion is {current or 'unset'}); "
                "promote a version explicitly instead"
            )
        session.move(CHAMPION, previous, trigger="rollback", reasons=[why], who=who)
        # Cleared, so that a second rollback cannot bring back the version just rolled back.
        done = f"version {previous} restored as champion"
        session.move(PREVIOUS_CHAMPION, None, trigger="rollback", reasons=[done], who=who)
        if current is not None:
            note = f"{iso_utc(datetime.now(UTC).replace(microsecond=0))} by {who}: {why}"
            session.client.set_model_version_tag(name, current, "rolled_back", note)
        return previous


def alias_history(settings: Settings, name: str) -> list[AliasMove]:
    """Every recorded alias move of a model, oldest first (the archive and the newest tags)."""
    client = connect(settings)
    return _merged(_archived_moves(client, name), _read_history(_registered(client, name)))


def recent_alias_moves(settings: Settings, name: str) -> list[AliasMove]:
    """The newest alias moves (at most `_HISTORY_KEPT`), from the registered model's tags."""
    return _read_history(_registered(connect(settings), name))[-_HISTORY_KEPT:]


def moves_to(settings: Settings, name: str, version: str) -> list[AliasMove]:
    """The recorded moves of any alias onto `version` (one filtered query, not the history)."""
    client = connect(settings)
    recent = [m for m in _read_history(_registered(client, name)) if m.to_version == version]
    return _merged(_archived_moves(client, name, f"tags.`{_MOVE_TAG}to` = '{version}'"), recent)


def describe_with_history(description: str, name: str, moves: Sequence[AliasMove]) -> str:
    """The model's description with its part about alias moves replaced by the newest ones.

    Markdown, as the MLflow UI renders it; it stays below the registry's 5000 characters by
    dropping the oldest rows.
    """
    base = description.split(_HISTORY_HEADING)[0].rstrip()
    intro = (
        f"{_HISTORY_HEADING}\n\nNewest first. Every move is kept as a run of the experiment "
        f"'{history_experiment(name)}' and listed by `streamtrain model history`.\n\n"
        "| when | alias | version | from | who | why |\n|---|---|---|---|---|---|\n"
    )
    rows = [_history_row(m) for m in sorted(moves, key=lambda m: m.seq, reverse=True)]
    while rows and len(base) + len(intro) + sum(map(len, rows)) + 2 > _DESCRIPTION_LIMIT:
        rows.pop()
    return f"{base}\n\n{intro}{''.join(rows)}".strip() if rows else base


def _history_row(move: AliasMove) -> str:
    why = "; ".join((move.trigger, *move.reasons))
    cells = [
        move.at,
        move.alias,
        move.to_version or "(cleared)",
        move.from_version or "-",
        move.who[:40],
        why if len(why) <= 120 else why[:117] + "...",
    ]
    return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |\n"


def _merged(archived: Iterable[AliasMove], tagged: Iterable[AliasMove]) -> list[AliasMove]:
    by_seq = {m.seq: m for m in tagged} | {m.seq: m for m in archived}
    return [by_seq[seq] for seq in sorted(by_seq)]


def _read_history(registered: RegisteredModel | None) -> list[AliasMove]:
    tags = registered.tags if registered is not None else {}
    moves = [
        _decode_move(int(key.removeprefix(_HISTORY_PREFIX)), value)
        for key, value in tags.items()
        if key.startswith(_HISTORY_PREFIX)
    ]
    return sorted(moves, key=lambda m: m.seq)


def _archive_move(client: MlflowClient, experiment_id: str, name: str, move: AliasMove) -> None:
    """One finished run per move: searchable by alias, version and who in the MLflow UI."""
    tags = {
        f"{_MOVE_TAG}seq": f"{move.seq:010d}",  # zero-padded: ordered as text by search_runs
        f"{_MOVE_TAG}at": move.at,
        f"{_MOVE_TAG}alias": move.alias,
        f"{_MOVE_TAG}from": move.from_version or _NONE,
        f"{_MOVE_TAG}to": move.to_version or _NONE,
        f"{_MOVE_TAG}trigger": move.trigger[:500],
        f"{_MOVE_TAG}who": move.who[:200],
        f"{_MOVE_TAG}reasons": "; ".join(move.reasons)[:1000],
        f"{_MOVE_TAG}json": _encode_move(move),
        "streamtrain.model": name,
    }
    run_name = f"{move.alias}: {move.from_version or '-'} -> {move.to_version or '-'}"
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    client.set_terminated(run.info.run_id)


def _history_experiment_id(client: MlflowClient, name: str) -> str | None:
    experiment = client.get_experiment_by_name(history_experiment(name))
    return None if experiment is None else str(experiment.experiment_id)


def _newest_archived_seq(client: MlflowClient, experiment_id: str | None) -> int:
    if experiment_id is None:
        return 0
    runs = client.search_runs(
        [experiment_id], max_results=1, order_by=[f"tags.`{_MOVE_TAG}seq` DESC"]
    )
    return int(runs[0].data.tags[f"{_MOVE_TAG}seq"]) if runs else 0


def _archived_moves(client: MlflowClient, name: str, filter_string: str = "") -> list[AliasMove]:
    experiment_id = _history_experiment_id(client, name)
    if experiment_id is None:
        return []
    moves, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=1000, page_token=token
        )
        moves += [
            _decode_move(int(run.data.tags[f"{_MOVE_TAG}seq"]), run.data.tags[f"{_MOVE_TAG}json"])
            for run in page
        ]
        token = page.token
        if not token:
            return moves


def _encode_move(move: AliasMove) -> str:
    """Compact JSON within the tag limit: the longest reasons are shortened first."""
    reasons = list(move.reasons)
    truncated = False
    while True:
        entry: dict[str, Any] = {
            "at": move.at,
            "alias": move.alias,
            "from": move.from_version,
            "to": move.to_version,
            "trigger": move.trigger[:500],
            "reasons": reasons,
            "who": move.who[:200],
        }
        if truncated or len(move.trigger) > 500 or len(move.who) > 200:
            entry["truncated"] = True
        text = json.dumps(entry, separators=(",", ":"))  # ASCII only: characters == bytes
        if len(text) <= _HISTORY_ENTRY_LIMIT:
            return text
        truncated = True
        longest = max(range(len(reasons)), key=lambda i: len(reasons[i]))
        if len(reasons[longest]) > 40:
            reasons[longest] = reasons[longest][: len(reasons[longest]) // 2] + "..."
        else:
            reasons.pop()


def _decode_move(seq: int, text: str) -> AliasMove:
    entry = json.loads(text)
    return AliasMove(
        seq=seq,
        at=entry["at"],
        alias=entry["alias"],
        from_version=entry.get("from"),
        to_version=entry.get("to"),
        trigger=entry.get("trigger", ""),
        reasons=tuple(entry.get("reasons", ())),
        who=entry.get("who", ""),
        truncated=bool(entry.get("truncated", False)),
    )


# --- locks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def training_lock(settings: Settings, name: str, timeout_s: float) -> Iterator[None]:
    """Hold the model's training lock, waiting up to `timeout_s`; raise LockTimeout otherwise.

    An flock only excludes runs on this machine (see `_lock_dir` for where it lives); across
    machines the Prefect concurrency limit on the training deployments provides exclusivity.
    """
    with _file_lock(_lock_dir(settings) / f"{name}.train.lock", timeout_s, "training lock"):
        yield


def _lock_dir(settings: Settings) -> Path:
    """Locks live beside what they protect: a local SQLite store's folder, else the home.

    So two runs that share a store exclude each other even with different STREAMTRAIN_HOMEs.
    """
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "locks"
    return settings.home / "locks"


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                if left <= 0:
                    raise LockTimeout(
                        f"{what} {path.name} is held by {holder}; gave up after {timeout_s:g} s"
                    ) from None
                if not waited:  # say once why nothing seems to happen
                    logging.getLogger("streamtrain.registry").warning(
                        "%s %s is held by %s; waiting up to %g s", what, path.name, holder, left
                    )
                    waited = True
                time.sleep(min(_LOCK_POLL_S, left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {iso_utc(datetime.now(UTC))}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- lineage lookups, live accuracy and the cycle report --------------------------------------

_LIVE_TAG = "live.accuracy"
_LIVE_KEPT = 72  # windows of live accuracy kept per version


@dataclass(frozen=True)
class LiveAccuracy:
    """Live (prequential) accuracy of the serving champion and of the one it replaced."""

    champion: str
    current: tuple[float, ...]  # per window, oldest first, since it started serving
    previous: float | None  # mean over the previous champion's last serving windows


def version_lineage(settings: Settings, name: str, version: str) -> Lineage | None:
    """The lineage recorded with a version (None for a version registered elsewhere)."""
    tags = connect(settings).get_model_version(name, version).tags
    return Lineage.model_validate_json(tags["lineage.json"]) if "lineage.json" in tags else None


def _live_series(client: MlflowClient, name: str, version: str) -> list[list[Any]]:
    text = client.get_model_version(name, version).tags.get(_LIVE_TAG)
    return json.loads(text) if text else []


def record_live_accuracy(
    settings: Settings, name: str, version: str, window_start: datetime, accuracy: float
) -> None:
    """Append one window's live accuracy to the serving version (once per window)."""
    client = connect(settings)
    series = [
        entry for entry in _live_series(client, name, version) if entry[0] != iso_utc(window_start)
    ]
    series.append([iso_utc(window_start), round(float(accuracy), 5)])
    series.sort(key=lambda entry: entry[0])
    client.set_model_version_tag(name, version, _LIVE_TAG, json.dumps(series[-_LIVE_KEPT:]))


def live_accuracy(settings: Settings, name: str, hours: int) -> LiveAccuracy | None:
    """The champion's live accuracy and its predecessor's (last `hours` windows), if both exist."""
    client = connect(settings)
    aliases = _aliases(_registered(client, name))
    champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
    if champion is None or previous is None:
        return None
    before = [acc for _, acc in _live_series(client, name, previous)][-hours:]
    current = tuple(acc for _, acc in _live_series(client, name, champion))
    return LiveAccuracy(champion, current, sum(before) / len(before) if before else None)


def tag_run(settings: Settings, run_id: str, tags: Mapping[str, str]) -> None:
    client = connect(settings)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def run_url(settings: Settings, run_id: str) -> str:
    """The run's page in the MLflow UI of the tracking server."""
    run = connect(settings).get_run(run_id)
    base = settings.tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def attach_files(settings: Settings, run_id: str, files: Mapping[str, str | bytes]) -> None:
    """Add files (text or bytes, such as a PNG) to an existing run's artifacts."""
    _log_files(connect(settings), run_id, files)


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


def read_version_artifact(settings: Settings, name: str, version: str, path: str) -> str | None:
    """A small text artifact of the run behind a version (None when it has none)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = connect(settings)
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return None
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError):
        return None


def get_model_tag(settings: Settings, name: str, key: str) -> str | None:
    registered = _registered(connect(settings), name)
    return None if registered is None else registered.tags.get(key)


def set_model_tag(settings: Settings, name: str, key: str, value: str) -> None:
    client = connect(settings)
    if _registered(client, name) is None:
        return  # nothing registered yet: nothing to attach state to
    client.set_registered_model_tag(name, key, value)


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


# --- serving runs: live accuracy of the versions that served, from real predictions ---------

SERVING_TAG = "streamtrain.serving_version"  # not `streamtrain.kind`: not a training cycle


def serving_run(settings: Settings, schema: StreamSchema, version: str) -> str:
    """The id of the long-lived run "serving v<version>", found by tag or created.

    Creation happens under a file lock so two monitors on this machine cannot both create it;
    should two runs exist anyway (monitors on different machines), the oldest one is used.
    """
    client = connect(settings)
    experiment_id = ensure_experiment(settings, schema.name)
    lock = _lock_dir(settings) / f"{schema.name}.serving.lock"
    with _file_lock(lock, timeout_s=60, what="serving-run lock"):
        found = _serving_runs(client, experiment_id, version)
        if found:
            return found[0]
        run = client.create_run(
            experiment_id,
            run_name=f"serving v{version}",
            tags={SERVING_TAG: version, "streamtrain.model": schema.name},
        )
    return str(run.info.run_id)


def _serving_runs(client: MlflowClient, experiment_id: str, version: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{SERVING_TAG}` = '{version}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return [str(run.info.run_id) for run in runs]


def log_serving_window(
    settings: Settings, run_id: str, step: int, metrics: Mapping[str, float]
) -> None:
    """Log one window's metrics at `step`; values already logged at that step are not repeated,
    so monitoring a window again only adds what changed (late labels)."""
    from mlflow.entities import Metric

    client = connect(settings)
    now = int(time.time() * 1000)
    points = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if float(value) != _metric_at(client, run_id, key, step)
    ]
    if points:
        client.log_batch(run_id, metrics=points)


def _metric_at(client: MlflowClient, run_id: str, key: str, step: int) -> float | None:
    """The latest value of a metric at a step (None when it was never logged there)."""
    at_step = [m for m in client.get_metric_history(run_id, key) if m.step == step]
    return max(at_step, key=lambda m: m.timestamp).value if at_step else None


def serving_metric(settings: Settings, run_id: str, key: str) -> dict[int, float]:
    """A serving run's metric as {step: latest value}."""
    latest: dict[int, tuple[int, float]] = {}
    for m in connect(settings).get_metric_history(run_id, key):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, m.value)
    return {step: value for step, (_, value) in sorted(latest.items())}
