"""Runner: every experiment asks it for records; it reuses stored ones, computes missing ones, and counts.

In a dry run nothing is trained: each missing run is listed with an estimate of its cost, and a placeholder
record (metrics NaN) lets adaptive grids (best sets, leave-one-out) enumerate their remaining steps.
In a planning pass (`plan=True`, the cluster driver's: fewdims.cluster) nothing is trained either: every run to
compute becomes a `Job` (its config and the analyses it must carry), and `defer_dependents` tells the chapters'
adaptive steps to wait for the records they rank instead of ranking placeholders.
Every record it hands out is remembered with the chapters that asked for it (`handed_out`: the book's provenance).
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .config import RunConfig
from .errors import FewdimsError
from .profiles import Profile
from .store import ResultStore
from .tasks import get_task

# Nominal GLUE sizes and mean token lengths (BERT uncased WordPiece), for cost estimates without the data.
TRAIN_ROWS = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
              "qnli": 104743, "rte": 2490, "wnli": 635}
DEV_ROWS = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qqp": 40430, "mnli": 9815 + 9832,
            "qnli": 5463, "rte": 277, "wnli": 71}
MEAN_TOKENS = {"cola": 11, "sst2": 13, "mrpc": 53, "stsb": 31, "qqp": 30, "mnli": 39, "qnli": 50, "rte": 69,
               "wnli": 38}
# Non-embedding parameters (6 * params * tokens ~ training FLOPs): all-MiniLM-L6-v2 and BERT-base.
NON_EMBEDDING_PARAMS = {"minilm": 10.6e6, "tiny": 0.03e6, "bert-base-uncased": 85e6}


@dataclass
class Job:
    """A run a planning pass wants computed. kind: 'train' (not stored), 'reanalyse' (stored, but without the
    analyses in `missing`: from cached weights or representations, else trained again with `analyses`, as
    `Runner.run` does) or 'retrain' (stored, but a later stage needs its weights and they are gone)."""

    config: RunConfig
    analyses: list = field(default_factory=list)
    kind: str = "train"
    missing: list = field(default_factory=list)
    key: str = field(init=False)

    def __post_init__(self):
        self.key = self.config.key()


class Runner:
    def __init__(self, profile: Profile, *, dry_run: bool = False, force: bool = False, store_root=None,
                 verbose: bool | None = None, allow_compute: bool = True, plan: bool = False,
                 threads: int | None = None):
        if not isinstance(profile, Profile):
            raise FewdimsError("Runner needs a Profile: fewdims.profiles.load_profile('cpu', ...)")
        if not isinstance(allow_compute, bool):
            raise FewdimsError(f"compute/allow_compute must be True or False, got {allow_compute!r}")
        # a planning pass is a dry run for the chapters (nothing is computed, placeholders stand in for runs)
        self.profile, self.dry_run, self.force, self.allow_compute = profile, dry_run or plan, force, allow_compute
        self.plan = plan
        self.defer_dependents = plan  # adaptive steps wait for real records instead of ranking placeholders
        self.jobs: dict[str, Job] = {}  # planning pass: key -> the job that computes it
        self.waiting: list[RunConfig] = []  # planning pass: runs that wait for a stage-A run's weights
        self._asked: dict[str, list] = {}  # planning pass: key -> the analyses the chapters asked for
        self._waiting_keys: set[str] = set()
        self.store = ResultStore(profile.name, store_root)
        self.verbose = (not dry_run and sys.stderr.isatty()) if verbose is None else verbose
        self.computed = self.reanalysed = 0
        self._reused: set[str] = set()  # keys of stored runs handed out as they were (each counted once)
        self.compute_s = 0.0
        self.recorded_s: dict[str, float] = {}  # key -> measured seconds of every finished run the grid used
        self.planned: list[RunConfig] = []
        self.missing: list[RunConfig] = []  # with allow_compute=False: runs not stored, left out of the results
        self.chapter: str | None = None     # set by the chapter asking for records (see fewdims.chapters.base)
        self.threads = threads  # threads per run the estimate assumes (None: as many as this machine's cores)
        self.handed_out: dict[str, dict] = {}  # key -> {'record', 'chapters'}: every record the chapters used

    @property
    def reused(self) -> int:
        """Distinct stored runs handed out as they were (a run several chapters use counts once)."""
        return len(self._reused)

    @property
    def source(self):
        return self.profile.source

    def run(self, config: RunConfig, analyses=()) -> dict:
        """The finished record of `config` with every analysis in `analyses` present."""
        record = self._run(config, analyses)
        entry = self.handed_out.setdefault(record["key"], {"record": record, "chapters": []})
        entry["record"] = record
        if self.chapter not in entry["chapters"]:
            entry["chapters"].append(self.chapter)
        return record

    def _run(self, config: RunConfig, analyses=()) -> dict:
        record = None if self.force else self.store.load(config)
        if self.plan:
            return self._plan(config, list(analyses), record)
        if record is not None:
            missing = [a for a in analyses if not a.satisfied_by(record.get("extra", {}))]
            if not missing:
                self._reused.add(record["key"])
                return self._count(record)
            if not self.dry_run and self.allow_compute:
                from .analysis import analyse_cached

                t0 = time.perf_counter()
                extra = analyse_cached(config, missing, self.source)
                if extra is not None:
                    self.reanalysed += 1
                    self.compute_s += time.perf_counter() - t0
                    # every missing analysis succeeded: errors recorded when the run trained are now stale
                    return self._count(self.store.update_extra(config, extra, drop=("analysis_errors",)))
            elif not self.dry_run:
                self._reused.add(record["key"])  # stored but without some analysis: use what is there
                return self._count(record)
            record = None  # the weights are gone: recompute the run with its analyses
        if not self.allow_compute and not self.dry_run:
            if config.key() not in {c.key() for c in self.missing}:
                self.missing.append(config)
            return {**placeholder(config), "missing": True}
        if self.dry_run:
            if config.key() not in {c.key() for c in self.planned}:
                self.planned.append(config)
            return placeholder(config)
        from .train import train

        t0 = time.perf_counter()
        record = self.store.save(train(config, self.source, analyses=analyses))
        self.computed += 1
        self.compute_s += time.perf_counter() - t0
        if self.verbose:
            print(f"[fewdims] {config.label()}: {score(record):.1f} in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        return self._count(record)

    def _plan(self, config: RunConfig, analyses: list, record: dict | None) -> dict:
        """A planning pass's answer: the stored record, or a placeholder marked `planned` for a run to compute (a
        stored record still being re-analysed is handed out marked `planned` too: it is not final yet)."""
        from .cache import has_weights

        key = config.key()
        asked = self._asked.setdefault(key, [])
        asked += [a for a in analyses if getattr(a, "name", a) not in {getattr(b, "name", b) for b in asked}]
        if record is not None:
            missing = [a for a in asked if not a.satisfied_by(record.get("extra", {}))]
            if not missing:
                self._reused.add(record["key"])
                return self._count(record)
            self._add_job(Job(config, asked, "reanalyse", missing))
            return {**record, "planned": True}
        if config.init_from is not None:
            stage_a = RunConfig.from_dict(config.init_from)
            if not has_weights(stage_a):  # wait for stage A; recompute a stored one whose weights are gone
                if stage_a.key() not in self.jobs and self.store.load(stage_a) is not None:
                    self._add_job(Job(stage_a.replace(save_weights=True), self._asked.get(stage_a.key(), []),
                                      "retrain"))
                if key not in self._waiting_keys:
                    self._waiting_keys.add(key)
                    self.waiting.append(config)
                return placeholder(config)
        if key not in self.jobs:
            self.planned.append(config)
        self._add_job(Job(config, asked, "train"))
        return placeholder(config)

    def _add_job(self, job: Job) -> None:
        known = self.jobs.get(job.key)
        if known is None:
            self.jobs[job.key] = job
        else:  # asked again (another chapter): the job carries every analysis asked for
            known.analyses = self._asked.get(job.key, known.analyses)
            known.missing += [a for a in job.missing if a not in known.missing]

    def _count(self, record: dict) -> dict:
        self.recorded_s[record["key"]] = float(record.get("timings", {}).get("total_s", math.nan))
        return record

    @functools.cached_property
    def calibration(self) -> Calibration:
        """Throughputs measured from this profile's stored runs; read only when an estimate is asked."""
        try:
            records = self.store.records()
        except FewdimsError:  # a corrupt record is reported where a run needs it, not by the cost model
            records = []
        return measured_throughput(records, self.profile["model"])

    def estimate(self, config: RunConfig) -> float:
        """Estimated seconds of one run on this machine (calibrated from stored runs when there are any)."""
        return estimate_seconds(config, self.calibration.rate(config, self.threads))

    def throughput_note(self) -> str:
        return self.calibration.note(self.profile["model"], self.threads)

    def summary(self) -> str:
        if self.dry_run:
            est = sum(self.estimate(c) for c in self.planned)
            return (f"{len(self.planned)} runs to compute, {self.reused} stored; estimated "
                    f"{est / 3600:.2f} h {self.throughput_note()}")
        measured = [s for s in self.recorded_s.values() if not math.isnan(s)]
        text = (f"{self.reused} runs reused, {self.computed} computed, {self.reanalysed} re-analysed "
                f"({self.compute_s / 60:.1f} min of compute now; the {len(measured)} runs' stored timings add up "
                f"to {sum(measured) / 3600:.2f} h)")
        if self.missing:
            text += (f"; {len(self.missing)} runs not stored and left out (compute=False): "
                     f"{', '.join(c.label() for c in self.missing[:5])}{' ...' if len(self.missing) > 5 else ''}")
        return text


