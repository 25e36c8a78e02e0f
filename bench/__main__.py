"""`python -m bench [--quick] [--section quality|read|scoring] [--output DIR]`: run benchmarks.

`make bench` runs the full plan into bench/results/ and refreshes README's Performance
section; `make bench QUICK=1` (GNU make has no `--quick`) runs the quick plan;
`--section quality` runs only section 5 (model quality under drift, no broker), `--section
read` only section 3 (the window read) and `--section scoring` only section 4 (the scorer; it
trains the first model first), each on a broker of its own; the section is merged into the
report already in the output folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small plan (a few minutes)")
    parser.add_argument("--output", type=Path, help="report folder (default bench/results)")
    parser.add_argument(
        "--replay-days",
        type=int,
        help="days of the timed replay (the memory replay is twice as long); 28 = the issue's "
        "4 and 8 weeks, about an hour here",
    )
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refresh README's Performance section (default: for a full run into bench/results)",
    )
    parser.add_argument(
        "--section",
        choices=["quality", "read", "scoring"],
        help="run only this section and merge it into the existing report: quality (5, no "
        "broker), read (3, the window read) or scoring (4, the scorer)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="worker processes for --section quality (default 2, one per core here)",
    )
    parser.add_argument(
        "--readme-only",
        action="store_true",
        help="only re-render README's Performance section from bench/results/latest.json",
    )
    args = parser.parse_args(argv)
    if args.readme_only:
        return _readme_only()
    # SIGTERM exits through `finally`, so the benchmark's broker is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    for name, value in {
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("kafka", "mlflow", "prefect", "alembic", "great_expectations", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Closing a consumer cancels its metadata refresh, which kafka-python logs as an ERROR.
    logging.getLogger("kafka.cluster").addFilter(
        lambda record: "failed Cancelled" not in record.getMessage()
    )
    from bench.run import RESULTS, Plan, run, run_broker_section, run_quality_only

    plan = Plan.quick() if args.quick else Plan.full(args.replay_days)
    output = args.output or RESULTS
    readme = args.readme if args.readme is not None else (not args.quick and output == RESULTS)
    command = "python -m bench" + (" --quick" if args.quick else "")
    if args.section == "quality":
        command += " --section quality"
        result = run_quality_only(plan, output.resolve(), command, readme, args.jobs)
    elif args.section:
        command += f" --section {args.section}"
        result = run_broker_section(plan, args.section, output.resolve(), command, readme)
    else:
        result = run(plan, output.resolve(), command, readme)
    print(f"report: {output / 'latest.md'} ({result['duration']['value']} min)")
    return 0


def _readme_only() -> int:
    import json

    from bench.run import RESULTS, refresh_readme

    refresh_readme(json.loads((RESULTS / "latest.json").read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
