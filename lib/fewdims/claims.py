"""The book's tables and verdicts: every claim of the two papers, measured on our runs.

Each `*_claim(...)` takes an experiment's frame (from `fewdims.experiments.Experiments`) and returns
`{'claim', 'paper', 'measured', 'verdict', 'details'}`: `measured` is a sentence whose numbers are formatted from
the data, `verdict` is one of VERDICTS, `details` a per-task DataFrame behind the sentence. The thresholds of
every verdict are the constants below. A claim without the results it needs is 'not tested', and `measured`
says why.

Rules shared by all claims:
- a task whose reference (the CLS / all-dims / fine-tuned / direct run) is at or below the majority-class
  baseline is *uninformative*: a comparison with a model that learned nothing proves nothing, so such tasks are
  named but left out of the verdict (their runs stay in every table, flagged with MAJORITY_MARK);
- scores are points (x100) of each task's main metric on its first evaluation split (MNLI: matched);
- runs that are not stored (compute=False) have NaN scores and are left out of means, never counted as zeros.

`summarise` / `score_table` turn a frame into 'mean ± std (seed, seed, ...)' cells for the notebooks.
"""
from __future__ import annotations

import json
import math
import platform
from importlib import metadata

import numpy as np
import pandas as pd

from .cka import best_split
from .errors import FewdimsError
from .tasks import get_task

SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_TESTED = "supported", "partly supported", "not supported", "not tested"
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_TESTED)

# -- thresholds (points of the task's main metric unless said otherwise) ------------------------------------------
CLOSE_POINTS = 2.0         # "close" / "matches": at most 2 points below the reference (mean over seeds)
PARTLY_POINTS = 5.0        # few dims: within 5 points on most tasks is partial support
BEAT_POINTS = 1.0          # selected dims "beat" random ones: best selected set >= mean random set + 1 point
LOWER_GAP_POINTS = 2.0     # layers: "lower layers contribute less" = bottom-half layers >= 2 points below top half
UPPER_SPREAD_POINTS = 2.0  # layers: "higher layers differ little" = max - min over the top-half layers <= 2 points
COLLAPSE_MARGIN_POINTS = 5.0  # frozen: "collapses" = within 5 points of the majority-class baseline
LARGE_DROP_POINTS = 10.0   # frozen: at least 10 points below fine-tuning is partial support (a drop, no collapse)
BLOCK_CONTRAST = 0.10      # CKA: best two-block split's within-minus-between mean similarity >= 0.10 = a block
MIN_BLOCK_LAYERS = 3       # CKA: a split needs at least 3 defined layers (with 2 the contrast is 0 by definition)
DROP_POINTS = 1.0          # layer dropping: a top layer is "droppable" if the score stays within 1 point of full
MOST = 0.5                 # "most tasks" = more than half of the informative tasks
# The four GLUE tasks with the smallest training sets (2.5k-8.5k examples), on which BERT-base has its lowest dev
# scores: the "harder" tasks of the freezing claim. The other tasks are the "easier" ones.
HARDER_TASKS = ("CoLA", "MRPC", "STS-B", "RTE")
MAJORITY_MARK = "†"        # marks a cell with at least one run at or below the majority-class baseline
MAJORITY_NOTE = (f"{MAJORITY_MARK} at least one run at or below the majority-class baseline "
                 "(kept in the table, not dropped)")


def thresholds() -> pd.DataFrame:
    """The verdict thresholds above as a table for the book."""
    rows = [
        ("close / matches", f"at most {CLOSE_POINTS:g} points below the reference (mean over seeds)"),
        ("few dims, partly", f"within {PARTLY_POINTS:g} points of all dims on most tasks"),
        ("selected beat random", f"best selected set at least {BEAT_POINTS:g} point above the mean random set"),
        ("lower layers contribute less", f"bottom-half layers at least {LOWER_GAP_POINTS:g} points below the top half"),
        ("higher layers differ little", f"top-half layers within {UPPER_SPREAD_POINTS:g} points of one another"),
        ("collapse (frozen)", f"within {COLLAPSE_MARGIN_POINTS:g} points of the majority-class baseline"),
        ("large drop (frozen, partly)", f"at least {LARGE_DROP_POINTS:g} points below fine-tuning"),
        ("harder tasks", ", ".join(HARDER_TASKS) + " (the GLUE tasks with the smallest training sets)"),
        ("CKA block", f"best two-block contrast at least {BLOCK_CONTRAST:g}, over at least {MIN_BLOCK_LAYERS} "
                      "defined layers"),
        ("droppable top layer", f"dev score within {DROP_POINTS:g} point of the full model"),
        ("most tasks", f"more than {MOST:.0%} of the informative tasks"),
        ("informative task", "its reference run scores above the majority-class baseline"),
    ]
    return pd.DataFrame(rows, columns=["term", "meaning in the verdicts"]).set_index("term")


FUKUHATA = "Fukuhata & Kano (2025)"
PHANG = "Phang, Liu & Bowman (2021)"
METRIC_SHORT = {"accuracy": "acc.", "matthews": "MCC", "pearson": "Pearson r", "spearman": "Spearman ρ",
                "f1": "F1"}


# -- formatting ---------------------------------------------------------------------------------------------------
def fmt(x, digits: int = 1, signed: bool = False) -> str:
    """'85.3', '+1.2' / '−0.4' (typographic minus), or 'n/a' for missing values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return text.replace("-", "−")


def cell_text(values, digits: int = 1) -> str:
    """'85.3 ± 0.4 (85.1, 85.8, 85.0)' for several seeds, '85.3' for one, 'not run' for none."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "not run"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return (f"{fmt(np.mean(vals), digits)} ± {np.std(vals, ddof=1):.{digits}f} "
            f"({', '.join(fmt(v, digits) for v in vals)})")


