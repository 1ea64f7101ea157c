"""Re-run randomly chosen stored runs and check that their metrics reproduce.

Same code, same seed and same kind of machine give the same numbers; across machines, thread counts or library
versions, bf16 rounding can move a fine-tune a little. TOLERANCE is the largest difference, in points of any
stored metric, that still counts as reproduced (RTE's dev set has 277 examples: one example is 0.36 points).
"""
from __future__ import annotations

import contextlib
import json
import random
import tempfile
import time

from .config import RunConfig
from .errors import FewdimsError, check_type
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


# -- verified equivalence of a code change ------------------------------------------------------------------------
# `reproduce` asks "does the same code give about the same numbers?" (a tolerance). `verify_code` asks whether a
# change to the numeric modules computes *exactly* what the old code computed: it re-runs stored records of the old
# code, one per code path, with this checkout, and compares metrics, per-epoch losses and held-out scores, every dev
# prediction and the data fingerprints bit for bit. When all agree it links the old fingerprint to this one
# (fewdims.store.add_equivalence_link), so the grid stays current; one difference and nothing is linked.
COMPARED = ("metrics", "history", "predictions", "selection")


CODE_PATH_FIELDS = ("pooling", "head", "layer", "frozen", "selected_dims", "cross_finetune", "regression",
                    "heldout_epoch_choice", "standardized_target", "special_tokens_eligible", "precision")


def code_path(config: RunConfig) -> tuple:
    """The branches of the training code a run takes: re-running one record of each path exercises them all."""
    from .tasks import get_task

    layer = "last" if config.layer is None else "embeddings" if config.layer == 0 else "truncated"
    return (config.pooling, config.head, layer, config.freeze_backbone, config.dims is not None,
            config.init_from is not None, get_task(config.task).is_regression, config.holdout_size > 0,
            config.standardize_target, config.special_tokens_eligible, config.precision)


def _cost(record: dict, store) -> float:
    """Seconds the record took, plus its stage A's for a cross-fine-tuning run (re-run too)."""
    cost = (record.get("timings") or {}).get("total_s", 1e9)
    init_from = record["config"].get("init_from")
    if init_from is not None:
        stage_a = store.load(RunConfig.from_dict(init_from))
        cost += _cost(stage_a, store) if stage_a is not None else 1e9
    return cost


def covering_sample(records: list[dict], store) -> list[dict]:
    """The cheapest record of each code path among `records` (in path order)."""
    best: dict[tuple, tuple[float, dict]] = {}  # path -> (cost, record)
    for record in records:
        path, cost = code_path(RunConfig.from_dict(record["config"])), _cost(record, store)
        if path not in best or cost < best[path][0]:
            best[path] = cost, record
    return [best[p][1] for p in sorted(best, key=repr)]


def _without_source(value):
    """`value` with every 'source' key left out, at any depth (where the data lay, not what it held)."""
    if isinstance(value, dict):
        return {k: _without_source(v) for k, v in value.items() if k != "source"}
    return value


def _comparable(fields: dict) -> dict:
    """The compared fields as the store writes them (JSON), data fingerprints without where the data lay."""
    from .store import _jsonable

    return _without_source(json.loads(json.dumps({k: fields.get(k) for k in (*COMPARED, "data")},
                                                 default=_jsonable)))


def rerun_differences(record: dict, source, keep_weights: bool = False) -> list[str]:
    """Re-run a stored record with this code (its thread count, its forward) and list the fields that differ;
    `keep_weights`: cache the fine-tuned weights (a stage A whose stage B is re-run next)."""
    from .fastbert import FastOptions
    from .train import train

    stored_forward = (record.get("timings") or {}).get("fast_forward", "not recorded")
    options = (FastOptions() if stored_forward == "not recorded"  # the grid's default before the field existed
               else FastOptions(**stored_forward) if stored_forward else FastOptions(enabled=False))
    with threads_like(record):
        config = RunConfig.from_dict(record["config"])
        result = train(config.replace(save_weights=True) if keep_weights else config, source, fast_options=options)
    fresh, stored = _comparable(vars(result)), _comparable(record)
    return [k for k in fresh if fresh[k] != stored[k]]


@contextlib.contextmanager
def _scratch_cache():
    """A fresh FEWDIMS_CACHE: frozen features and stage-A weights are recomputed by this code, not read back."""
    from .cache import cache_root_at

    with tempfile.TemporaryDirectory(prefix="fewdims-verify-") as tmp, cache_root_at(tmp):
        yield


