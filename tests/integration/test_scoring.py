"""The streaming scorer against the real broker and a real MLflow store: predictions, hot reload,
dead letters, and a SIGKILL mid-stream followed by a restart (at-least-once)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition

from tasks import aliases
from tasks.schema import decode_record, load_schema
from tasks.scoring import ScorerStats, default_group_id, run_scorer
from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tests.integration.helpers import limit_record_size, read_topic, register_by_hand

pytestmark = pytest.mark.integration

BAD = (b"bad-1", b"bad-2", b"bad-3")
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "drone.yaml")  # what get_settings() gives a subprocess
START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Raw:
    key: bytes | None
    value: bytes
    timestamp_ms: int


def simulated(hours: int, seed: int) -> list[Raw]:
    """Good records only: 20 stores x 8 daylight hours per simulated day."""
    config = SimulationConfig(start=START, hours=hours, stores=20, seed=seed)
    return [Raw(r.key, r.value, r.timestamp_ms) for r in generate(config) if r.corruption is None]


MODEL_IDS: dict[str, str] = {}  # version -> logged model id, of the current test's store


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    """Two tiny trained models with different weights (a champion and its successor)."""
    from tasks import model as m

    rows = [decode_record(SCHEMA, r.value) for r in simulated(72, seed=1)]
    frame = pd.DataFrame(rows, columns=SCHEMA.columns)
    fast = Settings(hidden_units=(8,), seed=3)
    first = m.build_model(SCHEMA, fast, frame)
    m.train(first, SCHEMA, frame, epochs=2, learning_rate=3e-3, batch_size=64, seed=3)
    second = m.fine_tune_copy(first)
    m.train(second, SCHEMA, frame, epochs=3, learning_rate=1e-2, batch_size=64, seed=4)
    return first, second


def register(settings: Settings, model: Any, promote: bool = False) -> str:
    """Log and register a model version (promoted to champion when asked); returns it."""
    version, uri = register_by_hand(settings, SCHEMA, model, name="scorer test", window_start=START)
    MODEL_IDS[version] = uri.removeprefix("models:/")
    if promote:
        promote_version(settings, version)
    return version


def promote_version(settings: Settings, version: str) -> None:
    aliases.promote(settings, SCHEMA.name, version, trigger="test", reasons=["test"])


def topics(settings: Settings) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"features-{suffix}", f"predictions-{suffix}"
    ensure_topic(settings, source, partitions=3)
    return source, sink


def predictions(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_topic(settings, topic)]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def committed(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=default_group_id(SCHEMA.name),
        enable_auto_commit=False,
    )
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in parts}
    finally:
        consumer.close()


def ends(records: Iterable[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
    return out


# --- tests ---------------------------------------------------------------------------------


def test_every_record_gets_one_prediction_from_the_champion_and_bad_ones_are_dead_lettered(
    settings: Settings, models: tuple[Any, Any]
) -> None:
    from tasks.model import predict_proba

    version = register(settings, models[0], promote=True)
    source, sink = topics(settings)
    good = simulated(24, seed=2)
    now = good[-1].timestamp_ms
    bad = [
        Raw(b"bad-1", b"{not json", now),
        Raw(
            b"bad-2",
            json.dumps({"event_time": "2026-01-05T09:00:00Z", "store_id": 2}).encode(),
            now,
        ),
        Raw(b"bad-3", good[0].value.replace(b'"avg_rating":', b'"avg_rating":"high","x":'), now),
    ]
    assert all(r.value != good[0].value for r in bad)
    produce(settings, source, [*good[:80], *bad, *good[80:]])
    total = len(good) + len(bad)

    stats = run_scorer(
        settings,
        SCHEMA,
        input_topic=source,
        output_topic=sink,
        max_records=total,
        idle_exit_s=30,
        batch_size=50,
    )

    assert isinstance(stats, ScorerStats)
    assert (stats.records_in, stats.predictions_out, stats.dead_lettered) == (total, len(good), 3)
    assert stats.versions_used == {version: len(good)} and stats.reloads == 0
    inputs = read_topic(settings, source)
    by_offset = {(r.partition, r.offset): r for r in inputs}
    out = predictions(settings, sink)
    assert sorted((p["input_partition"], p["input_offset"]) for p in out) == sorted(
        (r.partition, r.offset) for r in inputs if r.key not in BAD
    )
    rows = [
        decode_record(SCHEMA, by_offset[p["input_partition"], p["input_offset"]].value) for p in out
    ]
    expected = predict_proba(models[0], SCHEMA, pd.DataFrame(rows, columns=SCHEMA.columns))
    np.testing.assert_allclose([p["probability"] for p in out], expected, rtol=1e-6)
    for p, row in zip(out, rows, strict=True):
        assert p["model_name"] == SCHEMA.name and p["model_version"] == version
        assert p["input_topic"] == source
        assert p["key"] == row["store_id"] and p["event_time"] == row["event_time"]
        assert p["predicted"] == (1 if p["probability"] >= 0.5 else 0)
    letters = [json.loads(r.value) for r in read_topic(settings, f"{source}.dead-letter")]
    assert sorted((d["source"]["partition"], d["source"]["offset"]) for d in letters) == sorted(
        (r.partition, r.offset) for r in inputs if r.key in BAD
    )
    assert all(d["source"]["topic"] == source and d["reason"] for d in letters)
    assert committed(settings, source) == ends(inputs)  # bad records' offsets committed too


def test_alias_moves_are_picked_up_without_restart_and_a_broken_version_is_skipped(
    settings: Settings, models: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasks.scoring")
    first = register(settings, models[0], promote=True)
    broken = register(settings, models[0])
    second = register(settings, models[1])
    (stored,) = settings.mlflow_dir.rglob(MODEL_IDS[broken])
    shutil.rmtree(stored)  # the broken version's model files are gone: it cannot load
    source, sink = topics(settings)
    records = simulated(72, seed=3)
    stop = threading.Event()
    result: list[ScorerStats] = []
    scorer = threading.Thread(
        target=lambda: result.append(
            run_scorer(
                settings,
                SCHEMA,
                input_topic=source,
                output_topic=sink,
                reload_interval_s=0.3,
                batch_size=20,
                stop=stop,
            )
        )
    )
    scorer.start()
    try:
        produce(settings, source, records[:40])
        wait_for("first predictions", lambda: len(predictions(settings, sink)) >= 40)
        promote_version(settings, broken)
        wait_for("the load failure", lambda: "did not load" in caplog.text)
        produce(settings, source, records[40:60])
        wait_for("predictions after the failure", lambda: len(predictions(settings, sink)) >= 60)
        promote_version(settings, second)
        sent = 60
        while not any(p["model_version"] == second for p in predictions(settings, sink)):
            assert sent + 10 <= len(records), "the new champion was never used"
            produce(settings, source, records[sent : sent + 10])
            sent += 10
            time.sleep(0.3)
        produce(settings, source, records[sent : sent + 20])
        sent += 20
        wait_for("all predictions", lambda: len(predictions(settings, sink)) >= sent)
    finally:
        stop.set()
        scorer.join(timeout=60)
    (stats,) = result
    out = sorted(predictions(settings, sink), key=lambda p: p["scored_at_ms"])
    assert len(out) == sent and {p["model_version"] for p in out[:60]} == {first}
    assert {p["model_version"] for p in out[-20:]} == {second}
    changed = [i for i in range(1, sent) if out[i]["model_version"] != out[i - 1]["model_version"]]
    assert len(changed) == 1  # one swap, never back
    assert stats.reloads == 1 and set(stats.versions_used) == {first, second}
    failures = [r for r in caplog.records if "did not load" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None
    assert "\n" not in failures[0].getMessage()


SCRIPT = """
import json, sys, time
from tasks import scoring
from flows.score import run_scoring
from tasks.schema import load_schema
from tasks.settings import get_settings