def _sorted_unique(values) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def summarise(frame: pd.DataFrame, by=("task", "variant"), value: str = "score") -> pd.DataFrame:
    """One row per group: n (finished runs), mean, std (ddof 1; NaN for one run), the seeds and values in seed
    order, how many runs are at or below the majority baseline, and `cell` = '85.3 ± 0.4 (85.1, 85.8, 85.0)'
    with MAJORITY_MARK appended when any run is at or below the majority baseline. Groups keep their first-seen
    order; runs with a NaN value (not stored) are counted in `missing`, not in the statistics."""
    by = [by] if isinstance(by, str) else list(by)
    columns = by + ["n", "missing", "mean", "std", "seeds", "values", "below_majority", "majority", "cell"]
    if frame is None or len(frame) == 0 or value not in frame:
        return pd.DataFrame(columns=columns)
    rows = []
    for keys, group in frame.groupby(by, sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        if "seed" in group:
            group = group.sort_values("seed", kind="stable")
        ok = group[group[value].notna()]
        vals = ok[value].astype(float).tolist()
        below = int(ok["at_or_below_majority"].astype(bool).sum()) if "at_or_below_majority" in ok else 0
        majority = float(ok["majority"].mean()) if "majority" in ok and ok["majority"].notna().any() else math.nan
        cell = cell_text(vals) + (f" {MAJORITY_MARK}" if below else "")
        rows.append({**dict(zip(by, keys)), "n": len(vals), "missing": len(group) - len(vals),
                     "mean": float(np.mean(vals)) if vals else math.nan,
                     "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                     "seeds": ok["seed"].tolist() if "seed" in ok else [], "values": vals,
                     "below_majority": below, "majority": majority, "cell": cell})
    return pd.DataFrame(rows, columns=columns)


def split_label(task: str, split: str, metric: str | None = None) -> str:
    """Column label of a task's score: 'CoLA (MCC)', 'MNLI-m (acc.)', 'MNLI-mm (acc.)'."""
    spec = get_task(task)
    metric = metric or spec.main_metric
    name = spec.display
    if len(spec.eval_splits) > 1:
        name += "-mm" if split.endswith("mismatched") else "-m"
    return f"{name} ({METRIC_SHORT.get(metric, metric)})"


def long_scores(frame: pd.DataFrame, metrics: str = "main") -> pd.DataFrame:
    """One row per run and evaluation split (and metric if metrics='all'), with a `column` label
    ('MNLI-m (acc.)'), `value` in points and the run's identifying columns."""
    keep = [c for c in frame.columns if "/" not in c]
    rows = []
    for _, r in frame.iterrows():
        spec = get_task(r["task"])
        names = spec.metrics if metrics == "all" else (spec.main_metric,)
        for split in spec.eval_splits:
            for metric in names:
                col = f"{split}/{metric}"
                value = r[col] if col in r.index else (r["score"] if split == spec.eval_splits[0]
                                                       and metric == spec.main_metric else math.nan)
                rows.append({**{c: r[c] for c in keep}, "split": split, "metric_name": metric,
                             "column": split_label(spec.name, split, metric), "value": value})
    return pd.DataFrame(rows)


def score_table(frame: pd.DataFrame, rows: str = "variant", row_order=None, metrics: str = "main",
                rename: dict | None = None) -> pd.DataFrame:
    """A display table: one row per `rows` value, one column per task (and split: MNLI-m / MNLI-mm, and metric
    when metrics='all'), each cell 'mean ± std (seeds)' with MAJORITY_MARK where a run is at or below the
    majority baseline. Missing combinations are blank."""
    if frame is None or len(frame) == 0:
        return pd.DataFrame()
    long = long_scores(frame, metrics)
    summary = summarise(long, by=[rows, "column"], value="value")
    table = summary.pivot(index=rows, columns="column", values="cell")
    order = row_order or _sorted_unique(frame[rows])
    table = table.reindex([r for r in order if r in table.index])
    table = table[_sorted_unique(long["column"])].fillna("")
    table.columns.name = None
    table.index.name = (rename or {}).get(rows, rows)
    if rename:
        table = table.rename(index=rename)
    return table


def shown(table: pd.DataFrame, note: str = "No stored runs for this table yet."):
    """The table, or a Markdown note when it is empty (e.g. with compute=False before the grid has run)."""
    if table is None or len(table) == 0:
        from IPython.display import Markdown

        return Markdown(f"*{note}*")
    return table


def mean_by(frame: pd.DataFrame, by=("task", "variant"), value: str = "score") -> pd.DataFrame:
    """Mean of `value` per group, NaN-skipping (a tidy helper for the verdicts)."""
    return frame.groupby(list(by), sort=False)[value].mean().reset_index()


# -- shared verdict logic -------------------------------------------------------------------------------------------
def _result(claim: str, paper: str, measured: str, verdict: str, details=None) -> dict:
    assert verdict in VERDICTS
    return {"claim": claim, "paper": paper, "measured": measured, "verdict": verdict,
            "details": details if details is not None else pd.DataFrame()}


def _not_tested(claim: str, paper: str, reason: str, details=None) -> dict:
    return _result(claim, paper, f"Not tested: {reason}.", NOT_TESTED, details)


def _share_verdict(hits: int, total: int, rule: str) -> str:
    """rule 'all': supported if every task, partly if at least half, else not supported.
    rule 'most': supported if more than half (MOST), partly if at least one, else not supported."""
    if total == 0:
        return NOT_TESTED
    if rule == "all":
        return SUPPORTED if hits == total else PARTLY if hits >= total / 2 else NOT_SUPPORTED
    return SUPPORTED if hits > MOST * total else PARTLY if hits > 0 else NOT_SUPPORTED


def _informative(mean: float, majority: float) -> bool:
    """A reference that scores above the majority-class baseline (or whose baseline is unknown)."""
    if mean is None or math.isnan(mean):
        return False
    return True if majority is None or math.isnan(majority) else mean > majority + 1e-9


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["score"].notna()] if frame is not None and len(frame) and "score" in frame else \
        pd.DataFrame(columns=["task", "variant", "score"])


def _tasks(frame: pd.DataFrame) -> list[str]:
    return _sorted_unique(frame["task"]) if frame is not None and len(frame) and "task" in frame else []


def _uninformative_note(names: list[str], what: str) -> str:
    if not names:
        return ""
    return (f" Left out of the verdict because {what} is at or below the majority-class baseline: "
            f"{', '.join(names)}.")


def _informative_tasks(details: pd.DataFrame, claim: str, what: str, empty_reason: str):
    """(informative rows, note naming the left-out tasks, a 'not tested' result or None) for a per-task claim
    of the Few Dimensions paper."""
    if details.empty:
        return details, "", _not_tested(claim, FUKUHATA, empty_reason, details)
    info = details[details.informative]
    note = _uninformative_note(details[~details.informative].task.tolist(), what)
    if info.empty:
        return info, note, _not_tested(claim, FUKUHATA, f"no informative task.{note}".rstrip("."), details)
    return info, note, None


def _stat(frame: pd.DataFrame) -> tuple[float, float, int]:
    """(mean score, mean majority, n) of a group of runs."""
    if len(frame) == 0:
        return math.nan, math.nan, 0
    maj = frame["majority"].mean() if "majority" in frame else math.nan
    return float(frame["score"].mean()), float(maj), int(len(frame))


# -- (a) the max-norm token ----------------------------------------------------------------------------------------
TOKEN_CLAIM = "A head on the max-norm token scores like one on [CLS] on 7 of 8 GLUE tasks; RTE is the exception."


