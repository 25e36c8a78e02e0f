"""Work the benchmark runs in a child process, so that each run has its own peak memory.

`python -m bench.child replay '{"start": ..., "hours": ...}'` trains the first model, replays the
range with `run_backfill` and prints one JSON line: windows, wall time, peak RSS.
`python -m bench.child quality '{...}'` runs section 5 and prints its section as JSON.
Settings come from the environment, as for `streamtrain`.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import timedelta
from typing import Any


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """Resident set size now (VmRSS), to see growth that the peak of start-up would hide."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _stage_seconds_by_kind(results: list[Any]) -> dict[str, dict[str, float]]:
    """Seconds per stage summed over the replay's fine-tunes and over its retrains: where the
    replay's time went, beside its wall time."""
    out: dict[str, dict[str, float]] = {}
    for result in results:
        stages = out.setdefault(result.kind, {})
        for stage, seconds in result.timings.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return {kind: {k: round(v, 3) for k, v in s.items()} for kind, s in out.items()}


def replay(args: dict[str, Any]) -> dict[str, Any]:
    """First model on the data before `start`, then `hours` of windows replayed hour by hour."""
    from flows.backfill import run_backfill
    from flows.runtime import configure_environment, cycle_context
    from tasks.cycle import retrain_until
    from tasks.settings import get_settings
    from tasks.windowing import parse_instant

    settings = get_settings()
    configure_environment(settings)
    ctx = cycle_context(as_tasks=False, settings=settings)
    first = parse_instant(args["start"])
    retrain_until(ctx, first, trigger="bench:initial")
    before = _peak_rss_mb()
    rss_start = _current_rss_mb()
    end = first + timedelta(hours=args["hours"])
    started = time.perf_counter()
    results = run_backfill(ctx, first, end, retrain_every_hours=args.get("retrain_every", 24))
    seconds = time.perf_counter() - started
    finetunes = [r for r in results if r.kind == "finetune"]
    return {
        "seconds": seconds,
        "windows": len(finetunes),
        "windows_with_rows": sum(1 for r in finetunes if r.rows),
        "rows": sum(r.rows for r in finetunes),
        "retrains": sum(1 for r in results if r.kind == "retrain"),
        "promoted": sum(1 for r in results if r.decision == "promoted"),
        "stage_seconds_by_kind": _stage_seconds_by_kind(results),
        "peak_rss_before_replay_mb": before,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_at_start_mb": rss_start,
        "rss_at_end_mb": _current_rss_mb(),
    }


def quality(args: dict[str, Any]) -> dict[str, Any]:
    from bench.quality import run_quality

    return run_quality(**args)


def main() -> None:
    kind, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    work = {"replay": replay, "quality": quality}[kind]
    answer = work(json.loads(raw))
    print(json.dumps(answer, default=str))


if __name__ == "__main__":
    main()
