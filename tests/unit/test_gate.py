"""The promotion gate and rollback rule, table by table."""

from __future__ import annotations

import math

import pytest

from tasks.evaluation import DiffInterval, Metrics
from tasks.gate import (
    METRIC_DIRECTION,
    DriftSignal,
    GatePolicy,
    HoldoutComparison,
    decide_promotion,
    decide_rollback,
)
from tasks.settings import Settings

POLICY = GatePolicy(
    metric="f1", direction="higher", absolute_floor=0.5, tolerance=0.02, confidence=0.95
)


def metrics(value: float, n: int = 100) -> Metrics:
    return Metrics(
        accuracy=value,
        f1=value,
        auc=value,
        precision=value,
        recall=value,
        log_loss=value,
        n=n,
        positives=n // 3,
    )


def holdout(
    name: str,
    challenger: float,
    champion: float | None = None,
    ci: tuple[float, float] | None = None,
    n: int | None = None,
) -> HoldoutComparison:
    rows = n if n is not None else (96 if name == "recent" else 480)
    interval = None
    if champion is not None and ci is not None:
        interval = DiffInterval(challenger - champion, ci[0], ci[1], 500, 0.95)
    return HoldoutComparison(
        name=name,
        rows=rows,
        challenger=metrics(challenger, rows),
        champion=metrics(champion, rows) if champion is not None else None,
        diff=interval,
    )


SEVERE = DriftSignal(data_drift="severe")
MILD = DriftSignal(data_drift="mild", new_categories={"suburb": ["Newtown"]})
ALARM = DriftSignal(concept_drift_alarm=True)

PROMOTION_CASES = [
    pytest.param([holdout("long", 0.7)], None, True, False, id="first-model-above-floor"),
    pytest.param([holdout("long", 0.4)], None, False, False, id="first-model-below-floor"),
    pytest.param([], None, False, False, id="no-comparison-never-promotes"),
    pytest.param(
        [holdout("recent", 0.84, 0.79, (0.01, 0.09)), holdout("long", 0.82, 0.80, (0.0, 0.04))],
        None,
        True,
        False,
        id="challenger-better",
    ),
    pytest.param(
        [holdout("recent", 0.78, 0.79, (-0.06, 0.04)), holdout("long", 0.80, 0.81, (-0.03, 0.01))],
        None,
        True,
        False,
        id="slightly-worse-within-tolerance",
    ),
    pytest.param(
        [holdout("recent", 0.70, 0.79, (-0.14, -0.04)), holdout("long", 0.72, 0.80, (-0.1, -0.05))],
        None,
        False,
        False,
        id="confidently-worse",
    ),
    pytest.param(
        [holdout("recent", 0.76, 0.79, (-0.10, 0.04)), holdout("long", 0.80, 0.80, (-0.02, 0.02))],
        None,
        False,
        False,
        id="point-estimate-beyond-tolerance-wide-ci",
    ),
    pytest.param(
        [holdout("recent", 0.72, 0.79, (-0.12, -0.03)), holdout("long", 0.81, 0.80, (-0.01, 0.03))],
        None,
        False,
        False,
        id="worse-only-on-recent-holdout",
    ),
    pytest.param(
        [holdout("long", 0.45, 0.80, (-0.4, -0.3))],
        None,
        False,
        False,
        id="under-floor-with-champion",
    ),
    pytest.param(
        [holdout("recent", 0.78, 0.79, (-0.06, 0.04)), holdout("long", 0.80, 0.80, (-0.02, 0.02))],
        SEVERE,
        False,
        True,
        id="severe-drift-slightly-worse-fine-tune-blocked",
    ),
    pytest.param(
        [holdout("recent", 0.84, 0.79, (0.0, 0.1)), holdout("long", 0.81, 0.80, (-0.01, 0.03))],
        SEVERE,
        True,
        True,
        id="severe-drift-better-challenger-promoted-and-retrain",
    ),
    pytest.param(
        [holdout("recent", 0.80, 0.79, (-0.03, 0.05)), holdout("long", 0.81, 0.80, (-0.01, 0.03))],
        ALARM,
        True,
        True,
        id="concept-alarm-sets-retrain",
    ),
    pytest.param(
        [holdout("recent", 0.78, 0.79, (-0.06, 0.04)), holdout("long", 0.80, 0.81, (-0.03, 0.01))],
        ALARM,
        False,
        True,
        id="concept-alarm-slightly-worse-fine-tune-blocked",
    ),
    pytest.param(
        [holdout("recent", 0.78, 0.79, (-0.06, 0.04)), holdout("long", 0.80, 0.81, (-0.03, 0.01))],
        MILD,
        True,
        False,
        id="mild-drift-no-effect",
    ),
]


