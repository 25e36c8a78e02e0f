"""The accuracy timeline PNG: drawn from report rows, with alarms, retrains and promotions."""

from __future__ import annotations

import io

from tasks.plots import accuracy_timeline_png


def row(start: str, kind: str = "finetune", **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "window_start": start,
        "window_end": start,
        "kind": kind,
        "prequential_accuracy": 0.9,
        "concept_drift_alarm": False,
        "decision": "kept",
    }
    return {**base, **changes}


def test_the_timeline_is_a_png_with_every_kind_of_mark() -> None:
    from matplotlib.image import imread

    rows = [
        row("2026-01-13T10:00Z"),
        row("2026-01-13T11:00Z", prequential_accuracy=0.5, concept_drift_alarm=True),
        row("2026-01-13T12:00Z", kind="retrain", prequential_accuracy=None, decision="promoted"),
        row("2026-01-13T12:00Z", prequential_accuracy=None),  # an empty window: no point
    ]
    png = accuracy_timeline_png(rows, "drone-busy")
    assert png.startswith(b"\x89PNG")
    image = imread(io.BytesIO(png))
    assert image.shape[:2] == (400, 1100)
    plain = accuracy_timeline_png(rows[:1], "drone-busy")
    assert plain != png  # the marks are drawn


def test_no_rows_still_gives_a_labelled_chart() -> None:
    assert accuracy_timeline_png([], "nothing yet").startswith(b"\x89PNG")
