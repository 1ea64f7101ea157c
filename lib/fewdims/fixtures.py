"""A tiny synthetic GLUE directory in the download script's TSV layout, for tests and the smoke profile.

The texts carry obvious lexical cues for their labels ('good'/'bad', 'not', a doubled 'the', shared
words), so a very small model trained for a few steps learns them: a smoke run can then check that
training actually moves the metric, not only that the code runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FewdimsError, check_type

_SUBJECTS = ["the movie", "this film", "the story", "the acting", "the plot", "the ending", "the music", "the cast"]
_POSITIVE = ["good", "great", "wonderful", "delightful", "brilliant", "moving"]
_NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "tedious"]
_ANIMALS = ["cat", "dog", "horse", "bird", "fox", "mouse", "rabbit", "goat"]
_PLACES = ["garden", "kitchen", "field", "forest", "barn", "park"]
_VERBS = [("sleeps", "sleep"), ("runs", "run"), ("eats", "eat"), ("sings", "sing"), ("waits", "wait")]
_WORDS = ["apple", "river", "stone", "cloud", "train", "window", "paper", "garden", "violin", "candle",
          "bridge", "mirror", "pencil", "forest", "castle", "ladder", "rocket", "tiger", "lemon", "shadow"]


def _balanced(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """Labels with equal class counts (up to one), in random order."""
    return rng.permutation(np.arange(n) % classes)


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _sst2_rows(rng, n):
    rows = [["sentence", "label"]]
    for label in _balanced(rng, n, 2):
        adjective = _pick(rng, _POSITIVE if label == 1 else _NEGATIVE)
        rows.append([f"{_pick(rng, _SUBJECTS)} was {adjective} and {_pick(rng, _SUBJECTS)} felt {adjective}", str(label)])
    return rows


def _rte_rows(rng, n):
    rows = [["index", "sentence1", "sentence2", "label"]]
    for index, label in enumerate(_balanced(rng, n, 2)):  # hub ids: 0 entailment, 1 not_entailment
        animal, place, (verb, base) = _pick(rng, _ANIMALS), _pick(rng, _PLACES), _pick(rng, _VERBS)
        premise = f"The {animal} {verb} in the {place} every morning."
        hypothesis = f"The {animal} {verb}." if label == 0 else f"The {animal} does not {base}."
        rows.append([str(index), premise, hypothesis, "entailment" if label == 0 else "not_entailment"])
    return rows


def _stsb_rows(rng, n):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    rows = [header]
    for index in range(n):
        shared = int(rng.integers(0, 6))  # the score is the number of shared words, 0..5
        words = list(rng.permutation(_WORDS))
        first, others = words[:5], words[5:10]
        second = first[:shared] + others[: 5 - shared]
        score = float(np.clip(shared + rng.uniform(-0.2, 0.2), 0.0, 5.0))
        rows.append([str(index), "main-tiny", "tiny", "2024", f"{index:04d}", "none", "none",
                     "A " + " ".join(first) + ".", "A " + " ".join(second) + ".", f"{score:.3f}"])
    return rows


def _cola_rows(rng, n):
    rows = []  # CoLA files have no header: source, label, original mark, sentence
    for label in _balanced(rng, n, 2):
        animal, place, (verb, _) = _pick(rng, _ANIMALS), _pick(rng, _PLACES), _pick(rng, _VERBS)
        if label == 1:
            rows.append(["tiny1", "1", "", f"The {animal} {verb} in the {place}."])
        else:  # ungrammatical: a doubled article and a scrambled order
            rows.append(["tiny1", "0", "*", f"The the {animal} in {verb} {place} the."])
    return rows


def _mnli_rows(rng, n):
    rows = [["index", "genre", "sentence1", "sentence2", "gold_label"]]
    labels = ("entailment", "neutral", "contradiction")
    for index, label in enumerate(_balanced(rng, n, 3)):
        animal, place, (verb, base) = _pick(rng, _ANIMALS), _pick(rng, _PLACES), _pick(rng, _VERBS)
        premise = f"The {animal} {verb} in the {place} every morning."
        hypothesis = (f"The {animal} {verb}.", f"The {animal} likes the {place}.", f"The {animal} does not {base}.")[label]
        rows.append([str(index), "tiny", premise, hypothesis, labels[label]])
    return rows


_WRITERS = {"SST-2": _sst2_rows, "RTE": _rte_rows, "STS-B": _stsb_rows, "CoLA": _cola_rows, "MNLI": _mnli_rows}
_DEV_FILES = {"MNLI": ("dev_matched.tsv", "dev_mismatched.tsv")}  # the other tasks have one dev.tsv


def write_tiny_glue(root: str | Path, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> Path:
    """Write SST-2, RTE, STS-B, CoLA and MNLI train/dev TSVs under `root`; return `root` as an absolute Path.

    The same arguments always write the same bytes.
    """
    check_type("root", root, (str, Path))
    for name, value in (("n_train", n_train), ("n_dev", n_dev), ("seed", seed)):
        check_type(name, value, int)
    if n_train < 2 or n_dev < 2:
        raise FewdimsError(f"write_tiny_glue needs at least 2 rows per split, got n_train={n_train}, n_dev={n_dev}")
    root = Path(root).resolve()
    for offset, (folder, make_rows) in enumerate(_WRITERS.items()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        files = [("train.tsv", n_train)] + [(name, n_dev) for name in _DEV_FILES.get(folder, ("dev.tsv",))]
        for split_offset, (file_name, n) in enumerate(files):
            rng = np.random.default_rng([seed, offset, split_offset])
            text = "".join("\t".join(row) + "\n" for row in make_rows(rng, n))
            (root / folder / file_name).write_text(text, encoding="utf-8", newline="\n")
    return root
