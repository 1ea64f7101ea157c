"""Tests for fewdims.stats: intervals, bootstrap, seed intervals, verdict rules and overlap tests."""
import math
import time

import numpy as np
import pytest
from scipy.stats import t as student_t

import fewdims.stats as st
from fewdims.errors import FewdimsError
from fewdims.metrics import compute_metrics
from fewdims.stats import (Interval, above_majority, bootstrap_metric, bootstrap_samples, combined_interval,
                           equivalence_verdict, hypergeometric_overlap_pvalue, majority_interval,
                           majority_predictions, paired_difference, paired_seed_difference, permutation_pvalue,
                           retention, retention_from_samples, retention_interval, seed_interval,
                           superiority_verdict)


def noisy_labels(rng, labels, accuracy, classes=2):
    """Predictions that equal `labels` with probability `accuracy`, else a different class."""
    wrong = (labels + rng.integers(1, classes, size=len(labels))) % classes
    return np.where(rng.random(len(labels)) < accuracy, labels, wrong)


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1500)
    return noisy_labels(rng, labels, 0.8), labels


@pytest.fixture
def regression():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 1500)
    return labels + rng.normal(0, 1, 1500), labels


def test_interval_str_and_helpers():
    iv = Interval(78.7, 76.14, 81.25, 500, "bootstrap")
    assert str(iv) == "78.7 [76.1, 81.2]"
    assert iv.contains(80) and not iv.contains(82) and iv.contains(76.14)
    assert iv.above(76) and not iv.above(76.14) and iv.below(81.3) and not iv.below(81.25)
    assert iv.width == pytest.approx(5.11)
    assert str(Interval(-1e-17, -1e-18, 0.0, 3, "x")) == "0.0 [0.0, 0.0]"  # no "-0.0"
    assert str(Interval(0.9312, 0.9, 0.95, 3, "r", unit="fraction")) == "0.931 [0.900, 0.950]"
    assert iv.as_dict()["method"] == "bootstrap"
    with pytest.raises(Exception):
        iv.low = 0  # frozen


CASES = [("sst2", "accuracy"), ("mrpc", "f1"), ("cola", "matthews"), ("mnli", "accuracy"),
         ("stsb", "pearson"), ("stsb", "spearman")]


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("task,metric", CASES)
def test_batch_metric_matches_compute_metrics(task, metric):
    """The vectorised per-resample metric reproduces metrics.compute_metrics row by row, degenerate rows too."""
    rng = np.random.default_rng(2)
    n = 60
    if task == "stsb":
        labels = np.round(rng.uniform(0, 5, n), 1)  # rounding creates ties for Spearman
        rows = [labels + rng.normal(0, 1, n), np.round(labels + rng.normal(0, 2, n)), np.full(n, 2.5),
                -labels, labels]
    else:
        classes = 3 if task == "mnli" else 2
        labels = rng.integers(0, classes, n)
        rows = [noisy_labels(rng, labels, acc, classes) for acc in (0.9, 0.5, 0.2)]
        rows += [np.zeros(n, int), np.ones(n, int), labels]
    batch = st.batch_metric(metric, np.array(rows), labels)
    expected = [compute_metrics(task, r, labels)[metric] for r in rows]
    np.testing.assert_allclose(batch, expected, atol=1e-12)
    # Resampled rows (duplicates, possibly constant labels) against a per-row recomputation.
    idx = rng.integers(0, n, size=(20, n))
    idx[0] = 0  # a resample that is a single example repeated: constant predictions and labels
    preds = np.array(rows[0])
    batch = st.batch_metric(metric, preds[idx], labels[idx])
    expected = [compute_metrics(task, preds[i], labels[i])[metric] for i in idx]
    np.testing.assert_allclose(batch, expected, atol=1e-12)


def test_bernoulli_interval_contains_truth_and_has_binomial_width():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    preds = noisy_labels(rng, labels, 0.8)
    iv = bootstrap_metric("sst2", preds, labels)
    assert iv.contains(80.0)
    assert iv.estimate == pytest.approx(100 * np.mean(preds == labels))
    expected_width = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 1000) * 100
    assert iv.width == pytest.approx(expected_width, rel=0.15)
    assert iv.n == 1000 and "bootstrap" in iv.method


