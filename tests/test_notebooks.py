"""The book's notebooks and the verdicts they print.

- Fast: the verdict logic of `fewdims.verdicts` and the chapters' claims on small hand-made frames (every verdict
  of every claim, the 'not tested' reasons, the 'mean ± std (seeds)' cells): older records (scores only, seed
  t-intervals) and runs with hand-made per-example predictions, where the paired intervals decide; every
  `fewdims.plots` function on hand-made data; and the stored notebooks' shape (no outputs, a papermill
  `parameters` cell with the documented names).
- Slow (marked `slow`): every notebook executed by papermill under the smoke profile, sharing one results and
  cache directory for the whole session (the smoke grid is computed once); each must run without an error,
  print nothing to stderr and show at least one figure.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from fewdims import book_figures, cka_figures, comparisons, dimension_figures, figures, stats, tables, verdicts
from fewdims.chapters import cka as cka_chapter
from fewdims.chapters import cross_finetune as cross_finetune_chapter
from fewdims.chapters import dimension as dimension_chapter
from fewdims.chapters import freezing as freezing_chapter
from fewdims.chapters import layer as layer_chapter
from fewdims.chapters import summary as summary_chapter
from fewdims.chapters import token as token_chapter

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
# Experiments first, then the chapters that read every experiment (summary, setup): all reuse the smoke grid.
NOTEBOOKS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka", "outliers", "summary", "setup",
             "glance")
COMMON_PARAMETERS = ("profile", "compute")  # every other profile key reaches the notebook through papermill -p
EXTRA_PARAMETERS = {name: ("representation",) for name in ("cka", "summary", "glance")}  # display options


# -- hand-made frames ----------------------------------------------------------------------------------------------
def runs(task, variant, scores, majority=50.0, **fields):
    """Rows like Experiments' frames: one per score, seeds 0, 1, 2, ..."""
    return [{"task": task, "variant": variant, "seed": seed, "score": s, "majority": majority,
             "at_or_below_majority": bool(s <= majority), **fields} for seed, s in enumerate(scores)]


def frame(*groups):
    return pd.DataFrame([r for g in groups for r in g])


# -- summarise / score_table ---------------------------------------------------------------------------------------
def test_cell_shows_mean_std_and_every_seed():
    assert tables.cell_text([85.1, 85.8, 85.0]) == "85.3 ± 0.4 (85.1, 85.8, 85.0)"
    assert tables.cell_text([70.0]) == "70.0"
    assert tables.cell_text([math.nan]) == "not run"
    assert tables.cell_text([-1.5, 2.5]) == "0.5 ± 2.8 (−1.5, 2.5)"


def test_summarise_flags_runs_at_or_below_majority_and_skips_missing_runs():
    df = frame(runs("RTE", "cls", [66.0, 52.0, math.nan], majority=52.7))
    out = tables.summarise(df).iloc[0]
    assert out["n"] == 2 and out["missing"] == 1 and out["below_majority"] == 1
    assert out["cell"] == f"59.0 ± 9.9 (66.0, 52.0) {tables.MAJORITY_MARK}"
    assert out["seeds"] == [0, 1]


def test_score_table_has_matched_and_mismatched_mnli_columns():
    rows = []
    for seed, (m, mm) in enumerate([(80.0, 81.0), (82.0, 83.0)]):
        rows.append({"task": "MNLI", "variant": "cls", "seed": seed, "score": m, "majority": 35.0,
                     "at_or_below_majority": False, "validation_matched/accuracy": m,
                     "validation_mismatched/accuracy": mm})
    rows.append({"task": "CoLA", "variant": "cls", "seed": 0, "score": 0.0, "majority": 0.0,
                 "at_or_below_majority": True, "validation/matthews": 0.0})
    table = tables.score_table(pd.DataFrame(rows))
    assert list(table.columns) == ["MNLI-m (acc.)", "MNLI-mm (acc.)", "CoLA (MCC)"]
    # two runs without stored predictions: a t-interval over the seeds (t(0.975, 1) = 12.71, sd 1.41, n 2)
    assert table.loc["cls", "MNLI-mm (acc.)"] == "82.0 [69.3, 94.7] · 2 runs"
    assert table.loc["cls", "CoLA (MCC)"] == f"0.0 (one run, no interval) {tables.MAJORITY_MARK}"


def test_cross_table_gives_b_after_a_its_interval_and_marks_majority():
    labels = binary_labels(300, seed=2)
    good, constant = noisy(labels, 0.8, 0), np.ones_like(labels)
    rows = pred_runs("rte", "cross", labels, [good, constant], majority=55.0, task_a=["SST-2", "MRPC"],
                     task_b="RTE", direct_b=79.0, a_before=85.0, a_after=84.0, majority_a=50.0)
    for r, a in zip(rows, ("SST-2", "MRPC")):
        r["task_a"] = a
    table = cross_finetune_chapter.cross_table(pd.DataFrame(rows))
    expected = stats.bootstrap_metric("rte", good, labels, n_boot=verdicts.N_BOOT)
    assert table.loc[0, "B after A"] == (f"{tables.fmt(expected.estimate)} [{tables.fmt(expected.low)}, "
                                         f"{tables.fmt(expected.high)}]")
    assert table.loc[1, "B after A"].endswith(tables.MAJORITY_MARK)  # a constant predictor at the majority
    assert table.loc[0, "B directly"] == "79.0"


def test_score_table_cells_carry_the_bootstrap_interval_of_stored_predictions():
    labels = binary_labels(400, seed=1)
    preds = [noisy(labels, 0.85, seed) for seed in range(3)]
    table = tables.score_table(pd.DataFrame(pred_runs("sst2", "cls", labels, preds, majority=50.0)))
    cell = table.loc["cls", "SST-2 (acc.)"]
    interval = stats.combined_interval("sst2", preds, labels, n_boot=verdicts.N_BOOT)
    assert cell == f"{tables.fmt(interval.estimate)} [{tables.fmt(interval.low)}, {tables.fmt(interval.high)}] · 3 runs"
    assert interval.low < interval.estimate < interval.high
    one = tables.score_table(pd.DataFrame(pred_runs("sst2", "cls", labels, preds[:1], majority=50.0))).iloc[0, 0]
    assert "[" in one and "runs" not in one  # one run: the interval over dev examples alone


