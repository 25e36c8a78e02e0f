"""The window clock: emit a Prefect event each time the stream's time closes a window.

A window closes when the stream's event time has passed its end plus the allowed lateness.
The `window-finetune` deployment's trigger (prefect.yaml) starts the fine-tune of exactly that
window. Each event's id is derived from the model and window, so an event sent twice is one
event to Prefect; the fine-tune itself is idempotent per window as well.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flows.finetune import closed_since
from tasks.run_logging import last_finetuned_window
from tasks.schema import StreamSchema
from tasks.settings import Settings
from tasks.stream import has_records
from tasks.windowing import Window, format_instant

log = logging.getLogger("streamtrain.window_clock")

EVENT = "streamtrain.window.closed"


def window_event_id(model: str, window: Window) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"streamtrain:{model}:{format_instant(window.start)}")


def emit_window_closed(model: str, window: Window) -> None:
    """Tell Prefect that `window` of `model` closed (the deployment trigger listens for this)."""
    from prefect.events import emit_event

    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"streamtrain.window.{model}.{format_instant(window.start)}",
            "prefect.resource.name": f"{model} {window}",
            "streamtrain.model": model,
        },
        payload={"window_start": format_instant(window.start), "model": model},
        id=window_event_id(model, window),
    )


def state_file(settings: Settings, model: str) -> Path:
    return settings.home / "stack" / f"window-clock.{model}.json"


def announce_closed(
    settings: Settings,
    schema: StreamSchema,
    now: datetime,
    emit: Callable[[str, Window], None] = emit_window_closed,
) -> list[Window]:
    """Emit an event for each window closed since the last one announced that holds records."""
    due, _ = closed_since(settings, schema, _last_announced(settings, schema.name), now)
    announced = []
    for window in due:
        if has_records(settings, schema.topic, window):
            emit(schema.name, window)
            announced.append(window)
        _save_announced(settings, schema.name, window)
    return announced


def _last_announced(settings: Settings, model: str) -> Window | None:
    path = state_file(settings, model)
    if path.exists():
        saved = json.loads(path.read_text())
        return Window(datetime.fromisoformat(saved["start"]), datetime.fromisoformat(saved["end"]))
    done = last_finetuned_window(settings, model)
    return Window(*done) if done else None


def _save_announced(settings: Settings, model: str, window: Window) -> None:
    path = state_file(settings, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"start": window.start.isoformat(), "end": window.end.isoformat()}))


def run_window_clock(settings: Settings, schema: StreamSchema) -> None:
    """Poll the stream's time and announce closed windows until stopped."""
    log.info("Watching '%s' for closed windows", schema.topic)
    while True:
        for window in announce_closed(settings, schema, datetime.now(UTC)):
            log.info("window %s closed: event sent", window)
        time.sleep(settings.window_clock_poll_s)
