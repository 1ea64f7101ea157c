"""(b) k selected dimensions of the CLS vector (Fukuhata & Kano 2025): DropConnect masks the head's weights from
every other dimension; random sets per k, effective dimensions by leaving one out of the best 3-dim sets, an
exhaustive pair scan, and the headline best-k set over every seed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..runner import score
from ..tables import fmt, frame, row, selection_score
from ..tasks import get_task
from ..verdicts import (BEAT_POINTS, CLOSE_POINTS, FUKUHATA, MOST, NOT_SUPPORTED, PARTLY, PARTLY_POINTS, finished,
                        informative, informative_tasks, result, share_verdict, stat, tasks_of)
from .base import ALL_DIMS, Chapter, random_sets_by_k

# Variants of the chapter's frame (display labels; the logic reads them only through these names).
LEAVE_ONE_OUT, EFFECTIVE, SCAN_TOP = "leave one out", "effective pair", "scan top pair"
SELECTED_VARIANTS = (EFFECTIVE, SCAN_TOP)
CLAIM_KS = (2, 3)  # the paper's "2-3 dimensions"


def random_variant(k: int) -> str:
    return f"random k={k}"


def headline_variant(k: int) -> str:
    return f"best k={k}"


@dataclass
class DimensionResults:
    runs: pd.DataFrame     # one row per fine-tuned run (variant, role, dims, k, score, ...)
    masking: pd.DataFrame  # inference-time masking of the all-dims model (not the paper's protocol)
    scan: pd.DataFrame     # the exhaustive pair scan per task
    k: int                 # the headline k (the profile's dimension.k)


class DimensionChapter(Chapter):
    name = "dimension"

    def compute(self) -> DimensionResults:
        sec = self.section
        runs, masking, scans = [], [], []
        defer = getattr(self.runner, "defer_dependents", False)  # a planning pass: rank only real records
        for task in self.profile.tasks:
            base_rec = self.baseline(task)
            waiting = defer and bool(sec["scan"] and base_rec.get("planned"))  # the scan's pairs come with it
            runs += self.baseline_rows(task, role="all dims")
            by_k = {}
            for k, sets in random_sets_by_k(sec, self.hidden).items():
                for i, dims in enumerate(sets):
                    rec = self.runner.run(self.base(task, dims=dims))
                    by_k.setdefault(k, []).append(rec)
                    runs.append(row(rec, variant=random_variant(k), role="random", subset=i))
            # Effective dimensions (the paper): leave one dimension out of the best 3-dimension sets. "Best" and the
            # removal costs that pick the effective pair are measured on the held-out train slice (selection_score).
            waiting |= defer and any(r.get("planned") for r in by_k.get(3, []))
            ranked3 = [] if waiting else sorted(by_k.get(3, []),
                                                key=lambda r: -_nan_low(selection_score(r)))[:sec["best_sets"]]
            effective = []
            for rank, rec3 in enumerate(ranked3):
                dims3 = tuple(rec3["config"]["dims"])
                cost = {}
                for d in dims3:
                    loo = self.runner.run(self.base(task, dims=tuple(x for x in dims3 if x != d)))
                    cost[d] = selection_score(rec3) - selection_score(loo)
                    runs.append(row(loo, variant=LEAVE_ONE_OUT, role="leave one out", best_set=rank, left_out=d,
                                    removal_cost=score(rec3) - score(loo), selection_cost=cost[d]))
                    waiting |= defer and bool(loo.get("planned"))
                if not waiting:
                    effective.append(tuple(sorted(sorted(cost, key=lambda d: -_nan_low(cost[d]))[:2])))
            for pair in effective:
                runs.append(row(self.runner.run(self.base(task, dims=pair)), variant=EFFECTIVE, role="effective"))
            scan = base_rec.get("extra", {}).get("pair_scan")
            if scan:
                scans.append({"task": get_task(task).display, **{k: v for k, v in scan.items() if k != "top"},
                              "top": scan["top"][:20]})
                for i, j, _ in scan["top"][:sec["scan_top"]]:
                    runs.append(row(self.runner.run(self.base(task, dims=(i, j))), variant=SCAN_TOP, role="scan"))
            # Headline: the best k-dimension run (chosen on the first seed) against all dims, over every seed.
            k = sec["k"]
            candidates = [r for r in runs if r["task"] == get_task(task).display and r["k"] == k]
            if candidates and not (waiting or (defer and any(r["missing"] for r in candidates))):
                best = max(candidates, key=lambda r: _nan_low(r["selection_score"]))
                for seed in self.profile.seeds:
                    rec = self.runner.run(self.base(task, dims=best["dims"], seed=seed))
                    runs.append(row(rec, variant=headline_variant(k), role="headline"))
            for split, rows in base_rec.get("extra", {}).get("inference_masking", {}).items():
                for r in rows:
                    metrics = {m: 100.0 * v for m, v in r.items() if m != "dims"}
                    masking.append({"task": get_task(task).display, "split": split, "dims": tuple(r["dims"]),
                                    "k": len(r["dims"]), "score": metrics[get_task(task).main_metric], **metrics})
        return DimensionResults(frame(runs), pd.DataFrame(masking), pd.DataFrame(scans), sec["k"])


def _nan_low(x: float) -> float:
    return -math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else x


FEW_DIMS_CLAIM = "Fine-tuning with only 2-3 selected CLS dimensions scores close to all dimensions on most tasks."
SELECTED_CLAIM = "Selected dimensions (effective / best pairs) score better than randomly chosen ones."


def best_k(task_runs: pd.DataFrame, k: int) -> tuple[float, int, str]:
    """Best k-dimension score of a task: the headline 'best k=k' mean over seeds if present, else the best
    single run with k dims. Returns (score, n seeds, source)."""
    head = task_runs[task_runs.variant == headline_variant(k)]
    if len(head):
        return float(head.score.mean()), int(len(head)), headline_variant(k)
    cand = task_runs[task_runs["k"] == k] if "k" in task_runs else task_runs.iloc[0:0]
    if len(cand):
        best = cand.loc[cand.score.idxmax()]
        return float(best.score), 1, str(best.variant)
    return math.nan, 0, ""


def few_dims_claim(runs: pd.DataFrame) -> dict:
    """Per task: gap = mean(all dims) - best of {best 2-dim set (headline, all seeds), best 3-dim set}.
    'Close' = gap <= CLOSE_POINTS; rule 'most'. Partial support also when within PARTLY_POINTS on most tasks."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        t = runs[runs.task == task]
        all_m, maj, n_all = stat(t[t.variant == ALL_DIMS])
        (k2, n2, _), (k3, n3, _) = (best_k(t, k) for k in CLAIM_KS)
        best = np.nanmax([k2, k3]) if not (math.isnan(k2) and math.isnan(k3)) else math.nan
        if n_all and not math.isnan(best):
            rows.append({"task": task, "all_dims": all_m, "best_k2": k2, "seeds_k2": n2, "best_k3": k3,
                         "best_selected": best, "gap": all_m - best, "majority": maj,
                         "informative": informative(all_m, maj), "close": all_m - best <= CLOSE_POINTS})
    details = pd.DataFrame(rows)
    info, note, untested = informative_tasks(details, FEW_DIMS_CLAIM, "the all-dims model",
                                              "no task has both an all-dims run and a 2- or 3-dim run")
    if untested:
        return untested
    parts = "; ".join(f"{r.task}: all dims {fmt(r.all_dims)}, best 2 dims {fmt(r.best_k2)}"
                      f"{f' ({r.seeds_k2} seeds)' if r.seeds_k2 > 1 else ''}, best 3 dims {fmt(r.best_k3)}"
                      for r in details.itertuples())
    hits = int(info.close.sum())
    verdict = share_verdict(hits, len(info), "most")
    if verdict == NOT_SUPPORTED and (info.gap <= PARTLY_POINTS).sum() > MOST * len(info):
        verdict = PARTLY
    text = (f"{parts}. The best 2- or 3-dimension run is within {CLOSE_POINTS:g} points of all dimensions on "
            f"{hits} of {len(info)} informative tasks (within {PARTLY_POINTS:g} points on "
            f"{int((info.gap <= PARTLY_POINTS).sum())}); the best sets are chosen on the same dev set they are "
            f"scored on, which favours them.{note}")
    return result(FEW_DIMS_CLAIM, FUKUHATA, text, verdict, details)