# -- hand-made per-example predictions ---------------------------------------------------------------------------
def binary_labels(n, p1=0.5, seed=0):
    return (np.random.default_rng(seed).random(n) < p1).astype(np.int64)


def noisy(labels, accuracy, seed):
    """Predictions that equal the labels on a random share `accuracy` of the examples (binary: else flipped)."""
    right = np.random.default_rng(seed).random(len(labels)) < accuracy
    return np.where(right, labels, 1 - labels)


def shifted(preds, labels, delta, seed, churn=0.005):
    """Another system's predictions, correlated with `preds` as two fine-tuned models are: a share `churn` of the
    examples flipped at random, then round(|delta| * n) right ones made wrong (delta < 0) or wrong ones right."""
    rng = np.random.default_rng(seed)
    out = np.array(preds, copy=True)
    flip = rng.random(len(out)) < churn
    out[flip] = 1 - out[flip]
    k = int(round(abs(delta) * len(out)))
    pool = np.flatnonzero((out == labels) if delta < 0 else (out != labels))
    idx = rng.choice(pool, size=min(k, len(pool)), replace=False)
    out[idx] = 1 - labels[idx] if delta < 0 else labels[idx]
    return out


def pred_runs(task, variant, labels, preds_list, majority=50.0, seeds=None, **fields):
    """Rows like tables.row with per-example predictions: the score is the main metric of each prediction set."""
    from fewdims.metrics import compute_metrics
    from fewdims.tasks import get_task

    spec = get_task(task)
    rows = []
    for i, p in enumerate(preds_list):
        s = 100.0 * compute_metrics(spec.name, p, labels)[spec.main_metric]
        rows.append({"task": task, "variant": variant, "seed": seeds[i] if seeds else i, "score": s,
                     "majority": majority, "at_or_below_majority": bool(s <= majority), "preds": np.asarray(p),
                     "labels": labels, **fields})
    return rows


def seeded(labels, accuracy, n_seeds=5, base=0):
    return [noisy(labels, accuracy, 1000 * base + i) for i in range(n_seeds)]


# -- the shared rules ----------------------------------------------------------------------------------------------
def iv(low, high, est=None):
    from fewdims.stats import Interval

    return Interval((low + high) / 2 if est is None else est, low, high, 5, "test")


def test_outcome_rules_read_the_interval_against_the_margin():
    o = comparisons.outcome
    assert o(iv(-1.5, 0.5), 2, comparisons.NOT_WORSE) == comparisons.HOLDS
    assert o(iv(-3.0, -2.1), 2, comparisons.NOT_WORSE) == comparisons.FAILS
    assert o(iv(-3.0, 0.0), 2, comparisons.NOT_WORSE) == comparisons.UNDECIDED
    assert o(iv(3.0, 9.0), 2, comparisons.NOT_WORSE) == comparisons.HOLDS           # better also matches
    assert o(iv(-1.0, 1.0), 2, comparisons.EQUIVALENT) == comparisons.HOLDS
    assert o(iv(2.5, 4.0), 2, comparisons.EQUIVALENT) == comparisons.FAILS
    assert o(iv(1.0, 3.0), 2, comparisons.EQUIVALENT) == comparisons.UNDECIDED
    assert o(iv(1.5, 4.0), 1, comparisons.BETTER) == comparisons.HOLDS
    assert o(iv(-2.0, 0.9), 1, comparisons.BETTER) == comparisons.FAILS
    assert o(iv(0.5, 3.0), 1, comparisons.BETTER) == comparisons.UNDECIDED
    assert o(None, 2, comparisons.NOT_WORSE) == comparisons.UNDECIDED
    assert o(iv(-math.inf, math.inf, 0.0), 2, comparisons.EQUIVALENT) == comparisons.UNDECIDED


def test_aggregate_over_tasks():
    H, F, U = comparisons.HOLDS, comparisons.FAILS, comparisons.UNDECIDED
    assert comparisons.aggregate([H, H, F]) == verdicts.SUPPORTED
    assert comparisons.aggregate([F, F, H]) == verdicts.NOT_SUPPORTED
    assert comparisons.aggregate([U, U, H]) == verdicts.INCONCLUSIVE
    assert comparisons.aggregate([H, F]) == verdicts.PARTLY
    assert comparisons.aggregate([H, U]) == verdicts.PARTLY
    assert comparisons.aggregate([F, U]) == verdicts.INCONCLUSIVE
    assert comparisons.aggregate([]) == verdicts.NOT_TESTED
    assert verdicts.INCONCLUSIVE in verdicts.VERDICTS


def test_informative_reference_needs_its_interval_above_the_majority():
    assert comparisons.informative_reference(iv(52.0, 60.0), 56.0, 50.0) == comparisons.YES
    assert comparisons.informative_reference(iv(49.0, 60.0), 54.5, 50.0) == comparisons.NO
    assert comparisons.informative_reference(None, 56.0, 50.0) == comparisons.UNKNOWN  # one run: counts, inconclusive
    assert comparisons.informative_reference(None, 50.0, 50.0) == comparisons.NO
    assert comparisons.informative_reference(None, math.nan, 50.0) == comparisons.NO


def test_compare_prefers_paired_predictions_then_paired_seeds_then_welch():
    labels = binary_labels(1000)
    a = pred_runs("SST-2", "a", labels, seeded(labels, 0.9))
    b = pred_runs("SST-2", "b", labels, seeded(labels, 0.8, base=1))
    c = comparisons.compare(pd.DataFrame(a), pd.DataFrame(b))
    assert c.method.startswith("paired bootstrap, 5 vs 5 runs × 1000 examples")
    assert c.difference.estimate == pytest.approx(c.variant_mean - c.reference_mean)
    assert c.difference.high < -5 and c.reference.low > 85
    old = [{k: v for k, v in r.items() if k not in ("preds", "labels")} for r in a + b]  # older records
    ref, var = pd.DataFrame(old[:5]), pd.DataFrame(old[5:])
    c = comparisons.compare(ref, var)
    assert c.method == "t over 5 paired seeds" and c.difference.n == 5
    diffs = var.score.to_numpy() - ref.score.to_numpy()
    assert c.difference.estimate == pytest.approx(diffs.mean())
    c = comparisons.compare(ref.assign(seed=0), var)  # the seeds do not pair up: unpaired, labelled
    assert c.method.startswith("unpaired Welch") and c.difference.low < c.difference.estimate < c.difference.high
    c = comparisons.compare(ref.iloc[:1], var.iloc[:1])
    assert c.difference is None and "one run" in c.method
    shifted = pd.DataFrame(b).assign(labels=[np.roll(labels, 1)] * 5)  # other dev examples: no pairing
    assert not comparisons.compare(pd.DataFrame(a), shifted).method.startswith("paired bootstrap")


