"""Are the "few dimensions" BERT's outlier dimensions? Three earlier findings of special dimensions, re-measured on
the book's reference models, and compared with the dimensions the dimension chapter selects:

* Rudman, Chen & Eickhoff (2023): the highest-variance dimension of a fine-tuned sentence vector, cut by one
  threshold, classifies the task with a small error;
* Kovaleva, Kulshreshtha, Rogers & Rumshisky (2021): zeroing the few LayerNorm outlier dimensions collapses the
  model, zeroing as many random dimensions does not;
* Timkey & van Schijndel (2021): 1-3 "rogue" dimensions dominate cosine similarity.

Everything is read from the `outliers` analysis that the reference run of each task carries (fewdims.outliers,
computed with the fine-tuned weights in memory or re-analysed from the weight cache), plus one fine-tuned run per
task: a k = 1 head on the highest-variance dimension. Verdicts are read off 95 % intervals; where the intervals
cannot decide, the verdict is inconclusive. The claims and the page's sentences are in
fewdims.chapters.outlier_claims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..outlier_analysis import interval_analysis
from ..outliers import FALLBACK_DIMS, LN_MOST, LN_SIGMAS, TOP_K, overlap_test, ranked
from ..runner import score
from ..tables import fmt
from ..tasks import get_task
from .base import Chapter

RUDMAN = "Rudman, Chen & Eickhoff (2023)"
KOVALEVA = "Kovaleva et al. (2021)"
TIMKEY = "Timkey & van Schijndel (2021)"

# -- the verdicts' margins ------------------------------------------------------------------------------------------
RUDMAN_MARGIN = 5.0     # points: "a small error" = the one-dimension classifier at most 5 points below the full model
KOVALEVA_MARGIN = 5.0   # points: zeroing the outliers costs at least 5 points more than zeroing random dimensions
ROGUE_SHARE = 0.5       # "dominate": the top-3 dimensions hold at least half of the expected cosine similarity
OVERLAP_ALPHA = 0.05    # an overlap "beyond chance": one-sided hypergeometric p below 0.05 (per comparison)

PAPER_SETTINGS = {
    RUDMAN: "BERT-base (and six other models), full training sets of SST-2, QNLI, QQP, MRPC and RTE, lr 3e-5, "
            "batch 32, 2 epochs; the last layer's [CLS] vector",
    KOVALEVA: "BERT-base and other BERT-family models: pretrained (masked-language-model loss) and fine-tuned on "
              "GLUE tasks with their full training sets; the output LayerNorm of every layer",
    TIMKEY: "pretrained BERT, RoBERTa, GPT-2 and XLNet, no fine-tuning: token representations of every layer",
}

# display labels of the predictors / zeroings / selections (the logic reads them only through these names)
FULL, ONE_DIM, ONE_DIM_MEAN, K1_HEAD, RANDOM_DIM = ("full model", "top-variance dim, threshold",
                                                    "top-variance dim of the mean, threshold",
                                                    "k=1 head on that dim (fine-tuned)", "random dim, threshold")
OUTLIER_ZERO, RANDOM_ZERO = "LayerNorm outliers zeroed", "random dims zeroed"
TOP_VARIANCE, TOP_ROGUE, LN_OUTLIERS = f"top-{TOP_K} variance", f"top-{TOP_K} rogue", "LayerNorm outliers"
ALL_SELECTED, SCAN_TOP10 = "all selected", "scan top-10 dims"
PROBE = "STS-B, pretrained (cosine)"


@dataclass
class OutlierResults:
    entries: dict              # {task display: {'outliers': the stored analysis, 'score', 'majority', 'metric', 'key'}}
    k1: pd.DataFrame           # per task: the k=1 head fine-tuned on the highest-variance dimension
    selected: dict             # {task display: {selection: sorted dims}} from the dimension chapter
    hidden: int
    setting: dict = field(default_factory=dict)  # ours, for the claims: model, train_size, epochs, lr, batch size
    missing: list = field(default_factory=list)  # tasks whose reference has no stored analysis (compute=False)


class OutliersChapter(Chapter):
    name = "outliers"

    def compute(self) -> OutlierResults:
        from . import open_chapter

        sec, entries, k1, missing = self.section, {}, [], []
        for task in self.tasks:
            spec = get_task(task)
            rec = self.baseline(task)
            stored = (rec.get("extra") or {}).get("outliers")
            if rec.get("missing") or rec.get("planned") or not stored:
                missing.append(spec.display)
                continue
            first = next(iter(rec["metrics"]))
            majority = (rec.get("data", {}).get("majority_baseline") or {}).get(first)
            entries[spec.display] = {"outliers": stored, "score": score(rec), "metric": spec.main_metric,
                                     "majority": 100.0 * majority[spec.main_metric] if majority else math.nan,
                                     "key": rec["key"]}
            if sec.get("finetune_k1", True):
                d = stored["rudman"]["cls"]["dim"]
                run = self.runner.run(self.base(task, dims=(d,)), [interval_analysis(sec["n_boot"])])
                found = (run.get("extra") or {}).get("dev_interval", {}).get("splits", {}).get(first)
                k1.append({"task": spec.display, "dim": d, "stored": not (run.get("missing") or run.get("planned")),
                           "score": score(run), **({f"{k}": found[k] for k in ("low", "high")} if found else {})})
        dimension = open_chapter("dimension", self.profile, self.runner).results()
        v = self.profile.values
        setting = {"model": v["model"], "hidden": self.hidden, "train_size": v.get("train_size"),
                   "epochs": v["epochs"], "lr": v["lr"], "batch_size": v["batch_size"]}
        return OutlierResults(entries, pd.DataFrame(k1), selected_dims(dimension), self.hidden, setting, missing)


# -- what the dimension chapter selected ----------------------------------------------------------------------------
def selected_dims(dimension) -> dict:
    """{task display: {'effective pair', 'best 3-dim set', 'best k=K', 'scan top pair', 'scan top-10 dims',
    'all selected': sorted dims}} from the dimension chapter's results ('all selected' = the union of the sets
    chosen by fine-tuning: effective pair, best 3-dim set, best k, scan top pair)."""
    from .dimension import EFFECTIVE, LEAVE_ONE_OUT, SCAN_TOP, headline_variant

    out: dict = {}
    runs = getattr(dimension, "runs", None)
    if runs is not None and len(runs) and "variant" in runs:
        best_k = headline_variant(getattr(dimension, "k", 2))
        for task, group in runs.groupby("task", sort=False):
            sets = out.setdefault(task, {})
            for variant in (EFFECTIVE, best_k, SCAN_TOP):
                dims = sorted({int(d) for ds in group[group.variant == variant].dims if ds for d in ds})
                if dims:
                    sets[variant] = dims
            loo = group[group.variant == LEAVE_ONE_OUT]
            if len(loo) and "left_out" in loo:
                first = loo[loo.best_set.fillna(0) == 0] if "best_set" in loo else loo
                dims = sorted({int(d) for ds in first.dims if ds for d in ds} |
                              {int(d) for d in first.left_out.dropna()})
                if dims:
                    sets["best 3-dim set"] = dims
            if sets:
                sets[ALL_SELECTED] = sorted({d for dims in sets.values() for d in dims})
    scan = getattr(dimension, "scan", None)
    if scan is not None and len(scan):
        for _, r in scan.iterrows():
            importance = np.array([-np.inf if v is None else v for v in r.get("importance") or []], dtype=float)
            if len(importance):
                out.setdefault(r["task"], {})[SCAN_TOP10] = sorted(ranked(importance, 10))
    return out


# -- frames -----------------------------------------------------------------------------------------------------------
def _interval_row(stored: dict | None) -> dict:
    return {"estimate": stored["estimate"], "low": stored["low"], "high": stored["high"]} if stored else \
        {"estimate": math.nan, "low": math.nan, "high": math.nan}


def outlier_sets(results: OutlierResults, model: str = "finetuned") -> dict:
    """{task: {'top-3 variance', 'top-3 rogue', 'LayerNorm outliers': dims}} of the [CLS] vector of `model`."""
    out = {}
    for task, entry in (results.entries if results else {}).items():
        m = entry["outliers"][model]
        out[task] = {TOP_VARIANCE: sorted(ranked(m["cls"]["variance"], TOP_K)),
                     TOP_ROGUE: sorted(ranked(m["cls"]["cosine"], TOP_K)),
                     LN_OUTLIERS: sorted(m["layernorm"]["outliers"])}
    return out


def dims_text(dims) -> str:
    return ", ".join(map(str, dims)) if dims else "none"


def dims_table(results: OutlierResults) -> pd.DataFrame:
    """Per task: the special dimensions of the fine-tuned [CLS] vector and the dimensions the dimension chapter
    selected (union of its fine-tuned selections)."""
    rows = []
    pre = outlier_sets(results, "pretrained")
    for task, sets in outlier_sets(results).items():
        rows.append({"task": task, TOP_VARIANCE: dims_text(sets[TOP_VARIANCE]),
                     TOP_ROGUE: dims_text(sets[TOP_ROGUE]), f"{LN_OUTLIERS} (fine-tuned)": dims_text(
                         sets[LN_OUTLIERS]), f"{LN_OUTLIERS} (pretrained)": dims_text(pre[task][LN_OUTLIERS]),
                     "selected (dimension chapter)": dims_text(results.selected.get(task, {}).get(ALL_SELECTED))})
    return pd.DataFrame(rows)


def concentration_frame(results: OutlierResults) -> pd.DataFrame:
    """Long frame: task, model, representation, measure ('variance' / 'cosine'), top (1 / 3), estimate, low, high
    (fractions) and the mean pairwise cosine similarity of the sample."""
    rows = []
    for task, entry in (results.entries if results else {}).items():
        for model in ("pretrained", "finetuned"):
            for rep in ("cls", "mean"):
                m = entry["outliers"][model][rep]
                for measure in ("variance", "cosine"):
                    for top, stored in zip((1, TOP_K), m[f"{measure}_share"]):
                        rows.append({"task": task, "model": "fine-tuned" if model == "finetuned" else "pretrained",
                                     "representation": "[CLS]" if rep == "cls" else "mean of tokens",
                                     "measure": measure, "top": top, **_interval_row(stored),
                                     "mean_cosine": m["mean_cosine"]})
    return pd.DataFrame(rows)


def rudman_frame(results: OutlierResults) -> pd.DataFrame:
    """Per task and predictor: dev score (points) with its 95 % interval; the majority baseline as the null."""
    rows = []
    k1 = results.k1 if results is not None and len(results.k1) else pd.DataFrame(columns=["task"])
    for task, entry in (results.entries if results else {}).items():
        r = entry["outliers"]["rudman"]
        base = {"task": task, "majority": entry["majority"], "metric": r["metric"]}
        rows.append({**base, "predictor": FULL, "dim": None, **_interval_row(r["full"])})
        rows.append({**base, "predictor": ONE_DIM, "dim": r["cls"]["dim"], **_interval_row(r["cls"]["score"]),
                     "variance_ratio": r["cls"]["variance_ratio"]})
        rows.append({**base, "predictor": ONE_DIM_MEAN, "dim": r["mean"]["dim"], **_interval_row(r["mean"]["score"]),
                     "variance_ratio": r["mean"]["variance_ratio"]})
        found = k1[k1.task == task]
        if len(found) and bool(found.stored.iloc[0]) and "low" in found and not pd.isna(found["low"].iloc[0]):
            f = found.iloc[0]
            rows.append({**base, "predictor": K1_HEAD, "dim": int(f.dim), "estimate": float(f.score),
                         "low": float(f.low), "high": float(f.high)})
        for rnd in r["cls"].get("random", []):
            rows.append({**base, "predictor": RANDOM_DIM, "dim": rnd["dim"], **_interval_row(rnd["score"]),
                         "variance_ratio": rnd["variance_ratio"]})
    return pd.DataFrame(rows)


def _fmt_interval(stored, digits: int = 1, signed: bool = False) -> str:
    if not stored or any(pd.isna(stored.get(k)) for k in ("estimate", "low", "high")):
        return "not run"
    return (f"{fmt(stored['estimate'], digits, signed)} [{fmt(stored['low'], digits, signed)}, "
            f"{fmt(stored['high'], digits, signed)}]")


def rudman_table(results: OutlierResults) -> pd.DataFrame:
    """Per task: the full model, the threshold on the highest-variance dimension, the k=1 head fine-tuned on it,
    the mean over random single dimensions (points, 95 % intervals)."""
    rows = []
    k1 = results.k1 if results is not None and len(results.k1) else pd.DataFrame(columns=["task"])
    for task, entry in (results.entries if results else {}).items():
        r = entry["outliers"]["rudman"]
        found = k1[k1.task == task]
        if not len(found):
            head = "not run (finetune_k1 is off)"
        elif not bool(found.stored.iloc[0]):
            head = "not run (not stored; compute=False)"
        else:
            f = found.iloc[0]
            head = _fmt_interval({"estimate": f.score, "low": f.get("low"), "high": f.get("high")})
        randoms = [x["score"]["estimate"] for x in r["cls"].get("random", [])]
        rows.append({"task": task, "dim": r["cls"]["dim"], "var / mean var": f"{r['cls']['variance_ratio']:.1f}",
                     FULL: _fmt_interval(r["full"]), "1 dim, threshold": _fmt_interval(r["cls"]["score"]),
                     "k=1 head": head,
                     f"{len(randoms)} random dims": (f"{fmt(np.mean(randoms))} ({fmt(min(randoms))} to "
                                                     f"{fmt(max(randoms))})") if randoms else "not run"})
    return pd.DataFrame(rows)


def kovaleva_frame(results: OutlierResults) -> pd.DataFrame:
    """Per task (and the pretrained STS-B probe): the drop (intact - zeroed, points, paired 95 % interval) when the
    LayerNorm outliers or as many random dimensions are zeroed in every layer."""
    rows = []
    for task, entry in (results.entries if results else {}).items():
        o = entry["outliers"]
        parts = [(task, o["kovaleva"], entry["majority"])]
        if o.get("sts_probe"):
            parts.append((PROBE, o["sts_probe"], 0.0))
        for name, k, majority in parts:
            base = {"task": name, "rule": bool(k["rule"]), "dims": tuple(k["dims"]), "majority": majority,
                    "intact": k["intact"]["estimate"]}
            rows.append({**base, "zeroed": OUTLIER_ZERO, **_interval_row(k["drop"]),
                         "zeroed_score": k["zeroed"]["estimate"]})
            for i, rnd in enumerate(k["random"]):
                rows.append({**base, "zeroed": RANDOM_ZERO, "draw": i, "random_dims": tuple(rnd["dims"]),
                             **_interval_row(rnd["drop"]), "zeroed_score": rnd["zeroed"]["estimate"]})
    return pd.DataFrame(rows)


def kovaleva_parts(results: OutlierResults) -> list[tuple[str, dict, float, float]]:
    """(name, stored zeroing test, reference score, majority) for every task and the STS-B probe."""
    out = []
    for task, entry in (results.entries if results else {}).items():
        o = entry["outliers"]
        out.append((task, o["kovaleva"], entry["score"], entry["majority"]))
        if o.get("sts_probe"):
            out.append((PROBE, o["sts_probe"], o["sts_probe"]["intact"]["estimate"], 0.0))
    return out


def kovaleva_table(results: OutlierResults) -> pd.DataFrame:
    rows = []
    for name, k, _, _ in kovaleva_parts(results):
        drops = [x["drop"]["estimate"] for x in k["random"]]
        rows.append({"task": name, "dims zeroed": dims_text(k["dims"]) + ("" if k["rule"] else " *"),
                     "weights": k.get("weights_zeroed"), "intact": fmt(k["intact"]["estimate"]),
                     "drop, outliers": _fmt_interval(k["drop"], signed=True),
                     f"drop, {len(drops)} random sets": (f"{fmt(np.mean(drops), signed=True)} ({fmt(min(drops), signed=True)}"
                                                         f" to {fmt(max(drops), signed=True)})") if drops else "not run",
                     "random − outliers": _fmt_interval(k["random_minus_outliers"], signed=True)})
    return pd.DataFrame(rows)


def kovaleva_note(results: OutlierResults) -> str:
    """KOVALEVA_NOTE when a row zeroes the fallback dimensions (no dimension passes the rule), else ''."""
    return KOVALEVA_NOTE if any(not k["rule"] for _, k, _, _ in kovaleva_parts(results)) else ""


KOVALEVA_NOTE = (f"* no dimension passes the rule (LayerNorm scale or bias beyond {LN_SIGMAS:g} standard deviations "
                 f"in more than {LN_MOST:.0%} of the layers): the {FALLBACK_DIMS} dimensions with the largest "
                 "deviations are zeroed instead, for the figure only; such rows do not count for the verdict.")


def overlap_frame(results: OutlierResults) -> pd.DataFrame:
    """Per task, selection (dimension chapter) and outlier set: overlap, sizes, chance expectation, one-sided
    hypergeometric p-value and the 95 % range of the overlap under chance."""
    rows = []
    hidden = results.hidden if results else 0
    for task, sets in outlier_sets(results).items():
        for selection, dims in results.selected.get(task, {}).items():
            for kind, outliers in sets.items():
                rows.append({"task": task, "selection": selection, "outlier set": kind, "dims": tuple(dims),
                             "outlier dims": tuple(outliers), **overlap_test(dims, outliers, hidden)})
    return pd.DataFrame(rows)


def overlap_table(results: OutlierResults, selections=(ALL_SELECTED, SCAN_TOP10)) -> pd.DataFrame:
    """One row per task and selection; per outlier set 'k of n (chance e; p = ...)': k of the set's n dimensions
    are among the selected ones, e would be expected if the selection were drawn at random."""
    frame = overlap_frame(results)
    if frame.empty:
        return frame
    frame = frame[frame.selection.isin(selections)]
    rows = []
    for (task, selection), g in frame.groupby(["task", "selection"], sort=False):
        row = {"task": task, "selection": f"{selection} ({len(g.dims.iloc[0])})"}
        for _, r in g.iterrows():
            row[r["outlier set"]] = (f"{r.overlap} of {r.outliers} (chance {r.expected:.2f}; p = {r.p:.2g})"
                                     if r.outliers else "no outlier")
        rows.append(row)
    return pd.DataFrame(rows)
