"""(b) k selected dimensions of the CLS vector (Fukuhata & Kano 2025): DropConnect masks the head's weights from
every other dimension; random sets per k, effective dimensions by leaving one out of the best 3-dim sets, an
exhaustive pair scan, and the headline best-k set over every seed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..runner import score
from ..tables import fmt, frame, row, selection_score
from ..tasks import get_task
from ..comparisons import (BETTER, FAILS, HOLDS, NOT_WORSE, UNDECIDED, aggregate, compare, informative_reference,
                           informative_tasks, interval_columns, intervals_note, outcome, row_text, score_interval,
                           settle, tally)
from ..verdicts import (FEW_DIMS_MARGIN, FEW_DIMS_WIDE_MARGIN, FUKUHATA, PARTLY, SELECTED_MARGIN, SUPPORTED,
                        finished, result, tasks_of)
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
        for task in self.tasks:
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


def _chosen_by(runs: pd.DataFrame) -> pd.Series:
    """What a set is chosen by: the held-out selection score where stored, else the dev score."""
    if "selection_score" in runs:
        return runs["selection_score"].where(runs["selection_score"].notna(), runs["score"]).astype(float)
    return runs["score"].astype(float)


def best_k_runs(task_runs: pd.DataFrame, k: int) -> tuple[pd.DataFrame, str]:
    """The runs of a task's best k-dimension set: the headline 'best k=k' runs (every seed) if present, else the
    k-dimension run with the best selection score (held-out where stored, else dev). Returns (runs, source)."""
    head = task_runs[task_runs.variant == headline_variant(k)]
    if len(head):
        return head, headline_variant(k)
    cand = task_runs[task_runs["k"] == k] if "k" in task_runs else task_runs.iloc[0:0]
    if len(cand):
        best = _chosen_by(cand).idxmax()
        return cand.loc[[best]], str(cand.loc[best, "variant"])
    return task_runs.iloc[0:0], ""


def _best_outcome(outcomes) -> str:
    """The better of several sets' outcomes: holds if one holds, fails if all fail, else inconclusive."""
    outcomes = list(outcomes)
    if HOLDS in outcomes:
        return HOLDS
    return FAILS if outcomes and all(o == FAILS for o in outcomes) else UNDECIDED


