"""`make bench QUICK=1` runs and writes a well-formed report; no benchmark time is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _figures(node: Any) -> list[dict[str, Any]]:
    """Every {"value": ..., "unit": ...} figure anywhere in the report."""
    if isinstance(node, dict):
        if set(node) == {"value", "unit"}:
            return [node]
        return [f for child in node.values() for f in _figures(child)]
    if isinstance(node, list):
        return [f for child in node for f in _figures(child)]
    return []


@pytest.mark.slow
@pytest.mark.integration
def test_quick_bench_writes_a_report_with_every_section_and_units(tmp_path: Path) -> None:
    from bench.report import SECTIONS

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_")}
    readme_before = (ROOT / "README.md").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path), "--no-readme"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["mode"] == "quick"
    assert set(SECTIONS) <= set(report["sections"])
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["title"], name
        assert section["figures"], f"section {name} has no figures: {section.get('notes')}"
    machine = report["machine"]
    assert machine["cores"]["unit"] == "cores" and machine["cpu_model"]
    assert "1min" in machine["load_average_at_start"]
    assert report["settings"]["plan.mode"] == "quick"
    figures = _figures(report)
    assert figures and all(isinstance(f["unit"], str) for f in figures)
    assert report["headline"] and all("unit" in h["figure"] for h in report["headline"])
    text = (tmp_path / "latest.md").read_text()
    for name in SECTIONS:
        assert report["sections"][name]["title"] in text
    assert (tmp_path / "quality.png").stat().st_size > 0
    _check_quality_fields(report["sections"]["quality"])
    assert "Goals of issue 13" in text and "dummy alarm" in text
    assert (ROOT / "README.md").read_text() == readme_before  # a quick run leaves README alone

    # Section 5 alone, merged into the report just written: the other sections are kept.
    before = report["sections"]["hourly_cycle"]
    again = _bench(env, "--quick", "--section", "quality", "--output", str(tmp_path), "--no-readme")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "report:" in again.stdout
    merged = json.loads((tmp_path / "latest.json").read_text())
    assert merged["sections"]["hourly_cycle"] == before
    assert "--section quality" in merged["quality_regenerated"]
    _check_quality_fields(merged["sections"]["quality"])
    assert merged["sections"]["quality"]["raw"] == report["sections"]["quality"]["raw"]  # same seed
    assert "regenerated alone" in (tmp_path / "latest.md").read_text()
    assert (ROOT / "README.md").read_text() == readme_before


def _bench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _check_quality_fields(quality: dict[str, Any]) -> None:
    """Issue 13's keys: the shipped `default`, its alarm fields, the dummy alarm, the peers."""
    for scenario, by in quality["raw"].items():
        default = by["default"]
        for key in ("alarm_delay_windows", "windows_to_recover", "false_alarms", "drift_retrains"):
            assert key in default, (scenario, key)
        assert isinstance(default["false_alarms"], int) and default["drift_retrains"] >= 0
        assert default["mean_accuracy"]["unit"] == "%"
        assert by["dummy-alarm"]["false_alarms"] >= default["false_alarms"]
        assert {"a", "b", "c", "lr"} <= set(by)
        assert 50 < by["ceiling"]["mean_accuracy"]["value"] <= 100  # bench/ceiling.py's oracle
    assert quality["raw"]["none"]["default"]["alarm_delay_windows"] is None
    sudden = quality["raw"]["sudden"]
    assert sudden["dummy-alarm"]["alarm_delay_windows"] == 0
    goals = quality["goals"]
    assert {g["scenario"] for g in goals} == set(quality["raw"])
    assert all(isinstance(g["met"], bool) and g["measured"] for g in goals)
    floors = [g for g in goals if g["goal"].startswith("mean accuracy")]
    assert floors and all("(ceiling " in g["measured"] for g in floors)
    assert "windows_to_recover" in sudden["ceiling"]  # the oracle's recovery, same measure
    (recovery,) = [g for g in goals if g["goal"] == "back within 8 windows"]
    assert "(ceiling " in recovery["measured"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_read_section_alone_reports_an_hourly_window_against_kcat(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_")}
    readme_before = (ROOT / "README.md").read_text()
    from bench.report import fig, machine, now_utc

    earlier = {
        "mode": "full",
        "command": "python -m bench",
        "generated_at": now_utc(),
        "duration": fig(20.0, "min"),
        "machine": machine(),
        "settings": {},
        "sections": {"kept": {"title": "kept", "figures": {"a figure": fig(1.0, "s")}}},
        "headline": [],
    }
    (tmp_path / "latest.json").write_text(json.dumps(earlier))
    done = _bench(env, "--quick", "--section", "read", "--output", str(tmp_path), "--no-readme")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report:" in done.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["sections"]["kept"] == earlier["sections"]["kept"]  # merged, not replaced
    assert "--section read" in report["read_regenerated"]
    figures = report["sections"]["window_read"]["figures"]
    assert report["read_window_s_median"] == figures["hourly window: project read_window, median"]
    assert report["read_window_s_median"]["unit"] == "s"
    assert report["read_window_s_median"]["value"] > 0
    kcat = report["read_window_kcat_s_median"]
    assert kcat == figures["hourly window: kcat, same offsets, median"]
    assert kcat["value"] is None or kcat["value"] > 0  # None only where kcat is not installed
    assert "scorer_vs_bare" in report
    assert "hourly window: project / kcat" in (tmp_path / "latest.md").read_text()
    assert (ROOT / "README.md").read_text() == readme_before
