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
CHAPTERS = ("glance", "setup", "token", "dimension", "layer", "freezing", "cross_finetune", "cka", "outliers",
            "summary")
EXPERIMENTS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka")
BUILD_TIMEOUT = 45 * 60  # seconds; the smoke book takes a few minutes on a shared 2-core machine


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_build_book():
    return load_script(BUILD, "build_book")


def load_browser_check():
    return load_script(CHECK, "browser_check")


def isolated_env(tmp: Path) -> dict:
    """The smoke edition's own data: without $FEWDIMS_GLUE_DIR, which would win over its profile file."""
    env = {k: v for k, v in os.environ.items() if k != "FEWDIMS_GLUE_DIR"}
    return {**env, "FEWDIMS_RESULTS": str(tmp / "results"), "FEWDIMS_CACHE": str(tmp / "cache"),
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


def test_code_is_folded_and_parameters_shown_once_as_a_table():
    import nbformat

    build_book = load_build_book()
    params_cell = nbformat.v4.new_code_cell('profile = "cpu"   # which profile\ntask = None\ncompute = True')
    params_cell.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\ncompute = True\n')
    injected.metadata["tags"] = ["injected-parameters"]
    own = nbformat.v4.new_code_cell("x = 1")
    own.metadata["tags"] = ["remove-input"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), params_cell, injected,
                                         nbformat.v4.new_code_cell("print(1)"), own])
    meta = {"profile": "smoke", "parameters": {"profile": "smoke", "compute": True},
            "git": {"commit": "abc", "short": "abc", "dirty": False}, "executed": "today", "seconds": 1.0}
    build_book.prepare_page(nb, "token", meta)
    build_book.prepare_page(nb, "token", meta)  # idempotent
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags == [[], [build_book.PROVENANCE_TAG], ["parameters", "remove-cell"],
                    ["injected-parameters", "remove-cell"], ["hide-input"], ["remove-input"]]
    note = nb.cells[1].source
    assert "| parameter | value |" in note
    assert '| `profile` | **`"smoke"`** |' in note        # the injected value, not the default "cpu"
    assert "| `task` | `None` |" in note and "| `compute` | **`True`** |" in note
    assert note.count("`profile`") == 2                 # in the table and once in the sentence naming it


def test_copyright_runs_to_the_build_year(tmp_path, monkeypatch):
    build_book = load_build_book()
    assert build_book.copyright_years("2025", 2025) == "2025"
    assert build_book.copyright_years("2025", 2027) == "2025\u20132027"
    assert build_book.copyright_years(None, 2027) == "2027"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1893456000")  # 2030-01-01
    assert build_book.build_year() == 2030
    import yaml

    config = yaml.safe_load(build_book.write_config(ROOT, tmp_path, "profile smoke").read_text())
    assert config["copyright"].endswith("2030")
    assert "Built with profile smoke" in config["html"]["extra_footer"]


def test_kernels_run_without_the_tcp_warning():
    options = load_build_book().kernel_options("python3")
    if "config" in options:
        assert options["config"].KernelManager.transport_encryption == "auto"
    else:
        assert options == {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}


# -- the browser check's detection, on hand-written pages -------------------------------------------------------

def png(width: int, height: int, pixel) -> bytes:
    """A PNG of pixel(x, y) -> (r, g, b), with nothing but the standard library."""
    import struct
    import zlib

    rows = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def page(body: str) -> str:
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title><link rel="icon" href="data:,">'
            '<style>main { width: 600px; font: 14px sans-serif; } td, th { padding: 2px 6px; }</style></head>'
            f'<body><main><article>{body}</article></main></body></html>')