def test_details_table_formats_intervals_without_nan():
    details = pd.DataFrame([{"task": "SST-2", **comparisons.interval_columns("cls", iv(84.9, 86.7, 85.8), n=5),
                             **comparisons.interval_columns("difference", iv(-2.9, -0.5, -1.7), n=5),
                             "majority": 50.9, "informative": comparisons.YES},
                            {"task": "RTE", **comparisons.interval_columns("cls", None, 60.0, 1),
                             **comparisons.interval_columns("difference", None, math.nan, 0),
                             "majority": math.nan, "informative": comparisons.UNKNOWN}])
    table = comparisons.details_table(details)
    assert list(table.columns) == ["task", "cls", "difference", "majority", "informative"]
    assert table.loc[0, "cls"] == "85.8 [84.9, 86.7]" and table.loc[0, "difference"] == "−1.7 [−2.9, −0.5]"
    assert table.loc[1, "cls"] == "60.0 (one run, no interval)" and table.loc[1, "difference"] == "n/a"
    assert not table.isin(["nan", "NaN", "None"]).any().any() and table.loc[1, "majority"] == "n/a"


def test_rows_carry_the_runs_predictions():
    from fewdims.predictions import pack_split

    labels = binary_labels(50)
    preds = noisy(labels, 0.8, 0)
    record = {"config": {"task": "rte", "seed": 3, "pooling": "cls", "layer": None, "dims": None, "head": "linear",
                         "freeze_backbone": False},
              "metrics": {"validation": {"accuracy": float(np.mean(preds == labels))}}, "key": "x",
              "data": {"majority_baseline": {"validation": {"accuracy": 0.5}}}}
    assert tables.row(record)["preds"] is None and tables.row(record)["labels"] is None  # an older record
    record["predictions"] = {"validation": pack_split(preds, labels)}
    r = tables.row(record)
    assert np.array_equal(r["preds"], preds) and np.array_equal(r["labels"], labels)
    assert r["majority"] == 50.0 and tables.majority_points(record) == 50.0


# -- (a) token ---------------------------------------------------------------------------------------------------
def token_frame(cola_gap=0.5, sst_gap=-1.0, rte_gap=-6.0, majority=50.0):
    """Scores only (older records, 2-3 seeds): seed t-intervals."""
    return frame(runs("CoLA", "cls", [55.0, 56.0, 57.0], majority=0.0),
                 runs("CoLA", "max_norm", [55.3 + cola_gap, 56.0 + cola_gap, 56.8 + cola_gap], majority=0.0),
                 runs("SST-2", "cls", [90.0, 91.0, 90.5], majority=majority),
                 runs("SST-2", "max_norm", [90.1 + sst_gap, 90.8 + sst_gap, 90.6 + sst_gap], majority=majority),
                 runs("RTE", "cls", [65.0, 66.0], majority=52.7),
                 runs("RTE", "max_norm", [65.0 + rte_gap, 66.0 + rte_gap], majority=52.7))


def test_token_claim_on_seed_scores():
    c = token_chapter.token_claim(token_frame())
    assert c["verdict"] == verdicts.SUPPORTED
    assert "holds on 2 of 2 informative tasks other than RTE" in c["measured"]
    assert "an exception as in the paper" in c["measured"]
    assert "t over 3 paired seeds" in c["measured"] and "CoLA: CLS 56.0 [" in c["measured"]
    assert {"cls_low", "cls_high", "max_norm_low", "difference_low", "difference_high"} <= set(c["details"].columns)
    assert token_chapter.token_claim(token_frame(sst_gap=-5.0))["verdict"] == verdicts.PARTLY      # 1 of 2
    assert token_chapter.token_claim(token_frame(cola_gap=-8, sst_gap=-5.0))["verdict"] == verdicts.NOT_SUPPORTED


def test_token_claim_with_one_seed_is_inconclusive():
    df = token_frame()
    c = token_chapter.token_claim(df[df.seed == 0])
    assert c["verdict"] == verdicts.INCONCLUSIVE and "no interval" in c["measured"]


def test_token_claim_not_tested_without_informative_tasks():
    assert token_chapter.token_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED
    only_rte = token_frame()
    only_rte = only_rte[only_rte.task == "RTE"]
    c = token_chapter.token_claim(only_rte)
    assert c["verdict"] == verdicts.NOT_TESTED and "other than RTE" in c["measured"]
    # SST-2's CLS interval is not above its majority baseline: left out and named
    c = token_chapter.token_claim(token_frame(majority=90.0))
    assert "SST-2" in c["measured"].split("majority-class baseline:")[1]
    assert "of 1 informative" in c["measured"]


def token_pred_frame(sst_acc=0.9, qnli_acc=0.9, rte_acc=0.7, n=3000):
    """CLS at 90 % on SST-2 and QNLI (3,000 dev examples, 5 seeds) and 80 % on RTE; QQP's CLS model predicts
    the majority class (uninformative)."""
    groups = []
    for i, (task, cls_acc, mn_acc) in enumerate((("SST-2", 0.9, sst_acc), ("QNLI", 0.9, qnli_acc),
                                                 ("RTE", 0.8, rte_acc))):
        labels = binary_labels(n, seed=i)
        cls = seeded(labels, cls_acc, base=10 * i)
        groups += [pred_runs(task, "cls", labels, cls),
                   pred_runs(task, "max_norm", labels, [shifted(p, labels, mn_acc - cls_acc, 10 * i + j)
                                                        for j, p in enumerate(cls)])]
    labels = binary_labels(n, p1=0.6, seed=9)
    groups += [pred_runs("QQP", "cls", labels, [np.ones(n, dtype=np.int64)] * 5, majority=60.0),
               pred_runs("QQP", "max_norm", labels, seeded(labels, 0.6, base=99), majority=60.0)]
    return frame(*groups)


