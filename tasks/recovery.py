"""Crash recovery: the alias moves a training run registered a version for but died before making.

No journal of our own is needed: the version's lineage holds the gate's decision, and the
alias history says which moves happened. A run dies between registering and moving aliases
at most once before the next run registers a newer version, so only the newest version is
checked at the start of every cycle.
"""

from __future__ import annotations

import logging

from tasks import aliases, versions
from tasks.lineage import Lineage
from tasks.settings import Settings

log = logging.getLogger(__name__)


def finish_moves(settings: Settings, name: str, version: str) -> Lineage | None:
    """Make the moves `version`'s gate decision asked for and that never happened.

    Returns the version's lineage when moves were made, None when nothing was left to do.
    `challenger` is only moved to the newest version, so a late rerun never takes it from a
    newer candidate; `champion` only when the version was compared with the serving champion,
    so a promotion made by hand since then is not undone.
    """
    lineage = versions.version_lineage(settings, name, version)
    if lineage is None or lineage.gate_decision is None:
        return None
    moved = {(m.alias, m.to_version) for m in aliases.moves_to(settings, name, version)}
    as_challenger = (aliases.CHALLENGER, version) not in moved and (
        versions.latest_version(settings, name) == version
    )
    as_champion = (
        lineage.gate_decision == "promoted"
        and (aliases.CHAMPION, version) not in moved
        and aliases.get_alias_version(settings, name, aliases.CHAMPION) == lineage.parent_version
    )
    if not (as_challenger or as_champion):
        return None
    reasons = list(lineage.gate_reasons)
    log.warning("version %s of %s: making the alias moves its run did not make", version, name)
    if as_challenger:
        aliases.set_challenger(settings, name, version, trigger=lineage.trigger, reasons=reasons)
    if as_champion:
        aliases.promote(settings, name, version, trigger=lineage.trigger, reasons=reasons)
    return lineage


def finish_latest(settings: Settings, name: str) -> tuple[str, Lineage] | None:
    """Finish the newest version's moves if its run died before them; it and its lineage if so."""
    latest = versions.latest_version(settings, name)
    if latest is None:
        return None
    lineage = finish_moves(settings, name, latest)
    return None if lineage is None else (latest, lineage)