if sys.argv[3] == "hang-after-first-commit":
    real, calls = scoring._commit, []
    def commit(consumer, offsets, *, wait=False):
        calls.append(offsets)
        if len(calls) > 1:
            time.sleep(3600)  # batch 2 is acknowledged but never committed: killed here
        real(consumer, offsets, wait=wait)
    scoring._commit = commit
settings = get_settings()
stats = run_scoring(settings, load_schema(settings.schema_path), input_topic=sys.argv[1],
                    output_topic=sys.argv[2], batch_size=40, reload_interval_s=1.0)
print(json.dumps(stats))
"""


@pytest.mark.slow
def test_a_killed_scorer_loses_nothing_after_restart_and_sigterm_exits_cleanly(
    settings: Settings, models: tuple[Any, Any], cli_env: dict[str, str]
) -> None:
    register(settings, models[0], promote=True)
    source, sink = topics(settings)
    produce(settings, source, simulated(24, seed=4))
    inputs = read_topic(settings, source)

    def scorer(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", SCRIPT, source, sink, mode],
            cwd=ROOT,
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    doomed = scorer("hang-after-first-commit")
    try:
        first = wait_for("a committed batch", lambda: sum(committed(settings, source).values()))
        wait_for("a second, uncommitted batch", lambda: len(predictions(settings, sink)) > first)
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate(timeout=30)
    assert sum(committed(settings, source).values()) == first

    restarted = scorer("normal")
    try:
        expected = {(r.partition, r.offset) for r in inputs}
        wait_for(
            "every input scored",
            lambda: (
                expected
                <= {(p["input_partition"], p["input_offset"]) for p in predictions(settings, sink)}
            ),
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        stdout, stderr = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, stderr[-2000:]
    stats = json.loads(stdout.strip().splitlines()[-1])
    out = predictions(settings, sink)
    repeats = len(out) - len(inputs)
    # At worst the batch being committed and the one sent behind it (the scorer sends the next
    # batch before settling the previous one) are scored again: two batches of 40.
    assert 0 < repeats <= 80
    assert stats["records_in"] == len(inputs) - first
    assert committed(settings, source) == ends(inputs)


def test_without_a_champion_the_scorer_waits_then_exits_at_idle_exit(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasks.scoring")
    source, sink = topics(settings)
    stats = run_scorer(
        settings,
        SCHEMA,
        input_topic=source,
        output_topic=sink,
        idle_exit_s=2.5,
        reload_interval_s=0.2,
    )
    assert stats.records_in == 0 and stats.batches == 0 and stats.seconds >= 2.5
    assert caplog.text.count("has no loadable champion yet") == 1


def test_a_dead_letter_the_broker_refuses_is_not_committed_and_a_rerun_delivers_it(
    settings: Settings, models: tuple[Any, Any]
) -> None:
    from tasks.stream import DeadLetterError

    register(settings, models[0], promote=True)
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"features-{suffix}", f"predictions-{suffix}"
    ensure_topic(settings, source, partitions=1)
    good = simulated(24, seed=5)
    bad = Raw(b"bad-big", b"{not json " + b"x" * 4000, good[-1].timestamp_ms)
    produce(settings, source, [*good[:120], bad, *good[120:]])
    letters_topic = f"{source}.dead-letter"
    limit_record_size(settings, letters_topic, 1024)  # the bad record's envelope cannot fit
    run = dict(input_topic=source, output_topic=sink, idle_exit_s=30, batch_size=50)

    with pytest.raises(DeadLetterError, match="1 of 1 dead letters were not written"):
        run_scorer(settings, SCHEMA, max_records=len(good) + 1, **run)  # type: ignore[arg-type]

    assert read_topic(settings, letters_topic) == []
    assert 0 < committed(settings, source)[0] <= 120  # earlier batches only, never past it

    limit_record_size(settings, letters_topic, 1024 * 1024)
    left = len(good) + 1 - committed(settings, source)[0]
    rerun = run_scorer(settings, SCHEMA, max_records=left, **run)  # type: ignore[arg-type]

    assert rerun.dead_lettered == 1
    letters = [json.loads(r.value) for r in read_topic(settings, letters_topic)]
    assert [(d["source"]["partition"], d["source"]["offset"]) for d in letters] == [(0, 120)]
    assert committed(settings, source) == {0: len(good) + 1}
    scored = {(p["input_partition"], p["input_offset"]) for p in predictions(settings, sink)}
    assert scored == {(0, o) for o in range(len(good) + 1) if o != 120}
