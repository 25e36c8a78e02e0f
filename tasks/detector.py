"""The concept-drift alarm: is the serving model scoring below what it is expected to score?

Three tests over each window's prequential accuracy. A one-sided Wilson bound catches a sudden
fall on the first bad window; the same bound over the last few windows pooled catches a fall
too small for one window; a Page-Hinkley test (`tasks.drift.ConceptDriftDetector`) sums
small excesses to catch slow drifts over days. All start from the serving model's own holdout
accuracy, never from a blank state, so a model promoted just before a change is not blind.
Pure: plain numbers in, a small verdict out, state serialisable as JSON.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist

from tasks.drift import ConceptDriftDetector

HISTORY_WINDOWS = 48  # per-window accuracies kept for the change-point estimate


# Falls this close to the last change belong to it: records of hourly windows cycle through
# the week, so one change shows on the weekend days after it showed on the weekdays.
SAME_CHANGE_MS = 7 * 24 * 3_600_000


def wilson_upper(accuracy: float, rows: int, confidence: float) -> float:
    """One-sided upper Wilson bound of a proportion observed on `rows` trials."""
    if rows <= 0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    centre = accuracy + z * z / (2 * rows)
    spread = z * math.sqrt(accuracy * (1 - accuracy) / rows + z * z / (4 * rows * rows))
    return min(1.0, (centre + spread) / (1 + z * z / rows))


@dataclass(frozen=True)
class AlarmVerdict:
    """One window's verdict: did it alarm, which test decided, and the numbers behind it."""

    alarm: bool
    test: str | None  # "wilson", "page-hinkley" or None
    fall: bool  # accuracy clearly below expected (the Wilson bound), alarm or not
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class WindowScore:
    start_ms: int
    accuracy: float
    rows: int