def test_bootstrap_coverage_over_repeated_experiments():
    """Across 200 simulated dev sets the 95 % interval covers the true accuracy about 95 % of the time."""
    rng = np.random.default_rng(4)
    hits = 0
    for k in range(200):
        labels = rng.integers(0, 2, 300)
        iv = bootstrap_metric("sst2", noisy_labels(rng, labels, 0.8), labels, n_boot=400, seed=k)
        hits += iv.contains(80.0)
    assert 0.89 <= hits / 200 <= 0.99


def test_identical_predictions_give_zero_difference(binary):
    preds, labels = binary
    diff = paired_difference("sst2", preds, preds.copy(), labels)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert equivalence_verdict(diff, 0.0) == "equivalent"
    assert permutation_pvalue("sst2", preds, preds, labels, n_perm=200) == 1.0


def test_shift_and_scale_leave_pearson_unchanged(regression):
    preds, labels = regression
    for other in (preds + 3.0, 2.5 * preds - 1.0):
        diff = paired_difference("stsb", preds, other, labels)
        assert max(abs(diff.estimate), abs(diff.low), abs(diff.high)) < 1e-9


def test_pairing_narrows_the_difference_interval(binary):
    """Two systems that disagree on few examples: the paired interval is far narrower than unpaired ones."""
    preds, labels = binary
    rng = np.random.default_rng(5)
    other = np.where(rng.random(len(labels)) < 0.03, 1 - preds, preds)
    diff = paired_difference("sst2", preds, other, labels)
    a, b = bootstrap_metric("sst2", preds, labels), bootstrap_metric("sst2", other, labels)
    assert diff.width < 0.5 * math.hypot(a.width, b.width)
    assert diff.estimate == pytest.approx(a.estimate - b.estimate)
    assert diff.contains(diff.estimate)


def test_determinism_and_chunking(binary, monkeypatch):
    preds, labels = binary
    first = bootstrap_metric("cola", preds, labels, seed=7)
    assert bootstrap_metric("cola", preds, labels, seed=7) == first
    assert bootstrap_metric("cola", preds, labels, seed=8) != first
    samples = bootstrap_samples("sst2", preds, labels, n_boot=300, seed=1)
    monkeypatch.setattr(st, "_CHUNK_ELEMENTS", 10_000)  # many small chunks: same resamples
    np.testing.assert_array_equal(bootstrap_samples("sst2", preds, labels, n_boot=300, seed=1), samples)
    assert bootstrap_metric("cola", preds, labels, seed=7) == first


def test_equivalence_rules():
    def iv(low, high):
        return Interval((low + high) / 2, low, high, 100, "hand-made")

    assert equivalence_verdict(iv(-0.4, 0.3), 0.5) == "equivalent"
    assert equivalence_verdict(iv(-0.5, 0.5), 0.5) == "equivalent"  # boundaries count as inside
    assert equivalence_verdict(iv(0.6, 2.0), 0.5) == "different"
    assert equivalence_verdict(iv(-3.0, -0.51), 0.5) == "different"
    assert equivalence_verdict(iv(0.5, 2.0), 0.5) == "inconclusive"  # touches +margin
    assert equivalence_verdict(iv(-0.2, 0.8), 0.5) == "inconclusive"
    assert equivalence_verdict(iv(-2.0, 2.0), 0.5) == "inconclusive"
    assert equivalence_verdict(iv(0.1, 0.4), 0.0) == "different"
    assert equivalence_verdict(seed_interval([80.0]), 100.0) == "inconclusive"
    with pytest.raises(FewdimsError, match="margin"):
        equivalence_verdict(iv(0, 1), -1)


def test_superiority_rules():
    def iv(low, high):
        return Interval((low + high) / 2, low, high, 100, "hand-made")

    assert superiority_verdict(iv(0.1, 2.0)) == "better"
    assert superiority_verdict(iv(0.0, 2.0)) == "inconclusive"
    assert superiority_verdict(iv(-2.0, -0.1)) == "worse"
    assert superiority_verdict(iv(0.4, 2.0), margin=0.5) == "inconclusive"
    assert superiority_verdict(iv(0.6, 2.0), margin=0.5) == "better"
    assert superiority_verdict(iv(-2.0, -0.6), margin=0.5) == "worse"
    assert superiority_verdict(seed_interval([1.0])) == "inconclusive"