def placeholder(config: RunConfig) -> dict:
    task = get_task(config.task)
    splits = config.eval_splits or task.eval_splits
    return {"key": config.key(), "config": config.to_dict(), "label": config.label(), "planned": True,
            "metrics": {s: {m: math.nan for m in task.metrics} for s in splits}, "extra": {}, "timings": {},
            "data": {}}


def score(record: dict, split: str | None = None) -> float:
    """The task's main metric on the first (or the given) evaluation split, in points (x100)."""
    task = get_task(record["config"]["task"])
    split = split or next(iter(record["metrics"]))
    return 100.0 * record["metrics"][split][task.main_metric]


# Seconds per optimizer step that do not scale with the encoder's depth (batching, the head, the optimizer, the
# scheduler): a run that reads layer 0 (embeddings only) still took 17-19 s for its 765 steps at one thread (cpu
# grid, 2026-12-03), where a per-token rate alone gave 3 s.
STEP_OVERHEAD_S = 0.022


def _train_rows(config: RunConfig) -> int:
    available = TRAIN_ROWS[config.task] - config.holdout_size
    return min(config.train_size or available, available)


def work_tokens(config: RunConfig) -> float:
    """Token passes through the encoder a run makes (training counts 3x evaluation: forward + backward), scaled by
    the share of the encoder it runs (a model truncated after layer l)."""
    rows = _train_rows(config)
    tokens = MEAN_TOKENS[config.task] + 3
    layer_share = 1.0 if config.layer is None else (0.1 + config.layer) / 6.1
    train_passes = rows * config.epochs * (0.0 if config.freeze_backbone else 1.0)
    # with a held-out slice, the slice is scored every epoch and the dev split once (at the chosen epoch)
    eval_passes = (DEV_ROWS[config.task] + config.holdout_size * config.epochs if config.holdout_size
                   else DEV_ROWS[config.task] * config.epochs) + (rows if config.freeze_backbone else 0)
    return train_passes * tokens * layer_share + eval_passes * tokens * layer_share / 3.0


