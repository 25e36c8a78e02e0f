"""Running pipeline steps: as Prefect tasks inside a flow, or as plain calls in a fast replay.

A backfill replays hundreds of windows in one process; giving every step of every window its
own Prefect task run would make bookkeeping dominate the work. The same cycle code therefore
runs its steps through `Stages`, which either wraps each step in a Prefect task (with the
step's retries) or calls it directly, and times each step either way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Stages:
    """Runs named steps and keeps how long each took (the benchmark's per-stage breakdown)."""

    as_tasks: bool = False
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def run(
        self, name: str, step: Callable[..., T], *args: Any, retries: int = 0, **kwargs: Any
    ) -> T:
        start = time.perf_counter()
        try:
            if self.as_tasks:
                from prefect import task
                from prefect.cache_policies import NO_CACHE

                wrapped = task(
                    name=name,
                    retries=retries,
                    retry_delay_seconds=[2.0, 10.0, 30.0][:retries] or 0.0,
                    cache_policy=NO_CACHE,
                )(step)
                return wrapped(*args, **kwargs)
            return step(*args, **kwargs)
        finally:
            self.timings[name] += time.perf_counter() - start

    def reset(self) -> dict[str, float]:
        """Return the timings so far and start counting afresh (one window at a time)."""
        taken = dict(self.timings)
        self.timings.clear()
        return taken