def token_claim(runs: pd.DataFrame, exception: str = "RTE") -> dict:
    """Per task: mean(max_norm) - mean(cls). 'Matches' = at most CLOSE_POINTS below (better also matches).
    Verdict on the tasks other than `exception` (rule 'all'); the exception's gap is reported."""
    runs = _ok(runs)
    rows = []
    for task in _tasks(runs):
        cls_m, maj, n_cls = _stat(runs[(runs.task == task) & (runs.variant == "cls")])
        mn_m, _, n_mn = _stat(runs[(runs.task == task) & (runs.variant == "max_norm")])
        if n_cls and n_mn:
            gap = mn_m - cls_m
            rows.append({"task": task, "cls": cls_m, "max_norm": mn_m, "gap": gap, "seeds_cls": n_cls,
                         "seeds_max_norm": n_mn, "majority": maj, "informative": _informative(cls_m, maj),
                         "matches": gap >= -CLOSE_POINTS})
    details = pd.DataFrame(rows)
    if details.empty:
        return _not_tested(TOKEN_CLAIM, FUKUHATA, "no task has both a CLS run and a max-norm-token run", details)
    info = details[details.informative]
    others = info[info.task != exception]
    gaps = "; ".join(f"{r.task} {fmt(r.gap, signed=True)}" for r in details.itertuples())
    note = _uninformative_note(details[~details.informative].task.tolist(), "the CLS model")
    if others.empty:
        return _not_tested(TOKEN_CLAIM, FUKUHATA, f"no informative task other than {exception} "
                           f"(max-norm minus CLS, points: {gaps}).{note}".rstrip("."), details)
    hits = int(others.matches.sum())
    text = (f"Max-norm token minus CLS (mean over seeds, points of each task's metric): {gaps}. "
            f"The max-norm token is within {CLOSE_POINTS:g} points of CLS, or better, on {hits} of "
            f"{len(others)} informative tasks other than {exception}")
    exc = info[info.task == exception]
    if len(exc):
        gap = float(exc.gap.iloc[0])
        text += (f"; on {exception} it is {fmt(abs(gap))} points {'below' if gap < 0 else 'above'} CLS"
                 f" ({'an exception, as in the paper' if gap < -CLOSE_POINTS else 'no exception'})")
    return _result(TOKEN_CLAIM, FUKUHATA, text + "." + note, _share_verdict(hits, len(others), "all"), details)


# -- (b) k selected dimensions -------------------------------------------------------------------------------------
FEW_DIMS_CLAIM = "Fine-tuning with only 2-3 selected CLS dimensions scores close to all dimensions on most tasks."
SELECTED_CLAIM = "Selected dimensions (effective / best pairs) score better than randomly chosen ones."
SELECTED_VARIANTS = ("effective pair", "scan top pair")


def _best_k(task_runs: pd.DataFrame, k: int) -> tuple[float, int, str]:
    """Best k-dimension score of a task: the headline 'best k=k' mean over seeds if present, else the best
    single run with k dims. Returns (score, n seeds, source)."""
    head = task_runs[task_runs.variant == f"best k={k}"]
    if len(head):
        return float(head.score.mean()), int(len(head)), f"best k={k}"
    cand = task_runs[task_runs["k"] == k] if "k" in task_runs else task_runs.iloc[0:0]
    if len(cand):
        best = cand.loc[cand.score.idxmax()]
        return float(best.score), 1, str(best.variant)
    return math.nan, 0, ""


def few_dims_claim(runs: pd.DataFrame) -> dict:
    """Per task: gap = mean(all dims) - best of {best 2-dim set (headline, all seeds), best 3-dim set}.
    'Close' = gap <= CLOSE_POINTS; rule 'most'. Partial support also when within PARTLY_POINTS on most tasks."""
    runs = _ok(runs)
    rows = []
    for task in _tasks(runs):
        t = runs[runs.task == task]
        all_m, maj, n_all = _stat(t[t.variant == "CLS, all dims"])
        k2, n2, _ = _best_k(t, 2)
        k3, n3, _ = _best_k(t, 3)
        best = np.nanmax([k2, k3]) if not (math.isnan(k2) and math.isnan(k3)) else math.nan
        if n_all and not math.isnan(best):
            rows.append({"task": task, "all_dims": all_m, "best_k2": k2, "seeds_k2": n2, "best_k3": k3,
                         "best_selected": best, "gap": all_m - best, "majority": maj,
                         "informative": _informative(all_m, maj), "close": all_m - best <= CLOSE_POINTS})
    details = pd.DataFrame(rows)
    info, note, untested = _informative_tasks(details, FEW_DIMS_CLAIM, "the all-dims model",
                                              "no task has both an all-dims run and a 2- or 3-dim run")
    if untested:
        return untested
    parts = "; ".join(f"{r.task}: all dims {fmt(r.all_dims)}, best 2 dims {fmt(r.best_k2)}"
                      f"{f' ({r.seeds_k2} seeds)' if r.seeds_k2 > 1 else ''}, best 3 dims {fmt(r.best_k3)}"
                      for r in details.itertuples())
    hits = int(info.close.sum())
    verdict = _share_verdict(hits, len(info), "most")
    if verdict == NOT_SUPPORTED and (info.gap <= PARTLY_POINTS).sum() > MOST * len(info):
        verdict = PARTLY
    text = (f"{parts}. The best 2- or 3-dimension run is within {CLOSE_POINTS:g} points of all dimensions on "
            f"{hits} of {len(info)} informative tasks (within {PARTLY_POINTS:g} points on "
            f"{int((info.gap <= PARTLY_POINTS).sum())}); the best sets are chosen on the same dev set they are "
            f"scored on, which favours them.{note}")
    return _result(FEW_DIMS_CLAIM, FUKUHATA, text, verdict, details)


def selected_vs_random_claim(runs: pd.DataFrame, k: int = 2) -> dict:
    """Per task: margin = best selected k-dim run (effective pair, scan top pair) - mean of the random k-dim runs.
    'Beats' = margin >= BEAT_POINTS; rule 'all'."""
    runs = _ok(runs)
    rows = []
    for task in _tasks(runs):
        t = runs[runs.task == task]
        rnd = t[t.variant == f"random k={k}"]
        sel = t[t.variant.isin(SELECTED_VARIANTS) & (t["k"] == k)]
        maj = float(t["majority"].mean()) if "majority" in t else math.nan
        if len(rnd) and len(sel):
            best = sel.loc[sel.score.idxmax()]
            margin = float(best.score) - float(rnd.score.mean())
            row = {"task": task, "random_mean": float(rnd.score.mean()), "random_max": float(rnd.score.max()),
                   "random_sets": len(rnd), "best_selected": float(best.score), "best_kind": best.variant,
                   "margin": margin, "majority": maj,
                   # uninformative when no k-dim model (random or selected) beats the majority class
                   "informative": _informative(max(float(sel.score.max()), float(rnd.score.max())), maj),
                   "beats": margin >= BEAT_POINTS}
            for kind in SELECTED_VARIANTS:
                row[kind] = float(sel[sel.variant == kind].score.max()) if (sel.variant == kind).any() else math.nan
            rows.append(row)
    details = pd.DataFrame(rows)
    info, note, untested = _informative_tasks(details, SELECTED_CLAIM, "every dimension-selected model",
                                              f"no task has both random and selected {k}-dim runs")
    if untested:
        return untested
    parts = "; ".join(f"{r.task}: selected {fmt(r.best_selected)} ({r.best_kind}) vs random "
                      f"{fmt(r.random_mean)} (mean of {r.random_sets} sets, best {fmt(r.random_max)})"
                      for r in details.itertuples())
    hits = int(info.beats.sum())
    text = (f"{k} dimensions, one seed: {parts}. Selected dimensions beat the random mean by at least "
            f"{BEAT_POINTS:g} point on {hits} of {len(info)} informative tasks.{note}")
    return _result(SELECTED_CLAIM, FUKUHATA, text, _share_verdict(hits, len(info), "all"), details)


DIMENSION_ORDER = ("CLS, all dims", "random k=1", "random k=2", "random k=3", "effective pair", "scan top pair")