@pytest.mark.parametrize(("comparisons", "drift", "promote", "retrain"), PROMOTION_CASES)
def test_decide_promotion(
    comparisons: list[HoldoutComparison], drift: DriftSignal | None, promote: bool, retrain: bool
) -> None:
    decision = decide_promotion(comparisons, drift, POLICY)
    assert (decision.promote, decision.retrain) == (promote, retrain), decision.reasons
    assert decision.reasons


def test_retrained_challenger_is_not_held_to_the_drift_rule() -> None:
    comparisons = [holdout("recent", 0.78, 0.79, (-0.06, 0.04))]
    decision = decide_promotion(comparisons, SEVERE, POLICY, fine_tuned=False)
    assert decision.promote and decision.retrain


def test_drift_blocking_can_be_switched_off() -> None:
    policy = GatePolicy(
        "f1", "higher", 0.5, 0.02, 0.95, block_on_severe_drift=False, block_on_concept_alarm=False
    )
    comparisons = [holdout("recent", 0.78, 0.79, (-0.06, 0.04))]
    decision = decide_promotion(comparisons, SEVERE, policy)
    assert decision.promote and decision.retrain


def test_reason_states_the_numbers() -> None:
    comparisons = [holdout("recent", 0.81, 0.79, (-0.03, 0.07))]
    decision = decide_promotion(comparisons, None, POLICY)
    assert (
        "f1 0.81 vs champion 0.79 on recent holdout (96 rows): diff +0.02, 95% CI [-0.03, +0.07]"
        " within tolerance 0.02" in decision.reasons
    )


def test_new_categories_are_reported() -> None:
    decision = decide_promotion([holdout("long", 0.7)], MILD, POLICY)
    assert any("Newtown" in reason for reason in decision.reasons)


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        pytest.param(0.30, 0.35, True, id="lower-log-loss-is-better"),
        pytest.param(0.40, 0.35, False, id="higher-log-loss-is-worse"),
    ],
)
def test_direction_is_taken_from_the_policy(
    challenger: float, champion: float, promote: bool
) -> None:
    policy = GatePolicy("log_loss", METRIC_DIRECTION["log_loss"], 0.6, 0.02, 0.95)
    comparisons = [holdout("long", challenger, champion)]
    assert decide_promotion(comparisons, None, policy).promote is promote


def test_undefined_metric_never_promotes() -> None:
    assert not decide_promotion([holdout("long", math.nan)], None, POLICY).promote


def test_policy_from_settings_declares_direction() -> None:
    policy = GatePolicy.from_settings(Settings(primary_metric="auc", tolerance=0.03))
    assert (policy.metric, policy.direction, policy.tolerance) == ("auc", "higher", 0.03)


@pytest.mark.parametrize(
    ("live_new", "live_previous", "rollback"),
    [
        pytest.param([0.9] * 6, None, False, id="no-previous-champion"),
        pytest.param([0.5] * 3, 0.9, False, id="too-early-to-judge"),
        pytest.param([0.80, 0.78, 0.82, 0.79, 0.81, 0.80], 0.90, True, id="worse-beyond-margin"),
        pytest.param([0.86, 0.88, 0.84, 0.87, 0.85, 0.86], 0.90, False, id="within-margin"),
        pytest.param([0.95] * 6, 0.90, False, id="better-than-previous"),
        pytest.param([0.7, math.nan, 0.7, 0.7, 0.7, 0.7], 0.9, True, id="missing-hour-ignored"),
        pytest.param([0.9] * 6 + [0.1] * 4, 0.9, False, id="only-first-hours-count"),
    ],
)
def test_decide_rollback(
    live_new: list[float], live_previous: float | None, rollback: bool
) -> None:
    decision = decide_rollback(live_new, live_previous, windows=6, margin=0.05)
    assert decision.rollback is rollback, decision.reason


