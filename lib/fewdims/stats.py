"""Uncertainty for GLUE scores and comparisons: bootstrap and seed intervals, verdict rules, overlap tests.

Every score is reported with a 95 % interval and every comparison with the interval of its difference,
in the task's metric expressed in points (metric x 100), following Dror et al. (2018) for significance
testing in NLP and Dodge et al. (2020) for seed variance.

* One run: percentile bootstrap over the dev examples (`bootstrap_metric`, `paired_difference`).
* Several seeds: `seed_interval` (t-interval over per-seed scores) or `combined_interval` /
  `paired_seed_difference` (two-way bootstrap over seeds and examples, see their docstrings).
* Verdicts are read off intervals with an equivalence margin in points (`equivalence_verdict`,
  `superiority_verdict`, `above_majority`).

Resampling is deterministic given `seed`: the example indices depend only on (seed, number of examples,
n_boot), so two calls with the same seed on the same dev set resample the *same* examples and their
samples are paired (that is how `retention_interval` pairs a model with its reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import FewdimsError
from .metrics import compute_metrics, main_metric
from .tasks import get_task

_CHUNK_ELEMENTS = 2_000_000  # resampled values held at once (bounds memory for QQP / MNLI-sized dev sets)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval; `n` counts the resampled units (examples or seeds)."""
    estimate: float
    low: float
    high: float
    n: int
    method: str
    unit: str = "points"
    level: float = 0.95

    def __str__(self) -> str:
        digits = 3 if self.unit == "fraction" else 1
        est, low, high = (f"{round(x, digits) + 0.0:.{digits}f}" for x in (self.estimate, self.low, self.high))
        if math.isinf(self.low) and math.isinf(self.high):
            return f"{est} ({self.method}: no interval)"
        return f"{est} [{low}, {high}]"

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def above(self, x: float) -> bool:
        """The whole interval lies strictly above x."""
        return self.low > x

    def below(self, x: float) -> bool:
        """The whole interval lies strictly below x."""
        return self.high < x

    @property
    def width(self) -> float:
        return self.high - self.low

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n,
                "method": self.method, "unit": self.unit, "level": self.level}


def _check_level(level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise FewdimsError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    return (1 - level) / 2, (1 + level) / 2


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, _check_level(level))
    return float(lo), float(hi)


