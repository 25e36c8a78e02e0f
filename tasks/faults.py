"""Fault injection for the crash tests: kill the training process at a named stage.

A test hook, off unless `STREAMTRAIN_FAULT_KILL_AT` names a stage. SIGKILL, not an exception:
nothing is cleaned up, as when a machine dies, so the rerun must cope with what was left.
"""

from __future__ import annotations

import logging
import os
import signal

from tasks.settings import Settings

log = logging.getLogger(__name__)


def checkpoint(settings: Settings, stage: str) -> None:
    """Die here, at once and without cleanup, when the settings ask to fail at `stage`."""
    if settings.fault_kill_at != stage:
        return
    log.warning("fault injection: SIGKILL at %s (STREAMTRAIN_FAULT_KILL_AT)", stage)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
