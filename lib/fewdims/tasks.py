"""Registry of the nine GLUE tasks: names, columns, label maps, metrics and the TSV file layouts.

Everything that differs between tasks lives here, so the loaders, metrics and models never branch on
a task name themselves.  Label ids always follow the Hugging Face hub (`nyu-mll/glue`), so a model
trained from TSV files and one trained from the hub agree on what class 0 means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .errors import FewdimsError, check_type

# Hub split name -> file name in a task folder of the GLUE download script's layout.
SPLIT_FILES: Mapping[str, str] = MappingProxyType({
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
})


@dataclass(frozen=True)
class TaskSpec:
    name: str
    display: str
    tsv_dir: str
    hub_config: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    eval_splits: tuple[str, ...] = ("validation",)

    @property
    def num_labels(self) -> int:
        """Output width of a model head: one score for regression, else one logit per class."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits that carry labels, in the order train, then the evaluation splits."""
        return ("train",) + self.eval_splits


@dataclass(frozen=True)
class TsvLayout:
    """Where text and label sit in a task's TSV files.

    Columns are header names where the files have a header (robust to column reordering and to
    MNLI's variable number of annotator-label columns) and positions where they do not (CoLA).
    `label_map` turns the label string into the hub id; None means a float score (STS-B).
    """

    has_header: bool
    text_columns: tuple[str | int, ...]
    label_column: str | int
    label_map: Mapping[str, int] | None = field(default=None)


def _ids(*labels: str) -> Mapping[str, int]:
    return MappingProxyType({label: i for i, label in enumerate(labels)})


_DIGITS = _ids("0", "1")  # tasks whose TSV labels are already the hub ids

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("cola", "CoLA", "CoLA", "cola", ("sentence",), ("unacceptable", "acceptable"),
                 False, ("matthews",), "matthews"),
        TaskSpec("sst2", "SST-2", "SST-2", "sst2", ("sentence",), ("negative", "positive"),
                 False, ("accuracy",), "accuracy"),
        TaskSpec("mrpc", "MRPC", "MRPC", "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 False, ("accuracy", "f1"), "accuracy"),
        TaskSpec("stsb", "STS-B", "STS-B", "stsb", ("sentence1", "sentence2"), (),
                 True, ("pearson", "spearman"), "pearson"),
        TaskSpec("qqp", "QQP", "QQP", "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
                 False, ("accuracy", "f1"), "accuracy"),
        TaskSpec("mnli", "MNLI", "MNLI", "mnli", ("premise", "hypothesis"),
                 ("entailment", "neutral", "contradiction"), False, ("accuracy",), "accuracy",
                 ("validation_matched", "validation_mismatched")),
        TaskSpec("qnli", "QNLI", "QNLI", "qnli", ("question", "sentence"), ("entailment", "not_entailment"),
                 False, ("accuracy",), "accuracy"),
        TaskSpec("rte", "RTE", "RTE", "rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
                 False, ("accuracy",), "accuracy"),
        TaskSpec("wnli", "WNLI", "WNLI", "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
                 False, ("accuracy",), "accuracy"),
    ]
}

# Column layouts of the GLUE download script's files (see the GLUE paper's data description).
TSV_LAYOUTS: dict[str, TsvLayout] = {
    # CoLA has no header: source, label, original acceptability mark, sentence.
    "cola": TsvLayout(False, (3,), 1, _DIGITS),
    "sst2": TsvLayout(True, ("sentence",), "label", _DIGITS),
    "mrpc": TsvLayout(True, ("#1 String", "#2 String"), "Quality", _DIGITS),
    "stsb": TsvLayout(True, ("sentence1", "sentence2"), "score", None),
    "qqp": TsvLayout(True, ("question1", "question2"), "is_duplicate", _DIGITS),
    "mnli": TsvLayout(True, ("sentence1", "sentence2"), "gold_label",
                      _ids("entailment", "neutral", "contradiction")),
    "qnli": TsvLayout(True, ("question", "sentence"), "label", _ids("entailment", "not_entailment")),
    "rte": TsvLayout(True, ("sentence1", "sentence2"), "label", _ids("entailment", "not_entailment")),
    # WNLI's TSV uses 1 = entailment, which is also the hub's id 1.
    "wnli": TsvLayout(True, ("sentence1", "sentence2"), "label", _DIGITS),
}

# 'SST-2', 'sst_2', 'Sst2' all normalise to 'sst2'.
_ALIASES: dict[str, str] = {}
for _spec in TASKS.values():
    for _alias in (_spec.name, _spec.display, _spec.tsv_dir, _spec.hub_config):
        _ALIASES[_alias.lower().replace("-", "").replace("_", "")] = _spec.name


def known_tasks() -> str:
    return ", ".join(TASKS)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by any spelling of its name ('SST-2', 'sst2', 'sts_b'); a TaskSpec passes through."""
    if isinstance(name, TaskSpec):
        return name
    check_type("task", name, str, hint=f"use one of the GLUE task names: {known_tasks()}")
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise FewdimsError(f"unknown task {name!r}; known GLUE tasks: {known_tasks()}")
    return TASKS[_ALIASES[key]]


def check_split(task: str | TaskSpec, split: str) -> str:
    """Return `split` if the task has it with labels, else raise a FewdimsError that says what to use."""
    spec = get_task(task)
    check_type("split", split, str, hint=f"use one of {', '.join(spec.splits)}")
    if split == "test":
        raise FewdimsError(
            f"split 'test' of {spec.display} cannot be used: GLUE test labels are hidden (scored only on "
            f"gluebenchmark.com); train on 'train' and evaluate on {' / '.join(map(repr, spec.eval_splits))}"
        )
    if split not in spec.splits:
        hint = ""
        if split == "validation" and spec.name == "mnli":
            hint = "; MNLI has two validation splits: 'validation_matched' and 'validation_mismatched'"
        raise FewdimsError(
            f"task {spec.display} has no split {split!r}; its labelled splits are "
            f"{', '.join(map(repr, spec.splits))}{hint}"
        )
    return split
