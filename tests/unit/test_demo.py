"""The demo's own decisions: where an interrupted replay goes on, and what Ctrl-C says."""

from __future__ import annotations

from typing import Any

import pytest

from flows import demo


def cycle(kind: str, start: str, end: str) -> dict[str, Any]:
    return {"kind": kind, "window_start": start, "window_end": end}


def test_an_interrupted_replay_goes_on_after_its_last_fine_tuned_window() -> None:
    first_model = cycle("retrain", "2026-01-05T00:00Z", "2026-01-13T00:00Z")
    assert demo.replay_resume_point([], 9) is None  # nothing trained: the whole demo runs
    assert demo.replay_resume_point([first_model], 9) == "2026-01-13T00:00Z"
    partway = [first_model, cycle("finetune", "2026-01-13T11:00Z", "2026-01-13T12:00Z")]
    assert demo.replay_resume_point(partway, 28) == "2026-01-13T12:00Z"
    finished = [first_model, cycle("finetune", "2026-02-01T16:00Z", "2026-02-01T17:00Z")]
    assert demo.replay_resume_point(finished, 28) is None
    # a one-day replay is finished only at that day's last observed hour, not its first
    one_day = [first_model, cycle("finetune", "2026-01-13T09:00Z", "2026-01-13T10:00Z")]
    assert demo.replay_resume_point(one_day, 9) == "2026-01-13T10:00Z"
    assert (
        demo.replay_resume_point([*one_day, {**finished[1], "window_end": "2026-01-13T17:00Z"}], 9)
        is None
    )


def test_ctrl_c_stops_the_demo_with_one_line_that_names_what_still_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(days: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "main", interrupted)
    monkeypatch.setattr(demo, "running_parts", lambda: ["kafka", "mlflow", "prefect"])
    with pytest.raises(SystemExit) as stopped:
        demo.run(9)
    assert stopped.value.code == 130
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines == [
        "Stopped (Ctrl-C). Still running in the background: kafka, mlflow, prefect. "
        "`make demo` goes on where it stopped; `make down` (streamtrain down) stops them."
    ]
    assert demo.interrupted_line([]).startswith("Stopped (Ctrl-C). Nothing is left running")