def test_token_claim_with_predictions():
    c = token_chapter.token_claim(token_pred_frame())
    d = c["details"].set_index("task")
    assert c["verdict"] == verdicts.SUPPORTED, c["measured"]
    assert d.loc["SST-2", "outcome"] == comparisons.HOLDS and d.loc["RTE", "outcome"] == comparisons.FAILS
    assert d.loc["QQP", "outcome"] == comparisons.LEFT_OUT and "QQP" in c["measured"].split("baseline:")[1]
    assert d.loc["SST-2", "interval"] == "paired bootstrap, 5 vs 5 runs × 3000 examples"
    assert d.loc["SST-2", "cls_low"] < d.loc["SST-2", "cls"] < d.loc["SST-2", "cls_high"]
    assert "SST-2: CLS 89.9 [89.1, 90.7], max-norm " in c["measured"] and "margin of 2 points" in c["measured"]
    c = token_chapter.token_claim(token_pred_frame(sst_acc=0.8))         # SST-2 fails, QNLI holds
    assert c["verdict"] == verdicts.PARTLY
    c = token_chapter.token_claim(token_pred_frame(sst_acc=0.8, qnli_acc=0.75))
    assert c["verdict"] == verdicts.NOT_SUPPORTED
    # 300 examples: a 2-point gap is within its own noise on both tasks
    c = token_chapter.token_claim(token_pred_frame(sst_acc=0.88, qnli_acc=0.88, n=300))
    assert c["verdict"] == verdicts.INCONCLUSIVE, c["measured"]
    assert set(c["details"].set_index("task").loc[["SST-2", "QNLI"], "outcome"]) == {comparisons.UNDECIDED}


# -- (b) dimensions ----------------------------------------------------------------------------------------------
def dim_frame(gaps, random_scores=(70.0, 72.0), selected=85.0):
    groups = []
    for task, gap in gaps.items():
        groups += [runs(task, "CLS, all dims", [90.0, 90.6, 89.4]),
                   runs(task, "best k=2", [90.0 - gap, 90.5 - gap, 89.5 - gap], k=2),
                   runs(task, "random k=2", list(random_scores), k=2),
                   runs(task, "random k=3", [60.0], k=3),
                   runs(task, "effective pair", [selected], k=2),
                   runs(task, "scan top pair", [selected - 5], k=2)]
    return frame(*groups)


def test_few_dims_verdicts_on_seed_scores():
    c = dimension_chapter.few_dims_claim(dim_frame({"SST-2": 1.0, "MRPC": 1.5, "RTE": 9.0}))
    assert c["verdict"] == verdicts.SUPPORTED and "holds on 2 of 3" in c["measured"]
    c = dimension_chapter.few_dims_claim(dim_frame({"SST-2": 1.0, "MRPC": 4.0, "RTE": 9.0}))
    assert c["verdict"] == verdicts.PARTLY and "holds on 1 of 3" in c["measured"]  # 2 of 3 within 5 points
    assert dimension_chapter.few_dims_claim(dim_frame({"SST-2": 4.0, "MRPC": 4.5}))["verdict"] == verdicts.PARTLY
    far = dim_frame({"SST-2": 9.0, "MRPC": 9.0})
    assert dimension_chapter.few_dims_claim(far)["verdict"] == verdicts.INCONCLUSIVE  # the single 3-dim runs
    assert dimension_chapter.few_dims_claim(far[far.variant != "random k=3"])["verdict"] == verdicts.NOT_SUPPORTED
    assert dimension_chapter.few_dims_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED


def test_few_dims_single_runs_are_inconclusive():
    df = dim_frame({"SST-2": 9.0})
    df = df[df.variant != "best k=2"]
    df.loc[df.variant == "random k=3", "score"] = 89.5
    c = dimension_chapter.few_dims_claim(df)
    assert c["verdict"] == verdicts.INCONCLUSIVE
    assert c["details"].iloc[0]["best_k3"] == pytest.approx(89.5)


def dim_pred_frame(best_acc=0.895, n=3000, all_acc=0.9, task="SST-2", majority=50.0, selected_acc=0.85):
    labels = binary_labels(n)
    full = seeded(labels, all_acc)
    return frame(pred_runs(task, "CLS, all dims", labels, full, majority=majority),
                 pred_runs(task, "best k=2", labels, [shifted(p, labels, best_acc - all_acc, 50 + i)
                                                      for i, p in enumerate(full)], majority=majority, k=2),
                 pred_runs(task, "random k=2", labels, [noisy(labels, a, 500 + i) for i, a in
                                                        enumerate(np.linspace(0.55, 0.65, 10))],
                           seeds=[0] * 10, majority=majority, k=2),
                 pred_runs(task, "random k=3", labels, [noisy(labels, 0.6, 600)], majority=majority, k=3),
                 pred_runs(task, "effective pair", labels, [noisy(labels, selected_acc, 700)], majority=majority, k=2),
                 pred_runs(task, "scan top pair", labels, [noisy(labels, selected_acc - 0.05, 800)],
                           majority=majority, k=2))


def test_few_dims_with_predictions():
    holds = dimension_chapter.few_dims_claim(dim_pred_frame())
    assert holds["verdict"] == verdicts.SUPPORTED and holds["details"].iloc[0]["outcome"] == comparisons.HOLDS
    assert holds["details"].iloc[0]["diff_k2_high"] < 2 and "paired bootstrap" in holds["measured"]
    wide = dimension_chapter.few_dims_claim(dim_pred_frame(best_acc=0.865))  # 3.5 points below: within 5 only
    assert wide["verdict"] == verdicts.PARTLY and wide["details"].iloc[0]["outcome"] == comparisons.FAILS
    assert dimension_chapter.few_dims_claim(dim_pred_frame(best_acc=0.8))["verdict"] == verdicts.NOT_SUPPORTED
    small = dimension_chapter.few_dims_claim(dim_pred_frame(best_acc=0.88, n=300))
    assert small["verdict"] == verdicts.INCONCLUSIVE
    useless = dimension_chapter.few_dims_claim(dim_pred_frame(all_acc=0.51, best_acc=0.51, n=300))
    assert useless["verdict"] == verdicts.NOT_TESTED and "SST-2" in useless["measured"]


