"""The grid on a local Ray cluster (fewdims.cluster): same records as the sequential grid, adaptive stages,
a worker killed mid-run, a failing run, an interrupted grid that resumes.

The Ray tests need the optional extra: pip install -e '.[cluster]' (`make install` installs it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fewdims.cli import GRID_ORDER
from fewdims.errors import FewdimsError
from fewdims.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
RAY_REASON = "could not import 'ray': the cluster tests need the extra: pip install -e '.[cluster]' (make install)"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Results and cache under tmp_path, the smoke profile's generated data (not $FEWDIMS_GLUE_DIR)."""
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    monkeypatch.setenv("FEWDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEWDIMS_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="module")
def ray_module():
    return pytest.importorskip("ray", reason=RAY_REASON)


@pytest.fixture(scope="module")
def ray(ray_module):
    """One local Ray cluster of 2 one-CPU workers for the in-process tests: its workers stay warm between the
    tests (each grid hands its settings, e.g. the cache directory, to every task)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's hooks travel to the workers
    ray_module.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray_module
    ray_module.shutdown()


def records(root: Path, profile: str = "smoke") -> dict:
    """{key: record} of every stored record."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / profile).glob("*/*.json"))}


def leftovers(root: Path) -> list[Path]:
    """Temporary files an interrupted write would leave behind."""
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" in p.name]


def comparable(record: dict) -> dict:
    """What must not depend on how the run was scheduled: metrics, per-epoch history, analyses (less the seconds
    the pair scan took) and the data's fingerprints (less the path of the generated data)."""
    def strip(x, drop):
        if isinstance(x, dict):
            return {k: strip(v, drop) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v, drop) for v in x]
        return x

    return {"metrics": record["metrics"], "history": record["history"],
            "extra": strip(record["extra"], {"seconds"}), "data": strip(record["data"], {"source"})}


class Hook:
    """Called on the worker before each run: writes <pid_dir>/<key>.<pid>.pid; raises for the run labelled
    `failing`; holds the first attempt of the run labelled `victim` so that the test can kill its worker."""

    def __init__(self, pid_dir, victim=None, failing=None, hold_s=120.0):
        self.pid_dir, self.victim, self.failing, self.hold_s = str(pid_dir), victim, failing, hold_s

    def __call__(self, config):
        pid_dir = Path(self.pid_dir)
        pid_dir.mkdir(parents=True, exist_ok=True)
        first = not list(pid_dir.glob(f"{config.key()}.*.pid"))
        (pid_dir / f"{config.key()}.{os.getpid()}.pid").write_text(config.label())
        if config.label() == self.failing:
            raise RuntimeError("injected failure")
        if config.label() == self.victim and first:
            time.sleep(self.hold_s)  # killed meanwhile


# -- without a cluster: planning, resources, the missing extra ---------------------------------------------------
def test_planning_pass_defers_dependent_stages(env):
    """A planning pass submits only what can run now: no leave-one-out, effective or headline run is ranked from
    placeholders, and stage B of cross-fine-tuning waits for stage A's weights."""
    from fewdims.chapters import open_chapter
    from fewdims.cluster import plan
    from fewdims.runner import Runner

    profile = load_profile("smoke")
    runner = plan(profile, GRID_ORDER)
    assert runner.defer_dependents and runner.dry_run and not runner.reused
    sec = profile.section("dimension")
    dims_jobs = [j for j in runner.jobs.values() if j.config.dims is not None and j.config.layer is None]
    per_task = len(sec["ks"]) * sec["random_subsets"]  # the random sets only: nothing adaptive yet
    assert len(dims_jobs) == per_task * len(profile.tasks)
    assert {c.label() for c in runner.waiting} == {"from-sst2/rte/cls/linear/seed0", "from-rte/sst2/cls/linear/seed0"}
    assert not any(j.config.init_from for j in runner.jobs.values())
    baselines = [j for j in runner.jobs.values() if j.config.save_weights]
    assert baselines and all({a.name for a in j.analyses} >= {"layer_analysis", "pair_scan_analysis"}
                             for j in baselines)
    # a dry run still ranks placeholders for its cost estimate: it lists the adaptive runs too
    dry = Runner(profile, dry_run=True, verbose=False)
    open_chapter("dimension", profile, dry).results()
    assert len([c for c in dry.planned if c.dims is not None]) > len(dims_jobs)


def test_run_resources():
    from fewdims.cluster import run_resources

    smoke, paper = load_profile("smoke"), load_profile("paper")
    assert run_resources({"CPU": 2}, 1, None, smoke) == {"CPU": 1, "GPU": 0.0, "slots": 2}
    assert run_resources({"CPU": 64}, None, None, smoke)["slots"] == 64
    assert run_resources({"CPU": 64}, None, None, paper) == {"CPU": 4, "GPU": 0.0, "slots": 16}
    assert run_resources({"CPU": 64, "GPU": 8}, None, None, paper) == {"CPU": 8, "GPU": 1.0, "slots": 8}
    assert run_resources({"CPU": 64, "GPU": 8}, 2, 0.5, paper)["slots"] == 16
    with pytest.raises(FewdimsError, match="cluster has 0 GPUs"):
        run_resources({"CPU": 8}, None, 1, paper)


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    from fewdims import cluster

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FewdimsError, match=r"\.\[cluster\]"):
        cluster.import_ray()


def test_cli_exit_status(env, monkeypatch, capsys):
    """`grid --ray`: status 1 and the failed runs listed when a run failed, 130 when interrupted, 0 otherwise."""
    from fewdims import cli, cluster

    asked = {}

    def fake(profile, experiments, **kwargs):
        asked.update(kwargs, experiments=experiments)
        return cluster.GridReport(written=["k"], failed=dict(failed), stored=1, resources={"CPU": 1, "GPU": 0.0,
                                                                                          "slots": 2})

    monkeypatch.setattr(cluster, "run_grid", fake)
    failed = {}
    cli.main(["grid", "--profile", "smoke", "--ray", "--workers", "3", "--experiments", "token"])
    assert asked["address"] is None and asked["workers"] == 3 and asked["experiments"] == ["token"]
    assert "1 runs computed on Ray" in capsys.readouterr().out
    cli.main(["grid", "--profile", "smoke", "--ray", "HEAD:6379", "--gpus-per-run", "0.5"])
    assert asked["address"] == "HEAD:6379" and asked["gpus_per_run"] == 0.5
    failed = {"rte/mean/linear/seed0": "RuntimeError: boom"}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grid", "--profile", "smoke", "--ray", "local"])
    assert exit_.value.code == 1 and "rte/mean/linear/seed0: RuntimeError: boom" in capsys.readouterr().out

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cluster, "run_grid", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grid", "--profile", "smoke", "--ray"])
    assert exit_.value.code == 130 and "only complete records" in capsys.readouterr().err


# -- on a local Ray cluster --------------------------------------------------------------------------------------
def test_cli_ctrl_c_leaves_complete_records_and_resumes(env, ray):
    """Ctrl-C on the driver (`grid --ray`: a new local cluster of its own): exit 130, only complete records; the
    grid goes on from there."""
    experiments = ["token", "dimension"]  # the dimension grid's adaptive stages take several rounds after the first
    cmd = [sys.executable, "-m", "fewdims", "grid", "--profile", "smoke", "--task", "rte", "--experiments",
           *experiments, "--ray", "--workers", "2", "--cpus-per-run", "1"]
    # the driver pauses after each record it writes, so the interrupt surely lands while runs are left
    # SIGINT's default disposition in the driver, as in a terminal: a shell starts a background job (`make test &`)
    # with SIGINT ignored, its children inherit that, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "FEWDIMS_CLUSTER_WRITE_PAUSE_S": "30"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not records(env / "results") and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
    output = proc.communicate(timeout=240)[0]  # generous: a loaded machine slows Ray's shutdown (60 s was not enough)
    assert proc.returncode == 130, output
    assert "[grid] Ray: 2 CPUs" in output and "interrupted" in output
    interrupted = records(env / "results")
    assert interrupted and all(r["metrics"] and r["environment"] for r in interrupted.values())
    assert not leftovers(env / "results")
    from fewdims.cluster import run_grid

    profile = load_profile("smoke", task="rte")
    report = run_grid(profile, experiments, workers=2, cpus_per_run=1)
    assert report.ok and report.written and not set(report.written) & set(interrupted)
    assert len(records(env / "results")) == len(interrupted) + len(report.written)
    assert not run_grid(profile, experiments, workers=2, cpus_per_run=1).written  # nothing left


def test_ray_grid_equals_sequential_grid(env, ray):
    """The whole smoke grid (adaptive stages and cross-fine-tuning included) on 2 workers of one thread each:
    the same runs, and every record equal to the sequential grid's (run with one thread too)."""
    from fewdims.cluster import run_grid

    seq_env = {**os.environ, "FEWDIMS_RESULTS": str(env / "seq-results"), "FEWDIMS_CACHE": str(env / "seq-cache"),
               "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fewdims", "grid", "--profile", "smoke"], env=seq_env, check=True,
                   capture_output=True, cwd=ROOT, timeout=300)
    seq_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = run_grid(load_profile("smoke"), workers=2, cpus_per_run=1)
    ray_s = time.perf_counter() - t0
    print(f"smoke grid: sequential {seq_s:.1f} s, Ray with 2 workers {ray_s:.1f} s (both with process start-up)")
    assert report.ok and report.resources == {"CPU": 1, "GPU": 0.0, "slots": 2}
    seq, par = records(env / "seq-results"), records(env / "results")
    assert set(par) == set(seq) and len(par) == len(report.written) == len(set(report.written))
    for key, record in par.items():
        assert comparable(record) == comparable(seq[key]), record["label"]
        assert record["timings"]["threads"] == 1
    labels = {r["label"] for r in par.values()}
    assert {"from-sst2/rte/cls/linear/seed0", "from-rte/sst2/cls/linear/seed0"} <= labels  # stage B ran
    assert len(labels) > 50  # leave-one-out, effective and headline runs are in
    assert not leftovers(env)
    again = run_grid(load_profile("smoke"), workers=2, cpus_per_run=1)  # nothing left to do
    assert again.ok and not again.written and again.stored == len(par)


def test_killed_worker_is_retried_and_failing_run_is_reported(env, ray):
    from fewdims.cluster import run_grid

    profile = load_profile("smoke", task="rte")
    victim, failing = "rte/cls/linear/seed0", "rte/mean/linear/seed0"  # the victim is the baseline (analyses)
    pid_dir = env / "pids"
    victim_key = profile.base_config("rte", seed=0).key()
    killed = []

    def killer():
        deadline = time.time() + 200
        while time.time() < deadline and not killed:
            for path in pid_dir.glob(f"{victim_key}.*.pid"):
                pid = int(path.name.split(".")[1])
                time.sleep(0.5)  # well inside the hook's hold
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_grid(profile, ["token"], workers=2, cpus_per_run=1, hook=Hook(pid_dir, victim, failing))
    thread.join(timeout=5)
    assert killed, "the victim's worker never started"
    attempts = sorted(pid_dir.glob(f"{victim_key}.*.pid"))
    assert len(attempts) == 2 and killed[0] in {int(p.name.split(".")[1]) for p in attempts}
    stored = records(env / "results")
    assert report.written.count(victim_key) == 1 and victim_key in stored
    assert stored[victim_key]["extra"].get("layers") and "analysis_errors" not in stored[victim_key]["extra"]
    assert list(report.failed) == [failing] and "injected failure" in report.failed[failing]
    assert not report.ok and len(stored) == 6 == len(report.written)  # token on rte: 7 runs, one failed
    assert failing not in {r["label"] for r in stored.values()}
    assert failing in report.summary()


def test_interrupted_grid_computes_only_what_is_missing(env, ray):
    """Stopped after 3 records, the grid computes the rest when run again (stage B after stage A's weights)."""
    from fewdims.cluster import run_grid

    profile = load_profile("smoke", task="rte")
    first = run_grid(profile, ["token", "cross_finetune"], workers=2, cpus_per_run=1, max_runs=3)
    assert first.interrupted and not first.failed and len(first.written) >= 3
    assert len(records(env / "results")) == len(first.written) and not leftovers(env)
    second = run_grid(profile, ["token", "cross_finetune"], workers=2, cpus_per_run=1)
    assert second.ok and not set(first.written) & set(second.written)
    stored = records(env / "results")
    assert len(stored) == len(first.written) + len(second.written) == 10  # token 7 + the sst2 baseline + 2 B runs
    assert second.stored == 10
