"""Tests for fewdims.cka against plain n x n Gram-matrix references."""
import time

import numpy as np
import pytest
import torch

from fewdims.cka import best_split, block_boundaries, cka_between, cka_matrix, cka_noise_floor, linear_cka
from fewdims.errors import FewdimsError


def reference_cka(x, y):
    """Kornblith et al. with explicit centering matrix H: HSIC = tr(K H L H)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def reference_debiased_cka(x, y):
    """Unbiased HSIC (Song et al. 2012) with explicit n x n matrices, no explicit centering."""
    n = len(x)
    one = np.ones(n)

    def hsic_u(k, l):
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T
    return hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7)) + 3.0  # offset: implementations must not depend on pre-centered data
    y = x @ rng.normal(size=(7, 5)) + 0.5 * rng.normal(size=(60, 5)) - 2.0
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(xy, debiased):
    assert linear_cka(xy[0], xy[0], debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_symmetric(xy, debiased):
    x, y = xy
    assert linear_cka(x, y, debiased) == pytest.approx(linear_cka(y, x, debiased), abs=1e-12)


def test_matches_gram_reference(xy):
    x, y = xy
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), abs=1e-10)
    assert linear_cka(x, y, debiased=True) == pytest.approx(reference_debiased_cka(x, y), abs=1e-10)
    # Unrelated data: debiased value is near 0 (can be negative), biased one is inflated.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 30)), rng.normal(size=(40, 20))
    assert linear_cka(a, b, debiased=True) == pytest.approx(reference_debiased_cka(a, b), abs=1e-10)
    assert linear_cka(a, b) == pytest.approx(reference_cka(a, b), abs=1e-10)
    assert abs(linear_cka(a, b, debiased=True)) < linear_cka(a, b)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(xy, debiased):
    x, y = xy
    base = linear_cka(x, y, debiased)
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert linear_cka(x @ q, y, debiased) == pytest.approx(base, abs=1e-10)  # orthogonal
    assert linear_cka(3.7 * x, y, debiased) == pytest.approx(base, abs=1e-10)  # isotropic scale
    assert linear_cka(x + rng.normal(size=7) * 10, y, debiased) == pytest.approx(base, abs=1e-9)  # shift
    # A badly conditioned invertible map changes CKA: it is not invariant to arbitrary linear maps.
    a = q @ np.diag(np.logspace(0, 4, 7)) @ np.linalg.qr(rng.normal(size=(7, 7)))[0]
    assert abs(linear_cka(x @ a, y, debiased) - base) > 0.05


def test_biased_in_unit_interval_and_torch_input():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.normal(size=(30, rng.integers(1, 10))), rng.normal(size=(30, rng.integers(1, 10)))
        assert 0.0 <= linear_cka(a, b) <= 1.0 + 1e-12
    t = torch.from_numpy(a).float()
    assert linear_cka(t, b) == pytest.approx(linear_cka(t.double().numpy(), b), abs=1e-12)


def test_large_n_is_feature_space_and_fast():
    # 10,000 x 384 would need an 800 MB n x n Gram matrix; the feature-space form needs only 384 x 384.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10_000, 384)).astype(np.float32)
    y = x[:, ::-1] + rng.normal(size=x.shape).astype(np.float32)
    start = time.perf_counter()
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    elapsed = time.perf_counter() - start
    assert 0 < debiased < biased < 1
    print(f"n=10000 d=384 biased+debiased: {elapsed:.2f}s")


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_and_between(debiased):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(50, 6))
    reps = [base @ rng.normal(size=(6, 6)) + 0.3 * k * rng.normal(size=(50, 6)) for k in range(4)]
    m = cka_matrix(reps, debiased=debiased)
    assert m.shape == (4, 4) and np.allclose(m, m.T) and np.allclose(np.diag(m), 1)
    for i in range(4):
        for j in range(4):
            assert m[i, j] == pytest.approx(linear_cka(reps[i], reps[j], debiased), abs=1e-12)
    between = cka_between(reps, reps[::-1], debiased=debiased)
    assert np.allclose(between, [m[i, 3 - i] for i in range(4)])


def test_block_boundaries_two_blocks():
    rng = np.random.default_rng(6)
    size, split = 12, 5
    block = np.arange(size) >= split
    m = np.where(block[:, None] == block[None, :], 0.85, 0.3) + rng.uniform(-0.05, 0.05, (size, size))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    s, score = best_split(m)
    assert s == split and score > 0.4
    assert block_boundaries(m) == [split]
    assert block_boundaries(m, threshold=0.2) == [split]
    # Three blocks found by binary segmentation.
    labels = np.repeat([0, 1, 2], 4)
    m3 = np.where(labels[:, None] == labels[None, :], 0.9, 0.2)
    np.fill_diagonal(m3, 1.0)
    assert block_boundaries(m3, threshold=0.2) == [4, 8]
    assert block_boundaries(np.full((6, 6), 0.9), threshold=0.1) == []


def test_bad_input_raises():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 4))
    with pytest.raises(FewdimsError, match="different numbers of examples"):
        linear_cka(x, x[:10])
    with pytest.raises(FewdimsError, match="2-D"):
        linear_cka(x[:, 0], x)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(FewdimsError, match="NaN"):
        linear_cka(bad, x)
    with pytest.raises(FewdimsError, match="n > 3"):
        linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(FewdimsError, match="constant"):
        linear_cka(np.ones((20, 3)), x)
    with pytest.raises(FewdimsError, match="layers"):
        cka_between([x, x], [x])
    with pytest.raises(FewdimsError, match="square"):
        best_split(np.ones((3, 4)))
    with pytest.raises(FewdimsError):
        cka_matrix([])
    with pytest.raises(FewdimsError, match="threshold"):
        block_boundaries(np.eye(4), threshold=0)


def test_independent_gaussians_biased_inflated_debiased_near_zero():
    """Unrelated representations: biased linear CKA ~ d / (n + d), debiased ~ 0 (Nguyen et al., 2021)."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(500, 384)), rng.normal(size=(500, 384))
    assert linear_cka(x, y) == pytest.approx(0.43, abs=0.03)
    assert abs(linear_cka(x, y, debiased=True)) < 0.03
    x, y = rng.normal(size=(256, 384)), rng.normal(size=(256, 384))
    assert linear_cka(x, y) == pytest.approx(0.60, abs=0.03)
    assert abs(linear_cka(x, y, debiased=True)) < 0.03


