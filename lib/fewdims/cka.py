"""Linear centered kernel alignment (CKA) between example-level representations.

Biased linear CKA (Kornblith et al., 2019) in its feature-space form

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),   Xc, Yc column-centered,

and debiased linear CKA (Nguyen et al., 2021), which replaces HSIC by the unbiased estimator of
Song et al. (2012) / Székely & Rizzo's U-centering:

    HSIC_u(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)),

with K = X X^T, L = Y Y^T and K~, L~ their copies with a zeroed diagonal.  Every term is rewritten with
feature-space quantities so no n x n matrix is ever formed (memory O(n d + d^2)):

    tr(K~ L~)   = ||X^T Y||_F^2 - sum_i ||x_i||^2 ||y_i||^2
    1^T K~ 1    = ||X^T 1||^2  - sum_i ||x_i||^2
    K~ 1        = X (X^T 1)    - (||x_i||^2)_i           and 1^T K~ L~ 1 = (K~ 1) . (L~ 1).

HSIC_u is exactly invariant to translating X or Y (U-centering removes any additive row/column term), so we
still subtract column means first: the result is the same in exact arithmetic, and it avoids the
cancellation between huge uncentered terms that would otherwise cost float64 digits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fewdims.errors import FewdimsError


def _as_matrix(name: str, a) -> np.ndarray:
    """Convert numpy / torch / nested lists to a finite float64 (n, d) array, or explain what is wrong."""
    if hasattr(a, "detach"):  # torch.Tensor without importing torch
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FewdimsError(f"{name} must be a numeric (n, d) array; could not convert it: {exc}") from None
    if arr.ndim != 2:
        raise FewdimsError(f"{name} must be 2-D (n examples x d features), got shape {arr.shape}; "
                           "reshape it, e.g. x.reshape(n, -1)")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise FewdimsError(f"{name} has shape {arr.shape}; need at least 2 examples and 1 feature")
    if not np.all(np.isfinite(arr)):
        raise FewdimsError(f"{name} contains NaN or inf values; drop or impute those examples first")
    return arr


@dataclass
class _LayerStats:
    """What each representation contributes to CKA, computed once so cka_matrix costs one X^T Y per pair."""
    xc: np.ndarray          # column-centered features (n, d)
    self_hsic: float        # HSIC(X, X) for the chosen estimator (un-normalised)
    sq_norms: np.ndarray    # ||x_i||^2 per example (debiased only)
    row_sums: np.ndarray    # K~ 1 (debiased only)
    total: float            # 1^T K~ 1 (debiased only)


def _stats(name: str, x, debiased: bool) -> _LayerStats:
    x = _as_matrix(name, x)
    n = x.shape[0]
    if debiased and n <= 3:
        raise FewdimsError(f"{name} has n={n} examples; the debiased estimator needs n > 3 (or use debiased=False)")
    xc = x - x.mean(axis=0)
    if not np.any(xc):
        raise FewdimsError(f"{name} is constant across examples (zero variance); CKA is undefined for it")
    empty = np.empty(0)
    if not debiased:
        return _LayerStats(xc, float(np.sum((xc.T @ xc) ** 2)), empty, empty, 0.0)
    sq_norms = np.einsum("ij,ij->i", xc, xc)
    col_sum = xc.sum(axis=0)
    row_sums = xc @ col_sum - sq_norms
    total = float(col_sum @ col_sum - sq_norms.sum())
    stats = _LayerStats(xc, 0.0, sq_norms, row_sums, total)
    stats.self_hsic = _hsic(stats, stats, float(np.sum((xc.T @ xc) ** 2)))
    if stats.self_hsic <= 0:
        raise FewdimsError(f"{name}: the debiased self-similarity HSIC_u(X, X) is not positive "
                           f"({stats.self_hsic:.3g}); this happens with very few examples; "
                           "use more examples or debiased=False")
    return stats


def _hsic(a: _LayerStats, b: _LayerStats, cross_frob_sq: float) -> float:
    """HSIC between two layers given ||X^T Y||_F^2 (biased: that is the whole statistic)."""
    if a.sq_norms.size == 0:
        return cross_frob_sq
    n = a.xc.shape[0]
    trace_kl = cross_frob_sq - float(a.sq_norms @ b.sq_norms)
    return (trace_kl + a.total * b.total / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * float(a.row_sums @ b.row_sums)) / (n * (n - 3))


def _cka(a: _LayerStats, b: _LayerStats) -> float:
    if a.xc.shape[0] != b.xc.shape[0]:
        raise FewdimsError(f"representations have different numbers of examples ({a.xc.shape[0]} vs "
                           f"{b.xc.shape[0]}); both must hold the same examples in the same order")
    cross = float(np.sum((a.xc.T @ b.xc) ** 2))
    return _hsic(a, b, cross) / np.sqrt(a.self_hsic * b.self_hsic)


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA between x (n x d1) and y (n x d2): 1 = same geometry up to rotation/scale/shift, 0 = unrelated.

    The biased estimator lies in [0, 1]; the debiased one can be slightly negative for unrelated data and
    corrects the upward bias that biased CKA has when d is large relative to n.
    """
    return _cka(_stats("x", x, debiased), _stats("y", y, debiased))


