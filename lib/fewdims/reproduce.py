"""Re-run randomly chosen stored runs and check that their metrics reproduce.

Same code, same seed and same kind of machine give the same numbers; across machines, thread counts or library
versions, bf16 rounding can move a fine-tune a little. TOLERANCE is the largest difference, in points of any
stored metric, that still counts as reproduced (RTE's dev set has 277 examples: one example is 0.36 points).
"""
from __future__ import annotations

import contextlib
import random

from .config import RunConfig
from .profiles import load_profile
from .store import ResultStore

TOLERANCE = 2.0        # points (metric x 100)
MAX_RUN_SECONDS = 150  # draw among runs that took at most this long when stored, to keep CI short


@contextlib.contextmanager
def threads_like(record: dict):
    """Re-run with the thread count the record was computed with (a matmul's reduction order depends on it, and a
    fine-tune amplifies the last bits): the same kind of machine then gives the same numbers."""
    import torch

    before, wanted = torch.get_num_threads(), (record.get("timings") or {}).get("threads")
    if wanted:
        torch.set_num_threads(int(wanted))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reproduce(profile: str = "cpu", runs: int = 2, seed: int | None = None, tolerance: float | None = None,
              max_run_seconds: float = MAX_RUN_SECONDS) -> bool:
    from .train import train

    tolerance = TOLERANCE if tolerance is None else tolerance
    prof = load_profile(profile)
    records = [r for r in ResultStore(profile).records()
               if r["config"].get("init_from") is None and not r["config"].get("freeze_backbone")
               and r.get("timings", {}).get("total_s", 1e9) <= max_run_seconds]
    if len(records) < runs:
        print(f"reproduce: only {len(records)} stored {profile} runs qualify (need {runs}); nothing to compare")
        return False
    rng = random.Random(seed)
    chosen = rng.sample(records, runs)
    ok = True
    for record in chosen:
        config = RunConfig.from_dict(record["config"])
        with threads_like(record):
            result = train(config, prof.source)
        for split, stored in record["metrics"].items():
            for name, value in stored.items():
                new = result.metrics[split][name]
                delta = 100.0 * abs(new - value)
                good = delta <= tolerance
                ok &= good
                print(f"{'ok  ' if good else 'FAIL'} {config.label():45s} {split}/{name}: stored {100 * value:6.2f} "
                      f"re-run {100 * new:6.2f} |diff| {delta:5.2f} (tolerance {tolerance})")
    print(f"reproduce: {runs} runs of profile {profile}, {'all within' if ok else 'NOT all within'} {tolerance} points")
    return ok
