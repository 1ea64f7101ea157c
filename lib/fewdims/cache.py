"""Local caches under $FEWDIMS_CACHE (default data/cache), never committed; everything here can be recomputed.

- `weights/<config key>/{backbone,head}.pt`: a run's fine-tuned weights (save_weights=True), read by stage-B runs
  (init_from), by analyses added to a finished run, and by the retention analysis (the stage-A head);
- `features/<hash>.pt`: frozen-backbone features, shared by every frozen run of the same backbone and data;
- `representations/<task>/<key>-<split>-n<n>.npz`: per-layer representations (and head predictions) of the
  examples the representation analyses read.

Every file fewdims writes goes through `atomic_write`: a reader sees the old file or the new one, never a part.
torch is imported only where tensors are read or written, so the result store (which writes through
`atomic_write`) stays light.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

import numpy as np

from .errors import FewdimsError

if TYPE_CHECKING:
    import torch

WEIGHT_PARTS = ("backbone", "head")


def cache_root() -> Path:
    return Path(os.environ.get("FEWDIMS_CACHE", Path(__file__).resolve().parents[2] / "data" / "cache"))


@contextlib.contextmanager
def cache_root_at(path: str | os.PathLike):
    """Point FEWDIMS_CACHE (and so cache_root()) at `path` inside the block; the earlier setting afterwards."""
    before = os.environ.get("FEWDIMS_CACHE")
    os.environ["FEWDIMS_CACHE"] = str(path)
    try:
        yield Path(path)
    finally:
        if before is None:
            os.environ.pop("FEWDIMS_CACHE", None)
        else:
            os.environ["FEWDIMS_CACHE"] = before


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace the file `path` with what `write(handle)` writes to a binary file handle: it goes to a
    temporary file in the same directory (created if needed), which then replaces `path` in one rename. If
    `write` or the rename fails, `path` is left as it was and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- fine-tuned weights ------------------------------------------------------------------------------------------
def weights_dir(config) -> Path:
    """Where the weights of the run `config` (a RunConfig) are cached."""
    return cache_root() / "weights" / config.key()


def weights_path(config, part: str) -> Path:
    """The file of one part ('backbone' or 'head') of the cached weights of `config`."""
    if part not in WEIGHT_PARTS:
        raise FewdimsError(f"weights part must be one of {WEIGHT_PARTS}, got {part!r}")
    return weights_dir(config) / f"{part}.pt"


def has_weights(config, parts=WEIGHT_PARTS) -> bool:
    """Whether every part in `parts` of the weights of `config` is cached."""
    return all(weights_path(config, part).exists() for part in parts)


def save_weights(config, backbone: torch.nn.Module, head: torch.nn.Module) -> Path:
    """Cache the backbone's and the head's weights of the run `config` (CPU copies); returns the directory."""
    import torch

    for part, module in (("backbone", backbone), ("head", head)):
        state = {k: v.cpu() for k, v in module.state_dict().items()}
        atomic_write(weights_path(config, part), lambda handle, state=state: torch.save(state, handle))
    return weights_dir(config)


def load_weights(config, *, backbone: torch.nn.Module | None = None, head: torch.nn.Module | None = None) -> None:
    """Load the cached weights of the run `config` into `backbone` and/or `head` (the head leniently, as heads
    carry no other state). A missing file raises FileNotFoundError: check with `has_weights` first."""
    import torch

    if backbone is not None:
        backbone.load_state_dict(torch.load(weights_path(config, "backbone"), map_location="cpu", weights_only=True))
    if head is not None:
        head.load_state_dict(torch.load(weights_path(config, "head"), map_location="cpu", weights_only=True),
                             strict=False)


# -- frozen-backbone features ------------------------------------------------------------------------------------
FEATURE_FIELDS = ("model", "pooling", "special_tokens_eligible", "layer", "max_length", "precision", "init_from")


def frozen_features(config, encoded, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The pooled features of `encoded` under the frozen backbone of `config`: read from the cache, or made by
    `compute()` and cached. They depend on the backbone and the data only, so every frozen run shares them."""
    import torch

    from .batching import content_hash

    key = content_hash(np.frombuffer(repr([getattr(config, f) for f in FEATURE_FIELDS]).encode(), dtype=np.uint8),
                       np.concatenate(encoded.input_ids), np.concatenate(encoded.token_type_ids))
    path = cache_root() / "features" / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    feats = compute()
    atomic_write(path, lambda handle: torch.save(feats, handle))
    return feats


# -- per-layer representations -----------------------------------------------------------------------------------
def representations_path(config, split: str, n: int, pretrained: bool = False) -> Path:
    """Local cache of one model's per-layer representations and per-layer predictions on the analysis examples.
    Like weights it is never committed (~5 MB per model and representation); the record keeps only the CKA
    matrices and scores. The pretrained backbone is keyed by what its inputs depend on."""
    inputs = json.dumps(["pretrained", config.model, config.task, config.max_length, config.eval_size,
                         config.data_seed])
    key = hashlib.sha256(inputs.encode()).hexdigest()[:16] if pretrained else config.key()
    return cache_root() / "representations" / config.task / f"{key}-{split}-n{n}.npz"


def save_representations(path: Path, keep, preds, reps) -> None:
    """Store the example indices `keep`, per-layer predictions (or None) and reps[representation][layer]."""
    arrays = {"keep": keep, **({"preds": np.stack(preds)} if preds is not None else {}),
              **{f"rep_{r}": np.stack(v) for r, v in reps.items()}}
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_representations(path: Path, keep, representations, need_preds: bool):
    """(preds or None, reps) from the cache, or None when it is missing, stale or lacks something asked for."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            if not np.array_equal(f["keep"], keep) or (need_preds and "preds" not in f) or \
                    any(f"rep_{r}" not in f for r in representations):
                return None
            preds = list(f["preds"]) if need_preds else None
            return preds, {r: list(f[f"rep_{r}"]) for r in representations}
    except (OSError, ValueError, KeyError):  # unreadable cache: recompute rather than fail
        return None
