"""One retry policy for a step, whether it runs as a plain call or as a Prefect task."""

from __future__ import annotations

import time

import pytest

from tasks.errors import InputError
from tasks.settings import Settings
from tasks.stages import RetryPolicy, Stages
from tasks.stream import MissingTopic, StreamError


class Flaky:
    """Fails `failures` times with `error`, then answers; counts its calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self, value: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return value * 2


def quick_stages() -> Stages:
    settings = Settings(stage_retry_delays_s=(0.05,))
    return Stages(as_tasks=False, retry=RetryPolicy(settings.stage_retry_delays_s))


def test_a_plain_call_retries_a_transient_failure_like_a_prefect_task() -> None:
    step = Flaky(2, StreamError("connection to the broker dropped"))
    start = time.perf_counter()
    assert quick_stages().run("read window", step, 21, retries=3) == 42
    assert step.calls == 3
    assert time.perf_counter() - start >= 0.1  # waited the policy's delay before each retry


def test_a_plain_call_gives_up_after_its_retries() -> None:
    step = Flaky(5, StreamError("broker unreachable"))
    with pytest.raises(StreamError):
        quick_stages().run("read window", step, 1, retries=2)
    assert step.calls == 3


@pytest.mark.parametrize(
    "error", [MissingTopic("topic 't' does not exist"), InputError("bad --hour")]
)
def test_a_final_error_is_not_retried(error: Exception) -> None:
    step = Flaky(5, error)
    with pytest.raises(type(error)):
        quick_stages().run("read window", step, 1, retries=3)
    assert step.calls == 1


def test_the_default_delays_are_the_documented_ones() -> None:
    assert RetryPolicy(Settings().stage_retry_delays_s).delays(3) == [2.0, 10.0, 30.0]
    assert RetryPolicy((1.0,)).delays(3) == [1.0, 1.0, 1.0]
    assert RetryPolicy().delays(0) == []
