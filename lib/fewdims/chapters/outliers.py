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
cannot decide, the verdict is INCONCLUSIVE (a verdict of this chapter's own: fewdims.verdicts has none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis import interval_analysis
from ..outliers import (FALLBACK_DIMS, LN_MOST, LN_SIGMAS, RUDMAN_VARIANCE_RATIO, TOP_K, as_interval, overlap_test,
                        ranked)
from ..runner import score
from ..tables import fmt
from ..tasks import get_task
from ..stats import above_majority
from ..verdicts import MOST, NOT_SUPPORTED, NOT_TESTED, PARTLY, SUPPORTED, VERDICTS
from .base import Chapter

try:  # the book's verdicts know 'inconclusive' (intervals that cannot decide); older ones did not
    from ..verdicts import INCONCLUSIVE
except ImportError:  # pragma: no cover - depends on the verdicts module's edition
    INCONCLUSIVE = "inconclusive"

RUDMAN = "Rudman, Chen & Eickhoff (2023)"
KOVALEVA = "Kovaleva et al. (2021)"
TIMKEY = "Timkey & van Schijndel (2021)"
OUTLIER_VERDICTS = VERDICTS if INCONCLUSIVE in VERDICTS else VERDICTS + (INCONCLUSIVE,)

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
        for task in self.profile.tasks:
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
                run = self.runner.run(self.base(task, dims=(d,)), [interval_analysis(sec.get("n_boot", 1000))])
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


def _dims_text(dims) -> str:
    return ", ".join(map(str, dims)) if dims else "none"


def dims_table(results: OutlierResults) -> pd.DataFrame:
    """Per task: the special dimensions of the fine-tuned [CLS] vector and the dimensions the dimension chapter
    selected (union of its fine-tuned selections)."""
    rows = []
    pre = outlier_sets(results, "pretrained")
    for task, sets in outlier_sets(results).items():
        rows.append({"task": task, TOP_VARIANCE: _dims_text(sets[TOP_VARIANCE]),
                     TOP_ROGUE: _dims_text(sets[TOP_ROGUE]), f"{LN_OUTLIERS} (fine-tuned)": _dims_text(
                         sets[LN_OUTLIERS]), f"{LN_OUTLIERS} (pretrained)": _dims_text(pre[task][LN_OUTLIERS]),
                     "selected (dimension chapter)": _dims_text(results.selected.get(task, {}).get(ALL_SELECTED))})
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


def _kovaleva_parts(results: OutlierResults) -> list[tuple[str, dict, float, float]]:
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
    for name, k, _, _ in _kovaleva_parts(results):
        drops = [x["drop"]["estimate"] for x in k["random"]]
        rows.append({"task": name, "dims zeroed": _dims_text(k["dims"]) + ("" if k["rule"] else " *"),
                     "weights": k.get("weights_zeroed"), "intact": fmt(k["intact"]["estimate"]),
                     "drop, outliers": _fmt_interval(k["drop"], signed=True),
                     f"drop, {len(drops)} random sets": (f"{fmt(np.mean(drops), signed=True)} ({fmt(min(drops), signed=True)}"
                                                         f" to {fmt(max(drops), signed=True)})") if drops else "not run",
                     "random − outliers": _fmt_interval(k["random_minus_outliers"], signed=True)})
    return pd.DataFrame(rows)


def kovaleva_note(results: OutlierResults) -> str:
    """KOVALEVA_NOTE when a row zeroes the fallback dimensions (no dimension passes the rule), else ''."""
    return KOVALEVA_NOTE if any(not k["rule"] for _, k, _, _ in _kovaleva_parts(results)) else ""


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


# -- claims -----------------------------------------------------------------------------------------------------------
def interval_verdict(hits: int, misses: int, total: int) -> str:
    """The book's rule over the deciding rows: supported if the claim holds on more than half (MOST), not supported
    if it fails on more than half, inconclusive if more than half are undecided (the interval straddles the
    margin), partly supported if the outcomes are mixed with at least one hit, else inconclusive."""
    if total == 0:
        return NOT_TESTED
    if hits > MOST * total:
        return SUPPORTED
    if misses > MOST * total:
        return NOT_SUPPORTED
    if total - hits - misses > MOST * total:
        return INCONCLUSIVE
    return PARTLY if hits > 0 else INCONCLUSIVE


def informative(reference: dict | None, majority: float) -> bool:
    """A reference whose 95 % interval lies above the majority-class baseline (stats.above_majority); unknown
    baseline: counted."""
    if not reference:
        return False
    if majority is None or math.isnan(majority):
        return True
    return above_majority(as_interval(reference), majority)


def _result(claim: str, paper: str, measured: str, verdict: str, details=None, ours: str = "") -> dict:
    assert verdict in OUTLIER_VERDICTS
    setting = f"Their setting: {PAPER_SETTINGS[paper]}. Ours: {ours}." if ours else ""
    return {"claim": claim, "paper": paper, "measured": f"{setting} {measured}".strip(), "verdict": verdict,
            "details": details if details is not None else pd.DataFrame(), "setting": setting}


MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2", "tiny": "a tiny random BERT", "bert-base-uncased": "BERT-base"}
OUR_PARTS = {RUDMAN: "the last layer's [CLS] vector; the threshold fitted on held-out train rows",
             KOVALEVA: "the output LayerNorm of every layer; the fine-tuned references and the pretrained encoder's "
                       "STS-B cosine similarity",
             TIMKEY: "the last layer's [CLS] and mean-pooled sentence vectors of held-out train sentences, "
                     "pretrained (counted) and fine-tuned (reported)"}


def our_setting(results: OutlierResults | None, paper: str = RUDMAN) -> str:
    """Our setting in the words of the claims: model, data size, recipe and what is measured for `paper`."""
    s = (results.setting if results is not None else {}) or {}
    if not s:
        return ""
    size = "full training sets" if s.get("train_size") is None else f"{s['train_size']:,} training examples per task"
    model = MODEL_NAMES.get(s["model"], s["model"])
    lr = f"{s['lr']:.0e}".replace("e-0", "e-")
    return (f"{model} ({s['hidden']} dims), {size}, lr {lr}, batch {s['batch_size']}, {s['epochs']} "
            f"epoch{'s' if s['epochs'] != 1 else ''}; {OUR_PARTS[paper]}")


def _not_tested(claim: str, paper: str, reason: str, results=None) -> dict:
    return _result(claim, paper, f"Not tested: {reason}.", NOT_TESTED, ours=our_setting(results, paper))


RUDMAN_CLAIM = ("After fine-tuning, the single highest-variance dimension of the sentence vector, cut by one threshold "
                "fitted on training data, classifies the task with a small error.")
KOVALEVA_CLAIM = ("Zeroing the few LayerNorm outlier dimensions (scale and bias, every layer) collapses the model's "
                  "performance; zeroing as many random dimensions does not.")
TIMKEY_CLAIM = "One to three 'rogue' dimensions dominate the cosine similarity between representations."


def _verdict_text(hits: int, misses: int, total: int, hit: str, miss: str) -> str:
    return f"{hit} on {hits}, {miss} on {misses}, undecided on {total - hits - misses} of {total}"


def rudman_claim(results: OutlierResults | None) -> dict:
    """Per informative task: full − one-dim (paired 95 % interval); hit when its upper end is at most RUDMAN_MARGIN
    points, miss when its lower end exceeds it."""
    if results is None or not results.entries:
        return _not_tested(RUDMAN_CLAIM, RUDMAN, "no reference run with a stored outliers analysis", results)
    rows = []
    for task, entry in results.entries.items():
        r = entry["outliers"]["rudman"]
        diff = as_interval(r["cls"]["full_minus_dim"])
        vs_random = as_interval(r["cls"].get("dim_minus_random"))
        rows.append({"task": task, "dim": r["cls"]["dim"], "full": r["full"]["estimate"],
                     "one_dim": r["cls"]["score"]["estimate"], "gap": diff.estimate, "gap_low": diff.low,
                     "gap_high": diff.high, "vs_random": vs_random.estimate if vs_random else math.nan,
                     "majority": entry["majority"], "informative": informative(r["full"], entry["majority"]),
                     "hit": diff.high <= RUDMAN_MARGIN, "miss": diff.low > RUDMAN_MARGIN})
    details = pd.DataFrame(rows)
    info = details[details.informative]
    left = details[~details.informative].task.tolist()
    note = (f" Left out because the full model's interval is not above the majority-class baseline: "
            f"{', '.join(left)}."
            if left else "")
    parts = "; ".join(f"{r.task}: dim {r.dim}, {fmt(r.one_dim)} vs full {fmt(r.full)} (gap {fmt(r.gap, signed=True)} "
                      f"[{fmt(r.gap_low, signed=True)}, {fmt(r.gap_high, signed=True)}]; vs the mean random dim "
                      f"{fmt(r.vs_random, signed=True)})" for r in details.itertuples())
    hits, misses = int(info.hit.sum()), int(info.miss.sum())
    verdict = interval_verdict(hits, misses, len(info))
    text = (f"Dev score of the one-threshold classifier on the highest-variance dimension of the fine-tuned [CLS] "
            f"vector (threshold fitted on the held-out train slice), points, with the paired 95 % interval of the "
            f"gap to the full model: {parts}. Within {RUDMAN_MARGIN:g} points of the full model (interval's upper "
            f"end): {_verdict_text(hits, misses, len(info), 'yes', 'no')} informative tasks.{note}")
    if not len(info):
        return _result(RUDMAN_CLAIM, RUDMAN, f"Not tested: no informative task. {text}", NOT_TESTED, details,
                       our_setting(results, RUDMAN))
    return _result(RUDMAN_CLAIM, RUDMAN, text, verdict, details, our_setting(results, RUDMAN))


def kovaleva_claim(results: OutlierResults | None) -> dict:
    """Per informative task with LayerNorm outliers under the rule (and the pretrained STS-B probe): zeroing random
    dims minus zeroing the outliers (paired 95 % interval, points); hit when its lower end exceeds KOVALEVA_MARGIN,
    miss when its upper end stays below it."""
    if results is None or not results.entries:
        return _not_tested(KOVALEVA_CLAIM, KOVALEVA, "no reference run with a stored outliers analysis", results)
    rows = []
    for name, k, _, majority in _kovaleva_parts(results):
        d = as_interval(k["random_minus_outliers"])
        rows.append({"task": name, "dims": tuple(k["dims"]), "rule": bool(k["rule"]), "intact": k["intact"]["estimate"],
                     "drop": k["drop"]["estimate"], "random_drop": float(np.mean([x["drop"]["estimate"]
                                                                                  for x in k["random"]]))
                     if k["random"] else math.nan, "effect": d.estimate, "effect_low": d.low, "effect_high": d.high,
                     "informative": informative(k["intact"], majority), "hit": d.low > KOVALEVA_MARGIN,
                     "miss": d.high < KOVALEVA_MARGIN})
    details = pd.DataFrame(rows)
    deciding = details[details.informative & details.rule]
    no_rule = details[~details.rule].task.tolist()
    left = details[~details.informative].task.tolist()
    parts = "; ".join(f"{r.task}: dims {_dims_text(r.dims)}{'' if r.rule else ' (none pass the rule)'}, drop "
                      f"{fmt(r.drop, signed=True)} vs {fmt(r.random_drop, signed=True)} for random dims (difference "
                      f"{fmt(r.effect, signed=True)} [{fmt(r.effect_low, signed=True)}, "
                      f"{fmt(r.effect_high, signed=True)}])" for r in details.itertuples())
    note = ""
    if no_rule:
        note += f" No LayerNorm outlier under the rule: {', '.join(no_rule)} (not counted)."
    if left:
        note += (f" Left out because the intact model's interval is not above the majority-class baseline: "
                 f"{', '.join(left)}.")
    hits, misses = int(deciding.hit.sum()), int(deciding.miss.sum())
    text = (f"Dev score lost when the scale and bias of the LayerNorm outlier dimensions are zeroed in the output "
            f"LayerNorm of every layer (no re-tuning), against zeroing as many random dimensions ({len(details)} "
            f"rows, points, paired 95 % intervals): {parts}. The outliers cost at least {KOVALEVA_MARGIN:g} points "
            f"more than random dimensions: {_verdict_text(hits, misses, len(deciding), 'yes', 'no')} deciding rows."
            f"{note}")
    if not len(deciding):
        return _result(KOVALEVA_CLAIM, KOVALEVA, f"Not tested: no informative model has a LayerNorm outlier "
                       f"dimension under the rule. {text}", NOT_TESTED, details, our_setting(results, KOVALEVA))
    return _result(KOVALEVA_CLAIM, KOVALEVA, text, interval_verdict(hits, misses, len(deciding)), details,
                   our_setting(results, KOVALEVA))


def timkey_claim(results: OutlierResults | None) -> dict:
    """Per task and representation of the pretrained model: the top-3 share of the expected cosine similarity
    (bootstrap 95 % interval over the held-out examples); hit when its lower end reaches ROGUE_SHARE, miss when its
    upper end stays below. The fine-tuned model's shares are reported beside, not counted."""
    conc = concentration_frame(results) if results is not None else pd.DataFrame()
    if conc.empty:
        return _not_tested(TIMKEY_CLAIM, TIMKEY, "no reference run with a stored outliers analysis", results)
    top = conc[(conc.measure == "cosine") & (conc["top"] == TOP_K)].copy()
    top["hit"], top["miss"] = top.low >= ROGUE_SHARE, top.high < ROGUE_SHARE
    deciding = top[top.model == "pretrained"]
    parts = "; ".join(f"{r.task} {r.representation}: pretrained {fmt(r.estimate, 2)} [{fmt(r.low, 2)}, "
                      f"{fmt(r.high, 2)}]" for r in deciding.itertuples())
    tuned = top[top.model == "fine-tuned"]
    hits, misses = int(deciding.hit.sum()), int(deciding.miss.sum())
    text = (f"Share of the expected cosine similarity between two held-out train sentences held by the top-{TOP_K} "
            f"dimensions (Timkey and van Schijndel's decomposition, bootstrap 95 % intervals): {parts}. At least "
            f"{ROGUE_SHARE:.0%}: {_verdict_text(hits, misses, len(deciding), 'yes', 'no')} pretrained rows. After "
            f"fine-tuning (not counted) the share is {fmt(tuned.estimate.min(), 2)} to {fmt(tuned.estimate.max(), 2)}.")
    return _result(TIMKEY_CLAIM, TIMKEY, text, interval_verdict(hits, misses, len(deciding)), top.reset_index(drop=True),
                   our_setting(results, TIMKEY))


def external_claims(results: OutlierResults | None) -> list[dict]:
    """The three external claims, in the order Rudman, Kovaleva, Timkey (for the summary page)."""
    return [rudman_claim(results), kovaleva_claim(results), timkey_claim(results)]


def overlap_summary(results: OutlierResults, selection: str = ALL_SELECTED) -> str:
    """One sentence: on how many tasks the selected dimensions overlap each outlier set beyond chance."""
    frame = overlap_frame(results)
    if frame.empty:
        return "No task has both a stored outliers analysis and dimensions selected by the dimension chapter."
    frame = frame[frame.selection == selection]
    parts = []
    for kind, g in frame.groupby("outlier set", sort=False):
        beyond = g[g.p < OVERLAP_ALPHA].task.tolist()
        parts.append(f"{kind}: {len(beyond)} of {len(g)} tasks" + (f" ({', '.join(beyond)})" if beyond else ""))
    return (f"The dimensions the dimension chapter selected ({selection}) overlap the outlier sets beyond chance "
            f"(one-sided hypergeometric p < {OVERLAP_ALPHA:g}, one test per task and set, no correction for the "
            f"{len(frame)} tests) on " + "; ".join(parts) + ".")


def rules_table() -> pd.DataFrame:
    rows = [
        ("LayerNorm outlier (Kovaleva)", f"scale or bias of the output LayerNorm more than {LN_SIGMAS:g} standard "
                                         f"deviations from that vector's mean, in more than {LN_MOST:.0%} of the layers"),
        ("variance outlier (Rudman)", f"variance at least {RUDMAN_VARIANCE_RATIO:g} times the mean variance (the "
                                      "ratio is shown; the test uses the single largest)"),
        ("rogue dimensions (Timkey)", f"the top-{TOP_K} dimensions hold at least {ROGUE_SHARE:.0%} of the expected "
                                      "cosine similarity"),
        ("small error (Rudman)", f"full model − one dimension: 95 % interval's upper end at most {RUDMAN_MARGIN:g} "
                                 f"points (miss: lower end above it)"),
        ("collapse (Kovaleva)", f"zeroing random dims − zeroing the outliers: interval's lower end above "
                                f"{KOVALEVA_MARGIN:g} points (miss: upper end below it)"),
        ("overlap beyond chance", f"one-sided hypergeometric p below {OVERLAP_ALPHA:g}"),
        ("counted rows", "tasks whose reference's 95 % interval lies above the majority-class baseline "
                         "(Kovaleva: and with a LayerNorm outlier under the rule; Timkey: the pretrained model)"),
        ("verdict", "supported: holds on more than half of the counted rows; not supported: fails on more than half; "
                    "inconclusive: more than half undecided; partly supported: mixed with at least one hit; else "
                    "inconclusive"),
    ]
    return pd.DataFrame(rows, columns=["term", "meaning"]).set_index("term")


# -- sentences for the page ------------------------------------------------------------------------------------------
def _span(values, digits: int = 1) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return fmt(lo, digits) if round(lo, digits) == round(hi, digits) else f"{fmt(lo, digits)} to {fmt(hi, digits)}"


def heldout_note(results: OutlierResults) -> str:
    """Which train rows the variances, cosine shares and thresholds were computed on."""
    if results is None or not results.entries:
        return "*No reference run with a stored outliers analysis.*"
    parts, overlapping = [], []
    for task, entry in results.entries.items():
        h = entry["outliers"]["heldout"]
        parts.append(f"{task} {h['rows']:,} of {h['of']:,}")
        if h["overlaps_training"]:
            overlapping.append(task)
    size = results.setting.get("train_size")
    text = (f"Held-out slice (a fixed, seeded draw of the train split): {'; '.join(parts)} rows. ")
    if overlapping:
        text += (f"On {', '.join(overlapping)} the training subset is the whole split, so the slice overlaps the "
                 "rows the model was trained on. ")
    if len(overlapping) < len(parts):
        text += (f"Elsewhere none of its rows is among the {size:,} rows the reference was trained on "
                 "(`SplitData.subset(train_size, data_seed)`). " if size else "")
    return text + "Dev scores are on each task's whole dev split (MNLI: matched)."


def findings(results: OutlierResults) -> str:
    """Data-driven bullet points for the page's closing section."""
    if results is None or not results.entries:
        return "*No stored outliers analysis: nothing to interpret.*"
    lines = []
    persist = []
    for task, entry in results.entries.items():
        o = entry["outliers"]
        pre, tuned = ranked(o["pretrained"]["cls"]["variance"], TOP_K), ranked(o["finetuned"]["cls"]["variance"], TOP_K)
        persist.append(f"{task} {len(set(pre) & set(tuned))}")
    lines.append(f"- Of the {TOP_K} highest-variance [CLS] dimensions after fine-tuning, this many were already among "
                 f"the pretrained model's top {TOP_K} (Rudman et al.'s persistence): {', '.join(persist)}.")
    ratios = [(t, e["outliers"]["rudman"]["cls"]["variance_ratio"]) for t, e in results.entries.items()]
    big = [t for t, r in ratios if r >= RUDMAN_VARIANCE_RATIO]
    lines.append(f"- The highest-variance dimension has {', '.join(f'{t} {r:.1f}' for t, r in ratios)} times the mean "
                 f"variance; {len(big)} of {len(ratios)} tasks reach Rudman et al.'s {RUDMAN_VARIANCE_RATIO:g}x for an "
                 "outlier dimension.")
    ln = {t: e["outliers"]["finetuned"]["layernorm"]["outliers"] for t, e in results.entries.items()}
    pre_ln = next(iter(results.entries.values()))["outliers"]["pretrained"]["layernorm"]["outliers"]
    lines.append(f"- LayerNorm outlier dimensions of the pretrained model: {_dims_text(pre_ln)}; after fine-tuning: "
                 + "; ".join(f"{t} {_dims_text(d)}" for t, d in ln.items()) + ".")
    conc = concentration_frame(results)
    cos = conc[(conc.measure == "cosine") & (conc["top"] == TOP_K)]
    parts = []
    for (model, rep), m in cos.groupby(["model", "representation"], sort=False):
        parts.append(f"{model} {rep} {_span(m.estimate, 2)} (mean pairwise cosine {_span(m.mean_cosine, 2)})")
    if parts:
        lines.append(f"- Top-{TOP_K} share of the expected cosine similarity over the tasks' held-out sentences: "
                     f"{'; '.join(parts)}; equal shares would give {TOP_K / results.hidden:.3f}.")
    lines.append(f"- {overlap_summary(results)}")
    return "\n".join(lines)


def settings_table(claims: list[dict]) -> pd.DataFrame:
    """The external claims among `claims` (those of this chapter): paper, claim, verdict and the setting they were
    made in beside ours, for the summary page."""
    rows = []
    for claim in claims:
        if claim.get("paper") in PAPER_SETTINGS:
            ours = claim["setting"].split(" Ours: ", 1)[1].rstrip(".") if " Ours: " in claim.get("setting", "") \
                else "not measured"
            rows.append({"paper": claim["paper"], "their setting": PAPER_SETTINGS[claim["paper"]],
                         "our setting": ours, "verdict": claim["verdict"]})
    return pd.DataFrame(rows)