def test_cka_noise_floor():
    floor = cka_noise_floor(500, 384, debiased=False, draws=8)
    assert floor.mean == pytest.approx(0.43, abs=0.03) and floor.mean <= floor.p95 < floor.mean + 0.02
    assert cka_noise_floor(256, 384, debiased=False, draws=8).mean == pytest.approx(0.60, abs=0.03)
    deb = cka_noise_floor(500, 384, debiased=True, draws=8)
    assert abs(deb.mean) < 0.01 and deb.p95 < 0.03
    assert cka_noise_floor(200, 16, debiased=True, draws=5, seed=3) == \
        cka_noise_floor(200, 16, debiased=True, draws=5, seed=3)
    mean, p95, draws = cka_noise_floor(100, 50, d_y=10, draws=4)
    assert draws == 4 and 0 < mean <= p95 < 1
    # A genuinely related pair clears the floor; with few examples the biased floor is near 1.
    x = np.random.default_rng(9).normal(size=(500, 384))
    assert linear_cka(x, x + np.random.default_rng(10).normal(size=x.shape)) > floor.p95
    assert cka_noise_floor(20, 384, draws=3).mean > 0.9
    with pytest.raises(FewdimsError, match="n must be"):
        cka_noise_floor(3, 10, debiased=True)
    with pytest.raises(FewdimsError, match="draws"):
        cka_noise_floor(50, 10, draws=0)
