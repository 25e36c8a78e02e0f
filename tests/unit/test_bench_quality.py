"""Section 5's strategy settings: `default` is what a user who sets nothing gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quality import DEFAULT, STRATEGIES, settings_for, shipped_settings
from tasks.settings import Settings


def test_default_runs_declared_defaults_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMTRAIN_FINETUNE_EPOCHS", "1")
    monkeypatch.setenv("STREAMTRAIN_RETRAIN_ON_DRIFT", "false")
    base = Settings(home=tmp_path)
    assert base.finetune_epochs == 1 and not base.retrain_on_drift
    shipped = shipped_settings(base)
    declared = Settings.model_fields
    assert shipped.finetune_epochs == declared["finetune_epochs"].default
    assert shipped.retrain_on_drift is True
    assert shipped.home == tmp_path  # where things live stays as given


def test_only_c_switches_off_drift_retrains(tmp_path: Path) -> None:
    shipped = shipped_settings(Settings(home=tmp_path))
    assert settings_for(shipped, DEFAULT) == shipped
    assert settings_for(shipped, "c").retrain_on_drift is False
    assert STRATEGIES[DEFAULT].drift_retrain and not STRATEGIES["c"].drift_retrain
