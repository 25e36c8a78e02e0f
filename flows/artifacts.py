"""The replay's story on its Prefect flow run: a progress bar while it runs, then the per-day
table, the accuracy timeline, the drift alarm and recovery line, and links to the MLflow runs.

Artifacts are left only inside a Prefect flow run; the links point at the MLflow server of the
local stack (or the tracking server in MLFLOW_TRACKING_URI), which serves the same store.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from tasks.cycle import CycleContext, CycleResult

PROGRESS_EVERY = 12  # fine-tuned windows between two updates of the progress artifact


def artifact_key(kind: str, model: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    raw = f"{kind}-{model}".lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


def in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


class ReplayProgress:
    """Counts the replay's fine-tuned windows: a rich bar in the terminal (when asked) and a
    Prefect progress artifact updated every few windows, not every window, to keep it cheap."""

    def __init__(self, model: str, total: int, *, terminal: bool, every: int = PROGRESS_EVERY):
        self.model, self.total, self.terminal, self.every = model, max(total, 1), terminal, every
        self.done = 0
        self._artifact: Any = None
        self._bar: Any = None
        self._job: Any = None

    def __enter__(self) -> ReplayProgress:
        if self.terminal:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._job = self._bar.add_task("Replaying hour by hour", total=self.total)
        if in_flow_run():
            from prefect.artifacts import create_progress_artifact

            self._artifact = create_progress_artifact(
                progress=0.0,
                key=artifact_key("replay-progress", self.model),
                description=f"Windows replayed (of {self.total})",
            )
        return self

    def __call__(self, result: CycleResult) -> None:
        if result.kind != "finetune":
            return
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._job)
        if self.done % self.every == 0 or self.done == self.total:
            self._publish()

    def _publish(self) -> None:
        if self._artifact is None:
            return
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(
            self._artifact,
            progress=round(100.0 * self.done / self.total, 1),
            description=f"{self.done} of {self.total} windows replayed",
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        if kind is None and self.done % self.every and self.done != self.total:
            self._publish()  # a replay shorter than planned still ends on its true count


def mlflow_base(ctx: CycleContext) -> str:
    from tasks.stack import mlflow_url

    return mlflow_url(ctx.settings).rstrip("/")


def artifact_url(base: str, run_id: str, path: str) -> str:
    """A run's artifact as the MLflow server serves it (what the MLflow UI itself loads)."""
    return f"{base}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def replay_markdown(
    span: str,
    rows: list[dict[str, Any]],
    recovery: str,
    image_url: str,
    links: dict[str, str],
) -> str:
    """The replay's summary: the alarm and recovery line, the timeline, the retrains' runs."""
    from tasks.report import as_of

    lines = [
        f"## Replay {span}",
        "",
        f"**{recovery}**",
        "",
        f"![accuracy timeline]({image_url})",
        "",
        f"[All runs of the experiment in MLflow]({links['experiment']}) · "
        f"[timeline run]({links['timeline']})",
        "",
        "### Retrains",
        "",
        "| as of | trigger | version | decision | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row["kind"] == "retrain":
            lines.append(
                f"| {as_of(row)} | {row.get('trigger') or '-'} | "
                f"{row.get('challenger_version') or '-'} | {row.get('decision')} | "
                f"[run]({links[row['run_id']]}) |"
            )
    alarm = next((r for r in rows if r.get("concept_drift_alarm")), None)
    if alarm is not None:
        lines += [
            "",
            f"First alarm: [fine-tune of {alarm['window_start']}]({links[alarm['run_id']]})",
        ]
    return "\n".join(lines)


def publish_replay(
    ctx: CycleContext,
    since: datetime,
    until: datetime,
    timeline_run: str,
    change: str | None = None,
) -> None:
    """Leave the replay's table, timeline image and summary on the flow run (only in a run);
    with a known `change`, the recovery line counts from it."""
    if not in_flow_run():
        return
    from prefect.artifacts import (
        create_image_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    from flows.runtime import TIMELINE_PNG
    from tasks import registry, run_logging
    from tasks.report import as_of, daily_table, recovery_line, report_rows
    from tasks.windowing import format_instant

    span = f"{format_instant(since)} .. {format_instant(until)}"
    first, last = format_instant(since), format_instant(until)
    cycles = [
        c for c in run_logging.cycle_runs(ctx.settings, ctx.model_name) if first <= as_of(c) <= last
    ]
    rows = report_rows(cycles)  # the terminal's order, for the table and the recovery line
    cycles.sort(key=lambda c: (as_of(c), c["kind"] != "retrain"))
    base = mlflow_base(ctx)
    experiment = registry.ensure_experiment(ctx.settings, ctx.model_name)
    links = {c["run_id"]: run_link(base, experiment, c["run_id"]) for c in cycles}
    links["experiment"] = f"{base}/#/experiments/{experiment}"
    links["timeline"] = run_link(base, experiment, timeline_run)
    image = artifact_url(base, timeline_run, TIMELINE_PNG)
    key = artifact_key("replay", ctx.model_name)
    create_table_artifact(
        table=daily_table(rows), key=f"{key}-days", description=f"Per day, replay {span}"
    )
    create_image_artifact(
        image_url=image, key=f"{key}-timeline", description=f"Accuracy timeline {span}"
    )
    recovery = recovery_line(rows, change)
    create_markdown_artifact(
        markdown=replay_markdown(span, cycles, recovery, image, links),
        key=key,
        description=recovery,
    )
