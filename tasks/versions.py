"""Registered versions: registering a run's model with its lineage, finding and loading versions.

Registering is idempotent (a run gets one version), and reruns find the version a window
already produced by its lineage tags. Every model load goes through `model_uri` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tasks.aliases import (
    CHALLENGER,
    CHAMPION,
    HISTORY_PREFIX,
    PREVIOUS_CHAMPION,
    aliases_of,
    get_alias_version,
)
from tasks.lineage import Lineage
from tasks.registry import NONE, RegistryError, connect, iso_utc, registered_model
from tasks.schema import StreamSchema
from tasks.settings import Settings

if TYPE_CHECKING:
    import keras
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

    from tasks.run_logging import RunRef


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
        f"tags '{HISTORY_PREFIX}NNNNNN'."
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
        f" and tags.`lineage.parent_version` = '{parent_version or NONE}'"
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
    for alias, version in aliases_of(registered_model(client, name)).items():
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


def version_lineage(settings: Settings, name: str, version: str) -> Lineage | None:
    """The lineage recorded with a version (None for a version registered elsewhere)."""
    tags = connect(settings).get_model_version(name, version).tags
    return Lineage.model_validate_json(tags["lineage.json"]) if "lineage.json" in tags else None


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
