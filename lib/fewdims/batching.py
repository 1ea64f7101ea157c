"""Tokenize once, batch by length, pad per batch.

Most of a CPU fine-tune's time is spent on padding tokens when every batch is padded to max_length (as
run_glue.py does). Here each split is tokenized once per process, train batches group examples of similar
length (shuffled mega-batches, as Hugging Face's LengthGroupedSampler), and each batch is padded only to its
own longest example.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

_TOKEN_CACHE: dict = {}


class Encoded:
    """Token ids of one split, unpadded (a list of int32 arrays), plus lengths and labels."""

    def __init__(self, input_ids, token_type_ids, labels):
        self.input_ids, self.token_type_ids = input_ids, token_type_ids
        self.lengths = np.array([len(x) for x in input_ids], dtype=np.int64)
        self.labels = labels

    def __len__(self):
        return len(self.input_ids)


def encode(split, tokenizer, max_length: int, tokenizer_name: str) -> Encoded:
    """Tokenize a SplitData once per (tokenizer, content, max_length) and reuse the ids afterwards."""
    key = (tokenizer_name, split.fingerprint()["sha256"], max_length)
    if key not in _TOKEN_CACHE:
        enc = tokenizer(*split.texts, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=True)
        ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
        types = [np.asarray(x, dtype=np.int32) for x in enc["token_type_ids"]]
        _TOKEN_CACHE[key] = Encoded(ids, types, np.asarray(split.labels))
    return _TOKEN_CACHE[key]


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, mega: int = 50) -> list[np.ndarray]:
    """Shuffle, cut into mega-batches of `mega` batches, sort each by length (longest first), cut into batches,
    shuffle the batches. Deterministic for a seed; every example appears exactly once."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * mega
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: sorted by length so padding is minimal; order does not matter for metrics."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(encoded: Encoded, index: np.ndarray, pad_id: int = 0) -> dict:
    """Pad the examples in `index` to their longest one; returns CPU tensors."""
    width = int(encoded.lengths[index].max())
    ids = np.full((len(index), width), pad_id, dtype=np.int64)
    types = np.zeros((len(index), width), dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    for row, i in enumerate(index):
        n = encoded.lengths[i]
        ids[row, :n], types[row, :n], mask[row, :n] = encoded.input_ids[i], encoded.token_type_ids[i], 1
    labels = encoded.labels[index]
    return {
        "input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)),
        "index": torch.from_numpy(np.asarray(index, dtype=np.int64)),
    }


def content_hash(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
