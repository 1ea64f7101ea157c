"""The grid on a Ray cluster: `python -m fewdims grid --profile paper --ray [ADDRESS]`.

Each run to compute is one Ray task asking for what one run needs (one GPU on a GPU cluster, else
`cpus_per_run` CPU threads). The driver plans the chapters' grids over and over with a planning `Runner`
(`Runner(plan=True)`): a run that is not stored becomes a job, and the chapters' adaptive steps (the best 3-dim
sets -> leave-one-out -> effective pairs, the scan's top pairs, the headline best-k set, stage A -> stage B of
cross-fine-tuning) wait until the records they rank exist. Each pass submits the jobs not yet submitted; every
finished task hands its result to the driver, which writes the record (the only writer of the result store,
atomically, as the sequential grid does) and plans again. The grid ends when a pass plans nothing new and
nothing is in flight.

Weights that later stages read (baselines, stage-A runs: save_weights=True) go to the cache directory
($FEWDIMS_CACHE, `shared_cache`), which every worker must be able to read and write. A worker killed mid-run is
retried by Ray (`max_retries`); a run that raises is reported with its label and the grid goes on; Ctrl-C cancels
what is in flight and leaves only complete records. Ray is an optional extra (`pip install -e '.[cluster]'`):
it is imported only inside these functions.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FewdimsError

# Seconds the driver waits after writing each record: 0 except in the test that interrupts a grid mid-way (a grid
# of tiny runs can otherwise finish before the interrupt arrives on a busy machine).
WRITE_PAUSE_S = float(os.environ.get("FEWDIMS_CLUSTER_WRITE_PAUSE_S", "0"))
from .runner import Job, Runner

INSTALL_HINT = "pip install -e '.[cluster]' (or: pip install 'ray>=2.9'; `make install` installs it)"
# Environment variables a worker needs to see as the driver does (the cache is set from `shared_cache`).
FORWARDED_ENV = ("FEWDIMS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_PARALLELISM")
BIG_MODEL_PARAMS = 50e6  # above this many non-embedding parameters a CPU run gets BIG_MODEL_CPUS threads
BIG_MODEL_CPUS = 4


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise FewdimsError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from err
    return ray


@dataclass
class GridReport:
    """What a cluster grid did: records written (keys, in order), failures {label: error}, and timings."""

    written: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    waiting: list = field(default_factory=list)  # labels of runs whose inputs never appeared (reported as failed)
    stored: int = 0          # runs of the grid already stored when it ended
    durations: dict = field(default_factory=dict)  # key -> seconds the task took on its worker
    wall_s: float = 0.0
    interrupted: bool = False
    resources: dict = field(default_factory=dict)  # per run: {'CPU': n, 'GPU': m}; 'slots': runs at a time

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def summary(self) -> str:
        text = (f"{len(self.written)} runs computed on Ray ({self.resources.get('slots', '?')} at a time, "
                f"{self.resources.get('GPU', 0):g} GPU and {self.resources.get('CPU', 0):g} CPU per run), "
                f"{self.stored} stored in all; measured {sum(self.durations.values()) / 60:.1f} min of run time; "
                f"wall time {self.wall_s / 60:.1f} min")
        if self.interrupted:
            text += "; stopped before the end (run it again to compute the rest)"
        if self.failed:
            text += f"; {len(self.failed)} runs failed:\n" + "\n".join(
                f"  {label}: {error}" for label, error in self.failed.items())
        return text


# -- the task ----------------------------------------------------------------------------------------------------
def execute(job: Job, source, cpus_per_run: int | None = None, env: dict | None = None, hook=None) -> dict:
    """One run, on a worker: what `Runner.run` computes for a run that is not (fully) stored. Returns
    {'result': RunResult} or, for a re-analysis that could use the cached weights, {'extra': dict}; plus the
    worker's 'environment', 'seconds' and 'pid'. `env`: the driver's settings (the shared cache, FEWDIMS_*, HF_*),
    set before anything is imported (a worker process serves many runs, of any grid of this Ray session).
    `hook(config)` (tests) is called first."""
    t0 = time.perf_counter()
    if env is not None:
        for name in [n for n in os.environ if n.startswith("FEWDIMS_") and n not in env]:
            del os.environ[name]  # a setting of an earlier grid this worker served
        os.environ.update(env)
    import torch

    from .store import environment

    if cpus_per_run:
        torch.set_num_threads(max(1, int(cpus_per_run)))
    if hook is not None:
        hook(job.config)
    out = {"pid": os.getpid(), "environment": environment()}
    extra = None
    if job.kind == "reanalyse":
        from .analysis import analyse_cached

        extra = analyse_cached(job.config, job.missing, source)
    if extra is not None:
        out["extra"] = extra
    else:  # not stored, stored without its weights (retrain), or a re-analysis whose weights are gone
        from .train import train

        out["result"] = train(job.config, source, analyses=job.analyses)
    out["seconds"] = time.perf_counter() - t0
    return out


# -- planning ----------------------------------------------------------------------------------------------------
def plan(profile, experiments, store_root=None) -> Runner:
    """One planning pass over the chapters' grids: the runner's `jobs` are the runs to compute now."""
    from .chapters import open_chapter

    runner = Runner(profile, plan=True, store_root=store_root, verbose=False)
    for name in experiments:
        open_chapter(name, profile, runner).results()
    return runner


def _write(store, job: Job, out: dict) -> dict:
    """The driver writes what a task returned, as `Runner.run` does (atomically)."""
    if "extra" in out:
        return store.update_extra(job.config, out["extra"], drop=("analysis_errors",))
    return store.save(out["result"], out.get("environment"))  # the record names the worker that computed it


# -- resources ---------------------------------------------------------------------------------------------------
def default_cpus_per_run(profile) -> int:
    """Threads of one CPU run: 1 for small models (more runs at once is faster), BIG_MODEL_CPUS for BERT-base
    and larger (memory per run, and big matmuls gain from threads)."""
    from .runner import NON_EMBEDDING_PARAMS

    return BIG_MODEL_CPUS if NON_EMBEDDING_PARAMS.get(profile["model"], 85e6) > BIG_MODEL_PARAMS else 1


def local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU cluster
        return 0


def run_resources(cluster: dict, cpus_per_run: int | None, gpus_per_run: float | None, profile) -> dict:
    """{'CPU', 'GPU', 'slots'} of one run from the cluster's total resources and the flags: one GPU per run when
    the cluster has GPUs (and the CPUs shared out among them), else `cpus_per_run` threads."""
    total_cpu, total_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpus = (1.0 if total_gpu >= 1 else 0.0) if gpus_per_run is None else float(gpus_per_run)
    if gpus > total_gpu:
        raise FewdimsError(f"--gpus-per-run {gpus:g}, but the Ray cluster has {total_gpu:g} GPUs")
    if cpus_per_run is None:
        cpus_per_run = max(1, int(total_cpu // max(1, total_gpu))) if gpus else default_cpus_per_run(profile)
        cpus_per_run = min(cpus_per_run, max(1, int(total_cpu)))
    if cpus_per_run < 1 or cpus_per_run > max(total_cpu, 1):
        raise FewdimsError(f"--cpus-per-run {cpus_per_run}, but the Ray cluster has {total_cpu:g} CPUs")
    slots = int(total_cpu // cpus_per_run)
    if gpus:
        slots = min(slots, int(total_gpu // gpus))
    return {"CPU": int(cpus_per_run), "GPU": gpus, "slots": max(1, slots)}


def worker_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and k != "FEWDIMS_RESULTS"}
    env["FEWDIMS_CACHE"] = str(cache)
    env.setdefault("FEWDIMS_PROGRESS", "0")  # no progress bars in worker logs
    return env


# -- progress ----------------------------------------------------------------------------------------------------
class Progress:
    """runs done / running / queued, and the time left: the cost model's estimate of every run not yet done,
    scaled by the measured/estimated ratio of the runs done so far, over the runs that go at once."""

    def __init__(self, profile, store_root, slots: int, out=sys.stderr, every_s: float = 10.0,
                 threads: int | None = None):
        # calibrated from stored timings of runs at `threads` threads (the CPUs each run asks for)
        self.model = Runner(profile, store_root=store_root, verbose=False, threads=threads)
        self.slots, self.out, self.ratios, self.every_s = slots, out, [], every_s
        self.t0 = self.last = time.perf_counter()

    def finished(self, job: Job, seconds: float) -> None:
        est = self.model.estimate(job.config)
        if est > 0 and seconds > 0:
            self.ratios.append(seconds / est)

    def left_s(self, jobs) -> float:
        ratio = statistics.median(self.ratios) if self.ratios else 1.0
        return ratio * sum(self.model.estimate(j.config) for j in jobs) / self.slots

    def line(self, done: int, submitted: list, planned: list, failed: int) -> str:
        """submitted: jobs handed to Ray (the first `slots` of them run, the rest wait in Ray's queue);
        planned: jobs planned but not submitted yet."""
        running = min(len(submitted), self.slots)
        left = self.left_s(submitted + planned)
        basis = (f"scaled by {len(self.ratios)} measured runs" if self.ratios else self.model.throughput_note())
        return (f"[grid] {done} done, {running} running, {len(submitted) - running + len(planned)} left"
                f"{f', {failed} failed' if failed else ''}; ~{_duration(left)} to go for the runs planned so far "
                f"(estimate {basis}; {self.slots} at a time); {_duration(time.perf_counter() - self.t0)} elapsed")

    def show(self, *args, force: bool = False) -> None:
        """One line at most every `every_s` seconds (and when `force`)."""
        if force or time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            print(self.line(*args), file=self.out, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- the driver --------------------------------------------------------------------------------------------------
def run_grid(profile, experiments=None, *, address: str | None = None, workers: int | None = None,
             cpus_per_run: int | None = None, gpus_per_run: float | None = None, shared_cache=None,
             max_retries: int = 3, max_runs: int | None = None, store_root=None, hook=None,
             out=sys.stderr) -> GridReport:
    """Compute every missing run of `experiments` (default: the whole grid) of `profile` on Ray.

    address: a running cluster ('HEAD:6379', 'auto'; 'ray://HEAD:10001' needs ray[client]); None starts a local
    one of `workers` runs at a time (default: as many as the CPUs allow; on a machine with GPUs, one per GPU), or
    uses the Ray instance this process has already started. shared_cache: the cache directory every worker reads
    and writes (default $FEWDIMS_CACHE or data/cache: right for a local cluster). max_runs: stop after that many
    records (then run again to go on). hook(config): called on the worker before each run (tests)."""
    from .cache import cache_root, cache_root_at
    from .cli import GRID_ORDER
    from .store import ResultStore

    ray = import_ray()
    experiments = list(experiments or GRID_ORDER)
    if workers is not None and workers < 1:
        raise FewdimsError(f"--workers must be at least 1, got {workers}")
    if max_runs is not None and max_runs < 1:
        raise FewdimsError(f"--max-runs must be at least 1, got {max_runs}")
    cache = Path(shared_cache).expanduser().resolve() if shared_cache else cache_root().resolve()
    restore = contextlib.ExitStack()
    restore.enter_context(cache_root_at(cache))  # the driver checks stage-A weights where the workers write them
    report = GridReport()
    t0 = time.perf_counter()
    started = False
    in_flight: dict = {}  # ObjectRef -> Job
    try:
        source = profile.source  # resolved once (the smoke profile's data is written into the cache here)
        if address is None and ray.is_initialized():
            pass  # a Ray instance this process started (a notebook, the tests): use it as it is
        elif address is None:
            gpus = local_gpus()
            per_run = cpus_per_run or (max(1, (os.cpu_count() or 1) // gpus) if gpus else
                                       default_cpus_per_run(profile))
            runs = workers or (gpus if gpus else max(1, (os.cpu_count() or 1) // per_run))
            # 'local': a new instance, even where `ray start` left one running (connect to that one with --ray auto)
            ray.init(address="local", num_cpus=runs * per_run, num_gpus=gpus, include_dashboard=False,
                     log_to_driver=True, configure_logging=False)
            started = True
            cpus_per_run = cpus_per_run or per_run
        else:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
            started = True
        resources = run_resources(ray.cluster_resources(), cpus_per_run, gpus_per_run, profile)
        report.resources = resources
        remote = ray.remote(execute).options(num_cpus=resources["CPU"], num_gpus=resources["GPU"],
                                             max_retries=max_retries, retry_exceptions=False)
        env = worker_env(cache)
        store = ResultStore(profile.name, store_root)
        progress = Progress(profile, store_root, resources["slots"], out,
                            threads=int(resources["CPU"]) if not resources["GPU"] else None)
        print(f"[grid] Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, "
              f"{ray.cluster_resources().get('GPU', 0):g} GPUs; each run asks for {resources['GPU']:g} GPU and "
              f"{resources['CPU']} CPU; {resources['slots']} runs at a time; cache {cache}", file=out, flush=True)
        submitted: set[str] = set()  # a run is submitted at most once per grid (Ray retries dead workers)
        failed_keys: set[str] = set()
        stopping = False
        while True:
            runner = plan(profile, experiments, store_root)
            flying = {j.key for j in in_flight.values()}
            for key, job in runner.jobs.items():
                if key not in submitted:
                    submitted.add(key)
                    in_flight[remote.remote(job, source, resources["CPU"], env, hook)] = job
                elif key not in flying and key not in failed_keys:
                    # computed in this grid, yet still wanted: an analysis failed on the worker too
                    failed_keys.add(key)
                    report.failed[job.config.label()] = _incomplete(store, job)
            report.stored = len(runner.recorded_s)  # distinct stored records the grid uses
            if not in_flight:
                progress.show(len(report.written), [], [], len(report.failed), force=True)
                report.waiting = [c.label() for c in runner.waiting]
                for label in report.waiting:
                    report.failed.setdefault(label, "its stage-A run's weights never appeared (see its failure)")
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=60.0)
            rest = [r for r in in_flight if r not in ready]
            if ready and rest:  # everything that finished meanwhile: one planning pass for them all
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                job = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - the run's own error, or its worker died max_retries+1 times
                    failed_keys.add(job.key)
                    report.failed[job.config.label()] = _error_text(err)
                    print(f"[grid] FAILED {job.config.label()}: {report.failed[job.config.label()]}", file=out,
                          flush=True)
                    continue
                _write(store, job, result)
                report.written.append(job.key)
                if WRITE_PAUSE_S:  # tests only: an interrupt then lands while the grid is surely unfinished
                    time.sleep(WRITE_PAUSE_S)
                report.durations[job.key] = result["seconds"]
                # the run's own time (as the cost model is calibrated), without a fresh worker's imports
                timings = result["result"].timings if "result" in result else {}
                progress.finished(job, timings.get("total_s") or result["seconds"])
                if max_runs is not None and len(report.written) >= max_runs:
                    stopping = True
            if stopping:
                report.interrupted = True
                _cancel(ray, in_flight, started)
                in_flight.clear()
                break
            pending = [j for k, j in runner.jobs.items() if k not in submitted]
            progress.show(len(report.written), list(in_flight.values()), pending, len(report.failed))
    except KeyboardInterrupt:
        report.interrupted = True
        print(f"\n[grid] interrupted: cancelling {len(in_flight)} runs in flight; "
              f"{len(report.written)} records written, all complete", file=out, flush=True)
        _cancel(ray, in_flight, started)
        raise
    finally:
        if started:
            ray.shutdown()
        restore.close()
        report.wall_s = time.perf_counter() - t0
    return report


def _cancel(ray, in_flight: dict, started: bool) -> None:
    """Stop what is in flight; nothing of it is written. A driver that started or joined the cluster ends it by
    disconnecting (ray.shutdown: Ray ends a finished job's tasks); in a Ray session it did not start, its tasks
    are cancelled by force (killing their workers: an interrupt raised inside a worker can leave it half-way
    through an import, broken for the runs after)."""
    if started:
        return
    for ref in list(in_flight):
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _error_text(err: BaseException) -> str:
    """The run's own exception (Ray wraps it), in one line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _incomplete(store, job: Job) -> str:
    record = store.load(job.config) or {}
    errors = record.get("extra", {}).get("analysis_errors") or []
    return "; ".join(errors) or "computed, but its record still lacks an analysis it was asked for"
