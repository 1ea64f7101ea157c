"""Display tables and number formatting shared by every chapter: score tables with one column per task (and
split) whose cells carry 95 % intervals, 'mean ± std (seeds)' summaries, and the tidy rows the chapters build from
records."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .errors import FewdimsError
from .predictions import record_predictions
from .runner import score
from .tasks import get_task

METRIC_SHORT = {"accuracy": "acc.", "matthews": "MCC", "pearson": "Pearson r", "spearman": "Spearman ρ",
                "f1": "F1"}
MAJORITY_MARK = "†"        # marks a cell with at least one run at or below the majority-class baseline
MAJORITY_NOTE = (f"{MAJORITY_MARK} at least one run at or below the majority-class baseline "
                 "(kept in the table, not dropped)")
SCORE_TABLE_NOTE = ("Cells: mean score [95 % interval] · number of runs; the interval is a bootstrap over seeds and "
                    "dev examples from the runs' stored predictions (one run: over dev examples), else a t-interval "
                    "over seeds. " + MAJORITY_NOTE + ".")


def row(record: dict, **fields) -> dict:
    """One tidy row: what was run, its main score (points), every metric of every evaluation split, and the run's
    per-example predictions and labels on its first evaluation split (`preds`, `labels`: numpy arrays, None for
    records stored before predictions were kept), so that claims can pair runs over the same dev examples."""
    cfg, task = record["config"], get_task(record["config"]["task"])
    first = next(iter(record["metrics"]))
    preds, labels = stored_predictions(record)
    out = {"task": task.display, "seed": cfg["seed"], "pooling": cfg["pooling"], "layer": cfg["layer"],
           "dims": tuple(cfg["dims"]) if cfg["dims"] else None, "k": len(cfg["dims"]) if cfg["dims"] else None,
           "head": cfg["head"], "frozen": cfg["freeze_backbone"], "metric": task.main_metric,
           "score": score(record), "key": record["key"], "train_s": record.get("timings", {}).get("total_s")}
    for split, metrics in record["metrics"].items():
        for name, value in metrics.items():
            out[f"{split}/{name}"] = 100.0 * value
    majority = record.get("data", {}).get("majority_baseline", {}).get(first)
    out["majority"] = 100.0 * majority[task.main_metric] if majority else math.nan
    out["preds"], out["labels"] = preds, labels
    out["at_or_below_majority"] = bool(out["score"] <= out["majority"] + 1e-9) if majority else False
    out["missing"] = bool(record.get("missing", False) or record.get("planned", False))
    selection = record.get("selection") or {}
    out["selection_score"] = selection_score(record)
    out["chosen_epoch"] = selection.get("chosen_epoch")
    out["still_improving"] = selection.get("still_improving")
    out.update(fields)
    return out


def stored_predictions(record: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(predictions, labels) of the record's first evaluation split, or (None, None) when it has none."""
    try:
        stored = record_predictions(record) if record.get("metrics") else None
    except FewdimsError:  # predictions of other splits only: nothing to pair on the first
        stored = None
    return stored if stored is not None else (None, None)


def majority_points(record: dict) -> float:
    """The majority-class baseline of the record's first evaluation split, in points of its main metric."""
    first = next(iter(record.get("metrics") or {}), None)
    majority = record.get("data", {}).get("majority_baseline", {}).get(first) if first else None
    return 100.0 * majority[get_task(record["config"]["task"]).main_metric] if majority else math.nan


def selection_score(record: dict) -> float:
    """The score anything is *chosen* by (dimension sets, pairs, the best k): the held-out train slice's main
    metric at the chosen epoch, in points. Records without a held-out slice (older editions) fall back to the
    dev score, which selects on the set that is reported (those chapters say so)."""
    selection = record.get("selection") or {}
    scores = selection.get("heldout_scores")
    if scores and selection.get("chosen_epoch"):
        return 100.0 * scores[selection["chosen_epoch"] - 1]
    return score(record)


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows of runs that exist (a run left out with compute=False or planned in a dry run is dropped)."""
    df = pd.DataFrame(rows)
    return df[~df["missing"]].drop(columns="missing").reset_index(drop=True) if len(df) else df


def span(layers: list[int]) -> str:
    """'layer 3' or 'layers 1-3'."""
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"

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


def sorted_unique(values) -> list:
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
    when metrics='all'), each cell the mean score with its 95 % interval and the number of runs,
    '85.8 [84.9, 86.7] · 5 runs' (`interval_cell_text`), with MAJORITY_MARK where a run is at or below the majority
    baseline. Missing combinations are blank."""
    if frame is None or len(frame) == 0:
        return pd.DataFrame()
    long = long_scores(frame, metrics)
    summary = summarise(long, by=[rows, "column"], value="value")
    main = {split_label(get_task(t).name, get_task(t).eval_splits[0]): t for t in frame["task"].unique()}
    summary["cell"] = [interval_cell_text(frame[(frame[rows] == r[rows]) & (frame["task"] == main[r["column"]])]
                                          if r["column"] in main else None, r["values"], r["below_majority"])
                       for _, r in summary.iterrows()]
    table = summary.pivot(index=rows, columns="column", values="cell")
    order = row_order or sorted_unique(frame[rows])
    table = table.reindex([r for r in order if r in table.index])
    table = table[sorted_unique(long["column"])].fillna("")
    table.columns.name = None
    table.index.name = (rename or {}).get(rows, rows)
    if rename:
        table = table.rename(index=rename)
    return table


def interval_cell_text(runs: pd.DataFrame | None, values, below_majority: int = 0, digits: int = 1) -> str:
    """A score cell with its 95 % interval: over seeds and dev examples from the runs' stored predictions when
    `runs` (the group's rows, main split and metric) has them, else a t-interval over the `values` of several runs,
    else the one value without an interval; '· n runs' when there are several, MAJORITY_MARK when any run is at or
    below the majority baseline."""
    from .comparisons import interval_text, score_interval  # comparisons builds on this module
    from .stats import seed_interval

    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "not run"
    interval = score_interval(runs) if runs is not None and len(runs) else None
    if interval is None and len(vals) >= 2:
        interval = seed_interval(np.asarray(vals))
    text = interval_text(interval, float(np.mean(vals)), n=len(vals), digits=digits)
    return text + (f" · {len(vals)} runs" if len(vals) > 1 else "") + (f" {MAJORITY_MARK}" if below_majority else "")


def shown(table: pd.DataFrame, note: str = "No stored runs for this table yet."):
    """The table, or a Markdown note when it is empty (e.g. with compute=False before the grid has run)."""
    if table is None or len(table) == 0:
        from IPython.display import Markdown

        return Markdown(f"*{note}*")
    return table



