"""Outlier dimensions of BERT's sentence vectors: the numerics of the outliers chapter (the analysis that the
reference run carries, with the model in memory, is fewdims.outlier_analysis).

Three earlier lines of work found a handful of special dimensions in BERT-family models:

* Rudman, Chen & Eickhoff (2023, arXiv 2310.17715; code wrudman/outlier_dimensions, `max_var_predict`): after
  fine-tuning, the single highest-variance dimension of the last-layer sentence vector, cut by one threshold
  fitted on the training data by brute force, classifies the task with a small error. `fit_one_dim` is that
  classifier (an exhaustive search over every midpoint between sorted training values instead of their 101-point
  grid, maximising the task's main metric, which is accuracy for all of their tasks); regression gets a
  one-feature least-squares line.
* Kovaleva, Kulshreshtha, Rogers & Rumshisky (2021, arXiv 2105.06990): a few dimensions have outlier scaling
  factors and biases in the output LayerNorm of (almost) every layer, and zeroing them collapses the model.
  `layernorm_outliers` applies the rule stated by LN_SIGMAS and LN_MOST; `zeroed_layernorms` disables them.
* Timkey & van Schijndel (2021, arXiv 2109.04404): 1-3 "rogue" dimensions dominate cosine similarity.
  `cosine_contributions` is their decomposition E[cos(x, y)] = sum_i E[x_i y_i / (|x| |y|)], computed exactly
  over every pair of distinct examples of a sample.

Everything here is deterministic: the held-out slice, the random dimensions and the bootstrap resamples are
seeded by the constants below.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .errors import FewdimsError
from .metrics import compute_metrics
from .stats import Interval, batch_metric, bootstrap_samples
from .tasks import get_task

# -- the rules, as named constants (printed in the notebook) ------------------------------------------------------
LN_SIGMAS = 3.0      # Kovaleva: a LayerNorm weight is an outlier beyond 3 standard deviations from its LayerNorm's mean
LN_MOST = 0.5        # ... and a dimension is an outlier when that holds in more than half of the layers
LN_MODULE = "output"  # the LayerNorm at the end of each encoder layer (BertOutput.LayerNorm), as in Kovaleva et al.
RUDMAN_VARIANCE_RATIO = 5.0  # Rudman et al. call a dimension an outlier when its variance is >= 5x the mean variance
TOP_K = 3            # "top-3": the three dimensions with the largest variance / cosine contribution
FALLBACK_DIMS = 2    # no dimension passes the LayerNorm rule: the test zeroes this many largest deviations instead
                     # (reported, never counted for Kovaleva's claim)
HELDOUT_SEED = 13    # which train rows form the held-out slice
RANDOM_DIM_SEED = 7  # which random single dimensions face the highest-variance one (the same for every task)
RANDOM_ZERO_SEED = 11  # which random dimensions are zeroed beside the LayerNorm outliers (draw i: seed + i)
BOOT_SEED = 0        # bootstrap resamples (stats: same seed + same dev set = paired samples)
MAX_CANDIDATES = 4096  # brute-force thresholds per dimension (every midpoint up to this many, else quantiles)
MULTI_GRID = 24      # >2 classes: cut points at this many quantiles and this many widest gaps; C-1 cuts x orders
ANALYSIS_VERSION = 1  # bump when what `analyse` stores changes: stored records then get it recomputed


# -- representations -----------------------------------------------------------------------------------------------
def _matrix(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise FewdimsError(f"{name} must be an (n >= 2 examples) x (d dims) matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise FewdimsError(f"{name} contains NaN or inf")
    return x


def dimension_variance(x) -> np.ndarray:
    """Per-dimension variance (ddof 0, as numpy's var in Rudman et al.'s code) of an examples x dims matrix."""
    return _matrix("x", x).var(axis=0)


def ranked(values, k: int | None = None) -> list[int]:
    """Indices of `values` from the largest down (ties: the lower index first), the first k."""
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:k]]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cosine_contributions(x) -> np.ndarray:
    """Timkey & van Schijndel's decomposition, exactly: for every dimension i, the mean over all ordered pairs of
    distinct examples (a, b) of u_a,i * u_b,i with u = x / |x|. The contributions sum to the mean pairwise cosine
    similarity (`mean_pairwise_cosine`); (sum_a u_a,i)^2 - sum_a u_a,i^2 is the sum over those pairs."""
    u = _unit_rows(_matrix("x", x))
    n = len(u)
    s, q = u.sum(axis=0), (u * u).sum(axis=0)
    return (s * s - q) / (n * (n - 1))


def mean_pairwise_cosine(x) -> float:
    """Mean cosine similarity over all ordered pairs of distinct examples (the brute-force reference)."""
    u = _unit_rows(_matrix("x", x))
    sims = u @ u.T
    n = len(u)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def top_share(values, k: int) -> float:
    """Share of the total held by the k largest values (contributions may be negative; the total is their sum)."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    return float(np.sort(values)[::-1][:k].sum() / total) if total != 0 else math.nan


