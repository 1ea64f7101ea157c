"""Tests for fewdims.scan: the batched pair scan against the plain one-pair reference."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from fewdims.errors import FewdimsError
from fewdims.scan import PairScan, fit_pair, scan_pairs


def make_data(seed=0, n=200, n_dev=120, d=12, classes=2, informative=(3, 8), noise=1.0):
    """Random features where the label depends on the two `informative` dims (plus label noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + n_dev, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)
    i, j = informative
    signal = x[:, i] - 0.7 * x[:, j] + noise * rng.normal(size=n + n_dev)
    if classes == 2:
        y = (signal > np.median(signal)).astype(int)
    else:
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1]))
    return x[:n], y[:n], x[n:], y[n:]


def pair_score(data, i, j, **kw):
    tr, ytr, dv, ydv = data
    return fit_pair(tr[:, [i, j]], ytr, dv[:, [i, j]], ydv, **kw)


def lookup(scan: PairScan, i, j):
    return scan.scores[np.flatnonzero((scan.pairs[:, 0] == i) & (scan.pairs[:, 1] == j))[0]]


@pytest.mark.parametrize("classes", [2, 3])
def test_scan_matches_reference_and_finds_planted_pair(classes):
    data = make_data(classes=classes)
    scan = scan_pairs(*data, chunk=7)  # small chunk: exercises chunk boundaries
    assert np.array_equal(scan.scores, scan_pairs(*data, chunk=7, threads=1).scores)  # threads don't change results
    assert scan.pairs.shape == (66, 2) and np.all(scan.pairs[:, 0] < scan.pairs[:, 1])
    for i, j in [(3, 8), (0, 1), (2, 11), (5, 6), (4, 9)]:
        assert lookup(scan, i, j) == pytest.approx(pair_score(data, i, j), abs=1e-4)
    best = scan.top(3)
    assert best[0][:2] == (3, 8) and best[0][2] >= best[1][2] >= best[2][2]
    importance = scan.dimension_importance()
    assert importance.shape == (12,) and importance[3] == importance[8] == best[0][2]


def test_multiclass_reference_is_converged_softmax():
    # The full 3-class Newton fit reaches a stationary point of the penalised objective.
    tr, ytr, dv, ydv = make_data(classes=3)
    score = fit_pair(tr[:, [3, 8]], ytr, dv[:, [3, 8]], ydv, num_classes=3, newton_steps=20)
    assert score == pytest.approx(pair_score((tr, ytr, dv, ydv), 3, 8, num_classes=3), abs=1e-12)
    assert score > 0.6  # well above the 1/3 chance level


def test_agrees_with_sklearn_on_separated_pair():
    tr, ytr, dv, ydv = make_data(noise=0.3)
    cols = [3, 8]
    mean, std = tr[:, cols].mean(0), tr[:, cols].std(0)
    clf = LogisticRegression(C=1e4, max_iter=10_000).fit((tr[:, cols] - mean) / std, ytr)
    sk_acc = clf.score((dv[:, cols] - mean) / std, ydv)
    ours = pair_score((tr, ytr, dv, ydv), 3, 8)
    assert ours > 0.85 and abs(ours - sk_acc) <= 2 / len(ydv)


def test_regression_path():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10)) * 2 + 1
    y = 0.8 * x[:, 2] + 0.5 * x[:, 7] + 0.5 * rng.normal(size=300)
    data = (x[:200], y[:200], x[200:], y[200:])
    scan = scan_pairs(*data, task_type="regression")
    assert scan.top(1)[0][:2] == (2, 7) and scan.top(1)[0][2] > 0.8
    for i, j in [(2, 7), (0, 1), (3, 9)]:
        assert lookup(scan, i, j) == pytest.approx(pair_score(data, i, j, task_type="regression"), abs=1e-8)


def test_dims_subset_and_torch_input():
    tr, ytr, dv, ydv = make_data()
    scan = scan_pairs(torch.from_numpy(tr).float(), torch.from_numpy(ytr), dv, ydv, dims=[8, 3, 5])
    assert scan.pairs.tolist() == [[3, 5], [3, 8], [5, 8]]
    importance = scan.dimension_importance()
    assert np.isnan(importance[0]) and importance[8] == scan.top(1)[0][2]
    assert len(scan.top(100)) == 3


def test_bad_inputs_raise():
    tr, ytr, dv, ydv = make_data()
    with pytest.raises(FewdimsError, match="must match"):
        scan_pairs(tr, ytr[:-1], dv, ydv)
    with pytest.raises(FewdimsError, match="d=2"):
        scan_pairs(tr[:, :1], ytr, dv[:, :1], ydv)
    with pytest.raises(FewdimsError, match="features"):
        scan_pairs(tr, ytr, dv[:, :5], ydv)
    bad = tr.copy()
    bad[0, 0] = np.inf
    with pytest.raises(FewdimsError, match="NaN or inf"):
        scan_pairs(bad, ytr, dv, ydv)
    with pytest.raises(FewdimsError, match="integer class ids"):
        scan_pairs(tr, ytr + 0.5, dv, ydv)
    with pytest.raises(FewdimsError, match="num_classes"):
        scan_pairs(tr, ytr * 2, dv, ydv, num_classes=2)
    with pytest.raises(FewdimsError, match="task_type"):
        scan_pairs(tr, ytr, dv, ydv, task_type="ranking")
    with pytest.raises(FewdimsError, match="dims"):
        scan_pairs(tr, ytr, dv, ydv, dims=[1, 1])
    with pytest.raises(FewdimsError, match="exactly 2"):
        fit_pair(tr[:, :3], ytr, dv[:, :3], ydv)
    with pytest.raises(FewdimsError, match="k must"):
        scan_pairs(tr, ytr, dv, ydv, dims=[0, 1]).top(0)