def _stats_list(name: str, reps, debiased: bool) -> list[_LayerStats]:
    if isinstance(reps, np.ndarray) and reps.ndim == 3:
        reps = list(reps)
    if not isinstance(reps, (list, tuple)) or len(reps) == 0:
        raise FewdimsError(f"{name} must be a non-empty list of (n x d) arrays, one per layer")
    return [_stats(f"{name}[{i}]", r, debiased) for i, r in enumerate(reps)]


def cka_matrix(reps, debiased: bool = False) -> np.ndarray:
    """Symmetric (L x L) CKA matrix between all pairs of layers; per-layer quantities are computed once."""
    stats = _stats_list("reps", reps, debiased)
    size = len(stats)
    out = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            out[i, j] = out[j, i] = _cka(stats[i], stats[j])
    return out


def cka_between(reps_a, reps_b, debiased: bool = False) -> np.ndarray:
    """Layer-wise CKA: entry l compares reps_a[l] with reps_b[l] (e.g. pretrained vs fine-tuned layer l)."""
    stats_a = _stats_list("reps_a", reps_a, debiased)
    stats_b = _stats_list("reps_b", reps_b, debiased)
    if len(stats_a) != len(stats_b):
        raise FewdimsError(f"reps_a has {len(stats_a)} layers but reps_b has {len(stats_b)}; pass the same layers")
    return np.array([_cka(a, b) for a, b in zip(stats_a, stats_b)])


