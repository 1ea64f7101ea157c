"""The training benchmark (bench/bench_training.py) on the tiny model and the tiny GLUE fixture (the fast training
forward it measures is tested in test_fastbert.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fewdims.fixtures import write_tiny_glue

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"speedup_vs_trainer=(\d+\.\d+) speedup_vs_tuned_trainer=(\d+\.\d+) metric_delta=([+-]\d+\.\d+) "
                       r"speedup_vs_tuned_kept_memory=(\d+\.\d+)")


def test_bench_training_runs_and_ends_with_the_summary_line(tmp_path):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    env = {**os.environ, "FEWDIMS_CACHE": str(tmp_path / "cache"), "FEWDIMS_PROGRESS": "0"}
    # one task keeps it under a minute on a small machine: every trainer starts a fresh interpreter
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--model", "tiny", "--train-size", "32",
         "--tasks", "sst2", "--glue-dir", str(glue), "--out", str(out), "--peak-n", "256", "--peak-seconds", "0.2",
         "--threads", "1"],  # tiny ops gain nothing from threads; on a busy machine two threads stall
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert any(line.startswith("task=sst2 speedup_vs_trainer=") for line in lines)
    for kind in ("fewdims", "trainer", "tuned", "tuned_kept_memory"):
        assert any(line.startswith(f"task=sst2 trainer={kind}") for line in lines), proc.stdout
    record = json.loads(out.read_text())
    results = record["tasks"]["sst2"]["results"]
    assert set(results) == {"fewdims", "trainer", "tuned", "tuned_kept_memory"}
    for res in results.values():
        assert res["train_examples_per_s"] > 0 and res["peak_rss_mb"] > 0 and 0 <= res["metric"] <= 1
    assert record["matmul_peak"]["gflops_per_s"] > 0
    assert results["fewdims"]["train_flops"] > 0
    speedup, _, delta, kept = LAST_LINE.fullmatch(lines[-1]).groups()
    assert float(kept) == pytest.approx(record["final"]["speedup_vs_tuned_kept_memory"], abs=0.01)
    assert float(speedup) == pytest.approx(record["final"]["speedup_vs_trainer"], abs=0.01)
    assert float(delta) == pytest.approx(record["final"]["metric_delta"], abs=0.01)
