"""Shared pytest fixtures: the real GLUE files next to the repository, and a tiny synthetic GLUE dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the Hugging Face hub: set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FEWDIMS_PROGRESS", "0")

from fewdims.fixtures import write_tiny_glue  # noqa: E402

# ../shared next to the repository root holds the real GLUE files (never copied into the project).
SHARED_ROOT = Path(__file__).resolve().parents[1].parent / "shared"


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_glue() -> Path:
    """Real GLUE in the download script's TSV layout: $FEWDIMS_GLUE_DIR or ../shared/glue."""
    env = os.environ.get("FEWDIMS_GLUE_DIR")
    return _existing_dir(Path(env) if env else SHARED_ROOT / "glue", "GLUE TSV directory")


@pytest.fixture(scope="session")
def shared_glue_hf() -> Path:
    """Real GLUE in the hub's parquet layout: ../shared/glue-hf."""
    return _existing_dir(SHARED_ROOT / "glue-hf", "GLUE parquet directory")


@pytest.fixture
def tiny_glue(tmp_path: Path) -> Path:
    """A fresh tiny GLUE TSV directory (SST-2, RTE, STS-B, CoLA; 48 train / 16 dev rows each)."""
    return write_tiny_glue(tmp_path / "glue")


@pytest.fixture
def fewdims_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Weights/feature caches and results under tmp_path (never the repository's data/), no progress bars."""
    paths = {"cache": tmp_path / "cache", "results": tmp_path / "results"}
    monkeypatch.setenv("FEWDIMS_CACHE", str(paths["cache"]))
    monkeypatch.setenv("FEWDIMS_RESULTS", str(paths["results"]))
    monkeypatch.setenv("FEWDIMS_PROGRESS", "0")
    return paths


def tiny_config(**changes):
    """A RunConfig for the tiny random BERT that trains in about a second on a CPU."""
    from fewdims.config import RunConfig

    base = dict(task="sst2", model="tiny", precision="fp32", train_size=16, eval_size=8, batch_size=8,
                epochs=1, lr=1e-3, max_length=32, seed=0)
    return RunConfig(**{**base, **changes})


def stored_run(store, config, source=None, *, force: bool = False, **train_kwargs) -> dict:
    """The stored record of `config`, trained (fewdims.train.train, looked up when called) and saved first when
    it is not stored or `force` is set: what the runner does, without its counting and analyses."""
    import fewdims.train

    if not force:
        record = store.load(config)
        if record is not None:
            return record
    return store.save(fewdims.train.train(config, source, **train_kwargs))


@pytest.fixture
def make_config():
    """Factory: make_config(**changes) -> a small RunConfig on the tiny model (see tiny_config)."""
    return tiny_config


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread while a module's tests run (restored afterwards).

    The tiny model's ops are far too small to gain from threads, and on a small, busy machine two spinning
    OpenMP threads made a one-second training run take ten: one thread keeps the training tests fast and steady.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _hermetic_glue_dir(request, monkeypatch):
    """$FEWDIMS_GLUE_DIR wins over a profile file's glue_dir (the precedence rule), and `make test` sets it: tests
    that do not ask for the real GLUE data (marker or fixture shared_glue) run without it, so the smoke edition
    reads its generated data."""
    wants_real = request.node.get_closest_marker("shared_glue") is not None or \
        {"shared_glue", "shared_glue_hf"} & set(request.fixturenames)
    if not wants_real:
        monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)


# -- the end of the output: every skipped check, and how to enable it ------------------------------------------------

# (pattern in the skip reason, short name of the check, how to enable it); the first match wins
SKIP_HINTS = (
    (r"chromium", "browser check skipped",
     "install Chromium: apt-get install -y chromium (Debian/Ubuntu; .ci/run installs it)"),
    (r"parquet|glue-hf", "../shared/glue-hf not found",
     "put the hub's GLUE parquet files at ../shared/glue-hf"),
    (r"GLUE|FEWDIMS_GLUE_DIR|shared/glue", "GLUE data not found",
     "set FEWDIMS_GLUE_DIR to a GLUE directory in the download script's TSV layout (or put it at ../shared/glue)"),
    (r"could not import '([^']+)'", "a module is missing",
     "install it into .venv ({0}); `make install` installs the project's extras"),
    (r"cuda|gpu", "needs a GPU", "run it on a machine with a CUDA GPU"),
)
_SKIP_SUMMARY = pytest.StashKey[list]()


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def skipped_checks_summary(reports) -> list[str]:
    """Lines naming every skipped test, grouped by the reason it was skipped, with how to enable it."""
    import re

    groups: dict[tuple[str, str], list[str]] = {}
    for report in reports:
        reason = _skip_reason(report)
        name, hint = "skipped", "see the reason"
        for pattern, label, how in SKIP_HINTS:
            match = re.search(pattern, reason, re.IGNORECASE)
            if match:
                name, hint = label, how.format(*match.groups())
                break
        groups.setdefault((f"{name} ({reason})", hint), []).append(report.nodeid)
    if not groups:
        return ["skipped checks: none"]
    count = sum(len(v) for v in groups.values())
    lines = [f"skipped checks ({count}), and how to enable them:"]
    for (what, hint), nodeids in groups.items():
        lines.append(f"  {what}: {', '.join(_compact(nodeids))}")
        lines.append(f"    to enable: {hint}")
    return lines


def _compact(nodeids: list[str]) -> list[str]:
    """test_x[a], test_x[b] -> test_x[a, b]"""
    params: dict[str, list[str]] = {}
    for nodeid in dict.fromkeys(nodeids):
        base, _, param = nodeid.partition("[")
        params.setdefault(base, []).append(param.removesuffix("]"))
    return [base if params[base] == [""] else f"{base}[{', '.join(p for p in params[base] if p)}]"
            for base in params]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Collect the skipped tests; pytest_unconfigure prints them after pytest's own last line."""
    lines = skipped_checks_summary(terminalreporter.stats.get("skipped", []))
    deselected = len(terminalreporter.stats.get("deselected", []))
    if deselected and "not slow" in (config.getoption("markexpr", "") or "") and not config.getoption("keyword", ""):
        lines.append(f"deselected: {deselected} slow test(s) (-m 'not slow'); to enable: make test")
    config.stash[_SKIP_SUMMARY] = lines


def pytest_unconfigure(config):
    lines = config.stash.get(_SKIP_SUMMARY, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not lines or reporter is None or hasattr(config, "workerinput"):  # xdist workers: the controller reports
        return
    for line in lines:
        reporter.write_line(line, yellow=line != "skipped checks: none")
