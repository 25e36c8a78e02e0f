"""A CSV file becomes a stream: `schema infer`, `produce`, `retrain`, `backfill`, installed command.

The worked example of README "Your own stream": the drone-delivery data set of
`tests/fixtures/2weeksNoTime.csv` (no header, label first, the rules change in week 2), here
its first week and a day. Only flags name the stream (`--schema`, no STREAMTRAIN_SCHEMA).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMTRAIN = str(ROOT / ".venv" / "bin" / "streamtrain")
DATA = ROOT / "tests" / "fixtures" / "2weeksNoTime.csv"
SHOPS_PER_HOUR = 100
WEEK_ROWS = 5600  # 7 days x 8 daylight hours x 100 shops: the first week's rules


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMTRAIN, *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )


def streamtrain(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run(env, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def first_rows(path: Path, count: int, cut_line: int | None = None) -> Path:
    """The fixture's first `count` lines, as exported (BOM, CRLF), one of them cut short."""
    lines = DATA.read_bytes().split(b"\r\n")[:count]
    if cut_line is not None:
        lines[cut_line - 1] = lines[cut_line - 1].rsplit(b",", 1)[0]  # 13 fields, not 14
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


@pytest.fixture
def flags_only_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The test's environment without STREAMTRAIN_SCHEMA, and quick training settings."""
    env = {k: v for k, v in cli_env.items() if k != "STREAMTRAIN_SCHEMA"}
    return {
        **env,
        "STREAMTRAIN_RETRAIN_DAYS": "3",
        "STREAMTRAIN_HOLDOUT_HOURS": "8",
        "STREAMTRAIN_RETRAIN_EPOCHS": "5",
        "STREAMTRAIN_BOOTSTRAP_SAMPLES": "200",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # a busy CI machine
    }


@pytest.mark.slow
@pytest.mark.timeout(900)  # a retrain and a replay with a drift retrain, on a busy machine
def test_csv_to_trained_drift_checked_champion_with_flags_only(
    flags_only_env: dict[str, str], tmp_path: Path
) -> None:
    env = flags_only_env
    name = f"shops-{uuid.uuid4().hex[:8]}"
    csv = first_rows(tmp_path / f"{name}.csv", WEEK_ROWS + 4 * SHOPS_PER_HOUR)
    schema = str(tmp_path / "shops.yaml")

    inferred = streamtrain(
        env, "schema", "infer", "--csv", str(csv), "--no-header", "--label", "col0",
        "--key", "col1", "--output", schema,
    )  # fmt: skip
    said = inferred.stdout
    assert "col0: label, classes [0, 1], positive 1" in said
    assert "event_time: event time, iso8601" in said and "col1: categorical (open)" in said
    assert "col4: left out (always '0'" in said
    assert f"Wrote {schema}" in said

    produced = streamtrain(
        env, "--schema", schema, "produce", "--csv", str(csv),
        "--start", "2026-01-05T00:00Z", "--every", "1h",
    )  # fmt: skip
    assert (
        f"Produced 6,000 records to '{name}' (event times 2026-01-05T00:00Z .. "
        "2026-01-07T11:00Z)." in produced.stdout
    )
    assert "Every row fits the schema." in produced.stdout

    # Week 1 is the first 56 stream hours: train on it, then replay week 2's first 2 hours.
    trained = streamtrain(env, "--schema", schema, "retrain", "--until", "2026-01-07T08:00Z")
    assert "retrain 2026-01-04T08:00Z .. 2026-01-07T08:00Z" in trained.stdout
    assert "promoted" in trained.stdout

    replayed = streamtrain(
        env, "--schema", schema, "backfill", "--start", "2026-01-07T08:00Z",
        "--end", "2026-01-07T10:00Z", "--retrain-every", "0",
    )  # fmt: skip
    assert "Per day" in replayed.stdout and "2026-01-07" in replayed.stdout
    rows = json.loads(streamtrain(env, "--schema", schema, "report", "--json").stdout)
    tuned = [r for r in rows if r["kind"] == "finetune"]
    assert len(tuned) == 2 and all(r["rows"] == SHOPS_PER_HOUR for r in tuned), rows
    assert rows[0]["kind"] == "retrain" and rows[0]["rows"] == WEEK_ROWS
    # Week 2's rules differ: the week-1 champion, near perfect on its holdout, is not on them.
    assert tuned[0]["prequential_accuracy"] < 0.8 < rows[0]["challenger_metric"], rows


def test_a_row_cut_short_is_produced_reported_and_set_aside_as_malformed(
    flags_only_env: dict[str, str], tmp_path: Path
) -> None:
    env = flags_only_env
    name = f"cut-{uuid.uuid4().hex[:8]}"
    csv = first_rows(tmp_path / f"{name}.csv", 3 * SHOPS_PER_HOUR, cut_line=150)
    schema = str(tmp_path / "cut.yaml")
    streamtrain(
        env, "schema", "infer", "--csv", str(csv), "--no-header", "--label", "col0",
        "--key", "col1", "--output", schema,
    )  # fmt: skip

    produced = streamtrain(
        env, "--schema", schema, "produce", "--csv", str(csv),
        "--start", "2026-01-05T09:00Z", "--every", "1h",
    )  # fmt: skip
    assert f"Produced 300 records to '{name}'" in produced.stdout
    assert "1 row did not fit the schema" in produced.stdout
    assert "line 150: 13 fields, expected 14" in produced.stdout

    # Line 150 is the 50th shop of the second hour: 99 rows used, the short one set aside.
    shown = streamtrain(env, "--schema", schema, "window", "--hour", "2026-01-05T10:30Z")
    cells = {
        parts[1].strip(): parts[2].strip()
        for line in shown.stdout.splitlines()
        if len(parts := line.split("│")) == 4
    }
    assert (cells["rows used"], cells["malformed"], cells["records read"]) == ("99", "1", "100")
    assert "1 x malformed: missing field 'col13'" in shown.stdout
    window = json.loads(
        streamtrain(
            env, "--schema", schema, "window", "--hour", "2026-01-05T10:30Z", "--json"
        ).stdout
    )
    assert window["set_aside_reasons"] == {"malformed: missing field 'col13'": 1}


def test_bad_csv_input_gets_one_error_line(tmp_path: Path) -> None:
    """A missing file and a half-given --start/--every: one `error:` line, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_")}
    env["STREAMTRAIN_HOME"] = str(tmp_path)
    schema = tmp_path / "s.yaml"
    csv = first_rows(tmp_path / "s.csv", 200)
    streamtrain(env, "schema", "infer", "--csv", str(csv), "--no-header", "--label", "col0",
                "--output", str(schema))  # fmt: skip
    for args in (
        ("schema", "infer", "--csv", str(tmp_path / "nope.csv")),
        ("--schema", str(schema), "produce", "--csv", str(csv), "--start", "2026-01-05"),
        ("--schema", str(schema), "produce", "--csv", str(csv), "--every", "1 hour",
         "--start", "2026-01-05"),
    ):  # fmt: skip
        done = run(env, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
