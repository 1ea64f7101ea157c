"""The outliers chapter's claims (Rudman et al. 2023, Kovaleva et al. 2021, Timkey & van Schijndel 2021), decided
by this chapter's interval rules, and the sentences its page prints; the frames they read are in
fewdims.chapters.outliers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..comparisons import FAILS, HOLDS, UNDECIDED, aggregate
from ..outliers import LN_MOST, LN_SIGMAS, RUDMAN_VARIANCE_RATIO, TOP_K, as_interval, ranked
from ..profiles import ALL_ROWS, per_task_text
from ..stats import above_majority
from ..tables import fmt
from ..verdicts import NOT_TESTED, VERDICTS
from .outliers import (ALL_SELECTED, KOVALEVA, KOVALEVA_MARGIN, OVERLAP_ALPHA, PAPER_SETTINGS, ROGUE_SHARE, RUDMAN,
                       RUDMAN_MARGIN, TIMKEY, OutlierResults, concentration_frame, dims_text, kovaleva_parts,
                       overlap_frame)

# -- claims -----------------------------------------------------------------------------------------------------------
def interval_verdict(hits: int, misses: int, total: int) -> str:
    """The book's rule (comparisons.aggregate) over the deciding rows: `hits` hold, `misses` fail, the rest are
    undecided (their interval straddles the margin)."""
    return aggregate([HOLDS] * hits + [FAILS] * misses + [UNDECIDED] * (total - hits - misses))


def informative(reference: dict | None, majority: float) -> bool:
    """A reference whose 95 % interval lies above the majority-class baseline (stats.above_majority); unknown
    baseline: counted."""
    if not reference:
        return False
    if majority is None or math.isnan(majority):
        return True
    return above_majority(as_interval(reference), majority)


def _result(claim: str, paper: str, measured: str, verdict: str, details=None, ours: str = "") -> dict:
    assert verdict in VERDICTS
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
    size = per_task_text(s.get("train_size"), lambda n: "full training set" if n in (None, ALL_ROWS)
                         else f"{n:,} training examples")
    model = MODEL_NAMES.get(s["model"], s["model"])
    lr = f"{s['lr']:.0e}".replace("e-0", "e-")
    epochs = per_task_text(s["epochs"], lambda e: f"{e} epoch{'s' if e != 1 else ''}")
    return f"{model} ({s['hidden']} dims), {size}, lr {lr}, batch {s['batch_size']}, {epochs}; {OUR_PARTS[paper]}"


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
    for name, k, _, majority in kovaleva_parts(results):
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
    parts = "; ".join(f"{r.task}: dims {dims_text(r.dims)}{'' if r.rule else ' (none pass the rule)'}, drop "
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
    if len(overlapping) < len(parts) and size:
        trained = per_task_text(size, lambda n: "the whole split but its held-out rows" if n in (None, ALL_ROWS)
                                else f"{n:,} rows")
        text += (f"{'Elsewhere' if overlapping else 'On every task'} none of its rows is among the rows the reference "
                 f"was trained on ({trained}; `SplitData.subset(train_size, data_seed)`). ")
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
    lines.append(f"- LayerNorm outlier dimensions of the pretrained model: {dims_text(pre_ln)}; after fine-tuning: "
                 + "; ".join(f"{t} {dims_text(d)}" for t, d in ln.items()) + ".")
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
