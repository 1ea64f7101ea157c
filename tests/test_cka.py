"""Tests for fewdims.cka against plain n x n Gram-matrix references."""
import time

import numpy as np
import pytest
import torch

from fewdims.cka import (best_split, block_boundaries, block_means, cka_between, cka_matrix, cka_noise_floor,
                         linear_cka)
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


# -- the block rule of the CKA chapter (fewdims.chapters.cka) -----------------------------------------------------
def _blocks(n_layers=6, split=4, within=0.9, between=0.3, upper_within=None):
    """A stored-style matrix: layer 0 undefined (the embedding [CLS]), layers 1..n in two blocks at `split`."""
    n = n_layers + 1
    m = np.full((n, n), between)
    m[:split, :split] = within
    m[split:, split:] = within if upper_within is None else upper_within
    np.fill_diagonal(m, 1.0)
    out = m.tolist()
    return [[None] * n] + [[None] + row[1:] for row in out[1:]]


def _entry(finetuned, pretrained, floor_p95=0.44, n=500, width=384):
    params = {"representations": ["cls"], "debiased": False, "n_examples": n}
    if floor_p95 is not None:
        params["sizes"] = {"cls": {"n": n, "width": width,
                                   "noise_floor": {"mean": floor_p95 - 0.01, "p95": floor_p95, "draws": 20}}}
    return {"layers": {"cls": {"finetuned": finetuned, "pretrained": pretrained,
                               "pretrained_vs_finetuned": [None] + [0.9] * (len(finetuned) - 1)},
                       "layer_drop": [{"accuracy": 0.5}] * len(finetuned), "params": params},
            "score": 50.0, "metric": "accuracy", "key": "x"}


def test_best_split_min_block_ignores_one_layer_blocks():
    m = np.full((6, 6), 0.9)
    m[5, :5] = m[:5, 5] = 0.2  # the top layer alone differs: a one-layer "block"
    np.fill_diagonal(m, 1.0)
    assert best_split(m)[0] == 5
    s, _ = best_split(m, min_block=2)
    assert 2 <= s <= 4
    with pytest.raises(FewdimsError, match="at least 4 layers"):
        best_split(np.eye(3), min_block=2)
    lower, upper, between = block_means(m, 4)
    assert lower == pytest.approx(0.9) and upper == pytest.approx(0.2) and between == pytest.approx((0.9 + 0.2) / 2)


def test_block_rule_floor_span_and_pretrained():
    from fewdims import verdicts
    from fewdims.chapters import cka as chapter

    flat = _blocks(within=0.5, between=0.5)
    good = _entry(_blocks(), flat)
    assert chapter.cka_block_claim({"SST-2": good})["verdict"] == verdicts.SUPPORTED
    # the same contrast (0.3) with both blocks below the noise floor: not a block, and nothing else decides
    below = _entry(_blocks(within=0.4, between=0.1), flat)
    table = chapter.block_table({"RTE": below})
    assert table.status[0] == "below the noise floor" and not table.block[0]
    assert chapter.cka_block_claim({"RTE": below})["verdict"] == chapter.INCONCLUSIVE
    # the same matrix counts when the floor is low (e.g. the debiased estimator)
    assert chapter.cka_block_claim({"RTE": _entry(_blocks(within=0.4, between=0.1), flat, 0.02)})["verdict"] == \
        verdicts.SUPPORTED
    # a one-layer block: layer 6 alone differs; the best split into blocks of >= 2 layers is no cluster
    lone = np.full((7, 7), 0.9)
    lone[6, :6] = lone[:6, 6] = 0.3
    np.fill_diagonal(lone, 1.0)
    lone = [[None] * 7] + [[None] + row[1:] for row in lone.tolist()[1:]]
    one = _entry(lone, flat)
    assert chapter.block_split(lone)["split"] != 6 and not chapter.block_table({"MRPC": one}).block[0]
    assert chapter.cka_block_claim({"MRPC": one})["verdict"] == verdicts.NOT_SUPPORTED
    # a block no stronger than the pretrained model's: it does not count
    weaker = _entry(_blocks(within=0.8, between=0.5), _blocks(within=0.9, between=0.3))
    assert chapter.block_table({"STS-B": weaker}).status[0] == "block, but no stronger than pretrained"
    assert chapter.cka_block_claim({"STS-B": weaker})["verdict"] == verdicts.NOT_SUPPORTED
    claim = chapter.cka_block_claim({"SST-2": good, "STS-B": weaker})
    assert claim["verdict"] == verdicts.PARTLY and "1 of 2 tasks" in claim["measured"]
    # too few defined layers for two blocks of two; displayed tables have no NaN
    tiny = _entry(_blocks(n_layers=3, split=2), _blocks(n_layers=3, split=2))
    assert chapter.cka_block_claim({"CoLA": tiny})["verdict"] == verdicts.NOT_TESTED
    shown = chapter.block_table_shown({"SST-2": good, "CoLA": tiny, "RTE": _entry(_blocks(), flat, None)})
    assert not shown.isna().any().any() and "nan" not in shown.to_string().lower()