def dimension_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The dimension chapter's main rows (all but leave-one-out, shown apart) and their display order."""
    if runs is None or len(runs) == 0 or "variant" not in runs:
        return pd.DataFrame(), list(DIMENSION_ORDER)
    order = list(DIMENSION_ORDER) + sorted(v for v in runs["variant"].unique() if str(v).startswith("best k="))
    return runs[runs["variant"].isin(order)], order


def removal_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Leave-one-out table: task, best 3-dim set, the dimension left out, the 2-dim score and the removal cost
    (3-dim score - 2-dim score; the two dims with the largest costs are the 'effective' pair)."""
    if runs is None or len(runs) == 0 or "removal_cost" not in runs:
        return pd.DataFrame(columns=["task", "best set", "left out", "2-dim score", "removal cost"])
    loo = runs[runs.variant == "leave one out"]
    out = pd.DataFrame({"task": loo.task,
                        "best set": loo.get("best_set").map(lambda b: "n/a" if pd.isna(b) else int(b) + 1),
                        "left out": loo.left_out.map(lambda d: "n/a" if pd.isna(d) else int(d)),
                        "dims kept": loo.dims, "2-dim score": loo.score.map(fmt),
                        "removal cost": loo.removal_cost.map(lambda x: fmt(x, signed=True))})
    return out.reset_index(drop=True)


def top_pairs(scan: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The n best pairs of the exhaustive scan per task: rank, the two dimensions and the pair's dev score."""
    rows = []
    for _, r in (scan if scan is not None else pd.DataFrame()).iterrows():
        for rank, (i, j, value) in enumerate((r.get("top") or [])[:n], start=1):
            rows.append({"task": r["task"], "rank": rank, "dims": f"({i}, {j})",
                         f"score ({r.get('score', 'score')}, points)": fmt(100.0 * value)})
    return pd.DataFrame(rows)


def scan_summary(scan: pd.DataFrame) -> str:
    """One sentence per task: pairs scanned, seconds, median and best pair score (from the stored quantiles)."""
    if scan is None or len(scan) == 0:
        return "No pair scan is stored for these tasks."
    parts = []
    for _, r in scan.iterrows():
        q = {float(k): 100.0 * v for k, v in r["quantiles"].items()}
        parts.append(f"{r['task']}: {int(r['pairs']):,} pairs scored in {float(r['seconds']):.1f} s "
                     f"(dev {r.get('score', 'score')}: median pair {fmt(q.get(0.5))}, 99th percentile "
                     f"{fmt(q.get(0.99))}, best {fmt(q.get(1.0))})")
    return "Exhaustive two-dimension scan of the fine-tuned CLS features. " + "; ".join(parts) + "."


def scan_references(scan: pd.DataFrame, runs: pd.DataFrame) -> tuple[dict, dict]:
    """({task: all-dims score}, {task: majority}) in points, only for tasks whose scan metric is the task's main
    metric (the scan scores accuracy, so CoLA's Matthews correlation is not comparable and is left out)."""
    ref, maj = {}, {}
    if scan is None or len(scan) == 0 or runs is None or len(runs) == 0:
        return ref, maj
    for _, r in scan.iterrows():
        if get_task(r["task"]).main_metric != r.get("score"):
            continue
        base = runs[(runs.task == r["task"]) & (runs.variant == "CLS, all dims")]
        if len(base):
            ref[r["task"]] = float(base.score.iloc[0])
            maj[r["task"]] = float(base.majority.iloc[0]) if "majority" in base else math.nan
    return ref, maj


def effective_dims(runs: pd.DataFrame) -> dict:
    """{task: sorted dims of its effective pair(s)}."""
    if runs is None or len(runs) == 0:
        return {}
    eff = runs[runs.variant == "effective pair"]
    return {t: sorted({d for dims in g.dims for d in (dims or ())}) for t, g in eff.groupby("task", sort=False)}


def masking_table(runs: pd.DataFrame, masking: pd.DataFrame) -> pd.DataFrame:
    """Per task and random dim set: the score when fine-tuned with only those dims (DropConnect, the paper's
    protocol) and when those dims are kept at inference on the normally fine-tuned model (not the paper's)."""
    if masking is None or len(masking) == 0:
        return pd.DataFrame()
    msk = masking[masking.split == masking.groupby("task").split.transform("first")]
    rnd = runs[runs.variant.astype(str).str.startswith("random")] if runs is not None and len(runs) else None
    rows = []
    for _, m in msk.iterrows():
        trained = rnd[(rnd.task == m.task) & (rnd.dims == m.dims)].score if rnd is not None else pd.Series([])
        rows.append({"task": m.task, "k": m.k, "dims": str(tuple(m.dims)),
                     "fine-tuned with k dims": fmt(trained.mean()) if len(trained) else "not run",
                     "masked at inference (not the paper's protocol)": fmt(m.score)})
    return pd.DataFrame(rows)


# -- (c) layers ----------------------------------------------------------------------------------------------------
LAYER_CLAIM = ("Reading k dimensions from lower layers scores lower; the higher layers differ little "
               "from one another.")