def _resample_counts(n: int, n_boot: int, seed: int):
    """Bootstrap resamples of n examples as count vectors (rows), in chunks; deterministic for (n, n_boot, seed)."""
    rng = np.random.default_rng([seed, n, n_boot])
    rows = max(1, 250_000 // n)
    for start in range(0, n_boot, rows):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(rows, n_boot - start)).astype(np.float64)


def concentration(x, k: int = TOP_K, n_boot: int = 1000, seed: int = BOOT_SEED, level: float = 0.95) -> dict:
    """How concentrated a sample of sentence vectors is, with percentile-bootstrap intervals over the examples:
    {'variance': [top-1 share, top-k share], 'cosine': [top-1 share, top-k share]} as Intervals (fractions), where
    a share is the part of the total variance (of the expected cosine similarity) held by the 1 or k largest
    dimensions, re-ranked in every resample."""
    x = _matrix("x", x)
    n, d = x.shape
    u = _unit_rows(x)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    point_var, point_cos = dimension_variance(x), cosine_contributions(x)
    samples = {"variance": [[], []], "cosine": [[], []]}
    for counts in _resample_counts(n, n_boot, seed):
        mean = counts @ x / n
        var = counts @ (x * x) / n - mean * mean
        # pairs of distinct examples of the resample (an example drawn twice is not a pair with itself): weight
        # w_a * w_b for a != b, i.e. (sum_a w_a u_a)^2 - sum_a w_a^2 u_a^2 over n^2 - sum_a w_a^2 pairs
        s, q = counts @ u, (counts * counts) @ (u * u)
        cos = (s * s - q) / (n * n - (counts * counts).sum(axis=1, keepdims=True))
        for name, values in (("variance", var), ("cosine", cos)):
            ordered = -np.sort(-values, axis=1)
            total = values.sum(axis=1)
            safe = np.where(total != 0, total, np.nan)
            samples[name][0].append(ordered[:, 0] / safe)
            samples[name][1].append(ordered[:, :k].sum(axis=1) / safe)
    out = {}
    for name, point in (("variance", point_var), ("cosine", point_cos)):
        out[name] = []
        for j, top in enumerate((1, k)):
            values = np.concatenate(samples[name][j])
            values = values[np.isfinite(values)]
            low, high = (np.quantile(values, (lo_q, hi_q)) if len(values) else (-math.inf, math.inf))
            out[name].append(Interval(top_share(point, top), float(low), float(high), n,
                                      f"bootstrap over {n} examples", "fraction", level))
    return out


# -- LayerNorm outliers (Kovaleva et al.) ----------------------------------------------------------------------------
def layernorm_outliers(layers, sigmas: float = LN_SIGMAS, most: float = LN_MOST) -> dict:
    """`layers`: one (scale, bias) pair of vectors per layer. A dimension is flagged in a layer when its scale or its
    bias lies more than `sigmas` standard deviations from the mean of that vector; it is an outlier when flagged in
    more than `most` of the layers. A vector with zero spread (e.g. a freshly initialised LayerNorm) flags nothing.
    Returns {'outliers': [dims], 'layers': L, 'flagged': [[dim, layers flagged, max |z|], ...] (flagged dims, most
    flagged first), 'max_abs_z': per-dimension max |z| over layers and vectors}."""
    layers = list(layers)
    if not layers:
        raise FewdimsError("layernorm_outliers needs at least one layer's (scale, bias)")
    d = len(np.asarray(layers[0][0]))
    counts, zmax = np.zeros(d, dtype=int), np.zeros(d)
    for scale, bias in layers:
        flagged = np.zeros(d, dtype=bool)
        for v in (scale, bias):
            v = np.asarray(v, dtype=np.float64)
            if v.shape != (d,):
                raise FewdimsError(f"every LayerNorm vector must have {d} entries, got shape {v.shape}")
            sd = v.std()
            if sd > 0:
                z = np.abs(v - v.mean()) / sd
                flagged |= z > sigmas
                zmax = np.maximum(zmax, z)
        counts += flagged
    outliers = [int(i) for i in np.where(counts > most * len(layers))[0]]
    order = sorted(np.where(counts > 0)[0], key=lambda i: (-counts[i], -zmax[i], i))
    return {"outliers": outliers, "layers": len(layers),
            "flagged": [[int(i), int(counts[i]), round(float(zmax[i]), 3)] for i in order],
            "max_abs_z": zmax}