def _check_square(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise FewdimsError(f"matrix must be a square (L x L) similarity matrix with L >= 2, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise FewdimsError("matrix contains NaN or inf; compute it with finite representations")
    return m


def _contrast(m: np.ndarray, split: int) -> float:
    """Mean within-block similarity minus mean between-block similarity for blocks [0, s) and [s, L).

    Within-block pairs exclude the diagonal (always ~1, and it would favour tiny blocks); if neither block
    has an off-diagonal pair (L = 2) there is no evidence of block structure and the contrast is 0.
    """
    size = len(m)
    block = np.arange(size) >= split
    same = block[:, None] == block[None, :]
    np.fill_diagonal(same, False)
    if not same.any():
        return 0.0
    return float(m[same].mean() - m[block[:, None] != block[None, :]].mean())


def best_split(matrix, min_block: int = 1) -> tuple[int, float]:
    """Split index s that maximises the two-block contrast (see `_contrast`), and that contrast. Both blocks
    [0, s) and [s, L) span at least `min_block` layers (1: s in 1..L-1; 2: a cluster of one layer is no block)."""
    m = _check_square(matrix)
    if not isinstance(min_block, (int, np.integer)) or isinstance(min_block, bool) or min_block < 1:
        raise FewdimsError(f"min_block must be an integer >= 1, got {min_block!r}")
    if len(m) < 2 * min_block:
        raise FewdimsError(f"a {len(m)} x {len(m)} matrix has no split into two blocks of at least {min_block} "
                           f"layers; it needs at least {2 * min_block} layers")
    splits = range(min_block, len(m) - min_block + 1)
    scores = [_contrast(m, s) for s in splits]
    best = int(np.argmax(scores))  # first maximum on ties
    return splits[best], float(scores[best])


def block_means(matrix, split: int) -> tuple[float, float, float]:
    """(mean similarity within the lower block [0, split), within the upper block [split, L), between them),
    diagonal excluded; NaN for a block of one layer (it has no off-diagonal pair)."""
    m = _check_square(matrix)
    if not 0 < split < len(m):
        raise FewdimsError(f"split must lie in 1..{len(m) - 1} for a {len(m)} x {len(m)} matrix, got {split!r}")

    def within(block: np.ndarray) -> float:
        if len(block) < 2:
            return float("nan")
        return float(block[~np.eye(len(block), dtype=bool)].mean())

    return within(m[:split, :split]), within(m[split:, split:]), float(m[:split, split:].mean())


def block_boundaries(matrix, threshold: float | None = None) -> list[int]:
    """Where the block-diagonal structure of a layer-similarity matrix splits.

    Returns the indices of the first layer of each new block (sorted).

    Heuristic: a split at s divides layers into [0, s) and [s, L); its contrast is mean within-block
    similarity minus mean between-block similarity.  With threshold=None return only the single best split.
    With a threshold, do binary segmentation: take the best split of the whole range if its contrast is
    >= threshold, then recurse into each side (blocks of >= 2 layers), so several boundaries can be found.
    """
    m = _check_square(matrix)
    if threshold is None:
        return [best_split(m)[0]]
    if not threshold > 0:
        raise FewdimsError(f"threshold must be a positive contrast (e.g. 0.1), got {threshold!r}")
    found: list[int] = []

    def segment(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        s, score = best_split(m[lo:hi, lo:hi])
        if score >= threshold:
            found.append(lo + s)
            segment(lo, lo + s)
            segment(lo + s, hi)

    segment(0, len(m))
    return sorted(found)


def noise_floor_draws(n: int, d: int) -> int:
    """How many Gaussian pairs `cka_noise_floor` needs at this size: 20 up to n * d ~ 200,000 (n=500, d=384), fewer
    (at least 5) for larger matrices, whose chance CKA varies less from draw to draw (n=10,000, d=384: 5)."""
    return int(np.clip(4e6 // max(1, n * d), 5, 20))


class CkaNoiseFloor(NamedTuple):
    """CKA between independent Gaussian matrices: its mean and 95th percentile over `draws` pairs."""
    mean: float
    p95: float
    draws: int


def cka_noise_floor(n: int, d: int, debiased: bool = False, draws: int = 20, seed: int = 0,
                    d_y: int | None = None) -> CkaNoiseFloor:
    """The CKA that unrelated representations reach by chance at this size: a value must clear it to mean anything.

    Draws `draws` pairs of independent standard Gaussian matrices of shape (n, d) and (n, d_y or d) and
    returns the mean and 95th percentile of their linear CKA.  The biased estimator is strongly inflated when
    d is not small next to n (about d / (n + d) for equal widths: 0.43 at n=500, d=384); the debiased one
    stays near 0.
    """
    width_y = d if d_y is None else d_y
    for name, value, least in (("n", n, 4 if debiased else 2), ("d", d, 1), ("d_y", width_y, 1), ("draws", draws, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise FewdimsError(f"{name} must be an integer >= {least}, got {value!r}")
    rng = np.random.default_rng(seed)
    values = np.array([linear_cka(rng.standard_normal((n, d)), rng.standard_normal((n, width_y)), debiased)
                       for _ in range(draws)])
    return CkaNoiseFloor(float(values.mean()), float(np.percentile(values, 95)), int(draws))