def layer_halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Lower = encoder layers 1..floor(L/2), upper = floor(L/2)+1..L. The embedding layer (0) is left out: its
    CLS vector is the same for every input, so it scores the majority baseline by construction."""
    half = n_layers // 2
    return list(range(1, half + 1)), list(range(half + 1, n_layers + 1))


def layer_claim(layers: pd.DataFrame) -> dict:
    """Per task, on the k-dims curve: gap = mean(upper) - mean(lower) >= LOWER_GAP_POINTS ('lower contribute
    less') and spread = max(upper) - min(upper) <= UPPER_SPREAD_POINTS ('higher differ little').
    Supported if both hold on most tasks; partly if one of them does; else not supported."""
    layers = _ok(layers)
    if layers.empty or "layer_index" not in layers:
        return _not_tested(LAYER_CLAIM, FUKUHATA, "no layer runs")
    n_layers = int(layers.layer_index.max())
    lower, upper = layer_halves(n_layers)
    if not lower or not upper:
        return _not_tested(LAYER_CLAIM, FUKUHATA, f"the model has {n_layers} layer(s); lower and upper halves "
                           "need at least 2")
    k_variant = next((v for v in _sorted_unique(layers.variant) if str(v).startswith("k=")), None)
    rows = []
    for task in _tasks(layers):
        t = layers[layers.task == task]
        ref_m, maj, _ = _stat(t[(t.variant == "all dims") & (t.layer_index == n_layers)])
        for variant in [v for v in (k_variant, "all dims") if v]:
            curve = t[t.variant == variant].groupby("layer_index").score.mean()
            if not (set(lower) | set(upper)) <= set(curve.index):
                continue
            lo, up = float(curve[lower].mean()), float(curve[upper].mean())
            spread = float(curve[upper].max() - curve[upper].min())
            rows.append({"task": task, "variant": variant, "lower_mean": lo, "upper_mean": up, "gap": up - lo,
                         "upper_spread": spread, "majority": maj, "informative": _informative(ref_m, maj),
                         "lower_less": up - lo >= LOWER_GAP_POINTS, "upper_flat": spread <= UPPER_SPREAD_POINTS})
    details = pd.DataFrame(rows)
    kd = details[details.variant == k_variant] if len(details) else details
    if kd.empty:
        return _not_tested(LAYER_CLAIM, FUKUHATA, "no task has k-dim runs at every layer", details)
    info = kd[kd.informative]
    note = _uninformative_note(kd[~kd.informative].task.tolist(), "the full model")
    if info.empty:
        return _not_tested(LAYER_CLAIM, FUKUHATA, f"no informative task.{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task}: lower {fmt(r.lower_mean)}, upper {fmt(r.upper_mean)} "
                      f"(spread {fmt(r.upper_spread)})" for r in kd.itertuples())
    n_less, n_flat = int(info.lower_less.sum()), int(info.upper_flat.sum())
    both = int((info.lower_less & info.upper_flat).sum())
    verdict = _share_verdict(both, len(info), "most")
    if verdict != SUPPORTED:
        verdict = PARTLY if max(n_less, n_flat) > MOST * len(info) else NOT_SUPPORTED
    text = (f"{k_variant} of each layer's CLS vector, mean score of the lower layers "
            f"({_span(lower)}) and the upper layers ({_span(upper)}): {parts}. Lower layers are at least "
            f"{LOWER_GAP_POINTS:g} points below the upper ones on {n_less} of {len(info)} informative tasks; the "
            f"upper layers lie within {UPPER_SPREAD_POINTS:g} points of one another on {n_flat} of "
            f"{len(info)}.{note}")
    return _result(LAYER_CLAIM, FUKUHATA, text, verdict, details)


def layer_tables(layers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{variant: score table with one row per layer and one column per task}."""
    if layers is None or len(layers) == 0 or "variant" not in layers:
        return {}
    return {v: score_table(layers[layers["variant"] == v], rows="layer_index", rename={"layer_index": "layer"})
            for v in _sorted_unique(layers["variant"])}


def _span(layers: list[int]) -> str:
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"


# -- (d) freezing --------------------------------------------------------------------------------------------------
FREEZING_CLAIM = "With a frozen backbone, even a 2-layer head collapses on the harder tasks."


def freezing_claim(frame: pd.DataFrame) -> dict:
    """Per harder task (HARDER_TASKS): 'collapse' = frozen 2-layer head mean <= majority + COLLAPSE_MARGIN.
    Supported if it collapses on most harder tasks; partly if it is LARGE_DROP_POINTS below fine-tuning on most
    of them without collapsing; else not supported. Easier tasks are reported for contrast."""
    frame = _ok(frame)
    rows = []
    for task in _tasks(frame):
        t = frame[frame.task == task]
        ft, maj, n_ft = _stat(t[t.variant == "fine-tuned, linear head"])
        fr, maj_fr, n_fr = _stat(t[t.variant == "frozen, 2-layer head"])
        pr, _, _ = _stat(t[t.variant == "frozen, linear probe"])
        maj = maj if not math.isnan(maj) else maj_fr
        if n_ft and n_fr:
            rows.append({"task": task, "harder": task in HARDER_TASKS, "fine_tuned": ft, "frozen_mlp": fr,
                         "frozen_probe": pr, "drop_points": ft - fr, "majority": maj,
                         "above_majority": fr - maj if not math.isnan(maj) else math.nan,
                         "informative": _informative(ft, maj),
                         "collapse": (not math.isnan(maj)) and fr <= maj + COLLAPSE_MARGIN_POINTS,
                         "large_drop": ft - fr >= LARGE_DROP_POINTS})
    details = pd.DataFrame(rows)
    if details.empty:
        return _not_tested(FREEZING_CLAIM, FUKUHATA, "no task has both fine-tuned and frozen 2-layer-head runs",
                           details)
    note = _uninformative_note(details[~details.informative].task.tolist(), "the fine-tuned model")
    hard = details[details.informative & details.harder]
    if hard.empty:
        return _not_tested(FREEZING_CLAIM, FUKUHATA, f"no informative harder task ({', '.join(HARDER_TASKS)})."
                           f"{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task}{' (harder)' if r.harder else ''}: fine-tuned {fmt(r.fine_tuned)}, frozen + "
                      f"2-layer head {fmt(r.frozen_mlp)}, majority {fmt(r.majority)}" for r in details.itertuples())
    n_col, n_drop = int(hard.collapse.sum()), int(hard.large_drop.sum())
    verdict = _share_verdict(n_col, len(hard), "most")
    if verdict != SUPPORTED:
        verdict = PARTLY if n_drop > MOST * len(hard) else NOT_SUPPORTED
    easy = details[details.informative & ~details.harder]
    text = (f"{parts}. On {n_col} of {len(hard)} informative harder tasks the frozen backbone with a 2-layer head "
            f"is within {COLLAPSE_MARGIN_POINTS:g} points of the majority baseline (collapse); it is at least "
            f"{LARGE_DROP_POINTS:g} points below fine-tuning on {n_drop}")
    if len(easy):
        text += f"; mean drop on the easier tasks {fmt(easy['drop_points'].mean())} vs "
        text += f"{fmt(hard['drop_points'].mean())} on the harder"
    return _result(FREEZING_CLAIM, FUKUHATA, text + "." + note, verdict, details)


# -- (e) cross-fine-tuning -----------------------------------------------------------------------------------------
CROSS_CLAIM = "Fine-tuning on A and then on B scores on B like fine-tuning on B directly."


def cross_claim(frame: pd.DataFrame) -> dict:
    """Per ordered pair: gap = score on B after A - direct B; 'like direct' = gap >= -CLOSE_POINTS; rule 'all'.
    Pairs whose direct-B model is at or below the majority baseline are uninformative."""
    frame = _ok(frame)
    if frame.empty or "direct_b" not in frame:
        return _not_tested(CROSS_CLAIM, FUKUHATA, "no cross-fine-tuning runs")
    frame = frame[frame.direct_b.notna()].copy()
    if frame.empty:
        return _not_tested(CROSS_CLAIM, FUKUHATA, "no direct-B reference runs")
    frame["gap"] = frame.score - frame.direct_b
    frame["informative"] = [_informative(d, m) for d, m in zip(frame.direct_b, frame.majority)]
    frame["close"] = frame.gap >= -CLOSE_POINTS
    details = frame[["task_a", "task_b", "score", "direct_b", "gap", "majority", "informative", "close"] +
                    [c for c in ("a_before", "a_after", "retention_a") if c in frame]].reset_index(drop=True)
    info = details[details.informative]
    bad = [f"{r.task_a} → {r.task_b}" for r in details[~details.informative].itertuples()]
    note = (f" Left out of the verdict because direct B is at or below the majority baseline: {', '.join(bad)}."
            if bad else "")
    if info.empty:
        return _not_tested(CROSS_CLAIM, FUKUHATA, f"no informative pair.{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task_a} → {r.task_b}: {fmt(r.score)} vs {fmt(r.direct_b)} direct "
                      f"({fmt(r.gap, signed=True)})" for r in details.itertuples())
    hits = int(info.close.sum())
    text = (f"Score on B after A vs B fine-tuned directly (one seed): {parts}. A → B is within "
            f"{CLOSE_POINTS:g} points of direct B, or better, on {hits} of {len(info)} informative pairs")
    if "a_after" in info and info.a_after.notna().any():
        text += (f"; A's own head on the A → B backbone keeps {fmt(100 * info.retention_a.mean(), 0)}% of A's "
                 f"score on average (forgetting, not a claim of the paper)")
    return _result(CROSS_CLAIM, FUKUHATA, text + "." + note, _share_verdict(hits, len(info), "all"), details)


def cross_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The cross-fine-tuning runs as a display table (points; ratios to 2 decimals)."""
    cols = {"task_a": "A", "task_b": "B", "score": "B after A", "direct_b": "B directly", "relative_b": "B ratio",
            "a_before": "A before B", "a_after": "A after B (A's head)", "retention_a": "A retained"}
    if frame is None or len(frame) == 0 or "task_a" not in frame:
        return pd.DataFrame(columns=list(cols.values()))
    out = frame[[c for c in cols if c in frame]].rename(columns=cols).copy()
    for c in ("B after A", "B directly", "A before B", "A after B (A's head)"):
        if c in out:
            out[c] = out[c].map(fmt)
    for c in ("B ratio", "A retained"):
        if c in out:
            out[c] = out[c].map(lambda x: fmt(x, 2))
    if "at_or_below_majority" in frame:
        out["B after A"] = [v + (f" {MAJORITY_MARK}" if flag else "")
                            for v, flag in zip(out["B after A"], frame["at_or_below_majority"])]
    return out.reset_index(drop=True)


# -- CKA (Phang et al. 2021) ---------------------------------------------------------------------------------------
BLOCK_CLAIM = "After fine-tuning, the CKA similarity of all layer pairs shows a block-diagonal structure."
DROP_CLAIM = "The top layers of a fine-tuned model can be dropped (head kept, no re-tuning) with little loss."


def as_matrix(matrix) -> np.ndarray:
    """A stored CKA matrix (lists with None for undefined entries) as a float array with NaN."""
    return np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def defined_layers(matrix) -> list[int]:
    """Layers whose representation is defined (diagonal not NaN), e.g. not the embedding layer's constant CLS."""
    m = as_matrix(matrix)
    return [i for i in range(len(m)) if not math.isnan(m[i, i])]


def block_split(matrix) -> dict:
    """fewdims.cka.best_split on the defined layers of a stored matrix: {'layers': defined layer indices,
    'split': first layer of the upper block (a real layer index), 'contrast'}; split None if < 3 layers."""
    m = as_matrix(matrix)
    keep = defined_layers(matrix)
    sub = m[np.ix_(keep, keep)]
    ok = [i for i in range(len(keep)) if np.all(np.isfinite(sub[i]))]
    keep, sub = [keep[i] for i in ok], sub[np.ix_(ok, ok)]
    if len(keep) < MIN_BLOCK_LAYERS:
        return {"layers": keep, "split": None, "contrast": math.nan}
    s, contrast = best_split(sub)
    return {"layers": keep, "split": keep[s], "contrast": contrast}


def _layers_entry(entry: dict, representation: str):
    layers = (entry or {}).get("layers") or {}
    if representation not in layers:
        return None
    return layers[representation]


def block_table(cka: dict, representation: str = "cls") -> pd.DataFrame:
    """Per task: the best two-block split of the fine-tuned and of the pretrained CKA matrix (defined layers only)
    and its contrast (mean within-block minus mean between-block similarity)."""
    rows = []
    for task, entry in (cka or {}).items():
        rep = _layers_entry(entry, representation)
        if rep is None:
            continue
        ft, pre = block_split(rep["finetuned"]), block_split(rep["pretrained"])
        n = len(as_matrix(rep["finetuned"]))
        rows.append({"task": task, "layers": n - 1, "defined layers": _span(ft["layers"]) if ft["layers"] else "none",
                     "fine-tuned split": _blocks(ft), "fine-tuned contrast": ft["contrast"],
                     "pretrained split": _blocks(pre), "pretrained contrast": pre["contrast"],
                     "block": ft["contrast"] >= BLOCK_CONTRAST if not math.isnan(ft["contrast"]) else False})
    return pd.DataFrame(rows)


def _blocks(split: dict) -> str:
    if split["split"] is None:
        return "n/a"
    first, last = split["layers"][0], split["layers"][-1]
    lo = f"{first}" if split["split"] - 1 == first else f"{first}-{split['split'] - 1}"
    hi = f"{split['split']}" if split["split"] == last else f"{split['split']}-{last}"
    return f"[{lo}] [{hi}]"


def cka_block_claim(cka: dict, representation: str = "cls") -> dict:
    """Block = fine-tuned contrast >= BLOCK_CONTRAST. Supported if a block on every task and stronger than in the
    pretrained model on every task; partly if a block on at least one task; else not supported."""
    table = block_table(cka, representation)
    if table.empty:
        return _not_tested(BLOCK_CLAIM, PHANG, f"no stored CKA matrices for the {representation!r} representation",
                           table)
    tested = table[table["fine-tuned contrast"].notna()]
    if tested.empty:
        return _not_tested(BLOCK_CLAIM, PHANG, f"fewer than {MIN_BLOCK_LAYERS} layers with a defined "
                           f"{representation} representation, so no two-block split can be measured", table)
    parts = "; ".join(f"{r['task']}: {r['fine-tuned split']} contrast {fmt(r['fine-tuned contrast'], 2)} "
                      f"(pretrained {fmt(r['pretrained contrast'], 2)})" for _, r in tested.iterrows())
    blocks = int(tested.block.sum())
    stronger = int((tested.block & (tested["fine-tuned contrast"] > tested["pretrained contrast"].fillna(-1))).sum())
    verdict = SUPPORTED if stronger == len(tested) else PARTLY if blocks else NOT_SUPPORTED
    text = (f"Best two-block split of the fine-tuned {representation} CKA matrix (layers in brackets) and its "
            f"contrast, within minus between blocks: {parts}. A block (contrast >= {BLOCK_CONTRAST:g}) appears on "
            f"{blocks} of {len(tested)} tasks, stronger than in the pretrained model on {stronger}.")
    return _result(BLOCK_CLAIM, PHANG, text, verdict, table)


def layer_drop_table(cka: dict, majority: dict | None = None) -> pd.DataFrame:
    """Per task and number of layers kept (0 = embeddings only .. L = full): the dev score of the fine-tuned head
    on that layer (no re-tuning), its loss against the full model, and `droppable` = how many top layers can be
    dropped (consecutively from the top) with the score within DROP_POINTS of the full model."""
    rows = []
    for task, entry in (cka or {}).items():
        drop = ((entry or {}).get("layers") or {}).get("layer_drop")
        if not drop:
            continue
        metric = entry.get("metric") or get_task(task).main_metric
        scores = [100.0 * d[metric] for d in drop]
        full = scores[-1]
        n = 0
        while n + 1 < len(scores) and scores[-2 - n] >= full - DROP_POINTS:
            n += 1
        maj = (majority or {}).get(task, math.nan)
        for kept, s in enumerate(scores):
            rows.append({"task": task, "layers_kept": kept, "score": s, "full": full, "loss": full - s,
                         "droppable": n, "majority": maj})
    return pd.DataFrame(rows)


def layer_drop_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Dev score (points) by layers kept (rows) and task (columns, in the book's order)."""
    if table is None or len(table) == 0:
        return pd.DataFrame()
    out = table.pivot(index="layers_kept", columns="task", values="score")[_sorted_unique(table["task"])]
    out.columns.name = None
    return out.rename_axis("layers kept").round(1)


def layer_drop_claim(cka: dict, majority: dict | None = None) -> dict:
    """Droppable = at least one top layer within DROP_POINTS of the full model; rule 'all' over informative tasks
    (full model above the majority baseline, when `majority` {task: points} is given)."""
    table = layer_drop_table(cka, majority)
    if table.empty:
        return _not_tested(DROP_CLAIM, PHANG, "no stored layer-dropping results", table)
    per = table.groupby("task", sort=False).agg(full=("full", "first"), droppable=("droppable", "first"),
                                                layers=("layers_kept", "max"), majority=("majority", "first"))
    per["informative"] = [_informative(f, m) for f, m in zip(per.full, per.majority)]
    info = per[per.informative]
    note = _uninformative_note([t for t in per.index if not per.informative[t]], "the full model")
    if info.empty:
        return _not_tested(DROP_CLAIM, PHANG, f"no informative task.{note}".rstrip("."), table)
    parts = "; ".join(f"{t}: {int(r.droppable)} of {int(r.layers)} (full {fmt(r.full)})" for t, r in per.iterrows())
    hits = int((info.droppable >= 1).sum())
    text = (f"Top layers that can be dropped with the dev score within {DROP_POINTS:g} point of the full model "
            f"(fine-tuned head kept, no re-tuning): {parts}. At least one layer can be dropped on {hits} of "
            f"{len(info)} informative tasks.{note}")
    return _result(DROP_CLAIM, PHANG, text, _share_verdict(hits, len(info), "all"), table)


def majority_of(cka: dict, store) -> dict:
    """{task display: majority-baseline score in points} read from the stored baseline records of `cka`."""
    out = {}
    for task, entry in (cka or {}).items():
        path = store.dir / get_task(task).name / f"{entry.get('key')}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        baseline = record.get("data", {}).get("majority_baseline", {})
        if baseline:
            first = next(iter(baseline.values()))
            out[task] = 100.0 * first[get_task(task).main_metric]
    return out


# -- everything at once --------------------------------------------------------------------------------------------
EXPERIMENTS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka")


def collect(ex, experiments=EXPERIMENTS) -> dict:
    """Every experiment's results: {name: what Experiments.<name>() returns}."""
    return {name: getattr(ex, name)() for name in experiments}


def majority_from_frames(results: dict) -> dict:
    """{task display: majority-baseline points} from any experiment frame of `results` that has one."""
    out: dict = {}
    dim = results.get("dimension") or {}
    frames = [results.get("token"), dim.get("runs") if isinstance(dim, dict) else None, results.get("layer"),
              results.get("freezing")]
    for frame in frames:
        if frame is None or len(frame) == 0 or "majority" not in frame:
            continue
        for task, value in frame.groupby("task", sort=False)["majority"].mean().items():
            if not math.isnan(value):
                out.setdefault(task, float(value))
    return out


def all_claims(results: dict, representation: str = "cls", majority: dict | None = None) -> list[dict]:
    """Every claim of both papers, in the book's order, from the results of `collect`. `majority` (for the
    layer-dropping claim) defaults to the majority baselines found in the other experiments' frames."""
    dim = results.get("dimension") or {}
    runs = dim.get("runs") if isinstance(dim, dict) else None
    if majority is None:
        majority = majority_from_frames(results)
    return [
        token_claim(results.get("token")),
        few_dims_claim(runs),
        selected_vs_random_claim(runs),
        layer_claim(results.get("layer")),
        freezing_claim(results.get("freezing")),
        cross_claim(results.get("cross_finetune")),
        cka_block_claim(results.get("cka"), representation),
        layer_drop_claim(results.get("cka"), majority),
    ]


def verdict_markdown(claim: dict) -> str:
    """'**Claim** (paper): ... **Measured:** ... **Verdict: supported.**' for a notebook's Markdown output."""
    return (f"**Claim** ({claim['paper']}): {claim['claim']}\n\n**Measured:** {claim['measured']}\n\n"
            f"**Verdict: {claim['verdict']}.**")


def claims_table(claims: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: c[k] for k in ("paper", "claim", "measured", "verdict")} for c in claims])