def test_seed_interval():
    iv = seed_interval([1.0, 2.0, 3.0])
    half = student_t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (iv.estimate, iv.low, iv.high, iv.n) == pytest.approx((2.0, 2.0 - half, 2.0 + half, 3))
    assert iv.width == pytest.approx(2 * 4.3027 / math.sqrt(3), rel=1e-4)
    single = seed_interval([78.0])
    assert single.method == "single run" and single.estimate == 78.0
    assert single.contains(0) and not single.above(-1e9) and "no interval" in str(single)
    with pytest.raises(FewdimsError):
        seed_interval([])


def test_combined_interval(binary):
    preds, labels = binary
    one = combined_interval("sst2", [preds], labels, seed=3)
    alone = bootstrap_metric("sst2", preds, labels, seed=3)
    assert (one.estimate, one.low, one.high) == (alone.estimate, alone.low, alone.high)
    rng = np.random.default_rng(6)
    seeds = [noisy_labels(rng, labels, acc) for acc in (0.70, 0.75, 0.80, 0.85, 0.90)]
    combined = combined_interval("sst2", seeds, labels)
    scores = [compute_metrics("sst2", s, labels)["accuracy"] * 100 for s in seeds]
    assert combined.estimate == pytest.approx(np.mean(scores)) and combined.n == 5
    # Seed spread (sd ~7.9 points, so ~3.5 for the mean) dominates: far wider than one seed's example interval
    assert combined.width > 3 * alone.width
    # ... and close to the seed-only spread (bootstrap percentile vs t-interval differ, so loosely).
    assert 0.4 * seed_interval(scores).width < combined.width < 1.2 * seed_interval(scores).width
    same = combined_interval("sst2", [preds] * 4, labels)  # no seed variation: example interval only
    assert same.width == pytest.approx(alone.width, rel=0.15)


def test_paired_seed_difference(binary):
    preds, labels = binary
    rng = np.random.default_rng(7)
    other = noisy_labels(rng, labels, 0.75)
    one = paired_seed_difference("sst2", [preds], [other], labels, seed=2)
    pair = paired_difference("sst2", preds, other, labels, seed=2)
    assert (one.estimate, one.low, one.high) == pytest.approx((pair.estimate, pair.low, pair.high))
    good = [noisy_labels(rng, labels, acc) for acc in (0.86, 0.88, 0.90)]
    bad = [noisy_labels(rng, labels, acc) for acc in (0.78, 0.80, 0.81, 0.79)]
    diff = paired_seed_difference("sst2", good, bad, labels)
    assert superiority_verdict(diff, margin=1.0) == "better"
    assert superiority_verdict(paired_seed_difference("sst2", bad, good, labels)) == "worse"
    assert diff.contains(diff.estimate) and "4 seeds" in diff.method


def test_majority(binary):
    preds, labels = binary
    train = np.r_[np.ones(60, int), np.zeros(40, int)]
    assert np.all(majority_predictions("sst2", train, 5) == 1)
    assert majority_predictions("stsb", np.array([1.0, 2.0, 4.5]), 2).tolist() == [2.5, 2.5]
    major = majority_interval("sst2", train, labels)
    assert major.estimate == pytest.approx(100 * np.mean(labels == 1))
    model = bootstrap_metric("sst2", preds, labels)
    assert above_majority(model, major) and above_majority(model, major.estimate)
    assert not above_majority(major, major)
    mcc = majority_interval("cola", train, labels)  # a constant predictor has MCC 0 on every resample
    assert (mcc.estimate, mcc.low, mcc.high) == (0.0, 0.0, 0.0)


def test_retention(binary):
    assert retention(80.0, 90.0, 50.0) == pytest.approx(0.75)
    assert retention(90.0, 90.0, 50.0) == 1.0 and retention(50.0, 90.0, 50.0) == 0.0
    assert retention(40.0, 90.0, 50.0) == pytest.approx(-0.25)
    with pytest.raises(FewdimsError, match="reference > majority"):
        retention(80.0, 50.0, 50.0)
    preds, labels = binary
    itself = retention_interval("sst2", preds, preds, labels, 50.0)
    assert (itself.estimate, itself.low, itself.high) == (1.0, 1.0, 1.0)  # paired: exactly 1 on each resample
    rng = np.random.default_rng(8)
    weaker = noisy_labels(rng, labels, 0.7)
    major = np.zeros(len(labels), int)
    iv = retention_interval("sst2", weaker, preds, labels, major)
    score, ref, maj = (100 * compute_metrics("sst2", p, labels)["accuracy"] for p in (weaker, preds, major))
    assert iv.estimate == pytest.approx(retention(score, ref, maj)) and iv.unit == "fraction"
    assert iv.low < iv.estimate < iv.high and iv.high < 1.0
    # A reference that does not beat the majority in most resamples leaves retention unbounded.
    flat = retention_from_samples([60.0] * 100, [50.0] * 90 + [51.0] * 10, 50.0, estimate=0.5)
    assert math.isinf(flat.low) and math.isinf(flat.high)