def test_rollback_reason_counts_windows_not_hours() -> None:
    """The live series holds one value per window: with 15-minute windows, 6 values are 90
    minutes, so a reason saying "6 hours" would be wrong by a factor of four."""
    early = decide_rollback([0.5] * 3, 0.9, windows=6, margin=0.05)
    judged = decide_rollback([0.5] * 6, 0.9, windows=6, margin=0.05)
    assert "3 of 6 windows" in early.reason
    assert "first 6 windows" in judged.reason and "hours" not in judged.reason


# --- issue #13: a gate on the current concept -------------------------------------------------


def test_clearly_better_challenger_replaces_a_champion_below_the_floor() -> None:
    """The floor protects a healthy champion, not a broken one (issue #13, cause 4)."""
    comparisons = [holdout("current", 0.45, 0.30, (0.08, 0.22), n=120)]
    decision = decide_promotion(comparisons, ALARM, POLICY, judge_on=("current",))
    assert decision.promote, decision.reasons
    assert decision.details["rules"] == {
        "floor": "waived-broken-champion",
        "current": "interval-better",
    }
    assert any("not a broken one" in r for r in decision.reasons)


def test_challenger_below_the_floor_not_clearly_better_is_refused() -> None:
    comparisons = [holdout("current", 0.45, 0.30, (-0.02, 0.30), n=120)]
    assert not decide_promotion(comparisons, None, POLICY).promote


def test_floor_still_protects_a_healthy_champion() -> None:
    comparisons = [holdout("long", 0.45, 0.40, (0.01, 0.09))]
    healthy = [holdout("long", 0.45, 0.80, (-0.4, -0.3))]
    assert decide_promotion(comparisons, None, POLICY).promote  # champion 0.40 is broken
    assert not decide_promotion(healthy, None, POLICY).promote


def test_interval_above_the_champion_decides_and_is_named() -> None:
    comparisons = [holdout("recent", 0.84, 0.79, (0.01, 0.09))]
    decision = decide_promotion(comparisons, None, POLICY)
    assert decision.details["rules"] == {"recent": "interval-better"}
    assert any("whole interval lies above the champion" in r for r in decision.reasons)


def test_after_an_alarm_only_the_post_change_holdout_is_judged() -> None:
    """Old-concept holdouts would refuse a challenger that learned the new concept."""
    comparisons = [
        holdout("current", 0.90, 0.55, (0.2, 0.5), n=60),
        holdout("long", 0.60, 0.85, (-0.3, -0.2), n=480),  # mostly pre-change rows
    ]
    assert not decide_promotion(comparisons, ALARM, POLICY).promote
    decision = decide_promotion(comparisons, ALARM, POLICY, judge_on=("current",))
    assert decision.promote, decision.reasons
    assert decision.details["floor_holdout"] == "current"


def test_with_the_shipped_settings_a_fine_tune_a_point_worse_is_not_promoted() -> None:
    """Promoted within a 0.02 tolerance, hourly fine-tunes a point worse walked a steady model
    down: in four steady weeks of the quality benchmark, mean accuracy 93.2 % against 93.7 %
    with no loss allowed."""
    policy = GatePolicy.from_settings(Settings())
    worse = [
        holdout("recent", 0.78, 0.79, (-0.06, 0.04)),
        holdout("long", 0.80, 0.81, (-0.03, 0.01)),
    ]
    decision = decide_promotion(worse, None, policy)
    assert not decision.promote and decision.details["rules"]["long"] == "point-worse"
    tie = [holdout("recent", 0.79, 0.79, (-0.05, 0.05)), holdout("long", 0.81, 0.81, (-0.02, 0.02))]
    assert decide_promotion(tie, None, policy).promote
