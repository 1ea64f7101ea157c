"""The dimension chapter's figures: the exhaustive pair scan, dimension importance, removal costs and masking at
inference. Shared style and helpers: fewdims.figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .chapters.base import ALL_DIMS
from .chapters.dimension import LEAVE_ONE_OUT
from .figures import (MAJORITY_STYLE, PALETTE, PANEL_HEIGHT, grid_shape, hide_unused, message_figure, new_figure,
                      unique, valid_rows)


# -- the dimension chapter -----------------------------------------------------------------------------------------
def scan_histogram(scan: pd.DataFrame, reference: dict | None = None, majority: dict | None = None,
                   ncols: int = 3, title: str = "Every pair of CLS dimensions, scored by a two-feature classifier"
                   ) -> Figure:
    """Per task, the distribution of all pair scores from its stored quantiles (cumulative: the fraction of pairs
    scoring at most x), the 20 best pairs as ticks, and for reference the all-dims model and the majority
    baseline (dicts {task: points})."""
    if scan is None or len(scan) == 0:
        return message_figure(title, "no stored pair scans")
    tasks = list(scan["task"])
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    drawn = {"reference": False, "majority": False}
    for ax, (_, r) in zip(axes.flat, scan.iterrows()):
        q = sorted((float(k), 100.0 * float(v)) for k, v in r["quantiles"].items())
        ax.plot([v for _, v in q], [k for k, _ in q], marker="o", markersize=3.5, color=PALETTE[0],
                drawstyle="default", zorder=3)
        top = [100.0 * t[2] for t in (r.get("top") or [])]
        if top:
            ax.plot(top, np.full(len(top), 1.04), "|", color=PALETTE[3], markersize=8, label="top pairs")
        if reference and r["task"] in reference and not math.isnan(reference[r["task"]]):
            ax.axvline(reference[r["task"]], color=PALETTE[2], linewidth=1.2)
            drawn["reference"] = True
        if majority and r["task"] in majority and not math.isnan(majority[r["task"]]):
            ax.axvline(majority[r["task"]], **MAJORITY_STYLE)
            drawn["majority"] = True
        ax.set_ylim(-0.03, 1.1)
        # the seconds are how long the scan took, not a property of the model: they belong in the text, not here
        ax.set_title(f"{r['task']}: all {int(r['pairs']):,} pairs")
        ax.set_xlabel(f"pair's dev {r.get('score', 'score')} (points)")
        ax.set_ylabel("fraction of pairs ≤ x")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", markersize=3.5, label="quantiles of all pairs"),
               Line2D([], [], color=PALETTE[3], marker="|", linestyle="", markersize=8, label="20 best pairs")]
    if drawn["reference"]:
        handles.append(Line2D([], [], color=PALETTE[2], label="fine-tuned model, all dims"))
    if drawn["majority"]:
        handles.append(Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline"))
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    return fig


MIN_SPAN_POINTS = 10.0  # a score axis spans at least this much, so noise of a few tenths does not look like an effect


def _min_span(ax, values) -> None:
    """Widen a score axis to MIN_SPAN_POINTS around its data when the data span less."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and values.max() - values.min() < MIN_SPAN_POINTS:
        mid = (values.max() + values.min()) / 2
        ax.set_ylim(mid - MIN_SPAN_POINTS / 2, mid + MIN_SPAN_POINTS / 2)