def test_selected_vs_random_with_predictions():
    c = dimension_chapter.selected_vs_random_claim(dim_pred_frame())
    d = c["details"].iloc[0]
    assert c["verdict"] == verdicts.SUPPORTED and d["selected_set"] == "effective pair"
    assert d["random_n"] == 10 and d["difference_low"] > 1 and "10 sets" in c["measured"]
    assert dimension_chapter.selected_vs_random_claim(dim_pred_frame(selected_acc=0.5))["verdict"] == \
        verdicts.NOT_SUPPORTED
    assert dimension_chapter.selected_vs_random_claim(dim_pred_frame(selected_acc=0.61))["verdict"] == \
        verdicts.INCONCLUSIVE  # about the random mean: the null's spread decides nothing
    c = dimension_chapter.selected_vs_random_claim(dim_pred_frame(all_acc=0.5, n=300))
    assert c["verdict"] == verdicts.NOT_TESTED  # the all-dims model did not learn the task


def test_selected_vs_random_on_older_records():
    c = dimension_chapter.selected_vs_random_claim(dim_frame({"SST-2": 1, "RTE": 1}))
    assert c["verdict"] == verdicts.INCONCLUSIVE and "one run" in c["measured"]  # one selected run, no predictions
    df = dim_frame({"SST-2": 1}, selected=45.0)
    df.loc[df.variant == "CLS, all dims", "score"] = 50.0
    assert dimension_chapter.selected_vs_random_claim(df)["verdict"] == verdicts.NOT_TESTED


# -- (c) layers --------------------------------------------------------------------------------------------------
def layer_frame(curves, k_curves=None):
    rows = []
    for task, curve in curves.items():
        for layer, score in enumerate(curve):
            rows += runs(task, "all dims", [score], layer_index=layer)
            rows += runs(task, "k=2", [(k_curves or curves)[task][layer]], layer_index=layer)
    return pd.DataFrame(rows)


def layer_pred_frame(k_accs, n=3000, top_acc=0.9, sets=3):
    """L = 4 layers (lower = 1-2, upper = 3-4): per layer `sets` k-dim runs at the given accuracy and one
    all-dims run at top_acc."""
    labels = binary_labels(n)
    base = [noisy(labels, top_acc, 700 + i) for i in range(sets)]  # set i at the top layer
    rows = []
    for layer, acc in enumerate(k_accs):
        rows += pred_runs("SST-2", "k=2", labels, [shifted(b, labels, acc - top_acc, 10 * layer + i)
                                                   for i, b in enumerate(base)], seeds=[0] * sets, layer_index=layer)
        rows += pred_runs("SST-2", "all dims", labels, [noisy(labels, top_acc, 900 + layer)], layer_index=layer)
    return pd.DataFrame(rows)


def test_layer_claim_with_predictions():
    c = layer_chapter.layer_claim(layer_pred_frame([0.5, 0.6, 0.65, 0.9, 0.9]))
    assert c["verdict"] == verdicts.SUPPORTED, c["measured"]
    d = c["details"].set_index("variant").loc["k=2"]
    assert d["lower_less"] == comparisons.HOLDS and d["upper_flat"] == comparisons.HOLDS and d["worst_upper_layer"] == 3
    assert "layers 1-2" in c["measured"] and "layers 3-4" in c["measured"]
    by = c["by_layer"]
    assert set(by.columns) >= {"score_low", "score_high", "vs_top", "vs_top_low", "vs_top_high", "outcome"}
    assert by[(by.variant == "k=2") & (by.layer == 1)].outcome.iloc[0] == comparisons.FAILS  # far below the top
    partly = layer_chapter.layer_claim(layer_pred_frame([0.5, 0.6, 0.65, 0.8, 0.9]))  # layer 3 is 10 points lower
    assert partly["verdict"] == verdicts.PARTLY
    flat = layer_chapter.layer_claim(layer_pred_frame([0.5, 0.8, 0.9, 0.8, 0.9]))  # lower = upper, 3 far from 4
    assert flat["verdict"] == verdicts.NOT_SUPPORTED
    noisy_ = layer_chapter.layer_claim(layer_pred_frame([0.5, 0.86, 0.87, 0.875, 0.9], n=300))
    assert noisy_["verdict"] == verdicts.INCONCLUSIVE
    # without all-dims runs below the top layer (the cpu edition): the same verdict from the k-dims curve
    frame_ = layer_pred_frame([0.5, 0.6, 0.65, 0.9, 0.9])
    top_only = layer_chapter.layer_claim(frame_[(frame_.variant == "k=2") | (frame_.layer_index == 4)])
    assert top_only["verdict"] == verdicts.SUPPORTED and list(top_only["details"].variant) == ["k=2"]


def test_layer_claim_on_single_runs():
    rising = [50, 60, 70, 80, 89, 90, 90]          # L = 6, one run per layer, no predictions
    c = layer_chapter.layer_claim(layer_frame({"SST-2": rising, "RTE": rising}))
    assert c["verdict"] == verdicts.INCONCLUSIVE and "layers 1-3" in c["measured"]
    assert layer_chapter.layer_claim(layer_frame({"SST-2": [50, 60, 70]}))["verdict"] in verdicts.VERDICTS
    assert layer_chapter.layer_claim(layer_frame({"SST-2": [50, 60]}))["verdict"] == verdicts.NOT_TESTED  # L = 1


# -- (d) freezing ------------------------------------------------------------------------------------------------
def freeze_frame(frozen_rte=53.0, frozen_cola=1.0, frozen_sst=85.0):
    return frame(runs("RTE", "fine-tuned, linear head", [66.0, 67.0, 66.5], majority=52.7),
                 runs("RTE", "frozen, 2-layer head", [frozen_rte - 0.5, frozen_rte, frozen_rte + 0.5], majority=52.7),
                 runs("CoLA", "fine-tuned, linear head", [55.0, 56.0, 55.5], majority=0.0),
                 runs("CoLA", "frozen, 2-layer head", [frozen_cola - 0.5, frozen_cola, frozen_cola + 0.5],
                      majority=0.0),
                 runs("SST-2", "fine-tuned, linear head", [91.0, 92.0, 91.5], majority=50.9),
                 runs("SST-2", "frozen, 2-layer head", [frozen_sst, frozen_sst + 0.4, frozen_sst - 0.4],
                      majority=50.9))


