"""Shared pytest fixtures: the real GLUE files next to the repository, and a tiny synthetic GLUE dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fewdims.fixtures import write_tiny_glue

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
