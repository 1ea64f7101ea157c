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