def few_dims_claim(runs: pd.DataFrame) -> dict:
    """Per task: the best 2-dim and the best 3-dim set (best_k_runs) against all dims, each with the interval of
    its difference (verdicts.compare). 'Close' = the interval lies above -FEW_DIMS_MARGIN (verdicts.NOT_WORSE);
    a task holds if either k holds, fails if both fail, else is inconclusive. A task counts when the all-dims
    interval lies above the majority baseline. Verdict: verdicts.aggregate; partly supported also when it would
    be supported with FEW_DIMS_WIDE_MARGIN."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        t = runs[runs.task == task]
        ref = t[t.variant == ALL_DIMS]
        sets = {k: best_k_runs(t, k) for k in CLAIM_KS}
        if not len(ref) or not any(len(g) for g, _ in sets.values()):
            continue
        maj = float(t["majority"].mean()) if "majority" in t else math.nan
        out = {"task": task}
        close, wide, methods = [], [], []
        for k, (group, source) in sets.items():
            c = compare(ref, group)
            if k == CLAIM_KS[0]:
                out.update(interval_columns("all_dims", c.reference, c.reference_mean, c.n_reference))
                out["informative"] = informative_reference(c.reference, c.reference_mean, maj)
            out.update(interval_columns(f"best_k{k}", c.variant, c.variant_mean, c.n_variant))
            out.update(interval_columns(f"diff_k{k}", c.difference, c.variant_mean - c.reference_mean,
                                        min(c.n_reference, c.n_variant)))
            out[f"set_k{k}"] = source or "not run"
            if len(group):
                close.append(outcome(c.difference, FEW_DIMS_MARGIN, NOT_WORSE))
                wide.append(outcome(c.difference, FEW_DIMS_WIDE_MARGIN, NOT_WORSE))
                methods.append(f"{k} dims: {c.method}")
        out.update({"majority": maj, "outcome": _best_outcome(close), "within_wide_margin": _best_outcome(wide),
                    "interval": " / ".join(methods)})
        rows.append(out)
    details = pd.DataFrame(rows)
    settle(details, ["outcome", "within_wide_margin"])
    info, note, untested = informative_tasks(details, FEW_DIMS_CLAIM, "the all-dims model",
                                              "no task has both an all-dims run and a 2- or 3-dim run")
    if untested:
        return untested

    def kpart(r, k):
        runs_ = getattr(r, f"best_k{k}_n")
        what = f"{getattr(r, f'set_k{k}')}, {runs_} run{'s' if runs_ != 1 else ''}"
        return (f"best {k} dims ({what}) {row_text(r, f'best_k{k}')}, difference "
                f"{row_text(r, f'diff_k{k}', signed=True)}")

    parts = "; ".join(f"{r.task}: all dims {row_text(r, 'all_dims')}, "
                      + ", ".join(kpart(r, k) for k in CLAIM_KS if getattr(r, f"best_k{k}_n", 0))
                      for r in details.itertuples())
    verdict = aggregate(info.outcome)
    if verdict != SUPPORTED and aggregate(info.within_wide_margin) == SUPPORTED:
        verdict = PARTLY
    text = (f"Points of each task's metric, mean over seeds with 95 % intervals: {parts}. With a margin of "
            f"{FEW_DIMS_MARGIN:g} points (the better of the 2- and 3-dim sets is close when its difference's "
            f"interval lies above −{FEW_DIMS_MARGIN:g}), the claim {tally(info.outcome)}; with "
            f"{FEW_DIMS_WIDE_MARGIN:g} points it {tally(info.within_wide_margin)}. Sets are chosen on the held-out "
            "train slice where the records have one, else on the dev set they are scored on (which favours them)."
            f"{intervals_note(details)}{note}")
    return result(FEW_DIMS_CLAIM, FUKUHATA, text, verdict, details)


def _selected_runs(t: pd.DataFrame, k: int) -> pd.DataFrame:
    """The runs of the task's selected k-dim set (effective pair or scan top pair) with the best selection score
    (held-out where stored, else dev), with the headline runs of the same dimensions (more seeds) when there are."""
    sel = t[t.variant.isin(SELECTED_VARIANTS) & (t["k"] == k)] if "k" in t else t.iloc[0:0]
    if not len(sel):
        return sel
    by = "dims" if "dims" in sel and sel["dims"].notna().all() else "variant"
    best = sel.assign(_chosen=_chosen_by(sel)).groupby(by, sort=False)["_chosen"].mean().idxmax()
    group = sel[sel[by] == best]
    if by == "dims":
        group = pd.concat([group, t[(t.variant == headline_variant(k)) & (t["dims"] == best)]])
    return group.drop_duplicates("key") if "key" in group else group


def selected_vs_random_claim(runs: pd.DataFrame, k: int = CLAIM_KS[0]) -> dict:
    """Per task: the selected k-dim set (_selected_runs) against the random k-dim sets (the null: every random set
    is one run), with the interval of the difference (verdicts.compare; the random sets are resampled like seeds).
    'Beats' = the interval lies above +SELECTED_MARGIN (verdicts.BETTER); below it the task fails. A task counts
    when the all-dims model's interval lies above the majority baseline (the task was learned)."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        t = runs[runs.task == task]
        rnd, sel = t[t.variant == random_variant(k)], _selected_runs(t, k)
        if not (len(rnd) and len(sel)):
            continue
        maj = float(t["majority"].mean()) if "majority" in t else math.nan
        c = compare(rnd, sel)
        ref = t[t.variant == ALL_DIMS]
        ref_iv = score_interval(ref) if len(ref) else c.variant
        ref_mean = float(ref.score.mean()) if len(ref) else c.variant_mean
        rows.append({"task": task, **c.columns("random", "selected"), "selected_set": str(sel.variant.iloc[0]),
                     "random_best": float(rnd.score.max()), "majority": maj,
                     "informative": informative_reference(ref_iv, ref_mean, maj),
                     "outcome": outcome(c.difference, SELECTED_MARGIN, BETTER)})
    details = pd.DataFrame(rows)
    settle(details)
    info, note, untested = informative_tasks(details, SELECTED_CLAIM, "the all-dims model",
                                              f"no task has both random and selected {k}-dim runs")
    if untested:
        return untested
    parts = "; ".join(f"{r.task}: selected ({r.selected_set}, {r.selected_n} run{'s' if r.selected_n != 1 else ''}) "
                      f"{row_text(r, 'selected')}, random ({r.random_n} set{'s' if r.random_n != 1 else ''}, best "
                      f"{fmt(r.random_best)}) {row_text(r, 'random')}, difference "
                      f"{row_text(r, 'difference', signed=True)}" for r in details.itertuples())
    text = (f"{k} dimensions, points of each task's metric with 95 % intervals: {parts}. With a margin of "
            f"{SELECTED_MARGIN:g} point (selected dimensions beat random ones when the difference's interval lies "
            f"above +{SELECTED_MARGIN:g}), the claim {tally(info.outcome)}.{intervals_note(details)}{note}")
    return result(SELECTED_CLAIM, FUKUHATA, text, aggregate(info.outcome), details)


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
                         "scored on": r.get("split", "dev"), "metric": r.get("score", "score"),
                         "score (points)": fmt(100.0 * value)})
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

