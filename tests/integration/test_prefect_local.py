"""Local runs (no Prefect server) share one Prefect database: its first migration and block
registration are locked."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREPARE = "from flows.runtime import prepare_local_prefect; prepare_local_prefect()"

pytestmark = pytest.mark.integration


def test_two_commands_on_a_new_prefect_home_migrate_it_once_without_a_race(
    tmp_path: Path,
) -> None:
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STREAMTRAIN_"))}
    env["PREFECT_HOME"] = str(home)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-3000:]
        assert "Traceback" not in out + err and "ERROR" not in err
    markers = list(home.glob(".migrated-*"))
    assert len(markers) == 1
    with sqlite3.connect(home / "prefect.db") as db:
        (revisions,) = db.execute("select count(*) from alembic_version").fetchone()
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
        (schemas,) = db.execute("select count(*) from block_schema").fetchone()
    assert revisions == 1 and {"flow", "flow_run", "deployment", "artifact"} <= tables
    # Block types registered once, with Prefect's memo of it: the temporary servers of two
    # commands started together then skip it instead of racing on its UNIQUE constraint.
    assert schemas > 0 and "block_auto_registration" in (home / "memo_store.toml").read_text()

    # Once migrated, a command does not touch the database before its flow starts.
    before = (home / "prefect.db").stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, "-c", PREPARE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and (home / "prefect.db").stat().st_mtime_ns == before


def test_the_migration_lock_lets_one_command_migrate_and_the_others_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import prefect.server.database as database

    from flows.runtime import prepare_local_prefect

    home = tmp_path / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    active, peak, calls = [0], [0], []
    guard = threading.Lock()

    class SlowDatabase:
        async def create_db(self) -> None:
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                calls.append(threading.get_ident())
            time.sleep(0.3)  # a migration takes a while: the others must wait, not start theirs
            (home / "prefect.db").write_bytes(b"")
            with guard:
                active[0] -= 1

    async def no_blocks() -> None:
        return None

    monkeypatch.setattr(database, "provide_database_interface", SlowDatabase)
    monkeypatch.setattr("flows.runtime._register_block_types", no_blocks)
    threads = [threading.Thread(target=prepare_local_prefect) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert peak[0] == 1 and len(calls) == 1  # one migration, never two at once
