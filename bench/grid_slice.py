#!/usr/bin/env python
"""Grid throughput: the same 12-run slice of the cpu grid computed the way `make grid` did before and the new way,
in one sitting, printing runs per hour for both.

    python bench/grid_slice.py [--profile cpu] [--task sst2] [--runs 12] [--k 2] [--rounds 2] [--glue-dir DIR]
                               [--ways before,after] [--parallel 2] [--keep DIR]

The slice: `--runs` random `--k`-dimension sets of one task at the profile's budget (its train subset and epochs),
each run through the runner into a scratch results directory, the way the grid computes them (`--keep DIR` keeps
that directory: the after way's records are the grid's own runs when the profile's holdout_size is `--holdout`).
- before: the pretrained weights are loaded from disk for every run (FEWDIMS_WORKER_CACHE=0) and every dev split is
  scored after every epoch (holdout_size 0, the last epoch reported);
- after: one worker keeps the pretrained weights in memory across its runs, the epoch is chosen on `--holdout` rows
  held out of the train split and the dev split is scored once, at that epoch (bf16, length-sorted batches).
- parallel (`--ways after,parallel`): the after way, its runs split between `--parallel` processes of one thread
  each that run at once (small models gain little from a second thread per run; the Ray grid's default for them).
The same number of training steps either way. Each way runs in fresh processes; the rounds alternate the ways
(before, after, before, after, ...) so that other load on the machine falls on all alike. Writes the figures as
JSON to bench/results/grid-slice-<date>.json (`--out` to choose). Results at 1 and 2 threads are equally valid
runs but not bit-identical (a matmul's reduction order depends on the thread count; the record keeps `threads`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> None:
    """One process of one way: compute its share of the slice with the runner, print the seconds."""
    from fewdims.chapters.base import random_dim_sets
    from fewdims.models import model_shape
    from fewdims.profiles import load_profile
    from fewdims.runner import Runner, score

    profile = load_profile(args.profile, task=args.task, glue_dir=args.glue_dir)
    hidden, _ = model_shape(profile["model"])
    sets = random_dim_sets(args.k, args.runs, hidden)[args.first:args.first + args.count]
    runner = Runner(profile, store_root=args.results, verbose=False)
    t0 = time.perf_counter()
    scores = []
    for dims in sets:
        record = runner.run(profile.base_config(args.task, dims=dims, holdout_size=args.holdout))
        scores.append(score(record) / 100.0)
    print(json.dumps({"seconds": time.perf_counter() - t0, "runs": len(sets), "scores": scores}))


WAYS = ("before", "after", "parallel")


def run_way(way: str, first: int, count: int, args, results: Path) -> dict:
    """Compute runs first..first+count-1 of the slice the given way; 'parallel' splits them between
    `--parallel` processes of one thread each, started together (its seconds: until the last one ends)."""
    env = {**os.environ, "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "FEWDIMS_WORKER_CACHE": "0" if way == "before" else "1"}
    procs = args.parallel if way == "parallel" else 1
    if way == "parallel":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    shares = [count // procs + (i < count % procs) for i in range(procs)]
    starts = [first + sum(shares[:i]) for i in range(procs)]
    t0 = time.perf_counter()
    running = [subprocess.Popen(
        [sys.executable, __file__, "--worker", "--profile", args.profile, "--task", args.task, "--k", str(args.k),
         "--runs", str(args.runs), "--first", str(start), "--count", str(n), "--results", str(results / way),
         "--holdout", str(0 if way == "before" else args.holdout), "--glue-dir", args.glue_dir],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for start, n in zip(starts, shares) if n]
    parts = []
    for proc in running:
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"grid_slice: a {way} worker failed (exit {proc.returncode}):\n{err[-2000:]}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    # with interpreter start, imports and setup: what a grid pays
    return {"seconds": max(p["seconds"] for p in parts), "runs": sum(p["runs"] for p in parts),
            "scores": [s for p in parts for s in p["scores"]], "processes": len(parts),
            "process_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="the profile whose budget the slice runs at (default: cpu)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="processes per way; the slice is split between them")
    ap.add_argument("--holdout", type=int, default=400)
    ap.add_argument("--ways", default="before,after", help=f"which of {', '.join(WAYS)} (default: %(default)s)")
    ap.add_argument("--parallel", type=int, default=2, help="processes of the parallel way (one thread each)")
    ap.add_argument("--glue-dir", default=os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", default=None, help="keep the scratch results here (default: a temporary directory)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--results", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.runs % args.rounds:
        ap.error(f"--runs {args.runs} must split evenly into --rounds {args.rounds}")
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if not ways or any(w not in WAYS for w in ways):
        ap.error(f"--ways takes a comma-separated subset of {', '.join(WAYS)}, got {args.ways!r}")
    per = args.runs // args.rounds
    totals = {way: [] for way in ways}
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()) as scratch:
        for r in range(args.rounds):
            for way in ways:
                result = run_way(way, r * per, per, args, Path(scratch))
                totals[way].append(result)
                print(f"round {r + 1} {way:8s}: {result['runs']} runs in {result['process_s']:.1f} s "
                      f"(runs alone {result['seconds']:.1f} s); dev scores {[round(100 * s, 1) for s in result['scores']]}",
                      flush=True)
    summary = {}
    for way, parts in totals.items():
        seconds = sum(p["process_s"] for p in parts)
        summary[way] = {"runs": sum(p["runs"] for p in parts), "seconds": seconds,
                        "runs_per_hour": 3600.0 * sum(p["runs"] for p in parts) / seconds, "parts": parts}
    base = ways[0]
    line = (f"grid_slice profile={args.profile} task={args.task} k={args.k} runs={args.runs}: "
            + ", ".join(f"{way} {summary[way]['runs_per_hour']:.0f} runs/h" for way in ways)
            + "".join(f", {way}/{base}={summary[way]['runs_per_hour'] / summary[base]['runs_per_hour']:.2f}"
                      for way in ways[1:]))
    print(line)
    out = Path(args.out) if args.out else HERE / "results" / f"grid-slice-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    out.write_text(json.dumps({"args": vars(args), "summary": summary, "line": line, "loadavg_after": load,
                               "cpu_count": os.cpu_count()}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