def test_permutation_pvalue(binary):
    preds, labels = binary
    rng = np.random.default_rng(9)
    worse = noisy_labels(rng, labels, 0.7)
    p = permutation_pvalue("sst2", preds, worse, labels, n_perm=500)
    assert p == pytest.approx(1 / 501)
    near = np.where(rng.random(len(labels)) < 0.01, 1 - preds, preds)
    assert permutation_pvalue("sst2", preds, near, labels, n_perm=500) > 0.05
    assert permutation_pvalue("cola", preds, near, labels, n_perm=200, seed=1) == \
        permutation_pvalue("cola", preds, near, labels, n_perm=200, seed=1)


def test_hypergeometric_overlap_pvalue():
    def direct(k, population, a, b):
        return sum(math.comb(a, i) * math.comb(population - a, b - i)
                   for i in range(k, min(a, b) + 1)) / math.comb(population, b)

    for args in [(5, 768, 20, 20), (0, 768, 20, 20), (3, 100, 10, 15), (10, 50, 10, 10), (1, 768, 1, 1)]:
        assert hypergeometric_overlap_pvalue(*args) == pytest.approx(direct(*args), rel=1e-9, abs=1e-300)
    assert hypergeometric_overlap_pvalue(0, 768, 20, 20) == pytest.approx(1.0)
    # Monte Carlo permutation of the same question agrees.
    rng = np.random.default_rng(10)
    a = np.zeros(100, bool)
    a[:10] = True
    overlaps = np.array([a[rng.permutation(100)[:15]].sum() for _ in range(20_000)])
    assert np.mean(overlaps >= 3) == pytest.approx(hypergeometric_overlap_pvalue(3, 100, 10, 15), abs=0.01)
    with pytest.raises(FewdimsError, match="impossible"):
        hypergeometric_overlap_pvalue(21, 768, 20, 30)
    with pytest.raises(FewdimsError):
        hypergeometric_overlap_pvalue(2.5, 768, 20, 30)


def test_bad_inputs(binary):
    preds, labels = binary
    with pytest.raises(FewdimsError, match="level"):
        bootstrap_metric("sst2", preds, labels, level=95)
    with pytest.raises(FewdimsError, match="n_boot"):
        bootstrap_metric("sst2", preds, labels, n_boot=5)
    with pytest.raises(FewdimsError, match="labels"):
        paired_difference("sst2", preds, preds[:-1], labels)
    with pytest.raises(FewdimsError, match="metrics"):
        bootstrap_metric("sst2", preds, labels, metric="pearson")
    with pytest.raises(FewdimsError, match="per seed"):
        combined_interval("sst2", [], labels)


def test_speed(binary, regression):
    """1000 resamples of 1,500 examples: well under a second for accuracy and Pearson."""
    timings = {}
    for name, task, (preds, labels) in [("accuracy", "sst2", binary), ("pearson", "stsb", regression),
                                        ("matthews", "cola", binary)]:
        bootstrap_metric(task, preds[:50], labels[:50], n_boot=10)  # warm imports
        start = time.perf_counter()
        bootstrap_metric(task, preds, labels, n_boot=1000)
        timings[name] = time.perf_counter() - start
    print({k: f"{v * 1000:.0f} ms" for k, v in timings.items()})
    assert timings["accuracy"] < 1.0 and timings["pearson"] < 1.0


def test_seed_resampling_variance_is_unbiased():
    """Seed part of the two-way bootstrap: variance of the resampled mean is s^2 / S (not (S-1)/S * s^2 / S)."""
    boot = np.repeat([[70.0], [80.0], [90.0]], 20_000, axis=1)  # no example variation at all
    means = st._seed_resampled_means(boot, 20_000, np.random.default_rng(0))
    assert np.var(means) == pytest.approx(100.0 / 3, rel=0.05)
    assert np.mean(means) == pytest.approx(80.0, abs=0.2)
