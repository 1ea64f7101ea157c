"""End-to-end tests of the book: the smoke edition builds from scratch, renders in Chromium, and a failing
notebook stops the build with its name (scripts/build_book.py, scripts/browser_check.py).

The builds run in a temporary copy of the book's sources (--stage) with results and caches in tmp dirs, so the
repository's book/executed/, _build/ and data/ are never touched.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build_book.py"
CHECK = ROOT / "scripts" / "browser_check.py"
CHAPTERS = ("setup", "token", "dimension", "layer", "freezing", "cross_finetune", "cka", "summary")
EXPERIMENTS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka")
BUILD_TIMEOUT = 45 * 60  # seconds; the smoke book takes a few minutes on a shared 2-core machine


def load_build_book():
    spec = importlib.util.spec_from_file_location("build_book", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def isolated_env(tmp: Path) -> dict:
    return {**os.environ, "FEWDIMS_RESULTS": str(tmp / "results"), "FEWDIMS_CACHE": str(tmp / "cache"),
            "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def run(script: Path, *args, env: dict, timeout: int = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + "\n" + proc.stderr).splitlines()[-n:])


def require_notebooks():
    missing = [n for n in CHAPTERS if not (ROOT / "notebooks" / f"{n}.ipynb").exists()]
    if missing:
        pytest.fail(f"notebooks missing from notebooks/: {', '.join(missing)}")


# -- fast checks of the build script's rules -----------------------------------------------------------------------

def test_pages_of_another_profile_are_removed(tmp_path):
    build_book = load_build_book()
    for name, profile in (("token", "cpu"), ("cka", "smoke"), ("layer", None)):
        meta = {"fewdims": {"profile": profile}} if profile else {}
        (tmp_path / f"{name}.ipynb").write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4,
                                                            "nbformat_minor": 5}))
    removed = build_book.remove_stale(tmp_path, "smoke")
    assert sorted(removed) == ["layer", "token"]
    assert [p.name for p in tmp_path.glob("*.ipynb")] == ["cka.ipynb"]


def test_toc_chapters_are_the_notebooks():
    assert load_build_book().chapter_names(ROOT) == list(CHAPTERS)


def test_out_must_be_a_build_directory(tmp_path):
    proc = run(BUILD, "--out", tmp_path / "site", "--skip-execute", env=isolated_env(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "_build" in proc.stderr


def test_provenance_cell_goes_below_the_title():
    import nbformat

    build_book = load_build_book()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("1")])
    meta = {"profile": "smoke", "parameters": {"profile": "smoke", "compute": True},
            "git": {"commit": "abc", "short": "abc", "dirty": False}, "executed": "today", "seconds": 1.0}
    build_book.add_provenance(nb, "token", meta)
    build_book.add_provenance(nb, "token", meta)  # idempotent
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code"]
    assert "notebooks/token.ipynb" in nb.cells[1].source and "**smoke**" in nb.cells[1].source
    assert nb.metadata["fewdims"]["profile"] == "smoke"


# -- the smoke book, end to end -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    require_notebooks()
    tmp = tmp_path_factory.mktemp("smoke-book")
    proc = run(BUILD, "--profile", "smoke", "--stage", tmp / "stage", "--out", tmp / "_build",
               env=isolated_env(tmp))
    assert proc.returncode == 0, f"smoke book build failed:\n{tail(proc)}"
    return {"tmp": tmp, "html": tmp / "_build" / "html", "stage": tmp / "stage", "output": proc.stdout}


@pytest.mark.slow
def test_smoke_book_builds(smoke_book):
    html, stage = smoke_book["html"], smoke_book["stage"]
    assert (html / "index.html").exists()
    for page in ("book/intro", "book/rerun", "book/bibliography") + tuple(f"book/executed/{n}" for n in CHAPTERS):
        assert (html / f"{page}.html").exists(), page
    stats = json.loads((smoke_book["tmp"] / "_build" / "book_stats.json").read_text())
    assert stats["profile"] == "smoke"
    assert stats["pages"] == 3 + len(CHAPTERS)
    for name in EXPERIMENTS:
        assert stats["per_page"][f"book/executed/{name}.html"] >= 1, f"{name}: no figure"
    assert "pages" in smoke_book["output"] and "figures" in smoke_book["output"]
    for name in CHAPTERS:
        executed = json.loads((stage / "book" / "executed" / f"{name}.ipynb").read_text())
        assert executed["metadata"]["fewdims"]["profile"] == "smoke"
        assert executed["metadata"]["fewdims"]["parameters"] == {"profile": "smoke", "compute": True}
        page = (html / "book" / "executed" / f"{name}.html").read_text()
        assert "How this page was made" in page and "smoke" in page
        assert (html / "_sources" / "book" / "executed" / f"{name}.ipynb").exists()  # the download button's file
    intro = (html / "book" / "intro.html").read_text()
    assert "Built with the" in intro and "smoke" in intro       # the edition box
    assert "Built with profile smoke" in intro                  # the footer


@pytest.mark.slow
def test_smoke_book_renders_in_chromium(smoke_book):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    shots = smoke_book["tmp"] / "screenshots"
    proc = run(CHECK, "--html", smoke_book["html"], "--screenshots", shots, env=os.environ.copy(), timeout=900)
    assert proc.returncode == 0, f"browser check failed:\n{tail(proc)}"
    for name in CHAPTERS:
        assert (shots / f"book__executed__{name}.png").stat().st_size > 10_000, name


@pytest.mark.slow
def test_failing_notebook_stops_the_build_and_is_named(tmp_path):
    import nbformat

    require_notebooks()
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(notebooks / "token.ipynb", as_version=4)
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0)
    nb.cells.insert(at, nbformat.v4.new_code_cell('raise RuntimeError("deliberately broken")'))
    nbformat.write(nb, notebooks / "token.ipynb")
    # An older page of the same notebook must not survive its failure (it would be published as current).
    stage_executed = tmp_path / "stage" / "book" / "executed"
    stage_executed.mkdir(parents=True)
    (stage_executed / "token.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {"fewdims": {"profile": "smoke"}}, "nbformat": 4, "nbformat_minor": 5}))

    proc = run(BUILD, "--profile", "smoke", "--notebooks", "token", "--notebooks-dir", notebooks,
               "--stage", tmp_path / "stage", "--out", tmp_path / "_build", env=isolated_env(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, tail(proc)
    assert "notebook token failed" in out
    assert "RuntimeError: deliberately broken" in out
    assert f"cell {at}" in out
    assert not (stage_executed / "token.ipynb").exists()
    assert not list(stage_executed.glob(".token.*"))  # no temporary file left behind
    assert (tmp_path / "_build" / "failed" / "token.ipynb").exists()
    assert not (tmp_path / "_build" / "html").exists()  # the HTML build never started