def importance_plot(scan: pd.DataFrame, highlight: dict | None = None, ncols: int = 3, label_top: int = 5,
                    title: str = "Dimension importance: the best pair score that each dimension takes part in"
                    ) -> Figure:
    """Per task, every dimension's importance (best score of a pair containing it) in decreasing order; the
    `label_top` best dimensions are labelled and dims in `highlight` {task: [dims]} marked."""
    if scan is None or len(scan) == 0:
        return message_figure(title, "no stored pair scans")
    tasks = list(scan["task"])
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    for ax, (_, r) in zip(axes.flat, scan.iterrows()):
        imp = np.array([np.nan if v is None else 100.0 * v for v in r["importance"]], dtype=float)
        order = np.argsort(-np.nan_to_num(imp, nan=-np.inf), kind="stable")
        ax.plot(range(len(order)), imp[order], color=PALETTE[0], linewidth=1.2)
        for rank in range(min(label_top, len(order))):
            ax.annotate(str(order[rank]), (rank, imp[order[rank]]), textcoords="offset points",
                        xytext=(4, -2 - 7 * rank), fontsize=7, color="0.25")
        marked = [d for d in (highlight or {}).get(r["task"], []) if d < len(imp)]
        if marked:
            ranks = [int(np.where(order == d)[0][0]) for d in marked]
            ax.scatter(ranks, imp[marked], color=PALETTE[3], s=18, zorder=4)
        _min_span(ax, imp)
        ax.set_title(str(r["task"]))
        ax.set_xlabel("dimensions, best first")
        ax.set_ylabel("best pair score (points)")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], label="importance (labels: dimension index of the best)")]
    if highlight:
        handles.append(Line2D([], [], color=PALETTE[3], marker="o", linestyle="", label="effective-pair dimensions"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    return fig


def removal_cost_bars(runs: pd.DataFrame, ncols: int = 3,
                      title: str = "Effective dimensions: cost of leaving each dimension out of the best 3-dim set"
                      ) -> Figure:
    """Per task (and best set), the score lost when each dimension is left out of the best 3-dimension set and
    the model is fine-tuned again on the other two (the two costliest dims are the 'effective' pair)."""
    data = valid_rows(runs, "removal_cost") if runs is not None and "removal_cost" in runs else pd.DataFrame()
    if data.empty:
        return message_figure(title, "no stored leave-one-out runs")
    data = data[data["variant"] == LEAVE_ONE_OUT].copy()
    data["group"] = [f"{t}" + (f" (set {int(b) + 1})" if data["best_set"].max() > 0 else "")
                     for t, b in zip(data["task"], data["best_set"].fillna(0))]
    groups = unique(data["group"])
    nrows, ncols = grid_shape(len(groups), ncols)
    fig, axes = new_figure(nrows, ncols, height=2.2 * nrows + 0.5)
    for ax, group in zip(axes.flat, groups):
        d = data[data["group"] == group]
        names = [f"dim {int(v)}" for v in d["left_out"]]
        colors = [PALETTE[3] if c > 0 else PALETTE[0] for c in d["removal_cost"]]
        ax.bar(range(len(d)), d["removal_cost"], color=colors, alpha=0.85)
        ax.scatter(range(len(d)), d["removal_cost"], color=colors, zorder=3, s=18)  # a zero cost stays visible
        ax.axhline(0, color="0.3", linewidth=0.8)
        if (d["removal_cost"].abs() < 1e-9).all():
            ax.set_ylim(-1, 1)
            ax.text(0.5, 0.8, "no dimension's removal changed the score", transform=ax.transAxes, ha="center",
                    fontsize="small", color="0.3")
        ax.set_xticks(range(len(d)), names)
        ax.set_title(group)
        ax.set_xlabel("dimension left out")
        ax.set_ylabel("removal cost (points)")
    hide_unused(axes, len(groups))
    fig.suptitle(title)
    return fig


def masking_contrast(runs: pd.DataFrame, masking: pd.DataFrame, ncols: int = 3,
                     title: str = "Fine-tuning with k dims (the paper) vs masking k dims at inference (not the paper)"
                     ) -> Figure:
    """Per task and k: the random k-dim sets fine-tuned with DropConnect (the paper's protocol) next to the same
    sets masked at inference on the normally fine-tuned model (not the paper's protocol); grey lines join the
    same set; the all-dims score is the green line."""
    r = valid_rows(runs, "score")
    msk = valid_rows(masking, "score")
    if r.empty and msk.empty:
        return message_figure(title, "no stored results to draw")
    rnd = r[r["variant"].astype(str).str.startswith("random")] if len(r) else r
    if len(msk) and "split" in msk:  # first evaluation split only (MNLI: matched)
        msk = msk[msk["split"] == msk.groupby("task")["split"].transform("first")]
    tasks = unique(list(rnd["task"] if len(rnd) else []) + list(msk["task"] if len(msk) else []))
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    for ax, task in zip(axes.flat, tasks):
        a = rnd[rnd["task"] == task] if len(rnd) else rnd
        b = msk[msk["task"] == task] if len(msk) else msk
        for _, row in a.iterrows():
            match = b[b["dims"] == row["dims"]] if len(b) else b
            if len(match):
                ax.plot([row["k"] - 0.12, row["k"] + 0.12], [row["score"], match["score"].iloc[0]], color="0.8",
                        linewidth=0.8, zorder=1)
        if len(a):
            ax.scatter(a["k"] - 0.12, a["score"], color=PALETTE[0], s=18, zorder=3)
        if len(b):
            ax.scatter(b["k"] + 0.12, b["score"], color=PALETTE[1], marker="s", s=18, zorder=3)
        full = r[(r["task"] == task) & (r["variant"] == ALL_DIMS)]["score"] if len(r) else pd.Series([])
        if len(full):
            ax.axhline(full.mean(), color=PALETTE[2], linewidth=1.2)
        maj = r[r["task"] == task]["majority"] if len(r) and "majority" in r else pd.Series([])
        if len(maj) and maj.notna().any():
            ax.axhline(maj.mean(), **MAJORITY_STYLE)
        ks = sorted(set(a["k"].dropna().astype(int)) | set(b["k"].dropna().astype(int)) if len(a) or len(b) else [])
        ax.set_xticks(ks)
        if ks:
            ax.set_xlim(min(ks) - 0.5, max(ks) + 0.5)
        ax.grid(axis="x", visible=False)
        ax.set_title(str(task))
        ax.set_xlabel("k (dimensions reaching the head)")
        ax.set_ylabel("dev score (points)")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", linestyle="", label="fine-tuned with k dims (DropConnect)"),
               Line2D([], [], color=PALETTE[1], marker="s", linestyle="",
                      label="masked at inference only (not the paper's protocol)"),
               Line2D([], [], color=PALETTE[2], label="all dims"),
               Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    return fig
