"""The committed cpu edition: its book builds from the stored results alone (no training), renders in Chromium,
and randomly drawn stored runs reproduce (fewdims.reproduce.TOLERANCE points).

These tests need the committed records in data/results/cpu and, for the re-runs, the GLUE data
(FEWDIMS_GLUE_DIR, set by the Makefile from ../shared/glue)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fewdims.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.shared_glue]


def committed_records() -> list[dict]:
    records = ResultStore("cpu", ROOT / "data" / "results").records()
    if not records:
        pytest.fail("no committed cpu results in data/results/cpu: run `make grid` and commit the JSON records")
    return records


def test_cpu_book_builds_from_committed_results_without_training(tmp_path):
    before = {p: p.read_bytes() for p in (ROOT / "data" / "results" / "cpu").rglob("*.json")}
    assert before, "no committed cpu results"
    env = {**os.environ, "FEWDIMS_CACHE": str(tmp_path / "cache"), "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("FEWDIMS_RESULTS", None)  # the committed results
    out = tmp_path / "_build"
    proc = subprocess.run([sys.executable, "scripts/build_book.py", "--profile", "cpu", "--no-compute",
                           "--stage", str(tmp_path / "stage"), "--out", str(out)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=40 * 60)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (out / "html" / "index.html").exists()
    # no training happened: the stored records are byte-for-byte what was committed, and nothing was added
    after = {p: p.read_bytes() for p in (ROOT / "data" / "results" / "cpu").rglob("*.json")}
    assert after == before
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    check = subprocess.run([sys.executable, "scripts/browser_check.py", "--html", str(out / "html")], cwd=ROOT,
                           env=env, text=True, capture_output=True, timeout=20 * 60)
    assert check.returncode == 0, (check.stdout + check.stderr)[-4000:]


def test_two_random_committed_runs_reproduce(tmp_path, monkeypatch):
    committed_records()
    if not os.environ.get("FEWDIMS_GLUE_DIR"):
        shared = ROOT.parent / "shared" / "glue"
        if not shared.exists():
            pytest.fail("re-running stored cpu runs needs GLUE data: set FEWDIMS_GLUE_DIR (or ../shared/glue)")
        monkeypatch.setenv("FEWDIMS_GLUE_DIR", str(shared))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FEWDIMS_RESULTS", raising=False)
    from fewdims.reproduce import reproduce

    assert reproduce("cpu", runs=2, seed=None)  # a different draw each CI run
