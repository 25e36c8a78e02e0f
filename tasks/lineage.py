"""A version's lineage: where it comes from and why it was (or was not) promoted.

Plain data, no MLflow: `tasks.versions` writes it as a version's tags and reads it back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.registry import NONE, iso_utc


class Lineage(BaseModel):
    """Where a version comes from and why it was (or was not) promoted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parent_version: str | None = None
    training_kind: Literal["retrain", "finetune"]
    window_start: str
    window_end: str
    trained_windows: tuple[str, ...] = ()
    offsets: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="'topic-partition' -> [first, last] offset read."
    )
    data_hash: str
    schema_hash: str
    seed: int
    trigger: str = "schedule"
    holdout_metrics: dict[str, float] = Field(default_factory=dict)
    holdout_rows: dict[str, int] = Field(
        default_factory=dict, description="Rows of each holdout, so the gate can be recomputed."
    )
    champion_version: str | None = Field(default=None, description="The version compared with.")
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    gate_decision: str | None = None
    gate_reasons: tuple[str, ...] = ()

    @field_validator("window_start", "window_end", mode="before")
    @classmethod
    def _canonical_time(cls, value: object) -> object:
        return iso_utc(value) if isinstance(value, str | datetime) else value

    @field_validator("trained_windows", mode="before")
    @classmethod
    def _canonical_times(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(iso_utc(v) if isinstance(v, str | datetime) else v for v in value)
        return value

    @field_validator("parent_version", "champion_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    def to_tags(self) -> dict[str, str]:
        """Flat string tags readable in the MLflow UI, plus the whole record as JSON."""
        tags = {
            "lineage.parent_version": self.parent_version or NONE,
            "lineage.training_kind": self.training_kind,
            "lineage.window_start": self.window_start,
            "lineage.window_end": self.window_end,
            "lineage.trained_windows": compact_windows(self.trained_windows),
            "lineage.offsets": ", ".join(
                f"{tp}:{first}-{last}" for tp, (first, last) in sorted(self.offsets.items())
            ),
            "lineage.data_hash": self.data_hash,
            "lineage.schema_hash": self.schema_hash,
            "lineage.seed": str(self.seed),
            "lineage.trigger": self.trigger,
            "gate.compared_with": self.champion_version or NONE,
            "gate.decision": self.gate_decision or "pending",
            "gate.reasons": "; ".join(self.gate_reasons),
            "lineage.json": self.model_dump_json(),
        }
        tags |= {f"metrics.holdout.{k}": f"{v:.6g}" for k, v in self.holdout_metrics.items()}
        tags |= {f"metrics.champion.{k}": f"{v:.6g}" for k, v in self.champion_metrics.items()}
        return tags


def compact_windows(starts: Iterable[str]) -> str:
    """'A..B (n windows)' for each run of evenly spaced window starts, e.g. 14 days in one line."""
    times = sorted({datetime.fromisoformat(s.replace("Z", "+00:00")) for s in starts})
    if not times:
        return ""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    step = min(gaps) if gaps else None
    runs: list[list[datetime]] = [[times[0]]]
    for gap, stamp in zip(gaps, times[1:], strict=True):
        if gap == step:
            runs[-1].append(stamp)
        else:
            runs.append([stamp])
    parts = []
    for run in runs:
        if len(run) == 1:
            parts.append(iso_utc(run[0]))
        else:
            parts.append(f"{iso_utc(run[0])}..{iso_utc(run[-1])} ({len(run)} windows)")
    return ", ".join(parts)
