"""Command line: `python -m fewdims data|grid|reproduce ...`.

  python -m fewdims data --task rte --glue-dir ../shared/glue     row counts and label distribution per split
  python -m fewdims grid --profile cpu                           compute every missing run of the profile's grid
  python -m fewdims grid --profile paper --dry-run               list the runs and their estimated cost
  python -m fewdims grid --profile paper --ray HEAD:6379         spread the missing runs over a Ray cluster
  python -m fewdims grid --profile smoke --ray --workers 2       ... over a local Ray cluster of 2 runs at a time
  python -m fewdims reproduce --profile cpu --runs 2             re-run stored runs and compare their metrics
  python -m fewdims stale --profile cpu                          records not computed by this checkout's training code
  python -m fewdims verify-code --profile cpu                    after a change to the training code: re-run one
                                                                 record per code path; if all agree bit for bit,
                                                                 the old records count as this code's
"""
from __future__ import annotations

import argparse
import sys
import time

from .errors import FewdimsError

GRID_ORDER = ("token", "dimension", "freezing", "cross_finetune", "cka", "outliers", "layer")  # most needed first


def cmd_data(args) -> None:
    from .data import data_report

    print(data_report(args.task, args.glue_dir))


def cmd_grid(args) -> None:
    from .chapters import open_chapter
    from .profiles import load_profile
    from .runner import Runner, estimate_flops

    profile = load_profile(args.profile, task=args.task)
    for name in args.experiments or ():
        if name not in GRID_ORDER:
            raise FewdimsError(f"unknown experiment {name!r}; choose from {', '.join(GRID_ORDER)}")
    if args.ray is not None and not args.dry_run:
        return cmd_grid_ray(args, profile)
    # a dry run estimates runs at --cpus-per-run threads each (calibrated from stored runs at that thread count)
    runner = Runner(profile, dry_run=args.dry_run, verbose=True, threads=args.cpus_per_run)
    t0 = time.perf_counter()
    for name in args.experiments or GRID_ORDER:
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
        if args.workers:  # an estimate: runs spread evenly, the adaptive stages' waits not counted
            print(f"with {args.workers} runs at a time: ~{flops / 100e12 / 3600 / args.workers:.1f} h on GPUs at "
                  f"100 TFLOP/s each, ~{sum(runner.estimate(c) for c in runner.planned) / 3600 / args.workers:.1f} h "
                  "on machines like this one (estimate)")
    else:
        print(f"grid {profile.name}: {runner.summary()}; wall time {(time.perf_counter() - t0) / 60:.1f} min")


def cmd_grid_ray(args, profile) -> None:
    """The grid on Ray (fewdims.cluster): exit status 1 when a run failed, 130 when interrupted."""
    from .cluster import run_grid

    try:
        report = run_grid(profile, args.experiments, address=args.ray if args.ray not in ("", "local") else None,
                          workers=args.workers,
                          cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                          shared_cache=args.shared_cache, max_retries=args.max_retries, max_runs=args.max_runs)
    except KeyboardInterrupt:
        print("grid interrupted; only complete records were written: run the same command to go on",
              file=sys.stderr)
        sys.exit(130)
    print(f"grid {profile.name}: {report.summary()}", flush=True)
    if report.failed:
        sys.exit(1)


def cmd_reproduce(args) -> None:
    from .reproduce import reproduce

    ok = reproduce(args.profile, runs=args.runs, seed=args.seed, tolerance=args.tolerance)
    sys.exit(0 if ok else 1)


def cmd_stale(args) -> None:
    from .store import ResultStore, code_fingerprint, stale_records

    records = ResultStore(args.profile).records()
    stale = stale_records(records)
    current = code_fingerprint()
    for record in stale:
        env = record.get("environment") or {}
        why = ("before code fingerprints" if "code_fingerprint" not in env else
               "dirty tree" if env.get("dirty") else f"training code {env['code_fingerprint']}")
        print(f"{record.get('label', record.get('key'))}: {why} ({record.get('created', 'date unknown')})")
    print(f"{len(stale)} of {len(records)} {args.profile} records were not computed by this checkout's training code "
          f"({current['code_fingerprint']}{', dirty tree' if current['dirty'] else ''})")
    if stale:
        print(f"if the change computes exactly what the old code did: commit it, then `python -m fewdims verify-code "
              f"--profile {args.profile}` links the old code's records to it; else recompute them "
              f"(`python -m fewdims grid --profile {args.profile}` after deleting them)")


def cmd_verify_code(args) -> None:
    from .reproduce import verify_code

    sys.exit(0 if verify_code(args.profile, dry_run=args.dry_run, workers=args.workers) or args.dry_run else 1)


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
    g = p.add_argument_group("on a Ray cluster (pip install -e '.[cluster]'; see the README)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run each missing run as a Ray task: on the cluster at ADDRESS (HEAD:6379, or 'auto' on a "
                        "node of it), or without ADDRESS (or 'local') on a local Ray cluster started here")
    g.add_argument("--workers", type=int, default=None,
                   help="local cluster: runs at a time (default: CPUs / --cpus-per-run; one per GPU); with "
                        "--dry-run: the estimated time at that many runs at a time")
    g.add_argument("--cpus-per-run", type=int, default=None,
                   help="CPU threads of one run (default: 1 for small models, 4 for BERT-base; on GPUs the "
                        "CPUs shared out among the GPUs)")
    g.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs of one run (default: 1 when the cluster has GPUs, else 0)")
    g.add_argument("--shared-cache", default=None, metavar="PATH",
                   help="cache directory every worker reads and writes (weights of baselines and stage-A runs); "
                        "default $FEWDIMS_CACHE or data/cache, right for a local cluster")
    g.add_argument("--max-retries", type=int, default=3, help="retries of a run whose worker died (default 3)")
    g.add_argument("--max-runs", type=int, default=None, help="stop after this many records (go on later)")
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("reproduce", help="re-run randomly chosen stored runs and compare their metrics")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="which runs are drawn (default: random)")
    p.add_argument("--tolerance", type=float, default=None, help="points; default fewdims.reproduce.TOLERANCE")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("stale", help="list records computed by other training code than this checkout's")
    p.add_argument("--profile", default="cpu")
    p.set_defaults(func=cmd_stale)
    p = sub.add_parser("verify-code", help="re-run one stale record per code path; link the old code to this "
                                           "checkout's when every re-run is identical bit for bit")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--dry-run", action="store_true", help="print the records it would re-run, run nothing")
    p.add_argument("--workers", type=int, default=1, help="re-runs at a time, each in its own process (default 1)")
    p.set_defaults(func=cmd_verify_code)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except FewdimsError as err:
        print(f"fewdims: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