WIDE_ROW = "<tr>" + "".join(f"<td>column{i}_value</td>" for i in range(14)) + "</tr>"
DETECTION_PAGES = {
    "clean.html": (
        '<h1>Clean</h1><div style="overflow-x: auto"><table class="dataframe">' + WIDE_ROW + "</table></div>"
        '<table class="dataframe"><thead><tr><th>parameter</th><th>value</th></tr></thead>'
        "<tr><td>task</td><td><code>None</code></td></tr><tr><td>score</td><td>50.0 ± 0.0</td></tr></table>"
        '<img src="plot.png" alt="a plot">', None),
    "clipped.html": (
        '<h2>Wide</h2><div style="width: 300px; overflow: hidden"><table>' + WIDE_ROW + "</table></div>",
        "clipped table"),
    "spill.html": ("<h2>Spill</h2><table>" + WIDE_ROW + "</table>", "spills out"),
    "ellipsis.html": (
        '<table><tr><th>task</th><td style="max-width: 40px; overflow: hidden; text-overflow: ellipsis; '
        'white-space: nowrap">informative</td></tr></table>', "text cut with an ellipsis"),
    "nan.html": (
        '<h2>Scores</h2><table class="dataframe"><thead><tr><th></th><th>score</th><th>gap</th></tr></thead>'
        "<tr><th>rte</th><td>NaN</td><td>1.0</td></tr><tr><th>sst2</th><td>50.0</td><td>None</td></tr></table>",
        'row "rte", column "score": "NaN"'),
    "traceback.html": (
        '<div class="cell_output"><div class="output stderr"><pre>Traceback (most recent call last):\n'
        '  File "x.py", line 1, in &lt;module&gt;\nValueError: no runs</pre></div></div>', "ValueError: no runs"),
    "blank.html": ('<h2>Figure</h2><img src="white.png" alt="">', "blank figure"),
    "empty-axes.html": ('<img src="axes.png" alt="">', "no data drawn"),
}


@pytest.fixture(scope="module")
def detection_site(tmp_path_factory):
    browser_check = load_browser_check()
    chromium = browser_check.find_chromium(None)
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is not installed: {browser_check.INSTALL_HINT}")
        pytest.skip(f"Chromium is not installed (to enable: {browser_check.INSTALL_HINT})")
    site = tmp_path_factory.mktemp("detection") / "html"
    site.mkdir()
    (site / "index.html").write_text(page("<h1>Index</h1>"))
    for name, (body, _) in DETECTION_PAGES.items():
        (site / name).write_text(page(body))
    (site / "white.png").write_bytes(png(200, 120, lambda x, y: (255, 255, 255)))
    frame = lambda x, y: (40, 40, 40) if x in (20, 180) or y in (10, 110) else (255, 255, 255)  # noqa: E731
    (site / "axes.png").write_bytes(png(200, 120, frame))
    bars = lambda x, y: (31, 119, 180) if 40 <= x < 80 and y > 30 else frame(x, y)  # noqa: E731
    (site / "plot.png").write_bytes(png(200, 120, bars))
    pages = [Path("index.html")] + [Path(n) for n in DETECTION_PAGES]
    lines = []
    failures = browser_check.check_site(site, pages, chromium, site.parent / "shots", report=lines.append)
    return {"failures": failures, "shots": site.parent / "shots", "output": "\n".join(lines)}


def test_browser_check_passes_a_clean_page(detection_site):
    assert "clean.html" not in detection_site["failures"], detection_site["output"]
    assert "index.html" not in detection_site["failures"], detection_site["output"]


@pytest.mark.parametrize("name", [n for n, (_, expected) in DETECTION_PAGES.items() if expected])
def test_browser_check_catches(detection_site, name):
    expected = DETECTION_PAGES[name][1]
    problems = detection_site["failures"].get(name, [])
    assert any(expected in p for p in problems), f"{name}: {expected!r} not in {problems}"


def test_browser_check_screenshots_every_page(detection_site):
    for name in ["index.html", *DETECTION_PAGES]:
        assert (detection_site["shots"] / name.replace(".html", ".png")).stat().st_size > 1000, name


def test_browser_check_lists_bad_cells_per_table():
    report = {"badCells": [{"where": "pandas table 1 of 1", "row": str(i), "column": "score", "text": "NaN",
                            "what": "missing value"} for i in range(9)]}
    problems = load_browser_check().problems_from_report(report)
    assert len(problems) == 1
    assert problems[0].startswith("9 NaN/None/elided cell(s) in pandas table 1 of 1")
    assert problems[0].endswith("and 3 more")


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
