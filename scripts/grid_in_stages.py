#!/usr/bin/env python
"""Compute a profile's grid headline-first, in stages, so that a partial grid already gives every chapter its main
comparison: the first seed of the token, freezing and CKA chapters, the cross-fine-tuning pairs and the outliers
analyses (cheap: cached reference weights), then the dimension chapter, then more seeds of the headline cells
(token, freezing, cross-fine-tuning: back to back, because stage B reads the new references' weights from the local
cache, which a fresh checkout lacks), then the layer chapter (its sets each train with their own seed, so it needs
three) and the dimension chapter's seeds. Resumable like `python -m fewdims grid` (finished runs are reused), so it can be stopped and started again over
several sittings; SIGTERM or SIGINT stops it with complete records only. --dry-run ends with the whole grid's budget.

    python scripts/grid_in_stages.py --profile cpu [--stages token:1,freezing:1,...] [--dry-run]
                                     [--ray [--workers 2 --cpus-per-run 1]]

--ray computes each stage on a local Ray cluster (fewdims.cluster.run_grid): several runs at once, each with
--cpus-per-run threads (small models gain more from runs side by side than from threads: bench/grid_slice.py
--ways after,parallel measures it).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

# (chapter, how many of the profile's seeds): the headline cells with one seed first, all seeds last
DEFAULT_STAGES = ("token:1,freezing:1,cka:1,cross_finetune:1,outliers:1,dimension:1,token:3,freezing:3,"
                  "cross_finetune:3,layer:3,dimension:3")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    from fewdims.chapters import open_chapter
    from fewdims.errors import FewdimsError
    from fewdims.profiles import load_profile
    from fewdims.runner import Runner

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--stages", default=DEFAULT_STAGES, help="chapter:seeds,... (default: %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="list each stage's missing runs and their estimate")
    ap.add_argument("--ray", action="store_true", help="compute each stage on a local Ray cluster")
    ap.add_argument("--workers", type=int, default=None, help="with --ray: runs at a time (default: cores / threads)")
    ap.add_argument("--cpus-per-run", type=int, default=None, help="with --ray: threads per run (default: the "
                                                                   "cluster's choice, 1 for small models)")
    args = ap.parse_args(argv)
    # Stop cleanly on SIGTERM, and on SIGINT even in the background (a shell starts background jobs with SIGINT
    # ignored): both end the grid like Ctrl-C, with complete records only.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if (args.workers or args.cpus_per_run) and not args.ray:
        ap.error("--workers and --cpus-per-run go with --ray")
    t0 = time.perf_counter()
    try:
        stages = [(name, int(n)) for name, n in (s.split(":") for s in args.stages.split(","))]
    except ValueError:
        ap.error(f"--stages must look like token:1,dimension:5, got {args.stages!r}")
    planned: dict = {}  # dry run: every stage's missing runs, once each (stages share runs, e.g. references)
    try:
        for name, n_seeds in stages:
            profile = load_profile(args.profile, seeds=n_seeds)
            started = time.perf_counter()
            if args.ray and not args.dry_run:
                from fewdims.cluster import run_grid

                report = run_grid(profile, [name], workers=args.workers, cpus_per_run=args.cpus_per_run)
                summary = report.summary()
                if report.failed:
                    print(f"grid_in_stages: failed runs in stage {name}: {', '.join(report.failed)}", file=sys.stderr)
                    return 1
            else:
                runner = Runner(profile, dry_run=args.dry_run, verbose=True, threads=args.cpus_per_run)
                open_chapter(name, profile, runner).results()
                summary = runner.summary()
                planned.update({c.key(): runner.estimate(c) for c in runner.planned})
                if args.dry_run and args.ray:  # runs side by side: the stage's wall time
                    estimate = sum(runner.estimate(c) for c in runner.planned)
                    summary += f"; {_workers(args)} at a time: ~{estimate / _workers(args) / 3600:.2f} h of wall time"
            print(f"[stage {name}:{n_seeds}] {summary} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    except FewdimsError as err:
        print(f"grid_in_stages: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grid_in_stages: interrupted; only complete records were written: run it again to go on",
              file=sys.stderr)
        return 130
    if args.dry_run:
        print(budget_line(args.profile, planned, _workers(args) if args.ray else 1), flush=True)
    print(f"grid_in_stages {args.profile}: done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return 0


def _workers(args) -> int:
    return args.workers or max(1, (os.cpu_count() or 1) // (args.cpus_per_run or 1))


def budget_line(profile: str, planned: dict, workers: int) -> str:
    """The whole grid's compute: what the stored records took (fewdims.provenance.compute_text) and the estimate of
    every stage's missing runs, counted once, at `workers` runs at a time."""
    from fewdims.provenance import compute_text
    from fewdims.store import ResultStore

    left = sum(planned.values())
    return (f"[all stages] stored: {compute_text(ResultStore(profile).records())}; left: {len(planned)} runs, "
            f"~{left / 3600:.2f} h of run time, {workers} at a time ~{left / workers / 3600:.2f} h of wall time")


if __name__ == "__main__":
    sys.exit(main())