def overhead_seconds(config: RunConfig) -> float:
    """The optimizer steps' share of a run that does not depend on the encoder (STEP_OVERHEAD_S each); a frozen
    backbone's head trains on cached features, where it is part of the rate."""
    if config.freeze_backbone:
        return 0.0
    return STEP_OVERHEAD_S * math.ceil(_train_rows(config) / config.batch_size) * config.epochs


def estimate_seconds(config: RunConfig, tokens_per_s: float | None = None) -> float:
    """Training + evaluation time: the steps' fixed overhead plus the encoder's token passes at a throughput in
    trained tokens per second. Default throughput: MiniLM on this kind of 2-core CPU (bf16) ~ 1,600 tokens/s in
    training; other models scale by their non-embedding parameter count."""
    params = NON_EMBEDDING_PARAMS.get(config.model, 85e6)
    rate = tokens_per_s or 1600.0 * NON_EMBEDDING_PARAMS["minilm"] / params
    return overhead_seconds(config) + work_tokens(config) / rate


# A run had the machine to itself when the 5-minute load at its end was at most this many times the cores: the
# grid's own threads load it ~1x; tests or a second grid beside it push 2-6x and slow runs several times over.
QUIET_LOAD_PER_CORE = 1.25
MIN_CALIBRATION_RUNS = 3  # fewer quiet runs of a kind than this: fall back to every stored run


def run_kind(config: RunConfig) -> str:
    """Runs whose time scales alike: a frozen backbone trains a head on cached features (seconds), the rest
    fine-tune the backbone (minutes)."""
    return "frozen" if config.freeze_backbone else "fine-tuned"


def was_quiet(record: dict) -> bool:
    env = record.get("environment") or {}
    load, cores = env.get("load_average"), env.get("cpu_count")
    return bool(load and cores) and load[1] <= QUIET_LOAD_PER_CORE * cores


