"""Crash recovery: the alias moves a training run registered a version for but died before making.

No journal of our own is needed: the version's lineage holds the gate's decision, and the
alias history says which moves happened. A run dies between registering and moving aliases
at most once before the next run registers a newer version, so only the newest version is
checked at the start of every cycle.
"""

from __future__ import annotations

import logging

from tasks import registry
from tasks.settings import Settings

log = logging.getLogger(__name__)


def finish_moves(settings: Settings, name: str, version: str) -> registry.Lineage | None:
    """Make the moves `version`'s gate decision asked for and that never happened.

    Returns the version's lineage when moves were made, None when nothing was left to do.
    `challenger` is only moved to the newest version, so a late rerun never takes it from a
    newer candidate; `champion` only when the version was compared with the serving champion,
    so a promotion made by hand since then is not undone.
    """
    lineage = registry.version_lineage(settings, name, version)
    if lineage is None or lineage.gate_decision is None:
        return None
    moved = {(m.alias, m.to_version) for m in registry.moves_to(settings, name, version)}
    as_challenger = (registry.CHALLENGER, version) not in moved and (
        registry.latest_version(settings, name) == version
    )
    as_champion = (
        lineage.gate_decision == "promoted"
        and (registry.CHAMPION, version) not in moved
        and registry.get_alias_version(settings, name, registry.CHAMPION) == lineage.parent_version
    )
    if not (as_challenger or as_champion):
        return None
    reasons = list(lineage.gate_reasons)
    log.warning("version %s of %s: making the alias moves its run did not make", version, name)
    if as_challenger:
        registry.set_challenger(settings, name, version, trigger=lineage.trigger, reasons=reasons)
    if as_champion:
        registry.promote(settings, name, version, trigger=lineage.trigger, reasons=reasons)
    return lineage


def finish_latest(settings: Settings, name: str) -> tuple[str, registry.Lineage] | None:
    """Finish the newest version's moves if its run died before them; it and its lineage if so."""
    latest = registry.latest_version(settings, name)
    if latest is None:
        return None
    lineage = finish_moves(settings, name, latest)
    return None if lineage is None else (latest, lineage)
