"""GLUE metrics: each task's official metrics, computed with scikit-learn and SciPy.

Results are plain Python floats (they go into JSON files and tables), and degenerate cases that
make SciPy return nan (a constant prediction has no correlation) are reported as 0.0, which is
what such a predictor is worth.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .errors import FewdimsError
from .tasks import get_task


def main_metric(task: str) -> str:
    """The single number a task is ranked by (e.g. 'matthews' for CoLA, 'pearson' for STS-B)."""
    return get_task(task).main_metric


def _as_vector(name: str, values, task_display: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        hint = " (for logits, pass logits.argmax(-1))" if array.ndim == 2 else ""
        raise FewdimsError(f"{name} for {task_display} must be a 1-D array, got shape {array.shape}{hint}")
    if array.dtype.kind not in "biuf":
        raise FewdimsError(f"{name} for {task_display} must be numeric, got dtype {array.dtype}")
    return array


def _correlation(function, predictions: np.ndarray, labels: np.ndarray) -> float:
    # A constant input has undefined correlation; SciPy warns and returns nan. Report 0.0 instead.
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(function(predictions, labels)[0])
    return 0.0 if math.isnan(value) else value


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """All metrics of `task` (keys from TaskSpec.metrics) for class-id or score predictions."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    spec = get_task(task)
    predictions = _as_vector("predictions", predictions, spec.display)
    labels = _as_vector("labels", labels, spec.display)
    if len(predictions) != len(labels):
        raise FewdimsError(f"{spec.display}: {len(predictions)} predictions but {len(labels)} labels; "
                           "they must be the same evaluation rows")
    if len(labels) == 0:
        raise FewdimsError(f"{spec.display}: cannot compute metrics on zero rows")
    if spec.is_regression:
        predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    else:
        for name, values in (("predictions", predictions), ("labels", labels)):
            if values.dtype.kind == "f" and not np.all(values == np.round(values)):
                raise FewdimsError(f"{name} for {spec.display} must be class ids, got fractional values "
                                   "(for logits or probabilities, pass .argmax(-1))")
        predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
    results: dict[str, float] = {}
    for metric in spec.metrics:
        if metric == "accuracy":
            results[metric] = float(accuracy_score(labels, predictions))
        elif metric == "f1":  # GLUE's F1 is binary, for the positive class 1 (equivalent / duplicate)
            results[metric] = float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0))
        elif metric == "matthews":
            results[metric] = float(matthews_corrcoef(labels, predictions))
        elif metric == "pearson":
            results[metric] = _correlation(pearsonr, predictions, labels)
        elif metric == "spearman":
            results[metric] = _correlation(spearmanr, predictions, labels)
        else:  # only reachable if the task registry names a metric this module does not know
            raise FewdimsError(f"metric {metric!r} of {spec.display} is not implemented")
    return results


def majority_baseline(task: str, train_labels, eval_labels) -> dict[str, float]:
    """Metrics of a model that ignores its input: the most frequent train class (STS-B: the train mean)."""
    spec = get_task(task)
    train_labels = _as_vector("train_labels", train_labels, spec.display)
    eval_labels = _as_vector("eval_labels", eval_labels, spec.display)
    if len(train_labels) == 0:
        raise FewdimsError(f"{spec.display}: majority baseline needs at least one train label")
    if spec.is_regression:
        constant = np.full(len(eval_labels), float(np.mean(train_labels)))
    else:
        if train_labels.min() < 0:
            raise FewdimsError(f"{spec.display}: train labels must be class ids >= 0 (test labels are hidden)")
        # bincount + argmax breaks ties towards the smaller class id, deterministically.
        majority = int(np.argmax(np.bincount(train_labels.astype(np.int64))))
        constant = np.full(len(eval_labels), majority, dtype=np.int64)
    return compute_metrics(spec.name, constant, eval_labels)