def selected_vs_random_claim(runs: pd.DataFrame, k: int = CLAIM_KS[0]) -> dict:
    """Per task: margin = best selected k-dim run (effective pair, scan top pair) - mean of the random k-dim runs.
    'Beats' = margin >= BEAT_POINTS; rule 'all'."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        t = runs[runs.task == task]
        rnd = t[t.variant == random_variant(k)]
        sel = t[t.variant.isin(SELECTED_VARIANTS) & (t["k"] == k)]
        maj = float(t["majority"].mean()) if "majority" in t else math.nan
        if len(rnd) and len(sel):
            best = sel.loc[sel.score.idxmax()]
            margin = float(best.score) - float(rnd.score.mean())
            row = {"task": task, "random_mean": float(rnd.score.mean()), "random_max": float(rnd.score.max()),
                   "random_sets": len(rnd), "best_selected": float(best.score), "best_kind": best.variant,
                   "margin": margin, "majority": maj,
                   # uninformative when no k-dim model (random or selected) beats the majority class
                   "informative": informative(max(float(sel.score.max()), float(rnd.score.max())), maj),
                   "beats": margin >= BEAT_POINTS}
            for kind in SELECTED_VARIANTS:
                row[kind] = float(sel[sel.variant == kind].score.max()) if (sel.variant == kind).any() else math.nan
            rows.append(row)
    details = pd.DataFrame(rows)
    info, note, untested = informative_tasks(details, SELECTED_CLAIM, "every dimension-selected model",
                                              f"no task has both random and selected {k}-dim runs")
    if untested:
        return untested
    parts = "; ".join(f"{r.task}: selected {fmt(r.best_selected)} ({r.best_kind}) vs random "
                      f"{fmt(r.random_mean)} (mean of {r.random_sets} sets, best {fmt(r.random_max)})"
                      for r in details.itertuples())
    hits = int(info.beats.sum())
    text = (f"{k} dimensions, one seed: {parts}. Selected dimensions beat the random mean by at least "
            f"{BEAT_POINTS:g} point on {hits} of {len(info)} informative tasks.{note}")
    return result(SELECTED_CLAIM, FUKUHATA, text, share_verdict(hits, len(info), "all"), details)


DIMENSION_ORDER = (ALL_DIMS, *(random_variant(k) for k in (1, 2, 3)), EFFECTIVE, SCAN_TOP)


def dimension_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The dimension chapter's main rows (all but leave-one-out, shown apart) and their display order."""
    if runs is None or len(runs) == 0 or "variant" not in runs:
        return pd.DataFrame(), list(DIMENSION_ORDER)
    ks = sorted(int(k) for k in runs["k"].dropna().unique()) if "k" in runs else []
    order = list(DIMENSION_ORDER) + [v for v in map(headline_variant, ks) if v in set(runs["variant"])]
    return runs[runs["variant"].isin(order)], order


def removal_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Leave-one-out table: task, best 3-dim set, the dimension left out, the 2-dim score and the removal cost
    (3-dim score - 2-dim score; the two dims with the largest costs are the 'effective' pair)."""
    if runs is None or len(runs) == 0 or "removal_cost" not in runs:
        return pd.DataFrame(columns=["task", "best set", "left out", "2-dim score", "removal cost"])
    loo = runs[runs.variant == LEAVE_ONE_OUT]
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
        base = runs[(runs.task == r["task"]) & (runs.variant == ALL_DIMS)]
        if len(base):
            ref[r["task"]] = float(base.score.iloc[0])
            maj[r["task"]] = float(base.majority.iloc[0]) if "majority" in base else math.nan
    return ref, maj


def effective_dims(runs: pd.DataFrame) -> dict:
    """{task: sorted dims of its effective pair(s)}."""
    if runs is None or len(runs) == 0:
        return {}
    eff = runs[runs.variant == EFFECTIVE]
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

