"""Dropping the top layers of a fine-tuned model (Phang, Liu & Bowman 2021): the fine-tuned head reads a lower
layer's [CLS] vector, no re-tuning. Read from the layer analysis the reference run carries (`extra.layers.layer_drop`
of its record); the CKA chapter's results (`CkaChapter.compute`) are its input."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .. import stats
from ..comparisons import HOLDS, NOT_WORSE, aggregate, interval_cell, outcome, tally
from ..metrics import compute_metrics, main_metric
from ..predictions import unpack
from ..stats import Interval
from ..tables import fmt, sorted_unique
from ..tasks import get_task
from ..verdicts import DROP_POINTS, PHANG, informative, not_tested, result

DROP_CLAIM = "The top layers of a fine-tuned model can be dropped (head kept, no re-tuning) with little loss."
DROP_N_BOOT = 1000         # bootstrap resamples behind each layer-dropping interval
NOT_LEARNED = "model did not learn this task"


def drop_difference(task: str, entry: dict, kept: int, score_kept: float) -> Interval | None:
    """The dev score with only `kept` layers minus the full model's (points), with a 95 % interval: paired over the
    dev examples where the analysis stored each depth's predictions (`layer_drop_predictions`, records since
    2026-12-03); else a bootstrap of the full model's stored predictions with the truncated score held fixed (the
    full model's dev-set noise only; method says so); None without predictions."""
    layers = (entry or {}).get("layers") or {}
    task_name = get_task(task).name
    stored = layers.get("layer_drop_predictions")
    labels = entry.get("labels")
    if stored and labels is not None:
        kept_preds, full_preds = unpack(stored[kept]), unpack(stored[-1])
        return stats.paired_difference(task_name, kept_preds, full_preds, labels, n_boot=DROP_N_BOOT)
    preds = entry.get("preds")
    if preds is None or labels is None:
        return None
    samples = stats.bootstrap_samples(task_name, preds, labels, n_boot=DROP_N_BOOT)
    full = 100.0 * compute_metrics(task_name, preds, labels)[main_metric(task_name)]
    low, high = np.quantile(score_kept - samples, [0.025, 0.975])
    return Interval(score_kept - full, float(low), float(high), len(labels),
                    "bootstrap of the full model only (the truncated model's predictions are not stored)")


def layer_drop_table(cka: dict, majority: dict | None = None) -> pd.DataFrame:
    """Per task and number of layers kept (0 = embeddings only .. L = full): the dev score of the fine-tuned head
    on that layer (no re-tuning), its difference from the full model with a 95 % interval (`drop_difference`) and
    its outcome under the margin (NOT_WORSE: the interval lies above -DROP_POINTS: 'holds'), and `droppable` = how
    many top layers can be dropped, consecutively from the top, each one's outcome holding; `informative` = the
    full model scores above the majority baseline (unknown baseline: informative), else the model did not learn
    the task and its `droppable` means nothing (every layer scores like chance)."""
    rows = []
    for task, entry in (cka or {}).items():
        drop = ((entry or {}).get("layers") or {}).get("layer_drop")
        if not drop:
            continue
        metric = entry.get("metric") or get_task(task).main_metric
        scores = [100.0 * d[metric] for d in drop]
        full = scores[-1]
        diffs = [drop_difference(task, entry, kept, s) for kept, s in enumerate(scores[:-1])]
        outcomes = [outcome(d, DROP_POINTS, NOT_WORSE) for d in diffs]
        n = 0
        while n < len(outcomes) and outcomes[-1 - n] == HOLDS:
            n += 1
        maj = (majority or {}).get(task, math.nan)
        learned = informative(full, maj)
        for kept, s in enumerate(scores):
            d = diffs[kept] if kept < len(diffs) else None
            rows.append({"task": task, "layers_kept": kept, "score": s, "full": full, "loss": full - s,
                         "difference": s - full if d is None else d.estimate,
                         "difference_low": math.nan if d is None else d.low,
                         "difference_high": math.nan if d is None else d.high,
                         "interval": "" if d is None else d.method,
                         "outcome": "full model" if kept == len(scores) - 1 else outcomes[kept],
                         "droppable": n, "majority": maj, "informative": learned})
    return pd.DataFrame(rows)


def layer_drop_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Dev score (points) by layers kept (rows) and task (columns, in the book's order)."""
    if table is None or len(table) == 0:
        return pd.DataFrame()
    out = table.pivot(index="layers_kept", columns="task", values="score")[sorted_unique(table["task"])]
    out.columns.name = None
    return out.rename_axis("layers kept").round(1)


def layer_drop_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Each truncated model minus the full model, 'points [95 % interval]' by layers kept (rows) and task."""
    if table is None or len(table) == 0:
        return pd.DataFrame()
    cells = table.assign(cell=[interval_cell(d, lo, hi, signed=True) if kept < full_kept else "full model"
                               for d, lo, hi, kept, full_kept in zip(
                                   table.difference, table.difference_low, table.difference_high,
                                   table.layers_kept, table.groupby("task").layers_kept.transform("max"))])
    out = cells.pivot(index="layers_kept", columns="task", values="cell")[sorted_unique(table["task"])]
    out.columns.name = None
    return out.rename_axis("layers kept")


def layer_drop_claim(cka: dict, majority: dict | None = None) -> dict:
    """Per informative task (full model above the majority baseline, when `majority` {task: points} is given):
    the claim holds when the top layer can be dropped (the interval of 'L-1 layers minus the full model' lies above
    -DROP_POINTS), fails when that interval lies below it, and is undecided otherwise; the verdict over the tasks
    is comparisons.aggregate's."""
    table = layer_drop_table(cka, majority)
    if table.empty:
        return not_tested(DROP_CLAIM, PHANG, "no stored layer-dropping results", table)
    top = table[table.layers_kept == table.groupby("task").layers_kept.transform("max") - 1]
    per = top.set_index("task")
    left_out = [t for t in per.index if not per.informative[t]]
    note = (f" Left out of the verdict because the full model is at or below the majority-class baseline "
            f"({NOT_LEARNED}): {', '.join(left_out)}." if left_out else "")
    info = per[per.informative]
    if info.empty:
        return not_tested(DROP_CLAIM, PHANG, f"no informative task.{note}".rstrip("."), table)
    task_outcomes = [HOLDS if r.droppable >= 1 else r.outcome for r in info.itertuples()]

    def part(t, r) -> str:
        if not r.informative:
            return f"{t}: {NOT_LEARNED} (full {fmt(r.full)}, majority baseline {fmt(r.majority)})"
        diff = interval_cell(r.difference, r.difference_low, r.difference_high, signed=True)
        return (f"{t}: full {fmt(r.full)}, top layer dropped {fmt(r.score)}, difference {diff}; "
                f"{int(r.droppable)} of {int(r.layers_kept) + 1} layers droppable")

    parts = "; ".join(part(t, r) for t, r in per.iterrows())
    methods = sorted({m for m in info.interval if m})
    text = (f"Dev score of the fine-tuned head when the top layers are dropped (no re-tuning), points with 95 % "
            f"intervals: {parts}. With a margin of {DROP_POINTS:g} point (a layer can be dropped when the interval "
            f"of its difference from the full model lies above −{DROP_POINTS:g}), dropping the top layer "
            f"{tally(task_outcomes)}.{note}"
            + (f" Intervals: {'; '.join(methods)}." if methods else " No interval: the records keep no predictions."))
    return result(DROP_CLAIM, PHANG, text, aggregate(task_outcomes), table)


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
