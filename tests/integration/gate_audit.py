"""An audit of the registry for the tests: every champion move had to pass the gate.

The decision is recomputed with the pure gate (`tasks.gate.decide_promotion`) from the holdout
metrics and row counts recorded in the promoted version's lineage and the settings' policy, not
read back from the `gate_decision` the same code path wrote. The lineage keeps the metrics but
not the bootstrap intervals nor the drift signal, and both can only block a promotion; so the
recomputed gate (point estimates, no drift) is a necessary condition: a promotion it refuses
cannot have come from the real gate.
"""

from __future__ import annotations

import math

from tasks import aliases, versions
from tasks.evaluation import Metrics
from tasks.gate import GateDecision, GatePolicy, HoldoutComparison, decide_promotion
from tasks.lineage import Lineage
from tasks.settings import Settings


def _metrics(recorded: dict[str, float], holdout: str, rows: int) -> Metrics:
    def value(name: str) -> float:
        return recorded.get(f"{holdout}.{name}", math.nan)

    nan = math.nan
    return Metrics(value("accuracy"), value("f1"), value("auc"), nan, nan, nan, rows, 0)


def recomputed_decision(lineage: Lineage, policy: GatePolicy) -> GateDecision:
    """The gate's decision on the numbers a version's lineage recorded."""
    assert lineage.holdout_rows, f"no holdout rows recorded for the gate: {lineage}"
    comparisons = [
        HoldoutComparison(
            name=holdout,
            rows=rows,
            challenger=_metrics(lineage.holdout_metrics, holdout, rows),
            champion=_metrics(lineage.champion_metrics, holdout, rows)
            if lineage.champion_version is not None
            else None,
        )
        for holdout, rows in sorted(lineage.holdout_rows.items())
    ]
    fine_tuned = lineage.training_kind == "finetune"
    return decide_promotion(comparisons, None, policy, fine_tuned=fine_tuned)


def assert_champion_moved_only_through_the_gate(s: Settings, name: str) -> None:
    """Every champion move after the first (the test's own) passes the recomputed gate, over
    the champion the version was compared with; a rollback only restores an earlier champion."""
    policy = GatePolicy.from_settings(s)
    moves = [m for m in aliases.alias_history(s, name) if m.alias == aliases.CHAMPION]
    for index, move in enumerate(moves[1:], start=1):
        assert move.to_version is not None, move
        if move.trigger == "rollback":
            earlier = {m.to_version for m in moves[:index]}
            assert move.to_version in earlier, f"rollback to a version never champion: {move}"
            continue
        lineage = versions.version_lineage(s, name, move.to_version)
        assert lineage is not None, f"champion {move.to_version} has no lineage: {move}"
        assert lineage.champion_version == move.from_version, (
            f"version {move.to_version} was compared with {lineage.champion_version}, "
            f"but replaced {move.from_version}: {move}"
        )
        decision = recomputed_decision(lineage, policy)
        assert decision.promote, f"the gate refuses {move}: {decision.reasons}"
