"""Running pipeline steps: as Prefect tasks inside a flow, or as plain calls in a fast replay.

A backfill replays hundreds of windows in one process; giving every step of every window its
own Prefect task run would make bookkeeping dominate the work. The same cycle code therefore
runs its steps through `Stages`, which either wraps each step in a Prefect task or calls it
directly, with the same retry policy either way, and times each step.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.errors import is_final

T = TypeVar("T")

log = logging.getLogger("streamtrain.stages")


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed step is retried: these delays (the last repeats), never a final error."""

    delays_s: tuple[float, ...] = (2.0, 10.0, 30.0)

    def delays(self, retries: int) -> list[float]:
        """The delay before each of `retries` retries."""
        return [self.delays_s[min(i, len(self.delays_s) - 1)] for i in range(retries)]

    def should_retry(self, exc: BaseException) -> bool:
        """A transient failure (a dropped connection, a server error) is worth another try."""
        return not is_final(exc)

    def prefect_condition(self, _task: Any, _task_run: Any, state: Any) -> bool:
        """The same decision as `retry_condition_fn` of a Prefect task."""
        exc = state.data if isinstance(state.data, BaseException) else None
        if exc is None:
            exc = state.result(raise_on_failure=False)
        return not isinstance(exc, BaseException) or self.should_retry(exc)


@dataclass
class Stages:
    """Runs named steps and keeps how long each took (the benchmark's per-stage breakdown)."""

    as_tasks: bool = False
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def run(
        self, name: str, step: Callable[..., T], *args: Any, retries: int = 0, **kwargs: Any
    ) -> T:
        start = time.perf_counter()
        try:
            if self.as_tasks:
                return self._as_task(name, step, retries)(*args, **kwargs)
            return self._with_retries(name, step, retries, *args, **kwargs)
        finally:
            self.timings[name] += time.perf_counter() - start

    def _as_task(self, name: str, step: Callable[..., T], retries: int) -> Callable[..., T]:
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        return task(
            name=name,
            retries=retries,
            retry_delay_seconds=self.retry.delays(retries) or 0.0,
            retry_condition_fn=self.retry.prefect_condition,
            cache_policy=NO_CACHE,
        )(step)

    def _with_retries(
        self, name: str, step: Callable[..., T], retries: int, *args: Any, **kwargs: Any
    ) -> T:
        """Prefect's retries for a plain call: log the failure, wait, try again."""
        for attempt, delay in enumerate(self.retry.delays(retries), start=1):
            try:
                return step(*args, **kwargs)
            except Exception as exc:
                if not self.retry.should_retry(exc):
                    raise
                log.warning(
                    "%s failed (%s); retry %d/%d in %.1f s", name, exc, attempt, retries, delay
                )
                time.sleep(delay)
        return step(*args, **kwargs)

    def reset(self) -> dict[str, float]:
        """Return the timings so far and start counting afresh (one window at a time)."""
        taken = dict(self.timings)
        self.timings.clear()
        return taken
