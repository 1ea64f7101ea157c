"""The outliers chapter: its numerics on hand-made data (a planted high-variance dimension, the cosine
decomposition, the threshold classifier, the LayerNorm rule, overlap p-values, the held-out slice) and the chapter
end to end on the smoke profile (tiny model, generated data, results and caches under tmp_path)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import comb

from fewdims import outlier_analysis as oa
from fewdims import outliers as od
from fewdims import verdicts
from fewdims.chapters import outlier_claims as ocl
from fewdims.chapters import outliers as oc
from fewdims.errors import FewdimsError
from fewdims.stats import hypergeometric_overlap_pvalue


# -- variance and cosine decomposition -----------------------------------------------------------------------------
def test_a_planted_high_variance_dimension_is_found():
    x = np.random.default_rng(0).normal(size=(300, 24))
    x[:, 17] *= 8.0
    var = od.dimension_variance(x)
    assert od.ranked(var, 1) == [17]
    assert var[17] / var.mean() > od.RUDMAN_VARIANCE_RATIO
    assert od.ranked([1.0, 3.0, 3.0, 2.0]) == [1, 2, 3, 0]  # ties: the lower index first


def test_cosine_contributions_sum_to_the_mean_pairwise_cosine():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 10)) + np.linspace(0, 2, 10)
    contrib = od.cosine_contributions(x)
    assert contrib.sum() == pytest.approx(od.mean_pairwise_cosine(x), abs=1e-12)
    # brute force over pairs of distinct examples, dimension by dimension
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [(a, b) for a in range(len(u)) for b in range(len(u)) if a != b]
    assert contrib[3] == pytest.approx(np.mean([u[a, 3] * u[b, 3] for a, b in pairs]), abs=1e-12)


def test_a_rogue_dimension_dominates_the_cosine_and_its_interval_says_so():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 32))
    x[:, 4] += 30.0  # a large common offset: every pair's cosine is near 1, almost all of it from dimension 4
    contrib = od.cosine_contributions(x)
    assert od.ranked(contrib, 1) == [4]
    conc = od.concentration(x, 3, n_boot=200)
    top1 = conc["cosine"][0]
    assert top1.estimate > 0.9 and top1.low > oc.ROGUE_SHARE and top1.low <= top1.estimate <= top1.high
    # without the offset the cosine is spread over every dimension: the top-3 share is far below the rogue line
    flat = od.concentration(rng.normal(size=(200, 32)) + 1.0, 3, n_boot=200)
    assert flat["cosine"][1].high < oc.ROGUE_SHARE
    assert od.top_share([3.0, 1.0, 1.0, -1.0], 1) == pytest.approx(0.75)


# -- one-dimension predictors ----------------------------------------------------------------------------------------
def test_the_threshold_classifier_is_perfect_on_a_separable_dimension():
    rng = np.random.default_rng(3)
    neg, pos = rng.uniform(-3, -1, 50), rng.uniform(0.5, 2, 50)
    x, y = np.concatenate([neg, pos]), np.repeat([0, 1], 50)
    rule = od.fit_one_dim(x, y, "sst2")
    assert rule["kind"] == "threshold" and rule["train_score"] == pytest.approx(100.0)
    assert -1 < rule["threshold"] < 0.5 and rule["above"] == 1
    test_x = np.array([-2.5, -1.2, 0.6, 1.9])
    assert od.predict_one_dim(rule, test_x).tolist() == [0, 0, 1, 1]
    # the other direction (class 0 above), and CoLA's metric (Matthews correlation)
    flipped = od.fit_one_dim(x, 1 - y, "cola")
    assert flipped["above"] == 0 and flipped["train_score"] == pytest.approx(100.0)
    # three classes in three segments (MNLI)
    x3, y3 = np.concatenate([neg, pos, pos + 5]), np.repeat([2, 0, 1], 50)
    rule3 = od.fit_one_dim(x3, y3, "mnli")
    assert rule3["kind"] == "segments" and rule3["train_score"] == pytest.approx(100.0)
    assert od.predict_one_dim(rule3, [-2.0, 1.0, 6.0]).tolist() == [2, 0, 1]


def test_regression_gets_a_one_feature_line():
    x = np.linspace(0, 1, 40)
    rule = od.fit_one_dim(x, 5 * x + 1, "stsb")
    assert rule["kind"] == "linear" and rule["slope"] == pytest.approx(5) and rule["intercept"] == pytest.approx(1)
    assert rule["train_score"] == pytest.approx(100.0)
    assert od.fit_one_dim(np.zeros(5), np.arange(5.0), "stsb")["slope"] == 0.0  # a constant feature: the mean
    with pytest.raises(FewdimsError, match="as many labels"):
        od.fit_one_dim([1.0, 2.0], [0], "sst2")


# -- LayerNorm outliers ------------------------------------------------------------------------------------------------
def layernorms(n_layers=6, d=48, seed=4):
    rng = np.random.default_rng(seed)
    return [(rng.normal(1.0, 0.05, d), rng.normal(0.0, 0.05, d)) for _ in range(n_layers)]


def test_a_planted_layernorm_outlier_is_detected_and_a_rare_one_is_not():
    layers = layernorms()
    for i, (scale, bias) in enumerate(layers):
        if i != 2:
            scale[7] = 3.0            # dimension 7: an outlier scale in 5 of 6 layers
        if i in (0, 1):
            bias[9] = 2.0             # dimension 9: an outlier bias in 2 of 6 layers only
    out = od.layernorm_outliers(layers)
    assert out["outliers"] == [7] and out["layers"] == 6
    flagged = {dim: count for dim, count, _ in out["flagged"]}
    assert flagged[7] == 5 and flagged[9] == 2
    assert od.fallback_dims(out, 2)[0] in (7, 9) and 7 in od.fallback_dims(out, 2)
    # a freshly initialised LayerNorm (all ones, all zeros) flags nothing
    d = 16
    assert od.layernorm_outliers([(np.ones(d), np.zeros(d))] * 4)["outliers"] == []
    # exactly half of the layers is not "most"
    half = layernorms(4)
    for scale, _ in half[:2]:
        scale[3] = 3.0
    assert od.layernorm_outliers(half)["outliers"] == []


def test_zeroing_restores_the_weights_exactly():
    torch = pytest.importorskip("torch")
    from fewdims.models import load_backbone

    backbone, _ = load_backbone("tiny")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with oa.zeroed_layernorms(backbone, [1, 5]):
        for ln in oa.output_layernorms(backbone):
            assert float(ln.weight[1].detach()) == 0.0 and float(ln.bias[5].detach()) == 0.0
        assert float(backbone.encoder.layer[0].attention.output.LayerNorm.weight[1].detach()) != 0.0  # output LN only
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- overlap, held-out slice, intervals, verdicts ---------------------------------------------------------------------
def test_overlap_p_values_against_chance():
    out = od.overlap_test([1, 2, 3], [3, 4, 5], 384)
    assert out["overlap"] == 1 and out["expected"] == pytest.approx(9 / 384)
    assert out["p"] == pytest.approx(1 - comb(381, 3) / comb(384, 3))
    assert out["p"] == hypergeometric_overlap_pvalue(1, 384, 3, 3)
    assert out["null_low"] == 0 and out["null_high"] <= 1
    assert od.overlap_test([1, 2], [7, 8, 9], 384)["p"] == 1.0
    assert od.overlap_test([3, 4, 5], [3, 4, 5], 384)["p"] == pytest.approx(1 / comb(384, 3))
    assert od.overlap_test([1, 2], [], 384)["p"] == 1.0


def test_the_heldout_slice_avoids_the_training_rows():
    n_rows, size, seed = 500, 200, 0
    training = set(np.random.default_rng(seed).permutation(n_rows)[:size].tolist())  # SplitData.subset's rows
    rows, overlaps = od.heldout_rows(n_rows, size, seed, 100)
    assert not overlaps and len(rows) == 100 and not training & set(rows.tolist())
    assert np.array_equal(rows, od.heldout_rows(n_rows, size, seed, 100)[0])  # fixed
    rows, overlaps = od.heldout_rows(n_rows, None, seed, 100)  # the whole split trained on: overlap, and said so
    assert overlaps and len(rows) == 100
    assert len(od.heldout_rows(n_rows, 450, seed, 100)[0]) == 50  # only 50 rows to spare


@pytest.mark.parametrize("size", [None, 150, 400])
def test_the_heldout_slice_is_never_trained_on_when_the_run_holds_rows_out(size):
    from fewdims.data import SplitData

    n_rows, seed, holdout = 500, 3, 60
    split = SplitData("sst2", "train", ([str(i) for i in range(n_rows)],), np.arange(n_rows), "test")
    trained, held = split.split_off(holdout, size, seed)  # the rows the run trains on and the ones it holds out
    rows, overlaps = od.heldout_rows(n_rows, size, seed, 1000, holdout)
    assert not overlaps and not set(trained.labels.tolist()) & set(rows.tolist())
    assert set(held.labels.tolist()) <= set(rows.tolist())  # every held-out row, plus any row beyond the subset
    assert len(rows) == n_rows - len(trained.labels)
    assert len(od.heldout_rows(n_rows, size, seed, 40, holdout)[0]) == 40


def test_mean_difference_is_paired_and_exact_for_identical_systems():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200)
    good, bad = labels.copy(), rng.integers(0, 2, 200)
    same = od.mean_difference("sst2", [good], [good], labels, 200)
    assert same.estimate == 0.0 and same.low == 0.0 and same.high == 0.0
    diff = od.mean_difference("sst2", [good], [bad, 1 - good], labels, 200)
    assert diff.low > 0 and diff.low <= diff.estimate <= diff.high


def test_interval_verdicts():
    assert ocl.interval_verdict(3, 0, 5) == verdicts.SUPPORTED
    assert ocl.interval_verdict(1, 3, 5) == verdicts.NOT_SUPPORTED
    assert ocl.interval_verdict(1, 2, 5) == verdicts.PARTLY
    assert ocl.interval_verdict(0, 3, 5) == verdicts.NOT_SUPPORTED
    assert ocl.interval_verdict(0, 2, 5) == verdicts.INCONCLUSIVE  # three of five undecided
    assert ocl.interval_verdict(0, 2, 4) == verdicts.INCONCLUSIVE  # mixed, no hit
    assert ocl.interval_verdict(0, 0, 0) == verdicts.NOT_TESTED
    assert verdicts.INCONCLUSIVE in verdicts.VERDICTS


def test_claims_without_results_are_not_tested():
    for claim in ocl.external_claims(None):
        assert claim["verdict"] == verdicts.NOT_TESTED and claim["measured"].startswith("Not tested")
    from fewdims.chapters import summary

    papers = [c["paper"] for c in summary.all_claims({})]  # the external claims come with the chapter's results
    assert not set(papers) & {oc.RUDMAN, oc.KOVALEVA, oc.TIMKEY}
    with_them = summary.all_claims({"outliers": None})
    assert [c["paper"] for c in with_them] == papers + [oc.RUDMAN, oc.KOVALEVA, oc.TIMKEY]  # appended, last
    table = ocl.settings_table(with_them)
    assert list(table.paper) == [oc.RUDMAN, oc.KOVALEVA, oc.TIMKEY] and not table.isna().any().any()


# -- the chapter end to end on the smoke profile ---------------------------------------------------------------------
@pytest.fixture()
def smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEWDIMS_PROGRESS", "0")
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    return tmp_path


def smoke_profile(task="sst2"):
    from fewdims.profiles import load_profile

    return load_profile("smoke", chapter="outliers", task=task, seeds=1)


def test_the_chapter_end_to_end_on_smoke(smoke):
    from matplotlib.figure import Figure

    from fewdims import outlier_figures
    from fewdims.chapters import open_chapter
    from fewdims.runner import Runner, score

    profile = smoke_profile()
    runner = Runner(profile, verbose=False)
    result = open_chapter("outliers", profile, runner).results()
    assert list(result.entries) == ["SST-2"] and not result.missing
    entry = result.entries["SST-2"]
    stored = entry["outliers"]
    assert stored["heldout"]["rows"] == 16 and not stored["heldout"]["overlaps_training"]  # 48 rows, 32 trained on
    assert len(stored["finetuned"]["cls"]["variance"]) == result.hidden == 32
    assert stored["rudman"]["full"]["estimate"] == pytest.approx(entry["score"], abs=1e-3)  # the record's score
    assert len(stored["rudman"]["cls"]["random"]) == 10 and len(stored["kovaleva"]["random"]) == 10
    shares = stored["finetuned"]["cls"]["cosine_share"]
    assert all(s["low"] <= s["estimate"] <= s["high"] for s in shares)
    # the k=1 head on the highest-variance dimension is a run of its own, with its interval
    k1 = result.k1.iloc[0]
    assert k1.dim == stored["rudman"]["cls"]["dim"] and k1.stored and k1.low <= k1.score <= k1.high
    assert oc.SCAN_TOP10 in result.selected["SST-2"] and oc.ALL_SELECTED in result.selected["SST-2"]

    frames = [oc.dims_table(result), oc.rudman_table(result), oc.kovaleva_table(result), oc.overlap_table(result)]
    for table in frames:
        assert len(table) and not table.isna().any().any(), table
    assert set(oc.rudman_frame(result).predictor) >= {oc.FULL, oc.ONE_DIM, oc.K1_HEAD, oc.RANDOM_DIM}
    overlap = oc.overlap_frame(result)
    assert overlap.p.between(0, 1).all() and (overlap.overlap <= overlap.selected).all()
    for claim in ocl.external_claims(result):
        assert claim["verdict"] in verdicts.VERDICTS and "Their setting" in claim["measured"]
    for fig in (outlier_figures.concentration_intervals(oc.concentration_frame(result), result.hidden),
                outlier_figures.rudman_intervals(oc.rudman_frame(result)), outlier_figures.zeroing_intervals(oc.kovaleva_frame(result)),
                outlier_figures.overlap_intervals(overlap, [oc.ALL_SELECTED, oc.SCAN_TOP10])):
        assert isinstance(fig, Figure) and fig._suptitle.get_text()
        assert all(ax.has_data() for ax in fig.axes if ax.get_visible())
    assert "SST-2" in ocl.findings(result) and "Held-out slice" in ocl.heldout_note(result)

    # a second pass reuses every record; with the analysis gone from the record it is re-analysed from the cached
    # weights (no training) and comes back the same
    again = Runner(profile, verbose=False)
    open_chapter("outliers", profile, again).results()
    assert again.computed == 0 and again.reanalysed == 0
    config = profile.base_config("sst2", seed=0, save_weights=True)
    record = again.store.load(config)
    record["extra"].pop("outliers")
    again.store._write(again.store.path(config), record)
    third = Runner(profile, verbose=False)
    redone = open_chapter("outliers", profile, third).results()
    assert third.computed == 0 and third.reanalysed == 1
    back = redone.entries["SST-2"]["outliers"]
    assert back["rudman"]["cls"]["dim"] == stored["rudman"]["cls"]["dim"]
    assert back["kovaleva"]["drop"] == pytest.approx(stored["kovaleva"]["drop"], abs=1e-3)
    assert back["finetuned"]["cls"]["variance"] == pytest.approx(stored["finetuned"]["cls"]["variance"], rel=1e-4)
    assert score(third.store.load(config)) == entry["score"]

    # compute=False with an empty store: nothing trained, every table says why
    empty = Runner(profile, allow_compute=False, store_root=smoke / "nothing")
    nothing = open_chapter("outliers", profile, empty).results()
    assert nothing.entries == {} and nothing.missing == ["SST-2"] and empty.computed == 0
    assert [c["verdict"] for c in ocl.external_claims(nothing)] == [verdicts.NOT_TESTED] * 3
    assert oc.rudman_table(nothing).empty and "No stored" in ocl.findings(nothing)


def test_the_sts_probe_runs_on_the_stsb_reference(smoke):
    from fewdims.chapters import open_chapter
    from fewdims.runner import Runner

    profile = smoke_profile("stsb")
    record = open_chapter("outliers", profile, Runner(profile, verbose=False)).baseline("stsb")
    assert "analysis_errors" not in record["extra"], record["extra"].get("analysis_errors")
    probe = record["extra"]["outliers"]["sts_probe"]
    assert probe["metric"] == "pearson" and probe["examples"] == 16 and len(probe["random"]) == 10
    assert probe["drop"]["low"] <= probe["drop"]["estimate"] <= probe["drop"]["high"]
    assert record["extra"]["outliers"]["rudman"]["cls"]["rule"]["kind"] == "linear"
    assert not math.isnan(record["extra"]["outliers"]["rudman"]["cls"]["score"]["estimate"])


def test_heldout_note_words_a_per_task_training_size():
    import pandas as pd
    from fewdims.chapters.outliers import OutlierResults

    entries = {task: {"outliers": {"heldout": {"rows": 400, "of": of, "overlaps_training": False}}}
               for task, of in (("SST-2", 67_349), ("RTE", 2_490))}
    result = OutlierResults(entries, pd.DataFrame(), {}, 384, {"train_size": {"sst2": 8000, "default": "all"}})
    note = ocl.heldout_note(result)
    assert "SST-2 400 of 67,349; RTE 400 of 2,490 rows" in note
    assert ("On every task none of its rows is among the rows the reference was trained on (SST-2: 8,000 rows; "
            "other tasks: the whole split but its held-out rows;") in note
