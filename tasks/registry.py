"""The model registry's core: the MLflow client, experiments, errors, locks.

The registry's other concerns build on this module: `tasks.lineage` (what a version records),
`tasks.versions` (registering, finding and loading versions), `tasks.aliases` (aliases and
their history), `tasks.model_state` (state kept on the model, such as live accuracy and the
detector), `tasks.run_logging` (training and cycle runs) and `tasks.serving_runs`. MLflow is
called from these modules only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.tracking import MlflowClient

NONE = "none"  # tag value standing for "no version" (tag values cannot be null)
_LOCK_POLL_S = 0.05


class RegistryError(RuntimeError):
    """A registry request that cannot be honoured; the message says why."""


class NoPreviousChampion(RegistryError):
    """Rollback asked for, but no version holds the `previous-champion` alias."""


class LockTimeout(TimeoutError):
    """Another process holds a lock for longer than the caller was willing to wait."""


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


def registered_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    """The registered model with its aliases and tags, or None when it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


@contextlib.contextmanager
def training_lock(settings: Settings, name: str, timeout_s: float) -> Iterator[None]:
    """Hold the model's training lock, waiting up to `timeout_s`; raise LockTimeout otherwise.

    An flock only excludes runs on this machine (see `lock_dir` for where it lives); across
    machines the Prefect concurrency limit on the training deployments provides exclusivity.
    """
    with file_lock(lock_dir(settings) / f"{name}.train.lock", timeout_s, "training lock"):
        yield


def lock_dir(settings: Settings) -> Path:
    """Locks live beside what they protect: a local SQLite store's folder, else the home.

    So two runs that share a store exclude each other even with different STREAMTRAIN_HOMEs.
    """
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "locks"
    return settings.home / "locks"


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    """An exclusive flock on `path` that names its holder, waiting up to `timeout_s`."""
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
