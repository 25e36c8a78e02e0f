"""`streamtrain validate`: the account of a corrupt window adds up, and Data Docs are built."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.settings import Settings
from tasks.simulator import SimulationConfig, generate
from tasks.stream import ensure_topic, produce
from tests.integration.helpers import schema_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_validate_json_accounts_for_every_record_and_builds_docs(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"validate-{uuid.uuid4().hex[:8]}"
    schema_path = schema_file(tmp_path, topic)
    ensure_topic(settings, topic)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    config = SimulationConfig(
        start=start, hours=24, scenario="corrupt", drift_at=start, corrupt_share=0.1, seed=2
    )
    produce(settings, topic, generate(config))
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "streamtrain"),
            "validate",
            "--hour",
            "2026-01-05T10:00Z",
            "--json",
            "--docs",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**cli_env, "STREAMTRAIN_SCHEMA": str(schema_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for key in (
        "success",
        "rows",
        "quarantined",
        "rejected",
        "failed_expectations",
        "duplicates",
        "malformed",
        "late",
    ):
        assert key in report
    parts = ("rows", "quarantined", "duplicates", "malformed", "late")
    assert sum(report[k] for k in parts) == 100  # every record of the hour, accounted for
    assert report["malformed"] + report["quarantined"] + report["duplicates"] > 0
    assert Path(report["docs"]).is_file()