@dataclass
class Calibration:
    """Nominal tokens/s per (run kind, threads per run). From quiet runs (pooled) where a group has enough of them,
    else from every stored run of the group (upper quartile: a busy machine only ever slows runs down, while the
    estimator's misfit across tasks spreads rates both ways). A run at one thread beside another (a grid of
    one-thread runs side by side) is its own group: its seconds are longer, the runs per hour higher."""
    by_group: dict = field(default_factory=dict)  # (kind, threads) -> (tokens/s, runs used, quiet?)
    by_kind: dict = field(default_factory=dict)   # kind -> (tokens/s, runs used, quiet?), any thread count
    pooled: tuple | None = None                   # (tokens/s, runs used, quiet?) over every run

    def _fit(self, config: RunConfig, threads: int | None):
        kind = run_kind(config)
        return self.by_group.get((kind, threads or default_threads())) or self.by_kind.get(kind) or self.pooled

    def rate(self, config: RunConfig, threads: int | None = None) -> float | None:
        chosen = self._fit(config, threads)
        return chosen[0] if chosen else None

    @property
    def runs(self) -> int:
        return self.pooled[1] if self.pooled else 0

    def note(self, model: str, threads: int | None = None) -> str:
        if not self.pooled:
            return "at the nominal 1,600 tokens/s (no stored run of this model to calibrate from)"
        threads = threads or default_threads()
        fits = [(kind, self.by_group.get((kind, threads)) or fit) for kind, fit in sorted(self.by_kind.items())]
        parts = [f"{kind} {rate:,.0f} tokens/s ({'pooled over' if quiet else 'upper quartile of'} {n} "
                 f"{'quiet ' if quiet else ''}runs)" for kind, (rate, n, quiet) in fits or [("every", self.pooled)]]
        return f"at {'; '.join(parts)}, {threads} thread{'s' if threads > 1 else ''} per run, from stored {model} runs"


def default_threads() -> int:
    """Threads of a run when nobody sets them: torch's default, the machine's cores."""
    return os.cpu_count() or 1


def measured_throughput(records: list[dict], model: str) -> Calibration:
    """The cost model's calibration from stored CPU runs of `model`: each run's token passes over its measured
    seconds less the steps' fixed overhead, per run kind and thread count; quiet runs (`was_quiet`) only where a
    group has `MIN_CALIBRATION_RUNS` of them, pooled (their token passes over their seconds, so that the estimate of
    a whole grid matches its measured total: the median rate ran ~10 % fast on the long-sequence tasks)."""
    points: dict[tuple, list[tuple[float, float, bool]]] = {}  # (token passes, encoder seconds, quiet?)
    for record in records:
        timings = record.get("timings") or {}
        if record.get("config", {}).get("model") != model or timings.get("device") != "cpu" \
                or not timings.get("total_s"):
            continue
        try:
            config = RunConfig.from_dict(record["config"])
        except (FewdimsError, TypeError):  # a record of an older config schema: not a calibration point
            continue
        group = (run_kind(config), int(timings.get("threads") or default_threads()))
        encoder_s = max(timings["total_s"] - overhead_seconds(config), 0.1 * timings["total_s"])
        points.setdefault(group, []).append((work_tokens(config), encoder_s, was_quiet(record)))

    def fit(found: list[tuple[float, float, bool]]) -> tuple | None:
        quiet = [(w, t) for w, t, q in found if q]
        if len(quiet) >= MIN_CALIBRATION_RUNS:
            return sum(w for w, _ in quiet) / sum(t for _, t in quiet), len(quiet), True
        return (float(np.quantile([w / t for w, t, _ in found], 0.75)), len(found), False) if found else None

    kinds = {kind for kind, _ in points}
    by_kind = {kind: fit([p for (k, _), found in points.items() if k == kind for p in found]) for kind in kinds}
    return Calibration({group: fit(found) for group, found in points.items() if len(found) >= MIN_CALIBRATION_RUNS},
                       {kind: f for kind, f in by_kind.items() if f[1] >= MIN_CALIBRATION_RUNS},
                       fit([p for found in points.values() for p in found]))


def estimate_flops(config: RunConfig) -> float:
    params = NON_EMBEDDING_PARAMS.get(config.model, 85e6)
    rows = min(config.train_size or TRAIN_ROWS[config.task], TRAIN_ROWS[config.task])
    tokens = MEAN_TOKENS[config.task] + 3
    return 6 * params * rows * tokens * config.epochs + 2 * params * DEV_ROWS[config.task] * tokens * config.epochs
