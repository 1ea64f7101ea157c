#!/usr/bin/env python
"""Grid throughput: the same 12-run slice of the cpu grid computed the way `make grid` did before and the new way,
in one sitting, printing runs per hour for both.

    python bench/grid_slice.py [--task sst2] [--runs 12] [--k 2] [--rounds 2] [--glue-dir DIR]

The slice: `--runs` random `--k`-dimension sets of one task at the cpu profile's budget (its train subset and
epochs), each run through the runner into a scratch results directory, the way the grid computes them.
- before: the pretrained weights are loaded from disk for every run (FEWDIMS_WORKER_CACHE=0) and every dev split is
  scored after every epoch (holdout_size 0, the last epoch reported);
- after: one worker keeps the pretrained weights in memory across its runs, the epoch is chosen on `--holdout` rows
  held out of the train split and the dev split is scored once, at that epoch (bf16, length-sorted batches).
The same number of training steps either way. Each way runs in fresh processes; the rounds alternate the two ways
(before, after, before, after, ...) so that other load on the machine falls on both alike. Writes the figures as
JSON to bench/results/grid-slice-<date>.json.
"""
from __future__ import annotations

import argparse
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

    profile = load_profile("cpu", task=args.task, glue_dir=args.glue_dir)
    hidden, _ = model_shape(profile["model"])
    sets = random_dim_sets(args.k, args.runs, hidden)[args.first:args.first + args.count]
    runner = Runner(profile, store_root=args.results, verbose=False)
    t0 = time.perf_counter()
    scores = []
    for dims in sets:
        record = runner.run(profile.base_config(args.task, dims=dims, holdout_size=args.holdout))
        scores.append(score(record) / 100.0)
    print(json.dumps({"seconds": time.perf_counter() - t0, "runs": len(sets), "scores": scores}))


def run_way(way: str, first: int, count: int, args, results: Path) -> dict:
    env = {**os.environ, "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "FEWDIMS_WORKER_CACHE": "1" if way == "after" else "0"}
    cmd = [sys.executable, __file__, "--worker", "--task", args.task, "--k", str(args.k), "--runs", str(args.runs),
           "--first", str(first), "--count", str(count), "--results", str(results / way),
           "--holdout", str(args.holdout if way == "after" else 0), "--glue-dir", args.glue_dir]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0  # with interpreter start, imports and setup: what a grid pays
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="processes per way; the slice is split between them")
    ap.add_argument("--holdout", type=int, default=400)
    ap.add_argument("--glue-dir", default=os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue"))
    ap.add_argument("--out", default=None)
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
    per = args.runs // args.rounds
    totals = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for way in ("before", "after"):
                result = run_way(way, r * per, per, args, Path(scratch))
                totals[way].append(result)
                print(f"round {r + 1} {way:6s}: {result['runs']} runs in {result['process_s']:.1f} s "
                      f"(runs alone {result['seconds']:.1f} s); dev scores {[round(100 * s, 1) for s in result['scores']]}",
                      flush=True)
    summary = {}
    for way, parts in totals.items():
        seconds = sum(p["process_s"] for p in parts)
        summary[way] = {"runs": sum(p["runs"] for p in parts), "seconds": seconds,
                        "runs_per_hour": 3600.0 * sum(p["runs"] for p in parts) / seconds, "parts": parts}
    ratio = summary["after"]["runs_per_hour"] / summary["before"]["runs_per_hour"]
    line = (f"grid_slice task={args.task} k={args.k} runs={args.runs}: before {summary['before']['runs_per_hour']:.0f} "
            f"runs/h, after {summary['after']['runs_per_hour']:.0f} runs/h, speedup={ratio:.2f}")
    print(line)
    out = Path(args.out) if args.out else HERE / "results" / f"grid-slice-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    out.write_text(json.dumps({"args": vars(args), "summary": summary, "line": line, "loadavg_after": load,
                               "cpu_count": os.cpu_count()}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