def _verify_one(record: dict, stage_a: dict | None, source) -> dict:
    """Re-run one record (first its stage A, whose weights it starts from) in a scratch cache."""
    t0 = time.perf_counter()
    with _scratch_cache():
        differ = []
        if record["config"].get("init_from") is not None:
            differ = (["stage A is not stored"] if stage_a is None else
                      [f"stage A {k}" for k in rerun_differences(stage_a, source, keep_weights=True)])
        if not differ:
            differ = rerun_differences(record, source)
    return {"differ": differ, "seconds": time.perf_counter() - t0}


def _verify_all(jobs: list[tuple], source, workers: int):
    """Yield (job, outcome) as re-runs finish: in this process, or `workers` fresh processes at a time."""
    if workers <= 1:
        for job in jobs:
            yield job, _verify_one(*job, source)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_verify_one, *job, source): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def verify_code(profile: str = "cpu", dry_run: bool = False, source=None, workers: int = 1) -> bool:
    """Link every older fingerprint of the profile's stale records to this checkout's when a covering sample of
    them re-runs bit for bit (see the comment above). True when nothing is left unlinked. `source`: the data the
    records were computed from (default: the profile's); `workers`: re-runs at a time, each in a fresh process
    at its record's thread count (2 one-thread runs fill 2 cores)."""
    from .store import ResultStore, add_equivalence_link, code_fingerprint, git_commit, stale_records

    current = code_fingerprint()
    if current["dirty"] and not dry_run:
        raise FewdimsError("the numeric modules have uncommitted changes: commit them first, so that the link names "
                           "code that is in the git history (--dry-run shows the plan meanwhile)")
    check_type("workers", workers, int)
    if workers < 1:
        raise FewdimsError(f"workers must be at least 1, got {workers}")
    store = ResultStore(profile)
    source = load_profile(profile).source if source is None else source
    by_code: dict[str, list[dict]] = {}
    unlinkable = 0
    for record in stale_records(store.records()):
        env = record.get("environment") or {}
        if env.get("code_fingerprint") and not env.get("dirty"):
            by_code.setdefault(env["code_fingerprint"], []).append(record)
        else:
            unlinkable += 1
    if unlinkable:
        print(f"verify-code: {unlinkable} records come from a dirty tree or predate fingerprints: they cannot be "
              "linked, only recomputed (python -m fewdims stale lists them)")
    if not by_code:
        print(f"verify-code: no {profile} record of other code to verify (current {current['code_fingerprint']})")
        return not unlinkable
    linked_all = not unlinkable
    for old, records in sorted(by_code.items()):
        sample = sorted(covering_sample(records, store), key=lambda r: -_cost(r, store))  # longest first
        hours = sum(_cost(r, store) for r in sample) / 3600
        print(f"verify-code: {len(records)} records of code {old}: re-running {len(sample)} (one per code path, "
              f"~{hours:.2f} h of runs, {workers} at a time) against {current['code_fingerprint']}", flush=True)
        if dry_run:
            for record in sample:
                print(f"  would re-run {record.get('label', record['key'])} (~{_cost(record, store) / 60:.1f} min)")
            continue
        jobs = [(r, store.load(RunConfig.from_dict(r["config"]["init_from"])) if r["config"].get("init_from")
                 else None) for r in sample]
        checked = []
        for (record, _), outcome in _verify_all(jobs, source, workers):
            label, differ = record.get("label", record["key"]), outcome["differ"]
            print(f"  {'same   ' if not differ else 'DIFFERS'} {label} ({outcome['seconds']:.0f} s)"
                  + (f": {', '.join(differ)}" if differ else ""), flush=True)
            checked.append({"record": f"{profile}/{record['config']['task']}/{record['key']}.json", "label": label,
                            "identical": not differ, "seconds": round(outcome["seconds"], 1),
                            "code_path": dict(zip(CODE_PATH_FIELDS, code_path(RunConfig.from_dict(record["config"]))))})
        if all(c["identical"] for c in checked):
            path = add_equivalence_link({
                "from": old, "to": current["code_fingerprint"], "profile": profile, "records_of_old_code": len(records),
                "checked": checked, "compared": [*COMPARED, "data"], "commit": git_commit(),
                "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            print(f"verify-code: linked {old} -> {current['code_fingerprint']} in {path}: its {len(records)} records "
                  "count as this code's", flush=True)
        else:
            linked_all = False
            print(f"verify-code: code {old} is NOT reproduced bit for bit: nothing linked; its {len(records)} records "
                  "stay stale (recompute them with `python -m fewdims grid`)", flush=True)
    return linked_all and not dry_run