def test_noise_floor_of_a_record_without_stored_sizes():
    from fewdims.chapters import cka as chapter

    entry = _entry(_blocks(), _blocks(), floor_p95=None, n=500)
    assert chapter.noise_floor(entry) is None  # no width known
    floor = chapter.noise_floor({**entry, "width": 384})
    assert floor["n"] == 500 and not floor["stored"] and floor["p95"] == pytest.approx(0.44, abs=0.02)
    stored = chapter.noise_floor(_entry(_blocks(), _blocks(), floor_p95=0.05))
    assert stored["stored"] and stored["p95"] == 0.05
    assert chapter.noise_floor(entry, "token") is None


def test_layer_drop_uninformative_task_is_grey_and_not_counted():
    from fewdims import cka_figures, verdicts
    from fewdims.chapters import cka as chapter

    cola = _entry(_blocks(), _blocks())
    cola["layers"]["layer_drop"] = [{"matthews": 0.0}] * 7
    cola["metric"] = "matthews"
    sst = _entry(_blocks(), _blocks())
    sst["layers"]["layer_drop"] = [{"accuracy": s / 100} for s in (50, 55, 60, 70, 85, 89.6, 90)]
    labels = np.random.default_rng(0).integers(0, 2, 20000)  # the reference's predictions: 90 % right
    sst["labels"] = labels
    sst["preds"] = np.where(np.random.default_rng(1).random(20000) < 0.9, labels, 1 - labels)
    cka = {"CoLA": cola, "SST-2": sst}
    majority = {"CoLA": 0.0, "SST-2": 50.9}
    table = chapter.layer_drop_table(cka, majority)
    assert not table[table.task == "CoLA"].informative.any() and table[table.task == "SST-2"].informative.all()
    claim = chapter.layer_drop_claim(cka, majority)
    assert claim["verdict"] == verdicts.SUPPORTED and chapter.NOT_LEARNED in claim["measured"]
    fig = cka_figures.layer_drop_curves(table)
    cola_ax, sst_ax = fig.axes[0], fig.axes[1]
    assert "not learned" in cola_ax.get_title() and "droppable" in sst_ax.get_title()
    assert any(chapter.NOT_LEARNED in t.get_text() for t in cola_ax.texts)
    assert not cola_ax.patches  # no green tolerance band on the grey panel
    low, high = cola_ax.get_ylim()
    assert high - low >= 10  # an all-zero MCC curve is not blown up to fill the panel
    low, high = sst_ax.get_ylim()
    assert low <= 50 and high >= 90