@dataclass
class AccuracyAlarm:
    """Alarm state of one serving model; `update()` once per window, like River's detectors."""

    expected: float  # the serving model's holdout accuracy
    confidence: float = 0.99
    margin: float = 0.05  # tolerated shortfall below `expected` before the bound alarms
    warm_rows: int = 200  # how many records the baseline weighs in the Page-Hinkley mean
    pool_windows: int = 4  # windows pooled by the second Wilson test
    page_hinkley: ConceptDriftDetector = field(default_factory=ConceptDriftDetector)
    history: list[WindowScore] = field(default_factory=list)
    change_start_ms: int | None = None  # where the last alarmed change began (the planner's)
    served_windows: int = 0  # windows scored since this champion began serving
    falling: bool = False  # inside a fall that has already alarmed
    pooled_margin: float = 0.05  # the same, for the test over the last few windows pooled
    fall_start_ms: int | None = None  # where the last alarmed fall itself began (never merged)
    same_change_ms: int = SAME_CHANGE_MS  # a fall starting sooner after the change is part of it
    # The change point for which a past champion was brought back: while the change point
    # stays there, the serving line is a model of the returning concept as a whole.
    reused_for_change_ms: int | None = None

    @classmethod
    def for_model(
        cls,
        holdout_accuracy: float,
        *,
        confidence: float = 0.99,
        margin: float = 0.05,
        delta: float = 0.02,
        threshold: float = 60.0,
        warm_rows: int = 200,
        pool_windows: int = 4,
        pooled_margin: float = 0.05,
        same_change_ms: int = SAME_CHANGE_MS,
    ) -> AccuracyAlarm:
        """A new model's alarm, its cumulative test started from that model's holdout error."""
        if not 0.0 <= holdout_accuracy <= 1.0:
            raise ValueError(f"holdout accuracy {holdout_accuracy!r} is not in [0, 1]")
        ph = ConceptDriftDetector(delta=delta, threshold=threshold)
        ph.warm_start(1.0 - holdout_accuracy, warm_rows)
        return cls(
            holdout_accuracy,
            confidence,
            margin,
            warm_rows,
            pool_windows,
            ph,
            pooled_margin=pooled_margin,
            same_change_ms=same_change_ms,
        )

    @property
    def serves_returned_concept(self) -> bool:
        """Was the serving line brought back from the registry for the current change? Its
        champion then knows the returning concept on every day and hour, not only on those
        seen since the change."""
        return self.reused_for_change_ms is not None and (
            self.reused_for_change_ms == self.change_start_ms
        )

    def with_champion(
        self, holdout_accuracy: float, *, fine_tuned: bool, reused: bool = False
    ) -> AccuracyAlarm:
        """The state for a newly promoted champion; its holdout accuracy becomes the expected one.

        A fine-tune continues its parent's line: the cumulative tests go on. A new model (a
        retrain, a reused version) starts them from its own holdout error. The window
        history and the change point are kept either way; a reused version marks the
        change point as one a past champion answered.
        """
        marked = self.change_start_ms if reused else self.reused_for_change_ms
        if fine_tuned:
            return replace(
                copy.deepcopy(self), expected=holdout_accuracy, reused_for_change_ms=marked
            )
        fresh = AccuracyAlarm.for_model(
            holdout_accuracy,
            confidence=self.confidence,
            margin=self.margin,
            delta=self.page_hinkley.delta,
            threshold=self.page_hinkley.threshold,
            warm_rows=self.warm_rows,
            pool_windows=self.pool_windows,
            pooled_margin=self.pooled_margin,
            same_change_ms=self.same_change_ms,
        )
        fresh.history, fresh.change_start_ms = list(self.history), self.change_start_ms
        fresh.fall_start_ms, fresh.reused_for_change_ms = self.fall_start_ms, marked
        return fresh

    def update(self, accuracy: float, rows: int, start_ms: int) -> AlarmVerdict:
        """Feed one window's prequential accuracy on `rows` rows; the verdict names the test.

        A fall alarms once, on its first window: the next windows of the same fall report
        that accuracy is still below expectation, so one change asks for one retrain.
        """
        if not 0.0 <= accuracy <= 1.0 or rows < 0:
            raise ValueError(f"accuracy {accuracy!r} on {rows} rows is not a window score")
        self.history = [*self.history, WindowScore(start_ms, accuracy, rows)][-HISTORY_WINDOWS:]
        self.served_windows += 1
        if self.page_hinkley.alarmed:  # restart from the baseline, never from blank
            self.page_hinkley.warm_start(1.0 - self.expected, self.warm_rows)
        ph_alarm = self.page_hinkley.update(1.0 - accuracy, weight=rows) if rows else False
        test, texts = self._bounds(accuracy, rows)
        ph_text = (
            f"Page-Hinkley sum {self.page_hinkley.sum:.1f} "
            f"{'>=' if ph_alarm else '<'} threshold {self.page_hinkley.threshold:.1f} "
            f"(baseline error {1.0 - self.expected:.2f}, mean {self.page_hinkley.mean:.3f})"
        )
        if test is None and ph_alarm:
            test, texts = "page-hinkley", (ph_text,)
        if test is None:
            self.falling = False
            bar = self.expected - self.margin
            quiet = f"no concept alarm (expected at least {bar:.2f}): " + "; ".join(texts)
            return AlarmVerdict(False, None, False, (f"{quiet}; {ph_text}",))
        if self.falling and test != "page-hinkley":
            still = f"still below expectation since the alarm ({test}): {texts[0]}"
            return AlarmVerdict(False, None, True, (still,))
        self.falling = test != "page-hinkley"
        estimate = estimate_change_start(self.history, self.expected, margin=self.margin)
        found = estimate if estimate is not None else start_ms
        self.fall_start_ms = found
        previous = self.change_start_ms
        # A new fall soon after a change is the same change showing in other hours or days (a
        # model fitted on its first windows misses the rest): its rows since then are all new.
        if previous is not None and previous <= found < previous + self.same_change_ms:
            found = previous
        self.change_start_ms = found
        where = f"the change is estimated to begin with the window at {self.change_start_ms} ms"
        reasons = (f"concept alarm ({test}): {texts[0]}", where)
        return AlarmVerdict(True, test, test != "page-hinkley", reasons)

    def _bounds(self, accuracy: float, rows: int) -> tuple[str | None, tuple[str, ...]]:
        """The Wilson test that finds a fall ("wilson" on the window, "wilson-pooled" on the
        last few windows of this champion), or None, with the texts of both bounds."""
        fall, bound = self._bound(
            accuracy, rows, f"accuracy {accuracy:.2f} on {rows} rows", self.margin
        )
        pooled = self.history[-min(self.pool_windows, self.served_windows) :]
        pool_rows = sum(w.rows for w in pooled)
        pool_acc = sum(w.accuracy * w.rows for w in pooled) / pool_rows if pool_rows else 1.0
        pool_text = f"pooled accuracy {pool_acc:.2f} on {pool_rows} rows of {len(pooled)} windows"
        pool_fall, pool_bound = self._bound(pool_acc, pool_rows, pool_text, self.pooled_margin)
        if fall:
            return "wilson", (bound, pool_bound)
        if pool_fall and len(pooled) == self.pool_windows:
            return "wilson-pooled", (pool_bound, bound)
        return None, (bound, pool_bound)

    def _bound(self, accuracy: float, rows: int, seen: str, margin: float) -> tuple[bool, str]:
        """(fell, reason): is the one-sided upper bound below the expected accuracy?"""
        upper = wilson_upper(accuracy, rows, self.confidence)
        fell = rows > 0 and upper < self.expected - margin
        text = (
            f"{seen}: one-sided {self.confidence:.0%} Wilson upper bound {upper:.2f} "
            f"{'<' if fell else '>='} expected {self.expected:.2f} - margin {margin:.2f}"
        )
        return fell, text

    def to_json(self) -> str:
        data = asdict(self)
        data["page_hinkley"] = json.loads(self.page_hinkley.to_json())
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> AccuracyAlarm:
        data = json.loads(text)
        data["page_hinkley"] = ConceptDriftDetector(**data["page_hinkley"])
        data["history"] = [WindowScore(**w) for w in data["history"]]
        return cls(**data)


def estimate_change_start(
    history: list[WindowScore], expected: float, *, margin: float = 0.05, confidence: float = 0.9
) -> int | None:
    """Start (ms) of the first window of the current fall: the run of windows, ending with the
    newest below-expectation one, whose accuracy is below `expected - margin` by a
    `confidence` Wilson bound. None when no recent window fell."""
    bar = expected - margin
    low = [w.rows > 0 and wilson_upper(w.accuracy, w.rows, confidence) < bar for w in history]
    if True not in low:
        return None
    last = len(low) - 1 - low[::-1].index(True)
    first = last
    while first > 0 and low[first - 1]:
        first -= 1
    return history[first].start_ms
