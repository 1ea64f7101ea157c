"""Tests of the GLUE metrics against scikit-learn and SciPy called directly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import fewdims.metrics as metrics
import fewdims.tasks as tasks
from fewdims.errors import FewdimsError


def _random_classes(seed: int, n: int = 200, classes: int = 2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    noisy = np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n))  # correlated predictions
    return noisy, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn(seed):
    predictions, labels = _random_classes(seed)
    assert metrics.compute_metrics("cola", predictions, labels) == {
        "matthews": pytest.approx(matthews_corrcoef(labels, predictions))}
    for task in ("mrpc", "qqp"):
        assert metrics.compute_metrics(task, predictions, labels) == {
            "accuracy": pytest.approx(accuracy_score(labels, predictions)),
            "f1": pytest.approx(f1_score(labels, predictions))}
    for task in ("sst2", "qnli", "rte", "wnli"):
        assert metrics.compute_metrics(task, predictions, labels) == {
            "accuracy": pytest.approx(accuracy_score(labels, predictions))}
    predictions3, labels3 = _random_classes(seed, classes=3)
    assert metrics.compute_metrics("mnli", predictions3, labels3)["accuracy"] == pytest.approx(
        accuracy_score(labels3, predictions3))


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 300).astype(np.float32)
    predictions = labels + rng.normal(0, 1.5, 300)
    result = metrics.compute_metrics("stsb", predictions, labels)
    assert result == {"pearson": pytest.approx(pearsonr(predictions, labels)[0]),
                      "spearman": pytest.approx(spearmanr(predictions, labels)[0])}


def test_results_are_python_floats_with_the_task_keys():
    predictions, labels = _random_classes(5)
    for spec in tasks.TASKS.values():
        values = labels.astype(np.float32) * 2.5 if spec.is_regression else labels
        result = metrics.compute_metrics(spec.name, predictions, values)
        assert tuple(result) == spec.metrics
        assert all(type(value) is float for value in result.values())


def test_constant_predictions_give_zero_correlation_without_warnings():
    labels = np.linspace(0, 5, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.compute_metrics("stsb", np.full(50, 2.5), labels) == {"pearson": 0.0, "spearman": 0.0}
        assert metrics.compute_metrics("cola", np.ones(50, dtype=int), (labels > 2).astype(int)) == {"matthews": 0.0}


def test_bad_inputs_raise():
    with pytest.raises(FewdimsError, match="3 predictions but 4 labels"):
        metrics.compute_metrics("sst2", np.zeros(3), np.zeros(4))
    with pytest.raises(FewdimsError, match="argmax"):
        metrics.compute_metrics("sst2", np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(FewdimsError, match="class ids"):
        metrics.compute_metrics("sst2", np.array([0.2, 0.9]), np.array([0, 1]))
    with pytest.raises(FewdimsError, match="zero rows"):
        metrics.compute_metrics("sst2", np.array([]), np.array([]))
    with pytest.raises(FewdimsError, match="unknown task"):
        metrics.compute_metrics("glue", np.zeros(2), np.zeros(2))


def test_main_metric():
    assert [metrics.main_metric(t) for t in ("CoLA", "sts-b", "mrpc", "qqp", "sst2", "mnli")] == [
        "matthews", "pearson", "accuracy", "accuracy", "accuracy", "accuracy"]


def test_majority_baseline():
    train = np.array([1, 1, 1, 0])
    evaluation = np.array([1, 0, 0, 1, 1])
    assert metrics.majority_baseline("sst2", train, evaluation) == {"accuracy": pytest.approx(0.6)}
    assert metrics.majority_baseline("cola", train, evaluation) == {"matthews": 0.0}
    mrpc = metrics.majority_baseline("mrpc", train, evaluation)
    assert mrpc == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(f1_score(evaluation, np.ones(5, int)))}
    assert metrics.majority_baseline("rte", np.array([0, 1]), evaluation) == {"accuracy": pytest.approx(0.4)}
    scores = np.array([0.5, 4.0, 2.0], dtype=np.float32)
    assert metrics.majority_baseline("stsb", scores, scores) == {"pearson": 0.0, "spearman": 0.0}
