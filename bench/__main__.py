"""The command line of `python -m bench` (what `make bench` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bench
from bench.plan import full_plan, quick_plan, with_overrides
from bench.run import ALL_PHASES, run
from bench.tools import MissingTool


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=bench.__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run of each figure, a smaller blob, shorter wrk runs (about 3 minutes)",
    )
    parser.add_argument(
        "--phase",
        action="append",
        choices=ALL_PHASES,
        default=[],
        help="run only this phase (repeatable); default: all",
    )
    parser.add_argument("--runs", type=int, help="measurements per figure (default 3)")
    parser.add_argument("--blob-mib", type=int, help="size of the big blob in MiB")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="where to write the raw numbers (default bench/results.json)",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep logs and caches for inspection"
    )
    parser.add_argument(
        "--mirror-src",
        type=Path,
        help="directory holding the mirror package to measure (default: the installed one)",
    )
    args = parser.parse_args()
    if args.mirror_src is not None and not (args.mirror_src / "mirror").is_dir():
        parser.error(f"--mirror-src {args.mirror_src}: no mirror/ package there")
    plan = with_overrides(
        quick_plan() if args.quick else full_plan(), runs=args.runs, blob_mib=args.blob_mib
    )
    try:
        return run(
            plan,
            args.phase,
            args.output,
            keep_workdir=args.keep_workdir,
            mirror_source=args.mirror_src.resolve() if args.mirror_src else None,
        )
    except MissingTool as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