def test_cka_grid_marks_the_noise_floor_and_annotates_values():
    from fewdims import cka_figures

    fig = cka_figures.cka_grid({"SST-2": _entry(_blocks(), _blocks(within=0.5, between=0.3))})
    heat = [ax for ax in fig.axes if ax.get_title()]
    fig.draw_without_rendering()
    inches = fig.get_size_inches()
    assert len(heat) == 2 and all(ax.get_position().width * inches[0] >= 3 for ax in heat)  # readable panels
    assert any(t.get_text() == "0.90" for t in heat[1].texts)  # values written, 2 decimals
    assert len(heat[0].images) == 2  # the grey overlay of the cells below the floor
    floor_marks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels(minor=True)]
    assert "floor 0.44" in floor_marks and any("below the noise floor" in t.get_text() for t in fig.texts)


# -- token positions and the held-out representations (fewdims.analysis) ------------------------------------------
def test_token_positions_are_seeded_and_skip_cls_and_padding():
    from fewdims.analysis import token_positions

    lengths = np.array([5, 1, 12, 3, 30, 2])
    a = token_positions(lengths, 20)
    assert np.array_equal(a, token_positions(lengths, 20)) and not np.array_equal(a, token_positions(lengths, 20, 1))
    assert a.shape == (20, 2) and len({tuple(x) for x in a}) == 20
    assert np.all(a[:, 1] >= 1) and np.all(a[:, 1] < lengths[a[:, 0]])  # never [CLS], never padding
    assert np.array_equal(a, a[np.lexsort((a[:, 1], a[:, 0]))])
    everything = token_positions(lengths, 10_000)  # fewer positions than asked: all of them
    assert len(everything) == int((lengths - 1).sum())
    assert {tuple(x) for x in everything} == {(r, p) for r, n in enumerate(lengths) for p in range(1, n)}


def test_layer_analysis_uses_the_heldout_slice_and_the_same_token_rows(tmp_path, monkeypatch):
    """holdout_size > 0: the CKA representations come from the held-out train rows (layer dropping stays on dev),
    with token rows at the same positions in the pretrained and the fine-tuned model; the analysis from the cache
    alone gives the same result."""
    import shutil

    from fewdims.analysis import analyse_cached, layer_analysis, token_positions
    from fewdims.batching import encode
    from fewdims.cache import representations_path, weights_dir
    from fewdims.chapters import open_chapter
    from fewdims.data import load_split
    from fewdims.models import load_backbone
    from fewdims.profiles import load_profile
    from fewdims.runner import Runner

    monkeypatch.setenv("FEWDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    profile = load_profile("smoke", task="sst2", seeds=1, holdout_size=8)
    runner = Runner(profile, verbose=False)
    chapter = open_chapter("cka", profile, runner)
    record = chapter.baseline("sst2")
    layers = record["extra"]["layers"]
    params = layers["params"]
    assert "analysis_errors" not in record["extra"]
    assert params["split"] == "train-heldout8" and params["drop_split"] == "validation"
    assert params["n_examples"] == 8 and params["debiased"] and "token" in params["representations"]
    config = chapter.base("sst2", seed=0, save_weights=True)
    heldout = load_split("sst2", "train", profile.source).split_off(8, config.train_size, config.data_seed)[1]
    _, tokenizer = load_backbone(config.model)
    lengths = encode(heldout, tokenizer, config.max_length, config.model).lengths
    expected = token_positions(lengths, params["tokens_requested"])
    assert params["sizes"]["token"]["n"] == len(expected) and params["sizes"]["cls"]["n"] == 8
    assert params["sizes"]["cls"]["noise_floor"]["p95"] > params["sizes"]["token"]["noise_floor"]["p95"]
    for pretrained in (False, True):
        with np.load(representations_path(config, params["split"], 8, pretrained)) as f:
            assert np.array_equal(f["rep_token_index"][0], expected)
            assert f["rep_token"].shape[1] == len(expected)
    dev = load_split("sst2", "validation", profile.source)
    assert len(layers["layer_drop"]) == len(layers["cls"]["finetuned"]) and dev.labels.size > 8
    shutil.rmtree(weights_dir(config))
    again = analyse_cached(config, [layer_analysis(params["requested"], tuple(params["representations"]), True,
                                                   profile.source, params["tokens_requested"])], profile.source)
    assert again == {"layers": layers}
