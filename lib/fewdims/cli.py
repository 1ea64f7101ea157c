"""Command line: `python -m fewdims data|grid|reproduce ...`.

  python -m fewdims data --task rte --glue-dir ../shared/glue     row counts and label distribution per split
  python -m fewdims grid --profile cpu                           compute every missing run of the profile's grid
  python -m fewdims grid --profile paper --dry-run               list the runs and their estimated cost
  python -m fewdims reproduce --profile cpu --runs 2             re-run stored runs and compare their metrics
"""
from __future__ import annotations

import argparse
import sys
import time

from .errors import FewdimsError

GRID_ORDER = ("token", "dimension", "freezing", "cross_finetune", "cka", "layer")  # most needed first


def cmd_data(args) -> None:
    from .data import data_report

    print(data_report(args.task, args.glue_dir))


def cmd_grid(args) -> None:
    from .chapters import open_chapter
    from .profiles import load_profile
    from .runner import Runner, estimate_flops

    profile = load_profile(args.profile, task=args.task)
    runner = Runner(profile, dry_run=args.dry_run, verbose=True)
    t0 = time.perf_counter()
    for name in args.experiments or GRID_ORDER:
        if name not in GRID_ORDER:
            raise FewdimsError(f"unknown experiment {name!r}; choose from {', '.join(GRID_ORDER)}")
        open_chapter(name, profile, runner).results()
        print(f"{name}: {runner.summary()}", flush=True)
    if args.dry_run:
        flops = sum(estimate_flops(c) for c in runner.planned)
        for config in runner.planned if args.list else []:
            print(f"  {config.label():60s} ~{runner.estimate(config) / 60:6.1f} min on this machine")
        print(f"{len(runner.planned)} runs; ~{flops / 1e15:.1f} PFLOP of training and evaluation; "
              f"~{flops / 100e12 / 3600:.1f} GPU-hours at an effective 100 TFLOP/s; "
              f"~{sum(runner.estimate(c) for c in runner.planned) / 3600:.1f} h on this machine "
              f"{runner.throughput_note()}")
    else:
        print(f"grid {profile.name}: {runner.summary()}; wall time {(time.perf_counter() - t0) / 60:.1f} min")


def cmd_reproduce(args) -> None:
    from .reproduce import reproduce

    ok = reproduce(args.profile, runs=args.runs, seed=args.seed, tolerance=args.tolerance)
    sys.exit(0 if ok else 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="fewdims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="check a task's data: rows and labels per split")
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", default=None, help="GLUE directory (TSV or parquet layout); default $FEWDIMS_GLUE_DIR")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("grid", help="compute (or --dry-run: list and estimate) a profile's grid")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--task", default=None, help="only this task")
    p.add_argument("--experiments", nargs="*", default=None, help=f"subset of {', '.join(GRID_ORDER)}")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--list", action="store_true", help="with --dry-run: print every planned run")
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("reproduce", help="re-run randomly chosen stored runs and compare their metrics")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="which runs are drawn (default: random)")
    p.add_argument("--tolerance", type=float, default=None, help="points; default fewdims.reproduce.TOLERANCE")
    p.set_defaults(func=cmd_reproduce)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except FewdimsError as err:
        print(f"fewdims: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