def test_freezing_verdicts_on_seed_scores():
    c = freezing_chapter.freezing_claim(freeze_frame())
    assert c["verdict"] == verdicts.SUPPORTED and "holds on 2 of 2 informative harder tasks" in c["measured"]
    assert "easier tasks" in c["measured"]
    assert freezing_chapter.freezing_claim(freeze_frame(frozen_rte=55.0, frozen_cola=30.0))["verdict"] == \
        verdicts.PARTLY  # above the baseline, but far below fine-tuning
    assert freezing_chapter.freezing_claim(freeze_frame(frozen_rte=64.0, frozen_cola=52.0))["verdict"] == \
        verdicts.NOT_SUPPORTED
    only_easy = freeze_frame()
    assert freezing_chapter.freezing_claim(only_easy[only_easy.task == "SST-2"])["verdict"] == verdicts.NOT_TESTED


def freeze_pred_frame(rte_frozen=None, mrpc_frozen=None, n=2000, fine_tuned=0.9):
    """Harder tasks RTE (majority 50 %) and MRPC (majority 68 %), the easier SST-2; frozen runs predict the
    majority class unless given an accuracy."""
    groups = []
    for i, (task, p1, frozen) in enumerate((("RTE", 0.5, rte_frozen), ("MRPC", 0.68, mrpc_frozen),
                                            ("SST-2", 0.5, 0.85))):
        labels = binary_labels(n, p1=p1, seed=i)
        majority = 100.0 * max(labels.mean(), 1 - labels.mean())
        major = int(labels.mean() >= 0.5)
        frozen_preds = [np.full(n, major)] * 5 if frozen is None else seeded(labels, frozen, base=10 * i + 1)
        groups += [pred_runs(task, "fine-tuned, linear head", labels, seeded(labels, fine_tuned, base=10 * i),
                             majority=majority),
                   pred_runs(task, "frozen, 2-layer head", labels, frozen_preds, majority=majority)]
    return frame(*groups)


def test_freezing_claim_with_predictions():
    c = freezing_chapter.freezing_claim(freeze_pred_frame())
    assert c["verdict"] == verdicts.SUPPORTED, c["measured"]
    assert set(c["details"].set_index("task").loc[["RTE", "MRPC"], "collapse"]) == {comparisons.HOLDS}
    assert freezing_chapter.freezing_claim(freeze_pred_frame(rte_frozen=0.75, mrpc_frozen=0.72))["verdict"] == \
        verdicts.PARTLY  # no collapse, but more than 10 points below fine-tuning
    assert freezing_chapter.freezing_claim(freeze_pred_frame(rte_frozen=0.88, mrpc_frozen=0.88))["verdict"] == \
        verdicts.NOT_SUPPORTED
    c = freezing_chapter.freezing_claim(freeze_pred_frame(rte_frozen=0.55, mrpc_frozen=0.7, n=150, fine_tuned=0.78))
    assert c["verdict"] == verdicts.INCONCLUSIVE, c["measured"]  # not above the baseline, but not near it either


# -- (e) cross-fine-tuning ---------------------------------------------------------------------------------------
def cross_frame(scores):
    rows = []
    for (a, b), (score, direct) in scores.items():
        rows.append({"task": b, "task_a": a, "task_b": b, "seed": 0, "score": score, "direct_b": direct,
                     "majority": 50.0, "at_or_below_majority": score <= 50.0, "a_before": 80.0, "a_after": 60.0,
                     "relative_b": score / direct, "retention_a": 0.75})
    return pd.DataFrame(rows)


def cross_pred_frame(pairs, n=2000, a_after=None, a_before_acc=0.9):
    """pairs: {(A, B): accuracy on B after A}; direct B and A before at 90 % (5 seeds of nothing: one run each,
    as the chapter runs them); A after B a stored score (no predictions), `a_after` points."""
    rows, labels = [], {}
    for i, ((a, b), acc) in enumerate(pairs.items()):
        for t in (a, b):
            labels.setdefault(t, binary_labels(n, seed=len(labels)))
        direct = noisy(labels[b], 0.9, 100 + i)
        before = noisy(labels[a], a_before_acc, 200 + i)
        r = pred_runs(b, f"{a} -> {b}", labels[b], [shifted(direct, labels[b], acc - 0.9, 300 + i)])[0]
        r.update({"task_a": a, "task_b": b, "direct_b": 100.0 * np.mean(direct == labels[b]),
                  "direct_b_preds": direct, "direct_b_labels": labels[b], "direct_b_seed": 0,
                  "a_before": 100.0 * np.mean(before == labels[a]), "a_before_preds": before, "a_labels": labels[a],
                  "majority_a": 50.0, "a_after_preds": None})
        r["a_after"] = r["a_before"] - 1.0 if a_after is None else a_after
        rows.append(r)
    return pd.DataFrame(rows)


def test_cross_verdicts_on_older_records_are_inconclusive():
    good = {("SST-2", "RTE"): (65.0, 66.0), ("RTE", "SST-2"): (92.0, 91.0)}
    c = cross_finetune_chapter.cross_claim(cross_frame(good))
    assert c["verdict"] == verdicts.INCONCLUSIVE and "one run" in c["measured"]
    useless = {("SST-2", "RTE"): (50.0, 50.0)}
    assert cross_finetune_chapter.cross_claim(cross_frame(useless))["verdict"] == verdicts.NOT_TESTED
    assert cross_finetune_chapter.cross_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED


def test_cross_claim_with_predictions():
    good = cross_finetune_chapter.cross_claim(cross_pred_frame({("SST-2", "RTE"): 0.9, ("RTE", "SST-2"): 0.91}))
    assert good["verdict"] == verdicts.SUPPORTED, good["measured"]
    assert "paired bootstrap, 2000 examples" in good["measured"] and "SST-2 → RTE: 9" in good["measured"]
    half = cross_finetune_chapter.cross_claim(cross_pred_frame({("SST-2", "RTE"): 0.8, ("RTE", "SST-2"): 0.9}))
    assert half["verdict"] == verdicts.PARTLY
    bad = cross_finetune_chapter.cross_claim(cross_pred_frame({("SST-2", "RTE"): 0.8, ("RTE", "SST-2"): 0.75}))
    assert bad["verdict"] == verdicts.NOT_SUPPORTED
    unsure = cross_finetune_chapter.cross_claim(cross_pred_frame({("SST-2", "RTE"): 0.88, ("RTE", "SST-2"): 0.88},
                                                                 n=300))
    assert unsure["verdict"] == verdicts.INCONCLUSIVE, unsure["measured"]


