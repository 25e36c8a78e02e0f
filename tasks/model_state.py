"""Per-model state kept in the registry: tags of the registered model, live accuracy of versions.

The detector, its drift episodes and the last window it saw are registered-model tags (written
by `tasks.guards`); each serving version keeps its recent live accuracy as a version tag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tasks.aliases import CHAMPION, PREVIOUS_CHAMPION, aliases_of
from tasks.registry import connect, iso_utc, registered_model
from tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


_LIVE_TAG = "live.accuracy"
_LIVE_KEPT = 72  # windows of live accuracy kept per version


@dataclass(frozen=True)
class LiveAccuracy:
    """Live (prequential) accuracy of the serving champion and of the one it replaced."""

    champion: str
    current: tuple[float, ...]  # per window, oldest first, since it started serving
    previous: float | None  # mean over the previous champion's last serving windows


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
    aliases = aliases_of(registered_model(client, name))
    champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
    if champion is None or previous is None:
        return None
    before = [acc for _, acc in _live_series(client, name, previous)][-hours:]
    current = tuple(acc for _, acc in _live_series(client, name, champion))
    return LiveAccuracy(champion, current, sum(before) / len(before) if before else None)


def get_model_tag(settings: Settings, name: str, key: str) -> str | None:
    registered = registered_model(connect(settings), name)
    return None if registered is None else registered.tags.get(key)


def set_model_tag(settings: Settings, name: str, key: str, value: str) -> None:
    client = connect(settings)
    if registered_model(client, name) is None:
        return  # nothing registered yet: nothing to attach state to
    client.set_registered_model_tag(name, key, value)
