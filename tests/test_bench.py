"""The training benchmark (bench/bench_training.py): its parsing, aggregation, spread verdict, JSON and last line on
fake per-run results (no training), and one end-to-end sitting on the tiny model and the tiny GLUE fixture (slow).
The fast training forward it measures is tested in test_fastbert.py."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fewdims.fixtures import write_tiny_glue

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench" / "bench_training.py")
bt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bt)

NUMBER = r"\d+\.\d+"
LAST_LINE = re.compile(rf"speedup_vs_trainer=({NUMBER}|not_run|failed) speedup_vs_tuned_trainer=({NUMBER}|not_run|failed) "
                       rf"speedup_vs_tuned_kept_memory=({NUMBER}|not_run|failed) "
                       rf"metric_delta=([+-]{NUMBER}|not_run|failed)")
ALL = list(bt.TRAINERS)


# --------------------------------------------------------------------------------------------------------------
# parsing and planning
# --------------------------------------------------------------------------------------------------------------
def test_train_sizes_default_to_a_budget_where_every_trainer_learns():
    assert bt.parse_train_sizes(None, ["sst2", "rte"]) == {"sst2": 8000, "rte": None}  # None: RTE's 2,490 rows
    assert bt.parse_train_sizes(None, ["cola"]) == {"cola": 8000}


def test_train_sizes_one_value_or_task_pairs():
    assert bt.parse_train_sizes("64", ["sst2", "rte"]) == {"sst2": 64, "rte": 64}
    assert bt.parse_train_sizes("all", ["sst2", "rte"]) == {"sst2": None, "rte": None}
    assert bt.parse_train_sizes("rte=100", ["sst2", "rte"]) == {"sst2": 8000, "rte": 100}  # sst2 keeps its default
    assert bt.parse_train_sizes("SST-2=all, rte:2_000", ["sst2", "rte"]) == {"sst2": None, "rte": 2000}
    assert bt.parse_train_sizes("cola=5", ["sst2"]) == {"sst2": 8000}  # a task not in --tasks: unused
    for bad in ("0", "-3", "many", "sst2=", "nosuchtask=5", "sst2=1.5"):
        with pytest.raises(ValueError):
            bt.parse_train_sizes(bad, ["sst2", "rte"])


def test_seeds_tasks_and_trainers():
    assert bt.parse_seeds("3") == [0, 1, 2]
    assert bt.parse_seeds("0,5,7") == [0, 5, 7]
    for bad in ("0", "-1", "x", "1,1", ","):
        with pytest.raises(ValueError):
            bt.parse_seeds(bad)
    assert bt.parse_tasks("SST-2, rte,sst2") == ["sst2", "rte"]
    with pytest.raises(ValueError):
        bt.parse_tasks("sst2,nosuchtask")
    assert bt.parse_trainers("tuned,fewdims,tuned") == ["tuned", "fewdims"]
    assert bt.parse_trainers("fewdims_default_malloc") == ["fewdims_default_malloc"]
    for bad in ("", "fewdims,hf"):
        with pytest.raises(ValueError):
            bt.parse_trainers(bad)


def test_runs_go_seed_major_so_load_drift_falls_on_every_trainer():
    plan = bt.plan_runs([0, 1], ["sst2", "rte"], ["fewdims", "trainer"])
    assert [(r["seed"], r["task"], r["trainer"]) for r in plan] == [
        (0, "sst2", "fewdims"), (0, "sst2", "trainer"), (0, "rte", "fewdims"), (0, "rte", "trainer"),
        (1, "sst2", "fewdims"), (1, "sst2", "trainer"), (1, "rte", "fewdims"), (1, "rte", "trainer")]


def test_estimate_uses_a_previous_results_file_of_the_same_model_and_threads(tmp_path):
    sizes = {"sst2": (8000, 872)}
    run = {"seed": 0, "task": "sst2", "trainer": "trainer"}
    nominal, origin = bt.estimate_run_seconds(run, sizes, 3, "minilm", 128)
    assert origin == "nominal" and 30 * 60 < nominal < 60 * 60  # ~10 ex/s: 8,000 x 3 epochs ~ 40 min
    previous = {"args": {"model": "minilm", "threads": 2}, "machine": {"host": "h"}, "started": "2025-01-01",
                "runs": [fake_run("sst2", "trainer", 0, 0.9, speed=20.0, eval_speed=100.0, process_s=50.0),
                         fake_run("sst2", "trainer", 1, 0.9, error="boom")]}
    (tmp_path / "old.json").write_text(json.dumps(previous))
    (tmp_path / "other-model.json").write_text(json.dumps({**previous, "args": {"model": "tiny", "threads": 2}}))
    (tmp_path / "broken.json").write_text("{not json")
    rates, used = bt.previous_rates(tmp_path, "minilm", 2, "h")
    assert used == [str(tmp_path / "old.json")]
    train_rate, eval_rate, other = rates[("trainer", "sst2")]
    assert (train_rate, eval_rate) == (20.0, 100.0) and other == pytest.approx(50.0 - 10.0 - 2.0)
    seconds, origin = bt.estimate_run_seconds(run, sizes, 3, "minilm", 128, rates)
    assert origin == "previous"
    assert seconds == pytest.approx(8000 * 3 / 20.0 + 872 / 100.0 + 38.0 + 2.0)
    assert bt.previous_rates(tmp_path, "minilm", 4, "h") == ({}, [])  # other thread count: nominal rates


def test_dry_run_prints_the_plan_and_estimate_and_writes_nothing(tmp_path, capsys):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "results" / "x.json"
    assert bt.main(["--dry-run", "--glue-dir", str(glue), "--only", "fewdims,tuned", "--seeds", "2",
                    "--train-size", "sst2=20", "--out", str(out), "--results-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "train_size=sst2=20,rte=all" in text and "rte 48 train" in text
    assert "# plan: 8 runs (2 seeds x 2 tasks x 2 trainers: fewdims,tuned)" in text
    assert "# estimated total: " in text
    assert not out.exists()


# --------------------------------------------------------------------------------------------------------------
# aggregation, verdict and last line on fake runs
# --------------------------------------------------------------------------------------------------------------
def fake_run(task, trainer, seed, metric, *, speed=100.0, eval_speed=300.0, error=None, process_s=30.0, **extra):
    if error:
        return {"task": task, "trainer": trainer, "seed": seed, "error": error, "process_s": 1.0}
    run = {"task": task, "trainer": trainer, "seed": seed, "metric": metric, "metric_name": "accuracy",
           "train_examples_per_s": speed, "eval_examples_per_s": eval_speed, "train_s": 10.0, "eval_s": 2.0,
           "wall_s": 14.0, "process_s": process_s, "peak_rss_mb": 500.0 + seed, "n_train": 100,
           "mixed_precision": "bf16", **extra}
    if trainer.startswith("fewdims"):
        run["train_gflops_per_s"] = 50.0 + seed
    return run


# per trainer: train examples/s per task, dev accuracy per (task, seed)
SPEED = {"fewdims": {"sst2": 200.0, "rte": 60.0}, "trainer": {"sst2": 10.0, "rte": 10.0},
         "tuned": {"sst2": 50.0, "rte": 20.0}, "tuned_kept_memory": {"sst2": 80.0, "rte": 30.0}}
ACC = {"sst2": {"fewdims": [0.90, 0.91, 0.92], "trainer": [0.89, 0.90, 0.91], "tuned": [0.895, 0.905, 0.915],
                "tuned_kept_memory": [0.895, 0.905, 0.915]},
       "rte": {"fewdims": [0.64, 0.66, 0.68], "trainer": [0.60, 0.63, 0.66], "tuned": [0.61, 0.64, 0.67],
               "tuned_kept_memory": [0.61, 0.64, 0.67]}}


def fake_record(trainers=ALL, seeds=(0, 1, 2), acc=ACC, failing=(), peak=1000.0):
    runs = [fake_run(r["task"], r["trainer"], r["seed"], acc[r["task"]][r["trainer"]][r["seed"]],
                     speed=SPEED[r["trainer"]][r["task"]] * (1 + 0.01 * r["seed"]),
                     error="RuntimeError: boom" if r["trainer"] in failing else None)
            for r in bt.plan_runs(list(seeds), ["sst2", "rte"], list(trainers))]
    return {"plan": {"tasks": ["sst2", "rte"], "trainers": list(trainers), "seeds": list(seeds)}, "runs": runs,
            "matmul_peak": {"gflops_per_s": peak}}


def test_aggregate_means_stds_peak_memory_and_share_of_peak():
    table = bt.summarize(fake_record())["table"]
    f = table["rte"]["fewdims"]
    assert f["runs"] == 3 and f["failed"] == 0 and f["seeds"] == [0, 1, 2]
    assert f["train_examples_per_s"]["mean"] == pytest.approx(60.0 * 1.01)
    assert f["train_examples_per_s"]["std"] == pytest.approx(0.6)  # sample std of 60, 60.6, 61.2
    assert f["metric"]["mean"] == pytest.approx(66.0) and f["metric"]["std"] == pytest.approx(2.0)  # points
    assert f["peak_rss_mb"] == {"max": 502.0, "mean": 501.0}
    assert f["share_of_peak"]["mean"] == pytest.approx(0.051)
    assert "share_of_peak" not in table["rte"]["trainer"]
    assert bt.mean_std([1.0]) == {"n": 1, "mean": 1.0, "std": None, "values": [1.0]}
    assert bt.mean_std([float("nan"), None])["mean"] is None
    lines = bt.format_table(table)
    assert len(lines) == 1 + 2 * 4 and "66.00 ± 2.00" in lines[5]


def test_pooled_std_takes_each_group_about_its_own_mean():
    std, groups, n = bt.pooled_std([[1.0, 3.0], [10.0, 12.0, 14.0], [5.0]])
    assert (groups, n) == (2, 5)
    assert std == pytest.approx(math.sqrt((2.0 + 8.0) / 3))
    assert bt.pooled_std([[1.0], []]) == (None, 0, 0)


def test_final_figures_last_line_and_within_spread_statement():
    summary = bt.summarize(fake_record())
    final, comparisons = summary["final"], summary["comparisons"]
    # speedups: fewdims' mean train ex/s over the other's, the smallest over the tasks
    assert comparisons["sst2"]["speedup_vs_trainer"] == pytest.approx(20.0)
    assert final["speedup_vs_trainer"] == pytest.approx(6.0)
    assert final["speedup_vs_tuned_trainer"] == pytest.approx(3.0)
    assert final["speedup_vs_tuned_kept_memory"] == pytest.approx(2.0)
    # metric_delta: fewdims' mean minus the run_glue-style Trainer's, points, the mean over the tasks
    assert comparisons["sst2"]["metric_delta"] == pytest.approx(1.0)
    assert comparisons["rte"]["metric_delta"] == pytest.approx(3.0)
    assert final["metric_delta"] == pytest.approx(2.0) and final["metric_delta_worst_task"] == pytest.approx(1.0)
    line = summary["last_line"]
    assert line == ("speedup_vs_trainer=6.00 speedup_vs_tuned_trainer=3.00 speedup_vs_tuned_kept_memory=2.00 "
                    "metric_delta=+2.00")
    assert LAST_LINE.fullmatch(line)
    # rte: the Trainers' pooled std is 3.0 points (trainer 3, tuned 3, kept 3): +3.00 <= 6.00 lies within
    spread = comparisons["rte"]["spread"]
    assert spread["pooled_trainer_std"] == pytest.approx(3.0) and spread["within"] is True
    # sst2: pooled std 1.0: +1.00 within; overall: pooled over all 6 groups, sqrt((3*2*1 + 3*2*9)/12) = sqrt(5)
    assert final["spread"]["pooled_trainer_std"] == pytest.approx(math.sqrt(5.0))
    assert final["spread"]["within"] is True and final["spread"]["runs"] == 18
    statement = summary["spread_statement"]
    assert statement.startswith("metric_delta=+2.00 points (mean over 2 tasks) lies within the Trainers' own "
                                "seed spread: |delta| <= 2 x pooled std = 2 x 2.24 = 4.47 points")
    assert "per task: sst2 +1.00 within (2 x 1.00 = 2.00), rte +3.00 within (2 x 3.00 = 6.00)" in statement
    text = bt.task_statement("rte", comparisons["rte"], summary["table"]["rte"])
    assert text.startswith("task=rte metric_delta=+3.00 points (fewdims 66.00 ± 2.00, trainer 63.00 ± 3.00")
    assert "lies within" in text


def test_a_delta_beyond_twice_the_trainers_spread_is_outside():
    acc = {task: dict(per) for task, per in ACC.items()}
    acc["sst2"] = {**acc["sst2"], "fewdims": [0.94, 0.95, 0.96]}  # +5 points against a pooled std of 1
    summary = bt.summarize(fake_record(acc=acc))
    assert summary["comparisons"]["sst2"]["spread"]["within"] is False
    assert "sst2 +5.00 outside (2 x 1.00 = 2.00)" in summary["spread_statement"]
    assert summary["final"]["spread"]["within"] is True  # mean +4.0 <= 2 x sqrt(5)
    assert bt.task_statement("sst2", summary["comparisons"]["sst2"], summary["table"]["sst2"]).endswith(
        "lies outside the Trainers' own seed spread: |delta| > 2 x pooled std = 2 x 1.00 = 2.00 points "
        "(9 Trainer runs in 3 groups)")


def test_one_seed_cannot_tell_the_spread():
    summary = bt.summarize(fake_record(seeds=(0,)))
    assert summary["final"]["spread"]["within"] is None
    assert "cannot tell whether it lies within" in summary["spread_statement"]
    assert LAST_LINE.fullmatch(summary["last_line"])


def test_a_sitting_without_the_slow_trainer_says_not_run():
    summary = bt.summarize(fake_record(trainers=("fewdims", "tuned", "tuned_kept_memory")))
    final = summary["final"]
    assert final["speedup_vs_trainer"] == "not_run" and final["metric_delta"] == "not_run"
    assert summary["last_line"] == ("speedup_vs_trainer=not_run speedup_vs_tuned_trainer=3.00 "
                                    "speedup_vs_tuned_kept_memory=2.00 metric_delta=not_run")
    assert LAST_LINE.fullmatch(summary["last_line"])
    # the verdict falls back to the tuned Trainer, and says so
    statement = summary["spread_statement"]
    assert statement.startswith("metric_delta=not_run (the run_glue-style Trainer was not run); fewdims minus the "
                                "tuned Trainer instead: +1.25 points (mean over 2 tasks) lies within")
    assert summary["comparisons"]["rte"]["metric_delta_tuned"] == pytest.approx(2.0)


def test_without_fewdims_every_figure_is_not_run_and_failed_trainers_read_failed():
    summary = bt.summarize(fake_record(trainers=("trainer", "tuned")))
    assert summary["last_line"] == ("speedup_vs_trainer=not_run speedup_vs_tuned_trainer=not_run "
                                    "speedup_vs_tuned_kept_memory=not_run metric_delta=not_run")
    assert "nothing to judge" in summary["spread_statement"]
    summary = bt.summarize(fake_record(failing=("trainer",)))
    assert summary["table"]["sst2"]["trainer"]["failed"] == 3 and summary["table"]["sst2"]["trainer"]["runs"] == 0
    assert summary["last_line"].startswith("speedup_vs_trainer=failed speedup_vs_tuned_trainer=3.00")
    assert summary["last_line"].endswith("metric_delta=failed") and LAST_LINE.fullmatch(summary["last_line"])
    assert summary["spread_statement"].startswith("metric_delta=failed (the run_glue-style Trainer failed)")


# --------------------------------------------------------------------------------------------------------------
# files and machine
# --------------------------------------------------------------------------------------------------------------
def test_results_path_json_and_machine_info(tmp_path):
    started = dt.datetime(2025, 3, 4, 10, 0)
    path = bt.default_out_path(started, "box.example.org", tmp_path)
    assert path == tmp_path / "2025-03-04-box.json"
    record = {**fake_record(), **bt.summarize(fake_record()), "nan": float("nan"), "pair": (1, float("inf"))}
    bt.write_record(path, record)
    loaded = json.loads(path.read_text())  # strict JSON: NaN and infinities became null
    assert loaded["nan"] is None and loaded["pair"] == [1, None]
    assert loaded["last_line"] == record["last_line"] and loaded["final"]["speedup_vs_trainer"] == pytest.approx(6.0)
    assert not list(tmp_path.glob("*.tmp"))
    assert bt.default_out_path(started, "box", tmp_path) == tmp_path / "2025-03-04-box-2.json"  # never overwrites
    assert bt.cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n") == \
        "Intel(R) Xeon(R) Platinum 8480+"
    info = bt.machine_info(2)
    assert info["threads"] == 2 and info["cores"] >= 1 and info["torch"] and info["cpu_model"]
    assert info["loadavg_before"] is None or len(info["loadavg_before"]) == 3


# --------------------------------------------------------------------------------------------------------------
# resuming an interrupted sitting (workers faked: no training)
# --------------------------------------------------------------------------------------------------------------
def fake_workers(monkeypatch, stop_after=None, fail=(), peak=1000.0):
    """bt.in_fresh_process without processes: fake runs; Ctrl-C after `stop_after` training runs; `fail`: the
    (trainer, seed) pairs whose run raises. Returns the list of training runs asked for."""
    asked = []

    def worker(kind, params):
        if kind == "model_dir":
            return {"model_dir": "unused"}
        if kind == "peak":
            return {"gflops_per_s": peak, "n": 8, "reps": 1, "threads": params["threads"]}
        if stop_after is not None and len(asked) == stop_after:
            raise KeyboardInterrupt
        asked.append((params["seed"], params["task"], kind))
        if (kind, params["seed"]) in fail:
            raise RuntimeError(f"{kind} worker failed: boom")
        run = fake_run(params["task"], kind, params["seed"], 0.8)
        return {k: v for k, v in run.items() if k not in ("task", "trainer", "seed")}

    monkeypatch.setattr(bt, "in_fresh_process", worker)
    monkeypatch.setattr(bt, "other_load", lambda seconds=2.0: 0.0)
    return asked


def test_an_interrupted_sitting_resumes_with_its_own_plan_and_only_the_runs_left(tmp_path, monkeypatch):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    common = ["--glue-dir", str(glue), "--results-dir", str(tmp_path)]
    fake_workers(monkeypatch, stop_after=3, fail={("tuned", 0)})
    assert bt.main([*common, "--tasks", "sst2", "--train-size", "20", "--seeds", "2", "--epochs", "1",
                    "--only", "fewdims,tuned", "--out", str(out)]) == 130
    first = json.loads(out.read_text())
    assert not first["complete"] and len(first["runs"]) == 3 and first["runs"][1].get("error")
    # another plan argument than the sitting's, or --out, is an error that names it; nothing is written
    for extra, says in ((["--epochs", "2"], "--epochs 2"), (["--out", str(out)], "leave out --out")):
        with pytest.raises(SystemExit):
            bt.main([*common, "--resume", str(out), *extra])
        assert json.loads(out.read_text()) == first
    asked = fake_workers(monkeypatch, peak=500.0)
    assert bt.main([*common, "--resume", str(out), "--seeds", "2"]) == 0  # the sitting's own value: fine
    assert asked == [(0, "sst2", "tuned"), (1, "sst2", "tuned")]  # the failed run again, then the one never run
    done = json.loads(out.read_text())
    assert done["complete"] and len(done["sittings"]) == 2 and len(done["replaced_runs"]) == 1
    assert [(r["seed"], r["trainer"], r["sitting"]) for r in done["runs"]] == \
        [(0, "fewdims", 0), (1, "fewdims", 0), (0, "tuned", 1), (1, "tuned", 1)]
    # each fewdims run against its own sitting's peak (50 + seed GFLOP/s over 1000)
    assert done["table"]["sst2"]["fewdims"]["share_of_peak"]["mean"] == pytest.approx(0.0505)
    with pytest.raises(SystemExit):  # a complete sitting cannot be resumed
        bt.main([*common, "--resume", str(out)])


def test_a_resumed_plan_estimates_only_what_is_left_even_when_a_task_is_done(tmp_path, monkeypatch, capsys):
    # seed-major order: sst2 fewdims, sst2 trainer, rte fewdims, rte trainer; stopped after sst2
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    common = ["--glue-dir", str(glue), "--results-dir", str(tmp_path)]
    monkeypatch.setattr(bt, "estimate_run_seconds",
                        lambda run, *a, **k: ({"fewdims": 60.0, "trainer": 600.0}[run["trainer"]], "nominal"))
    fake_workers(monkeypatch, stop_after=2)
    assert bt.main([*common, "--tasks", "sst2,rte", "--train-size", "20", "--seeds", "1", "--epochs", "1",
                    "--trainers", "fewdims,trainer", "--out", str(out)]) == 130
    capsys.readouterr()
    asked = fake_workers(monkeypatch)
    assert bt.main([*common, "--resume", str(out)]) == 0  # was a KeyError on ('trainer', 'sst2')
    printed = capsys.readouterr().out
    assert "trainer                per run: rte 0:10:00" in printed and "sst2 0:" not in printed
    assert "the run_glue-style Trainer is 0:10:00 of it" in printed
    assert asked == [(0, "rte", "fewdims"), (0, "rte", "trainer")]


def test_hours_ends_the_sitting_before_a_run_that_would_pass_the_limit(tmp_path, monkeypatch, capsys):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    common = ["--glue-dir", str(glue), "--results-dir", str(tmp_path)]
    clock = [0.0]  # each training run takes 3,000 s of a fake clock, against an estimate of 3,600 s
    monkeypatch.setattr(bt, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], sleep=lambda s: None))
    monkeypatch.setattr(bt, "estimate_run_seconds", lambda *a, **k: (3600.0, "nominal"))
    asked = fake_workers(monkeypatch)
    real_worker = bt.in_fresh_process

    def timed(kind, params):
        if kind not in ("model_dir", "peak"):
            clock[0] += 3000.0
        return real_worker(kind, params)

    monkeypatch.setattr(bt, "in_fresh_process", timed)
    plan = [*common, "--tasks", "sst2", "--train-size", "20", "--seeds", "2", "--only", "fewdims,tuned"]
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SystemExit):
            bt.main([*plan, "--out", str(out), "--hours", bad])
    assert not out.exists()
    # runs 1-2 fit in 2 h (the second at the pace of the first: 3,000 s); a third would end at 9,000 s
    assert bt.main([*plan, "--out", str(out), "--hours", "2"]) == 0
    first = json.loads(out.read_text())
    assert len(asked) == 2 and not first["complete"] and "2 runs left" in first["stopped"]
    assert f"continue with --resume {out}" in capsys.readouterr().out
    assert bt.main([*common, "--resume", str(out)]) == 0
    done = json.loads(out.read_text())
    assert done["complete"] and len(asked) == 4 and "stopped" not in done


def test_resume_refuses_another_cpu_and_unreadable_files(tmp_path, monkeypatch, capsys):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    common = ["--glue-dir", str(glue), "--results-dir", str(tmp_path)]
    fake_workers(monkeypatch, stop_after=1)
    bt.main([*common, "--tasks", "sst2", "--train-size", "20", "--seeds", "1", "--only", "fewdims,tuned",
             "--out", str(out)])
    record = json.loads(out.read_text())
    record["machine"]["cpu_model"] = "another CPU"
    out.write_text(json.dumps(record))
    fake_workers(monkeypatch)
    assert bt.main([*common, "--resume", str(out)]) == 2
    assert "would mix CPUs" in capsys.readouterr().err
    assert json.loads(out.read_text()) == record
    (tmp_path / "bad.json").write_text("{not json")
    for path in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(SystemExit):
            bt.main([*common, "--resume", str(path)])


# --------------------------------------------------------------------------------------------------------------
# end to end (tiny model, tiny fixture; every run a fresh interpreter, so ~2 minutes on a small machine)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_training_sitting_ends_with_the_verdict_and_the_summary_line(tmp_path):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    env = {**os.environ, "FEWDIMS_CACHE": str(tmp_path / "cache"), "FEWDIMS_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--model", "tiny", "--train-size", "32",
         "--epochs", "1", "--seeds", "2", "--tasks", "sst2", "--glue-dir", str(glue), "--out", str(out),
         "--peak-n", "256", "--peak-seconds", "0.2", "--results-dir", str(tmp_path),
         "--threads", "1"],  # tiny ops gain nothing from threads; on a busy machine two threads stall
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("# bench_training: tasks=sst2 train_size=sst2=32")
    assert any(line.startswith("# estimated total: ") for line in lines)
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert lines[-2].startswith("metric_delta=") and "seed spread" in lines[-2]
    runs = [line for line in lines if re.match(r"task=sst2 trainer=\S+ +seed=\d", line)]
    assert [(re.search(r"trainer=(\S+)", r).group(1), re.search(r"seed=(\d)", r).group(1)) for r in runs] == \
        [(k, s) for s in "01" for k in ALL]  # seed-major
    record = json.loads(out.read_text())
    assert record["complete"] and len(record["runs"]) == 8 and not any(r.get("error") for r in record["runs"])
    for run in record["runs"]:
        assert run["train_examples_per_s"] > 0 and run["peak_rss_mb"] > 0 and 0 <= run["metric"] <= 1
    assert record["matmul_peak"]["gflops_per_s"] > 0
    assert record["table"]["sst2"]["fewdims"]["share_of_peak"]["mean"] > 0
    assert record["machine"]["cpu_model"] and record["machine"]["loadavg_after"] is not None
    assert record["last_line"] == lines[-1] and record["spread_statement"] == lines[-2]
    assert float(LAST_LINE.fullmatch(lines[-1]).group(1)) == pytest.approx(
        record["final"]["speedup_vs_trainer"], abs=0.01)


def test_ab_train_step_times_every_variant_and_writes_json(tmp_path):
    """The A/B step bench on the tiny model: every variant (headroom modifiers included) runs on the same batches
    and lands in the JSON with its own timings."""
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "ab.json"
    variants = ["fast+foldclip", "fast+foldclip+nodropout+noembgrad", "fast+foldclip+nostep", "hf"]
    env = {**os.environ, "FEWDIMS_CACHE": str(tmp_path / "cache"), "FEWDIMS_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ab_train_step.py"), "--model", "tiny", "--task", "sst2",
         "--train-size", "48", "--steps", "5", "--threads", "1", "--glue-dir", str(glue),
         "--variants", ",".join(variants), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["steps"] == 1  # 48 rows in batches of 32: the first batch warms up, the second is timed
    assert [r["variant"] for r in record["rows"]] == variants
    assert all(r["forward_s"] > 0 and r["backward_s"] > 0 and r["wall_s"] > 0 for r in record["rows"])
    assert record["rows"][0]["speedup_vs_first"] == 1.0 and record["machine"]["threads"] == 1
    assert record["lines"] == [line for line in proc.stdout.splitlines() if line.split()[0] in variants]