def test_forgetting_claim():
    pairs = {("SST-2", "RTE"): 0.9, ("RTE", "SST-2"): 0.9}
    c = cross_finetune_chapter.forgetting_claim(cross_pred_frame(pairs))  # A after B one point below A before
    d = c["details"].iloc[0]
    assert c["verdict"] == verdicts.SUPPORTED, c["measured"]
    assert d["retention_low"] > 0.9 and d["retention"] == pytest.approx((d["a_after"] - 50) / (d["a_before"] - 50))
    assert "A before only" in c["measured"] and "normalised retention 0.9" in c["measured"]
    assert cross_finetune_chapter.forgetting_claim(cross_pred_frame(pairs, a_after=60.0))["verdict"] == \
        verdicts.NOT_SUPPORTED  # a quarter of what A learned is left
    unsure = cross_finetune_chapter.forgetting_claim(cross_pred_frame(pairs, n=200, a_before_acc=0.7,
                                                                      a_after=64.0))
    assert unsure["verdict"] == verdicts.INCONCLUSIVE, unsure["measured"]
    useless = cross_finetune_chapter.forgetting_claim(cross_pred_frame(pairs, n=300, a_before_acc=0.45))
    assert useless["verdict"] == verdicts.NOT_TESTED and "A's majority-class baseline" in useless["measured"]
    # A's head's predictions after B stored: the retention is paired over A's examples
    frame_ = cross_pred_frame(pairs)
    frame_["a_after_preds"] = list(frame_.a_before_preds)
    frame_["a_after"] = frame_["a_before"]
    c = cross_finetune_chapter.forgetting_claim(frame_)
    assert c["verdict"] == verdicts.SUPPORTED and c["details"].iloc[0]["retention_low"] == pytest.approx(1.0)
    old = cross_finetune_chapter.forgetting_claim(cross_frame({("SST-2", "RTE"): (65.0, 66.0)}))
    assert old["verdict"] == verdicts.INCONCLUSIVE  # one run, no predictions


# -- CKA ---------------------------------------------------------------------------------------------------------
def block_matrix(n=7, split=4, within=0.9, between=0.3, undefined_first=True):
    m = np.full((n, n), between)
    m[:split, :split] = within
    m[split:, split:] = within
    np.fill_diagonal(m, 1.0)
    out = m.tolist()
    if undefined_first:
        out = [[None] * n] + [[None] + row[1:] for row in out[1:]]
    return out


def cka_entry(finetuned, pretrained, drop_scores, metric="accuracy", n=20000):
    """A stored CKA analysis; the reference's dev predictions (n binary examples) score drop_scores[-1]."""
    labels = (np.random.default_rng(5).random(n) < 0.5).astype(int)
    return {"layers": {"cls": {"finetuned": finetuned, "pretrained": pretrained,
                               "pretrained_vs_finetuned": [None] + [0.9] * (len(finetuned) - 1)},
                       "layer_drop": [{metric: s / 100} for s in drop_scores],
                       "params": {"representations": ["cls", "mean"]}},
            "score": drop_scores[-1], "metric": metric, "key": "x",
            "preds": exactly(labels, drop_scores[-1] / 100, 6), "labels": labels}


def exactly(labels, accuracy, seed):
    """Binary predictions right on exactly round(accuracy * n) random examples."""
    wrong = np.random.default_rng(seed).permutation(len(labels))[:int(round((1 - accuracy) * len(labels)))]
    out = np.array(labels, copy=True)
    out[wrong] = 1 - out[wrong]
    return out


def test_block_split_ignores_undefined_layers():
    out = cka_chapter.block_split(block_matrix())
    assert out["layers"] == [1, 2, 3, 4, 5, 6] and out["split"] == 4
    assert out["contrast"] == pytest.approx(0.6)


def test_cka_block_verdicts():
    flat = block_matrix(within=0.8, between=0.8)
    drops = [50, 55, 60, 70, 85, 89.5, 90]
    both = {"SST-2": cka_entry(block_matrix(), flat, drops), "RTE": cka_entry(block_matrix(), flat, drops)}
    c = cka_chapter.cka_block_claim(both)
    assert c["verdict"] == verdicts.SUPPORTED and "[1-3] [4-6]" in c["measured"]
    one = {"SST-2": cka_entry(block_matrix(), flat, drops), "RTE": cka_entry(flat, flat, drops)}
    assert cka_chapter.cka_block_claim(one)["verdict"] == verdicts.PARTLY
    assert cka_chapter.cka_block_claim({"RTE": cka_entry(flat, flat, drops)})["verdict"] == verdicts.NOT_SUPPORTED
    tiny = {"RTE": cka_entry(block_matrix(n=3, split=2), block_matrix(n=3, split=2), [50, 60, 70])}
    c = cka_chapter.cka_block_claim(tiny)  # layers 1-2 only: no room for two blocks
    assert c["verdict"] == verdicts.NOT_TESTED and "fewer than 4" in c["measured"]
    with pytest.raises(Exception, match="representation"):
        cka_chapter.check_representation(both, "pooler")