def batch_metric(metric: str, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`metric` of every row of p (B, n) against y (B, n) or (n,), matching metrics.compute_metrics exactly."""
    y = np.broadcast_to(y, p.shape)
    if metric == "accuracy":
        return np.mean(p == y, axis=1)
    if metric == "f1":  # binary F1 of class 1, 0 when there is no positive prediction or label
        tp = np.sum((p == 1) & (y == 1), axis=1)
        wrong = np.sum((p == 1) != (y == 1), axis=1)
        denom = 2 * tp + wrong
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    if metric == "matthews":  # scikit-learn's multiclass formula from the confusion matrix
        lowest = min(p.min(), y.min())
        k, rows = int(max(p.max(), y.max()) - lowest) + 1, p.shape[0]  # absent classes add zero rows/columns
        flat = ((y - lowest) * k + (p - lowest)) + (k * k) * np.arange(rows)[:, None]
        conf = np.bincount(flat.ravel(), minlength=rows * k * k).reshape(rows, k, k).astype(np.float64)
        t_sum, p_sum, total = conf.sum(axis=2), conf.sum(axis=1), float(p.shape[1])
        correct = np.trace(conf, axis1=1, axis2=2)
        cov_tp = correct * total - np.sum(t_sum * p_sum, axis=1)
        cov_pp = total**2 - np.sum(p_sum**2, axis=1)
        cov_tt = total**2 - np.sum(t_sum**2, axis=1)
        denom = cov_pp * cov_tt
        return np.where(denom > 0, cov_tp / np.sqrt(np.where(denom > 0, denom, 1.0)), 0.0)
    if metric in ("pearson", "spearman"):
        p, y = p.astype(np.float64), y.astype(np.float64)
        constant = (np.ptp(p, axis=1) == 0) | (np.ptp(y, axis=1) == 0)  # metrics.py reports 0.0 for these
        if metric == "spearman":
            from scipy.stats import rankdata
            p, y = rankdata(p, axis=1), rankdata(y, axis=1)
        p = p - p.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
        denom = np.sqrt(np.sum(p * p, axis=1) * np.sum(y * y, axis=1))
        r = np.sum(p * y, axis=1) / np.where(constant, 1.0, denom)
        return np.where(constant, 0.0, np.clip(r, -1.0, 1.0))
    raise FewdimsError(f"metric {metric!r} has no bootstrap implementation")


def _prepare(task: str, preds_list, labels, metric: str | None):
    """Validate via compute_metrics; return (metric, full-data scores in points, pred arrays, labels)."""
    spec = get_task(task)
    metric = metric or main_metric(spec.name)
    if metric not in spec.metrics:
        raise FewdimsError(f"{spec.display} has metrics {spec.metrics}, not {metric!r}")
    if len(preds_list) == 0:
        raise FewdimsError(f"{spec.display}: need at least one set of predictions")
    points = [100.0 * compute_metrics(spec.name, p, labels)[metric] for p in preds_list]
    dtype = np.float64 if spec.is_regression else np.int64
    return metric, points, [np.asarray(p).astype(dtype) for p in preds_list], np.asarray(labels).astype(dtype)


def _index_chunks(n: int, n_boot: int, seed: int):
    """Bootstrap index matrices (rows = resamples), in chunks; identical for identical (n, n_boot, seed)."""
    if not isinstance(n_boot, int) or n_boot < 10:
        raise FewdimsError(f"n_boot must be an int >= 10 (1000 is usual), got {n_boot!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n))


def _boot_matrix(metric: str, preds: list[np.ndarray], labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(len(preds), n_boot) metric in points; every prediction set is scored on the same resamples."""
    out = [[] for _ in preds]
    for idx in _index_chunks(len(labels), n_boot, seed):
        y = labels[idx]
        for row, p in zip(out, preds):
            row.append(batch_metric(metric, p[idx], y))
    return 100.0 * np.array([np.concatenate(row) for row in out])


def bootstrap_samples(task: str, preds, labels, n_boot: int = 1000, seed: int = 0,
                      metric: str | None = None) -> np.ndarray:
    """The n_boot resampled scores (points) behind `bootstrap_metric`; same seed + same dev set = paired."""
    metric, _, p, y = _prepare(task, [preds], labels, metric)
    return _boot_matrix(metric, p, y, n_boot, seed)[0]


def bootstrap_metric(task: str, preds, labels, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     metric: str | None = None) -> Interval:
    """Score of one run (points) with a percentile-bootstrap interval over the dev examples.

    The estimate is the metric on the whole dev set; the interval holds the central `level` share of the
    metric recomputed on n_boot resamples of the examples drawn with replacement.
    """
    metric, points, p, y = _prepare(task, [preds], labels, metric)
    low, high = _percentile(_boot_matrix(metric, p, y, n_boot, seed)[0], level)
    return Interval(points[0], low, high, len(y), f"bootstrap over {len(y)} examples ({metric})", level=level)


def paired_difference(task: str, preds_a, preds_b, labels, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, metric: str | None = None) -> Interval:
    """metric(a) - metric(b) in points, with a paired bootstrap interval.

    Both systems are scored on the same resampled example indices, so the interval reflects only how
    differently they behave on the same examples (much narrower than comparing two separate intervals).
    """
    metric, points, p, y = _prepare(task, [preds_a, preds_b], labels, metric)
    boot = _boot_matrix(metric, p, y, n_boot, seed)
    low, high = _percentile(boot[0] - boot[1], level)
    return Interval(points[0] - points[1], low, high, len(y),
                    f"paired bootstrap over {len(y)} examples ({metric})", level=level)


def seed_interval(values, level: float = 0.95, unit: str = "points") -> Interval:
    """Mean over per-seed scores with a Student-t interval (mean +- t * sd / sqrt(n)).

    With a single run there is no estimate of seed variance: the interval is (-inf, +inf) and the method
    is "single run", so every verdict drawn from it is inconclusive.
    """
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise FewdimsError(f"seed_interval needs finite per-seed scores, got {values!r}")
    mean = float(values.mean())
    if values.size == 1:
        return Interval(mean, -math.inf, math.inf, 1, "single run", unit, level)
    half = float(t.ppf(_check_level(level)[1], values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return Interval(mean, mean - half, mean + half, int(values.size), f"t-interval over {values.size} seeds",
                    unit, level)


def _seed_resampled_means(boot: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Per replicate, the mean over seeds drawn with replacement; seed deviations are inflated by
    sqrt(S / (S - 1)) so the seed part of the variance is unbiased (s^2 / S, not (S-1)/S * s^2 / S)."""
    seeds = boot.shape[0]
    full = boot.mean(axis=0)
    if seeds == 1:
        return full
    pick = rng.integers(0, seeds, size=(n_boot, seeds))
    drawn = np.take_along_axis(boot.T, pick, axis=1).mean(axis=1)
    return full + math.sqrt(seeds / (seeds - 1)) * (drawn - full)


def _by_seed(name: str, preds_by_seed) -> list:
    preds = list(preds_by_seed)
    if len(preds) == 0:
        raise FewdimsError(f"{name} must hold one prediction array per seed, got none")
    return preds


def combined_interval(task: str, per_seed_preds, labels, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, metric: str | None = None) -> Interval:
    """Mean score over seeds (points) with an interval covering both seed and example variation.

    Two-way bootstrap: seeds and dev examples are crossed (every seed is scored on the same examples), so
    each replicate draws one resample of the examples, shared by all seeds, and independently draws S seeds
    with replacement; the replicate's value is the mean over the drawn seeds of their metric on the drawn
    examples, with seed deviations inflated by sqrt(S/(S-1)) to undo the small-sample shrinkage. The
    interval is the central `level` share of those values. With fewer than ~5 seeds the seed variance is
    itself poorly estimated and the interval is optimistic; with one seed it is the example bootstrap.
    """
    preds = _by_seed("per_seed_preds", per_seed_preds)
    metric, points, p, y = _prepare(task, preds, labels, metric)
    boot = _boot_matrix(metric, p, y, n_boot, seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    low, high = _percentile(_seed_resampled_means(boot, n_boot, rng), level)
    method = f"two-way bootstrap over {len(p)} seeds x {len(y)} examples ({metric})"
    return Interval(float(np.mean(points)), low, high, len(p), method, level=level)


def paired_seed_difference(task: str, preds_a_by_seed, preds_b_by_seed, labels, n_boot: int = 1000,
                           seed: int = 0, level: float = 0.95, metric: str | None = None) -> Interval:
    """mean over seeds of metric(a) - mean over seeds of metric(b), in points.

    Two-way bootstrap as in `combined_interval`: each replicate resamples the dev examples once (shared by
    both systems and all their seeds, so the comparison is paired over examples) and resamples the seeds of
    a and of b independently (seed i of a has nothing to do with seed i of b; their counts may differ).
    """
    a, b = _by_seed("preds_a_by_seed", preds_a_by_seed), _by_seed("preds_b_by_seed", preds_b_by_seed)
    metric, points, p, y = _prepare(task, a + b, labels, metric)
    boot = _boot_matrix(metric, p, y, n_boot, seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    diff = (_seed_resampled_means(boot[:len(a)], n_boot, rng)
            - _seed_resampled_means(boot[len(a):], n_boot, rng))
    low, high = _percentile(diff, level)
    method = f"paired two-way bootstrap, {len(a)} vs {len(b)} seeds x {len(y)} examples ({metric})"
    return Interval(float(np.mean(points[:len(a)]) - np.mean(points[len(a):])), low, high,
                    min(len(a), len(b)), method, level=level)


def majority_predictions(task: str, train_labels, n_eval: int) -> np.ndarray:
    """The constant predictor of metrics.majority_baseline: most frequent train class (STS-B: train mean)."""
    spec = get_task(task)
    train = np.asarray(train_labels)
    if train.ndim != 1 or train.size == 0:
        raise FewdimsError(f"{spec.display}: train_labels must be a non-empty 1-D array")
    if spec.is_regression:
        return np.full(n_eval, float(train.mean()))
    return np.full(n_eval, int(np.argmax(np.bincount(train.astype(np.int64)))), dtype=np.int64)


def majority_interval(task: str, train_labels, eval_labels, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, metric: str | None = None) -> Interval:
    """Bootstrap interval of the majority-class (STS-B: train-mean) predictor's score on the dev set."""
    preds = majority_predictions(task, train_labels, len(np.asarray(eval_labels)))
    return bootstrap_metric(task, preds, eval_labels, n_boot, seed, level, metric)


def above_majority(interval: Interval, majority) -> bool:
    """Informative task: the lower end of the model's interval lies strictly above the majority score.

    `majority` is the majority predictor's score in points, or its Interval (its estimate is used: it is the
    score of a constant predictor on this very dev set, whose sampling is already in the model's interval).
    """
    score = majority.estimate if isinstance(majority, Interval) else float(majority)
    return interval.low > score


def retention(score: float, reference: float, majority: float) -> float:
    """Share of the reference's gain over the majority baseline that `score` keeps:
    (score - majority) / (reference - majority); 1 = as good as the reference, 0 = no better than majority."""
    gain = reference - majority
    if not gain > 0:
        raise FewdimsError(f"retention needs reference > majority, got reference={reference}, majority={majority}")
    return (score - majority) / gain


def retention_from_samples(score_samples, reference_samples, majority, estimate: float,
                           level: float = 0.95) -> Interval:
    """Percentile interval of retention from paired bootstrap samples (same seed, same dev set).

    `reference_samples` and `majority` may be arrays of samples or scalars (a published reference score,
    a fixed baseline). Resamples in which the reference does not beat the majority leave retention
    undefined; if more than (1 - level) / 2 of them do, the interval is unbounded.
    """
    s = np.asarray(score_samples, dtype=np.float64)
    gain = np.asarray(reference_samples, dtype=np.float64) - np.asarray(majority, dtype=np.float64)
    ratio = (s - np.asarray(majority, dtype=np.float64)) / np.where(gain > 0, gain, np.nan)
    ratio = np.broadcast_to(ratio, np.broadcast(s, gain).shape)
    undefined = float(np.mean(np.isnan(ratio)))
    if undefined > _check_level(level)[0]:
        return Interval(estimate, -math.inf, math.inf, ratio.size, "retention undefined in too many resamples",
                        "fraction", level)
    low, high = np.nanquantile(ratio, _check_level(level))
    return Interval(estimate, float(low), float(high), ratio.size, "paired bootstrap retention", "fraction", level)


def retention_interval(task: str, preds, reference, labels, majority, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95, metric: str | None = None) -> Interval:
    """Retention (fraction) of `preds` relative to `reference`, above `majority`, with a paired bootstrap
    interval. `reference` and `majority` are prediction arrays (scored on the same resamples) or scores in
    points (held fixed)."""
    def samples_and_point(x):
        if np.ndim(x) == 0:
            return float(x), float(x)
        _, pts, p, y = _prepare(task, [x], labels, metric)
        return _boot_matrix(metric or main_metric(task), p, y, n_boot, seed)[0], pts[0]

    (s, s0), (r, r0), (m, m0) = map(samples_and_point, (preds, reference, majority))
    return retention_from_samples(s, r, m, retention(s0, r0, m0), level)


def equivalence_verdict(diff_interval: Interval, margin: float) -> str:
    """Verdict on a difference interval with an equivalence margin (same units, >= 0).

    "equivalent": the whole interval lies within [-margin, +margin];
    "different": the whole interval lies strictly below -margin or strictly above +margin;
    "inconclusive": anything else (the interval straddles -margin or +margin).
    A 95 % interval inside the margin is a two one-sided tests (TOST) equivalence at the 2.5 % level each.
    """
    if not margin >= 0:
        raise FewdimsError(f"margin must be a non-negative number of points, got {margin!r}")
    if math.isnan(diff_interval.low) or math.isnan(diff_interval.high):
        raise FewdimsError(f"interval has NaN ends: {diff_interval!r}")
    if -margin <= diff_interval.low and diff_interval.high <= margin:
        return "equivalent"
    if diff_interval.high < -margin or diff_interval.low > margin:
        return "different"
    return "inconclusive"


def superiority_verdict(diff_interval: Interval, margin: float = 0.0) -> str:
    """Verdict on a difference a - b: "better" if the whole interval lies strictly above +margin, "worse" if
    it lies strictly below -margin, "inconclusive" otherwise."""
    if not margin >= 0:
        raise FewdimsError(f"margin must be a non-negative number of points, got {margin!r}")
    if diff_interval.low > margin:
        return "better"
    if diff_interval.high < -margin:
        return "worse"
    return "inconclusive"


def permutation_pvalue(task: str, preds_a, preds_b, labels, n_perm: int = 1000, seed: int = 0,
                       metric: str | None = None) -> float:
    """Two-sided paired approximate-randomization p-value (Dror et al. 2018) for metric(a) != metric(b).

    Each permutation swaps the two systems' predictions on a random half of the examples;
    p = (1 + #{|permuted difference| >= |observed difference|}) / (1 + n_perm).
    """
    metric, points, (pa, pb), y = _prepare(task, [preds_a, preds_b], labels, metric)
    observed = abs(points[0] - points[1]) / 100.0
    rng = np.random.default_rng(seed)
    rows, extreme = max(1, _CHUNK_ELEMENTS // len(y)), 0
    for start in range(0, n_perm, rows):
        swap = rng.random((min(rows, n_perm - start), len(y))) < 0.5
        diff = batch_metric(metric, np.where(swap, pb, pa), y) - batch_metric(metric, np.where(swap, pa, pb), y)
        extreme += int(np.sum(np.abs(diff) >= observed - 1e-12))
    return (1 + extreme) / (1 + n_perm)


def hypergeometric_overlap_pvalue(overlap: int, population: int, set_a_size: int, set_b_size: int) -> float:
    """P(overlap >= observed) when set b is drawn uniformly at random from the population, independently
    of set a: the exact one-sided test that two dimension sets overlap more than chance (a permutation test
    of the same question converges to it)."""
    from scipy.stats import hypergeom

    values = (overlap, population, set_a_size, set_b_size)
    if any(isinstance(v, bool) or int(v) != v or v < 0 for v in values):
        raise FewdimsError(f"overlap, population and set sizes must be non-negative integers, got {values}")
    if max(set_a_size, set_b_size) > population or overlap > min(set_a_size, set_b_size):
        raise FewdimsError(f"impossible overlap: {overlap} of sets {set_a_size} and {set_b_size} in {population}")
    return float(hypergeom.sf(int(overlap) - 1, int(population), int(set_a_size), int(set_b_size)))