def effect_table(results: dict) -> pd.DataFrame:
    """Long table for the book's summary figure: per task, each manipulation's mean score minus the CLS,
    all-dims, fine-tuned baseline (points)."""
    rows = []

    def add(task, name, value, base):
        if not (math.isnan(value) or math.isnan(base)):
            rows.append({"task": task, "manipulation": name, "delta": value - base})

    token = _ok(results.get("token"))
    base = {t: token[(token.task == t) & (token.variant == "cls")].score.mean() for t in _tasks(token)}
    for t in _tasks(token):
        add(t, "max-norm token", token[(token.task == t) & (token.variant == "max_norm")].score.mean(), base[t])
    dim = results.get("dimension") or {}
    runs = _ok(dim.get("runs") if isinstance(dim, dict) else None)
    for t in _tasks(runs):
        r = runs[runs.task == t]
        ref = r[r.variant == "CLS, all dims"].score.mean()
        for k in (2, 3):
            add(t, f"best {k} dims", _best_k(r, k)[0], ref)
        add(t, "random 2 dims", r[r.variant == "random k=2"].score.mean(), ref)
    layers = _ok(results.get("layer"))
    if len(layers) and "layer_index" in layers:
        top = int(layers.layer_index.max())
        for t in _tasks(layers):
            r = layers[layers.task == t]
            ref = r[(r.variant == "all dims") & (r.layer_index == top)].score.mean()
            add(t, f"all dims, layer {top // 2}", r[(r.variant == "all dims") & (r.layer_index == top // 2)].score.mean(),
                ref)
    frz = _ok(results.get("freezing"))
    for t in _tasks(frz):
        r = frz[frz.task == t]
        ref = r[r.variant == "fine-tuned, linear head"].score.mean()
        add(t, "frozen, 2-layer head", r[r.variant == "frozen, 2-layer head"].score.mean(), ref)
    cross = _ok(results.get("cross_finetune"))
    if len(cross) and "task_b" in cross:
        for t in _sorted_unique(cross.task_b):
            r = cross[cross.task_b == t]
            add(t, "A → B (mean over A)", r.score.mean(), r.direct_b.mean())
    drop = layer_drop_table(results.get("cka"))
    for t in _tasks(drop):
        r = drop[drop.task == t]
        top = int(r.layers_kept.max())
        if top >= 1:
            add(t, "top layer dropped", float(r[r.layers_kept == top - 1].score.iloc[0]), float(r.full.iloc[0]))
    return pd.DataFrame(rows, columns=["task", "manipulation", "delta"])


# -- provenance ----------------------------------------------------------------------------------------------------
def grid_records(ex, experiments=EXPERIMENTS) -> tuple[dict, dict]:
    """Run every experiment through `ex.runner`, recording each record it hands out.

    Returns (results, records): results as `collect`, records {key: {'record': ..., 'experiments': [...]}} for
    every run the book uses (placeholders of runs that are not stored carry 'missing': True)."""
    seen: dict = {}
    runner = ex.runner
    original = runner.run
    current = {"name": None}

    def recording_run(config, analyses=()):
        record = original(config, analyses)
        entry = seen.setdefault(record["key"], {"record": record, "experiments": []})
        entry["record"] = record
        if current["name"] not in entry["experiments"]:
            entry["experiments"].append(current["name"])
        return record

    runner.run = recording_run
    results = {}
    try:
        for name in experiments:
            current["name"] = name
            results[name] = getattr(ex, name)()
    finally:
        del runner.run  # back to the class's method
    return results, seen


def _stored(records: dict) -> list[dict]:
    return [e for e in records.values() if not e["record"].get("missing") and not e["record"].get("planned")]


def runs_table(records: dict) -> pd.DataFrame:
    """One row per stored run: experiment (the first that uses it), task, label, seconds, device, precision."""
    rows = []
    for entry in _stored(records):
        rec = entry["record"]
        t = rec.get("timings", {})
        rows.append({"experiment": entry["experiments"][0], "experiments": ", ".join(entry["experiments"]),
                     "task": get_task(rec["config"]["task"]).display, "label": rec.get("label"),
                     "seconds": t.get("total_s", math.nan), "device": t.get("device"),
                     "mixed precision": t.get("mixed_precision"), "threads": t.get("threads"),
                     "created": rec.get("created")})
    return pd.DataFrame(rows, columns=["experiment", "experiments", "task", "label", "seconds", "device",
                                       "mixed precision", "threads", "created"])


def data_table(records: dict) -> pd.DataFrame:
    """Per task and split: the data source, rows and sha256 prefix the runs saw (one row per distinct
    fingerprint: two rows for a split means two runs saw different data)."""
    seen = {}
    for entry in _stored(records):
        rec = entry["record"]
        task = get_task(rec["config"]["task"]).display
        data = rec.get("data", {})
        parts = [("train", data.get("train"))] + list((data.get("eval") or {}).items())
        for split, fp in parts:
            if not fp:
                continue
            key = (task, split, fp.get("sha256"))
            if key not in seen:
                seen[key] = {"task": task, "split": split, "rows": fp.get("rows"),
                             "sha256": (fp.get("sha256") or "")[:16], "source": fp.get("source"), "runs": 0}
            seen[key]["runs"] += 1
    return pd.DataFrame(list(seen.values()), columns=["task", "split", "rows", "sha256", "source", "runs"])


def _values(records, get) -> str:
    counts: dict = {}
    for entry in _stored(records):
        try:
            v = get(entry["record"])
        except (KeyError, TypeError):
            v = None
        counts[v] = counts.get(v, 0) + 1
    if not counts:
        return "n/a"
    if len(counts) == 1:
        return str(next(iter(counts)))
    return "; ".join(f"{k} ({n} runs)" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def setup_tables(profile, records: dict, runner=None) -> dict[str, pd.DataFrame]:
    """The setup chapter's tables: 'profile', 'hardware', 'versions' (two columns: item, value)."""
    from .store import git_commit

    v = profile.values
    stored = _stored(records)
    missing = len(records) - len(stored)
    prof = [
        ("profile", f"{profile.name}: {v.get('description', '')}"),
        ("backbone", f"{v['model']} ({_values(records, lambda r: r['extra']['model_source'])})"),
        ("tasks", ", ".join(get_task(t).display for t in profile.tasks)),
        ("seeds", ", ".join(map(str, profile.seeds)) + " (headline cells use every seed, the rest the first)"),
        ("train subset", "whole training split" if v.get("train_size") is None else
         f"{v['train_size']:,} examples per task (data seed {v.get('data_seed', 0)})"),
        ("evaluation", "whole dev split" if v.get("eval_size") is None else f"{v['eval_size']:,} dev examples"),
        ("recipe", f"{v['epochs']} epochs, batch {v['batch_size']}, lr {v['lr']:g}, warm-up "
                   f"{v['warmup_ratio']:g}, weight decay {v['weight_decay']:g}, dropout {v['dropout']:g}, "
                   f"max length {v['max_length']}, precision {v['precision']}"),
        ("runs", f"{len(stored)} stored runs used by the book" + (f", {missing} not stored" if missing else "")),
        ("compute", f"{sum(e['record'].get('timings', {}).get('total_s', 0.0) or 0.0 for e in stored) / 3600:.2f} "
                    "hours of training and evaluation (sum over the stored runs)"),
    ]
    hardware = [
        ("processor", _values(records, lambda r: r["environment"]["processor"] or r["environment"]["machine"])),
        ("CPU model (this notebook's machine)", _cpu_model()),
        ("platform", _values(records, lambda r: r["environment"]["platform"])),
        ("CPU count", _values(records, lambda r: r["environment"]["cpu_count"])),
        ("torch threads", _values(records, lambda r: r["timings"]["threads"])),
        ("device", _values(records, lambda r: r["timings"]["device"])),
        ("GPU", _values(records, lambda r: r["environment"]["cuda"] or "none")),
        ("mixed precision", _values(records, lambda r: r["timings"]["mixed_precision"])),
    ]
    versions = [
        ("python (runs)", _values(records, lambda r: r["environment"]["python"])),
        ("torch (runs)", _values(records, lambda r: r["environment"]["torch"])),
        ("transformers (runs)", _values(records, lambda r: r["environment"]["transformers"])),
        ("accelerate (runs)", _values(records, lambda r: r["environment"]["accelerate"])),
        ("fewdims (runs)", _values(records, lambda r: r["extra"]["fewdims_version"])),
        ("commit (runs)", _values(records, lambda r: r["environment"]["commit"])),
        ("commit (this notebook)", git_commit() or "unknown"),
        ("python (this notebook)", platform.python_version()),
    ]
    for pkg in ("numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn", "papermill"):
        try:
            versions.append((f"{pkg} (this notebook)", metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            pass
    frame = lambda items: pd.DataFrame(items, columns=["item", "value"]).set_index("item")  # noqa: E731
    return {"profile": frame(prof), "hardware": frame(hardware), "versions": frame(versions)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(params: dict, runner) -> str:
    """The closing line of every notebook: profile, parameters, commit, runs reused / computed."""
    from .store import git_commit

    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return (f"Provenance: profile **{params.get('profile', runner.profile.name)}**; parameters {shown}; "
            f"commit `{git_commit() or 'unknown'}`; runner: {runner.summary()}.")


def check_representation(cka: dict, representation: str) -> None:
    """Raise a FewdimsError naming the stored representations if `representation` is not among them."""
    for entry in (cka or {}).values():
        layers = (entry or {}).get("layers") or {}
        reps = layers.get("params", {}).get("representations")
        if reps and representation not in reps:
            raise FewdimsError(f"representation={representation!r} was not stored; this profile stores "
                               f"{', '.join(map(repr, reps))} (cka.representations in its params file)")