def test_layer_drop_verdicts():
    m = block_matrix()
    good = {"SST-2": cka_entry(m, m, [50, 55, 60, 70, 85, 89.6, 90])}
    c = cka_chapter.layer_drop_claim(good, majority={"SST-2": 50.9})
    assert c["verdict"] == verdicts.SUPPORTED and "1 of 6 layers droppable" in c["measured"]
    assert "bootstrap of the full model only" in c["measured"]  # no per-depth predictions stored
    table = cka_chapter.layer_drop_table(good)
    assert table.droppable.iloc[0] == 1 and list(table.layers_kept) == list(range(7))
    top = table[table.layers_kept == 5].iloc[0]
    assert top.difference_low < -0.4 < top.difference_high and top.difference_low > -1  # within the margin
    # a loss the dev set cannot tell from the margin: inconclusive; none stored at all: inconclusive too
    near = {"SST-2": cka_entry(m, m, [50, 55, 60, 70, 85, 89.0, 90], n=2000)}
    assert cka_chapter.layer_drop_claim(near)["verdict"] == verdicts.INCONCLUSIVE
    bare = {"SST-2": {**good["SST-2"], "preds": None, "labels": None}}
    assert cka_chapter.layer_drop_claim(bare)["verdict"] == verdicts.INCONCLUSIVE
    bad = {"RTE": cka_entry(m, m, [50, 55, 60, 70, 85, 80, 90]), **good}
    assert cka_chapter.layer_drop_claim(bad)["verdict"] == verdicts.PARTLY

    # per-depth predictions stored (records since 2026-12-03): the interval is paired over the examples
    from fewdims.predictions import pack

    entry = cka_entry(m, m, [50, 55, 60, 70, 85, 90, 90], n=2000)
    full = entry["preds"]
    depths = [exactly(entry["labels"], s / 100, 10 + i) for i, s in enumerate([50, 55, 60, 70, 85])]
    entry["layers"]["layer_drop_predictions"] = [pack(p) for p in depths + [full.copy(), full]]
    paired = cka_chapter.layer_drop_table({"SST-2": entry})
    top = paired[paired.layers_kept == 5].iloc[0]
    assert top.difference == 0 and top.difference_low == top.difference_high == 0  # the same predictions
    assert top.interval.startswith("paired") and top.droppable == 1
    flat = {"SST-2": cka_entry(m, m, [50.9] * 7)}
    assert cka_chapter.layer_drop_claim(flat, majority={"SST-2": 50.9})["verdict"] == verdicts.NOT_TESTED
    assert cka_chapter.layer_drop_claim({})["verdict"] == verdicts.NOT_TESTED


def test_all_claims_on_nothing_are_not_tested_with_a_reason():
    out = summary_chapter.all_claims({})
    assert len(out) == 9 and {c["verdict"] for c in out} == {verdicts.NOT_TESTED}
    assert [c["claim"] for c in out[5:7]] == [cross_finetune_chapter.CROSS_CLAIM,
                                              cross_finetune_chapter.FORGETTING_CLAIM]
    assert all(c["measured"].startswith("Not tested: ") for c in out)
    table = verdicts.claims_table(out)
    assert list(table.columns) == ["paper", "claim", "measured", "verdict"]


# -- plots -------------------------------------------------------------------------------------------------------
def test_every_plot_returns_a_titled_figure_with_labelled_axes():
    from matplotlib.figure import Figure

    m = block_matrix()
    cka = {"SST-2": cka_entry(m, m, [50, 55, 60, 70, 85, 89.5, 90])}
    dims = dim_frame({"SST-2": 1.0, "RTE": 3.0})
    dims["dims"] = [(1, 2)] * len(dims)
    dims["removal_cost"], dims["left_out"], dims["best_set"] = 1.0, 3, 0
    dims.loc[dims.index[:3], "variant"] = "leave one out"
    scan = pd.DataFrame([{"task": "SST-2", "pairs": 10, "seconds": 0.5, "score": "accuracy",
                          "quantiles": {"0.0": 0.5, "0.5": 0.6, "1.0": 0.9}, "top": [[1, 2, 0.9]],
                          "importance": [0.7, 0.9, 0.9, 0.6]}])
    masking = pd.DataFrame([{"task": "SST-2", "split": "validation", "dims": (1, 2), "k": 2, "score": 60.0}])
    drawn = [
        figures.score_bars(token_frame()), figures.score_bars(dims, x="variant", hue=None, col="task", kind="dot"),
        figures.layer_curves(layer_frame({"SST-2": [50, 60, 70, 80, 89, 90, 90]})),
        figures.heatmap(m), cka_figures.cka_grid(cka), cka_figures.cka_layer_curves(cka),
        cka_figures.layer_drop_curves(cka_chapter.layer_drop_table(cka)),
        figures.relative_matrix(cross_frame({("SST-2", "RTE"): (65.0, 66.0), ("RTE", "SST-2"): (92.0, 91.0)})),
        dimension_figures.scan_histogram(scan, reference={"SST-2": 90.0}), dimension_figures.importance_plot(scan, {"SST-2": [1]}),
        dimension_figures.removal_cost_bars(dims), dimension_figures.masking_contrast(dims, masking),
        book_figures.delta_heatmap(pd.DataFrame({"task": ["SST-2"], "manipulation": ["x"], "delta": [-1.0]})),
        book_figures.compute_bars(pd.DataFrame({"experiment": ["token"], "task": ["SST-2"], "seconds": [60.0]})),
        figures.score_bars(pd.DataFrame(), title="nothing"),
    ]
    for fig in drawn:
        assert isinstance(fig, Figure)
        assert fig._suptitle is not None and fig._suptitle.get_text()
        for ax in fig.axes:
            if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.has_data():
                assert ax.get_xlabel() or ax.get_xticklabels(), ax
                assert ax.get_ylabel() or ax.get_yticklabels(), ax


# -- the stored notebooks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean_with_a_parameters_cell(name):
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store notebooks without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    translators = pytest.importorskip("papermill.translators")
    names = [p.name for p in translators.PythonTranslator.inspect(params[0])]  # what `papermill -p` can set
    assert set(names) == set(COMMON_PARAMETERS) | set(EXTRA_PARAMETERS.get(name, ()))
    assert len(names) == len([line for line in params[0].source.splitlines() if line.strip() and not line.startswith("#")])
    assert f'open_chapter("{name}", globals())' in "".join(c.source for c in code)


# -- executing the notebooks (slow) --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """One results/cache directory for every notebook of the session, so the smoke grid is computed once."""
    root = tmp_path_factory.mktemp("notebooks")
    values = {"FEWDIMS_RESULTS": str(root / "results"), "FEWDIMS_CACHE": str(root / "cache"),
              "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_the_smoke_profile(name, smoke_env):
    papermill = pytest.importorskip("papermill")
    out = smoke_env / "executed" / f"{name}.ipynb"
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(NB_DIR / f"{name}.ipynb"), str(out), parameters=dict(profile="smoke"),
                               kernel_name="python3", cwd=str(NB_DIR), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{name} printed to stderr (warnings or progress bars): {stderr[:2]}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} produced no figure"
    provenance = [o for o in outputs if "Provenance:" in o.get("data", {}).get("text/markdown", "")]
    assert provenance, f"{name} has no provenance line"