def fallback_dims(ln: dict, n: int = FALLBACK_DIMS) -> list[int]:
    """The n dimensions with the largest LayerNorm deviations (most layers flagged, then largest |z|)."""
    return sorted(ranked(np.asarray(ln["max_abs_z"]) + 1000.0 * _counts(ln), n))


def _counts(ln: dict) -> np.ndarray:
    out = np.zeros(len(ln["max_abs_z"]))
    for dim, count, _ in ln["flagged"]:
        out[dim] = count
    return out


# -- one-dimension predictors (Rudman et al.) ------------------------------------------------------------------------
def _candidates(x: np.ndarray) -> np.ndarray:
    values = np.unique(x)
    mids = (values[:-1] + values[1:]) / 2
    if len(mids) > MAX_CANDIDATES:
        mids = np.unique(np.quantile(mids, np.linspace(0, 1, MAX_CANDIDATES)))
    return np.concatenate([[values[0] - 1.0], mids])  # the first: every example above (one class everywhere)


def _best(metric: str, preds: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(row, score) of the best prediction row (the first of equal ones), scored in chunks."""
    best, best_score = 0, -math.inf
    rows = max(1, 2_000_000 // max(1, preds.shape[1]))
    for start in range(0, len(preds), rows):
        scores = batch_metric(metric, preds[start:start + rows], y)
        j = int(np.argmax(scores))
        if scores[j] > best_score + 1e-12:
            best, best_score = start + j, float(scores[j])
    return best, best_score


def fit_one_dim(x, y, task: str) -> dict:
    """A one-feature predictor fitted on (x, y): regression -> least-squares line; two classes -> one threshold and
    the class predicted above it, chosen by brute force over every midpoint of the sorted values to maximise the
    task's main metric; three classes -> two cuts on a quantile grid and the class of each segment. Returns a
    JSON-able rule with its `train_score` in points."""
    spec = get_task(task)
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y).ravel()
    if len(x) != len(y) or len(x) < 2:
        raise FewdimsError(f"fit_one_dim needs as many labels as values (at least 2), got {len(x)} and {len(y)}")
    if spec.is_regression:
        y = y.astype(np.float64)
        if np.ptp(x) == 0:
            slope, intercept = 0.0, float(y.mean())
        else:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
        rule = {"kind": "linear", "slope": slope, "intercept": intercept}
    elif spec.num_labels == 2:
        y = y.astype(np.int64)
        cuts = _candidates(x)
        above = (x[None, :] > cuts[:, None]).astype(np.int64)
        j, _ = _best(spec.main_metric, np.concatenate([above, 1 - above]), y)
        rule = {"kind": "threshold", "threshold": float(cuts[j % len(cuts)]), "above": 1 if j < len(cuts) else 0}
    elif spec.num_labels <= 4:
        y = y.astype(np.int64)
        values = np.unique(x)
        mids, gaps = (values[:-1] + values[1:]) / 2, np.diff(values)
        # candidate cuts: midpoints at quantiles of the values and at the widest gaps between them
        grid = np.unique(np.concatenate([np.quantile(mids, np.linspace(0, 1, MULTI_GRID)) if len(mids) else [],
                                         mids[np.argsort(-gaps, kind="stable")[:MULTI_GRID]]]))
        orders = np.array(list(itertools.permutations(range(spec.num_labels))))
        best = (-math.inf, None, None)
        for cuts in itertools.combinations(grid, spec.num_labels - 1):
            segment = np.searchsorted(np.asarray(cuts), x, side="right")
            j, value = _best(spec.main_metric, orders[:, segment], y)
            if value > best[0] + 1e-12:
                best = (value, [float(c) for c in cuts], [int(c) for c in orders[j]])
        if best[1] is None:  # fewer distinct values than classes: one class everywhere
            best = (0.0, [float(x.max())] * (spec.num_labels - 1), list(range(spec.num_labels)))
        rule = {"kind": "segments", "cuts": best[1], "classes": best[2]}
    else:
        raise FewdimsError(f"{spec.display} has {spec.num_labels} classes; one-dimension rules handle at most 4")
    rule["train_score"] = 100.0 * float(batch_metric(spec.main_metric, predict_one_dim(rule, x)[None, :],
                                                      y.astype(np.float64 if spec.is_regression else np.int64))[0])
    return rule


def predict_one_dim(rule: dict, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if rule["kind"] == "linear":
        return rule["slope"] * x + rule["intercept"]
    if rule["kind"] == "threshold":
        above = x > rule["threshold"]
        return np.where(above, rule["above"], 1 - rule["above"]).astype(np.int64)
    if rule["kind"] == "segments":
        return np.asarray(rule["classes"], dtype=np.int64)[np.searchsorted(np.asarray(rule["cuts"]), x, side="right")]
    raise FewdimsError(f"unknown one-dimension rule {rule.get('kind')!r}")


# -- intervals and their compact form ----------------------------------------------------------------------------------
def compact(interval: Interval) -> dict:
    """An Interval as the record keeps it: estimate, low, high (rounded), enough to draw and decide."""
    return {k: round(float(getattr(interval, k)), 4) for k in ("estimate", "low", "high")}


def as_interval(stored: dict | None, unit: str = "points") -> Interval | None:
    if not stored:
        return None
    return Interval(stored["estimate"], stored["low"], stored["high"], 0, "stored", unit)


def mean_difference(task: str, preds_a: list, preds_b: list, labels, n_boot: int, seed: int = BOOT_SEED,
                    level: float = 0.95) -> Interval:
    """mean over a of metric(a) - mean over b of metric(b), in points, with a paired bootstrap interval: every
    prediction set is scored on the same resamples of the dev examples (stats' seeding), so the difference of the
    two means is taken resample by resample."""
    if not preds_a or not preds_b:
        raise FewdimsError("mean_difference needs at least one prediction set on each side")
    spec = get_task(task)
    samples = {side: np.mean([bootstrap_samples(spec.name, p, labels, n_boot, seed) for p in preds], axis=0)
               for side, preds in (("a", preds_a), ("b", preds_b))}
    points = {side: np.mean([100.0 * compute_metrics(spec.name, p, labels)[spec.main_metric] for p in preds])
              for side, preds in (("a", preds_a), ("b", preds_b))}
    diff = samples["a"] - samples["b"]
    low, high = np.quantile(diff, ((1 - level) / 2, (1 + level) / 2))
    return Interval(float(points["a"] - points["b"]), float(low), float(high), len(np.asarray(labels)),
                    f"paired bootstrap, mean of {len(preds_a)} vs mean of {len(preds_b)}", level=level)


def overlap_test(selected, outliers, population: int) -> dict:
    """{'overlap', 'selected', 'outliers', 'expected', 'p', 'null_low', 'null_high'}: how many of the `selected`
    dimensions are among the `outliers`, the chance expectation, the one-sided hypergeometric p-value
    (fewdims.stats.hypergeometric_overlap_pvalue) and the one-sided 95 % range of the overlap under chance
    (0 to its 95th percentile: an overlap above null_high has p < 0.05)."""
    from scipy.stats import hypergeom

    from .stats import hypergeometric_overlap_pvalue

    a, b = set(int(i) for i in selected), set(int(i) for i in outliers)
    k = len(a & b)
    null = hypergeom(int(population), len(b), len(a))
    return {"overlap": k, "selected": len(a), "outliers": len(b), "expected": len(a) * len(b) / population,
            "p": hypergeometric_overlap_pvalue(k, int(population), len(a), len(b)),
            "null_low": 0, "null_high": int(null.ppf(0.95))}


# -- the held-out slice of the train split ----------------------------------------------------------------------------
def heldout_rows(n_rows: int, train_size: int | None, data_seed: int, n: int,
                 holdout_size: int = 0) -> tuple[np.ndarray, bool]:
    """(row indices, overlaps_training) of a fixed slice of `n` train-split rows the run never trained on: neither in
    the training subset that `SplitData.subset(train_size, data_seed)` draws nor, with a held-out slice
    (`holdout_size` > 0), in the training rows of `SplitData.split_off(holdout_size, train_size, data_seed)` (its
    held-out rows and any rows beyond the training subset qualify). When the run trained on every row, the slice is
    drawn from the whole split and overlaps the training rows (said so by the flag)."""
    if n < 2:
        raise FewdimsError(f"the held-out slice needs at least 2 rows, got n_heldout={n}")
    if holdout_size:  # the same permutation as SplitData.split_off
        order = np.random.default_rng([int(data_seed), 7]).permutation(n_rows)
        rest = order[int(holdout_size):]
        unseen = np.concatenate([order[:int(holdout_size)], rest[int(train_size):] if train_size is not None else []])
        pool, overlaps = np.sort(unseen.astype(int)), False
    elif train_size is None or train_size >= n_rows:
        pool, overlaps = np.arange(n_rows), True
    else:
        pool, overlaps = np.random.default_rng(int(data_seed)).permutation(n_rows)[int(train_size):], False
    pick = np.random.default_rng(HELDOUT_SEED).permutation(len(pool))[:min(n, len(pool))]
    return np.sort(pool[pick]), overlaps
