"""The outliers chapter's figures: every score with its 95 % interval and a stated null. Shared style and helpers: fewdims.figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .figures import (MAJORITY_STYLE, PALETTE, PANEL_HEIGHT, colors_for, grid_shape, hide_unused, message_figure,
                      new_figure, unique, valid_rows)


# -- the outliers chapter --------------------------------------------------------------------------------------------
def _whisker(ax, x, est, low, high, color, marker="o", size=5.0, zorder=3, label=None) -> None:
    """A point with its 95 % interval as a vertical line (nothing drawn for a missing estimate)."""
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return
    if not (math.isnan(low) or math.isnan(high)):
        ax.plot([x, x], [low, high], color=color, linewidth=1.3, zorder=zorder, solid_capstyle="butt")
    ax.plot([x], [est], marker=marker, color=color, markersize=size, linestyle="", zorder=zorder + 1,
            markeredgecolor="black", markeredgewidth=0.4, label=label)


def concentration_intervals(conc: pd.DataFrame, hidden: int, top: int = 3, rogue: float = 0.5,
                            title: str | None = None) -> Figure:
    """Left: share of the total variance held by the `top` highest-variance dimensions; right: share of the
    expected cosine similarity held by the `top` largest contributors (Timkey & van Schijndel's decomposition); per
    task, for the pretrained and the fine-tuned model's [CLS] and mean-pooled vectors, with 95 % bootstrap
    intervals. Null: top / hidden, the share if every dimension contributed equally (grey dashed); the rogue
    threshold on the right (red dotted)."""
    title = title or f"How much the top {top} dimensions hold of the variance and of the cosine similarity"
    data = valid_rows(conc, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    data = data[data["top"] == top]
    tasks = unique(data["task"])
    groups = unique(list(zip(data["model"], data["representation"])))
    colors = colors_for(groups)
    fig, axes = new_figure(1, 2, height=PANEL_HEIGHT + 1.3)
    width = 0.8 / max(1, len(groups))
    for ax, measure, label in zip(axes.flat, ("variance", "cosine"),
                                  ("share of the variance", "share of the expected cosine")):
        d = data[data["measure"] == measure]
        for i, task in enumerate(tasks):
            for j, group in enumerate(groups):
                g = d[(d["task"] == task) & (d["model"] == group[0]) & (d["representation"] == group[1])]
                if len(g):
                    r = g.iloc[0]
                    _whisker(ax, i - 0.4 + width * (j + 0.5), r["estimate"], r["low"], r["high"], colors[group],
                             marker="o" if group[0] == "pretrained" else "s")
        ax.axhline(top / hidden, zorder=1, **MAJORITY_STYLE)
        if measure == "cosine":
            ax.axhline(rogue, color="#d62728", linestyle=":", linewidth=1.2, zorder=1)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30 if len(tasks) > 3 else 0,
                      ha="right" if len(tasks) > 3 else "center")
        ax.set_xlim(-0.6, len(tasks) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("task (held-out train sentences)")
        ax.set_ylabel(f"{label} (top {top})")
        ax.set_title("variance" if measure == "variance" else "expected cosine similarity")
    handles = [Line2D([], [], color=colors[g], marker="o" if g[0] == "pretrained" else "s", linestyle="-",
                      markeredgecolor="black", markeredgewidth=0.4, label=f"{g[0]}, {g[1]}") for g in groups]
    handles += [Line2D([], [], **MAJORITY_STYLE, label=f"null: {top} of {hidden} dims, equal shares"),
                Line2D([], [], color="#d62728", linestyle=":", label=f"rogue: {rogue:.0%} of the cosine")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    return fig


def rudman_intervals(frame: pd.DataFrame, ncols: int = 3,
                     title: str = "One dimension, one threshold: the highest-variance dimension against random ones"
                     ) -> Figure:
    """One panel per task: dev score with its 95 % bootstrap interval of the full fine-tuned model, the threshold
    classifier on the highest-variance dimension of the [CLS] vector (and of the mean-pooled vector), the k=1 head
    fine-tuned on that dimension, and the threshold classifier on each random single dimension (grey, jittered).
    Null: the majority-class baseline (dashed)."""
    from .chapters.outliers import FULL, K1_HEAD, ONE_DIM, ONE_DIM_MEAN, RANDOM_DIM

    data = valid_rows(frame, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    order = [FULL, ONE_DIM, ONE_DIM_MEAN, K1_HEAD, RANDOM_DIM]
    short = {FULL: "full", ONE_DIM: "CLS\ndim", ONE_DIM_MEAN: "mean\ndim", K1_HEAD: "k=1\nhead",
             RANDOM_DIM: "random\ndims"}
    colors = {FULL: PALETTE[2], ONE_DIM: PALETTE[3], ONE_DIM_MEAN: PALETTE[1], K1_HEAD: PALETTE[0],
              RANDOM_DIM: "0.55"}
    tasks = unique(data["task"])
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=(PANEL_HEIGHT + 0.4) * nrows + 0.8)
    rng = np.random.default_rng(0)
    for ax, task in zip(axes.flat, tasks):
        d = data[data["task"] == task]
        present = [p for p in order if (d["predictor"] == p).any()]
        for i, predictor in enumerate(present):
            g = d[d["predictor"] == predictor]
            xs = i + (rng.random(len(g)) - 0.5) * 0.5 if len(g) > 1 else [i]
            for x, (_, r) in zip(xs, g.iterrows()):
                _whisker(ax, x, r["estimate"], r["low"], r["high"], colors[predictor],
                         size=3.5 if predictor == RANDOM_DIM else 5.5)
        if d["majority"].notna().any():
            ax.axhline(d["majority"].iloc[0], zorder=1, **MAJORITY_STYLE)
        ax.set_xticks(range(len(present)), [short[p] for p in present], fontsize=7)
        ax.set_xlim(-0.6, len(present) - 0.4)
        ax.grid(axis="x", visible=False)
        dim = d.loc[d["predictor"] == ONE_DIM, "dim"]
        ax.set_title(f"{task}" + (f" (top-var dim {int(dim.iloc[0])})" if len(dim) else ""))
        ax.set_xlabel("")
        index = list(axes.flat).index(ax)
        ax.set_ylabel(f"dev {d['metric'].iloc[0]} (points)" if index % ncols == 0 else "")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=colors[p], marker="o", linestyle="-", markeredgecolor="black",
                      markeredgewidth=0.4, label=label) for p, label in (
                   (FULL, "full: the fine-tuned model"), (ONE_DIM, "CLS dim: threshold on the top-variance [CLS] dim"),
                   (ONE_DIM_MEAN, "mean dim: threshold on the top-variance mean-pooled dim"),
                   (K1_HEAD, "k=1 head: fine-tuned on that [CLS] dim"),
                   (RANDOM_DIM, "random dims: threshold on a random [CLS] dim"))]
    handles.append(Line2D([], [], **MAJORITY_STYLE, label="null: majority-class baseline"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False,
               title="dev score with its 95 % bootstrap interval")
    fig.suptitle(title)
    return fig


def zeroing_intervals(frame: pd.DataFrame, margin: float = 5.0, ncols: int = 3,
                      title: str = "Zeroing LayerNorm outlier dimensions in every layer vs as many random ones"
                      ) -> Figure:
    """One panel per task (and the pretrained STS-B probe): the dev score lost (intact minus zeroed, points, paired
    95 % bootstrap interval) when the LayerNorm outlier dimensions are zeroed and when each random draw of as many
    dimensions is (grey, jittered). Null: no loss (solid line at 0); dotted: the claim's margin."""
    from .chapters.outliers import OUTLIER_ZERO, RANDOM_ZERO

    data = valid_rows(frame, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    tasks = unique(data["task"])
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=(PANEL_HEIGHT + 0.2) * nrows + 0.8)
    rng = np.random.default_rng(0)
    colors = {OUTLIER_ZERO: PALETTE[3], RANDOM_ZERO: "0.55"}
    for ax, task in zip(axes.flat, tasks):
        d = data[data["task"] == task]
        for i, kind in enumerate((OUTLIER_ZERO, RANDOM_ZERO)):
            g = d[d["zeroed"] == kind]
            xs = i + (rng.random(len(g)) - 0.5) * 0.5 if len(g) > 1 else [i]
            for x, (_, r) in zip(xs, g.iterrows()):
                _whisker(ax, x, r["estimate"], r["low"], r["high"], colors[kind],
                         size=5.5 if kind == OUTLIER_ZERO else 3.5)
        ax.axhline(0.0, color="0.3", linewidth=0.9, zorder=1)
        ax.axhline(margin, color="#d62728", linestyle=":", linewidth=1.1, zorder=1)
        rule = bool(d["rule"].iloc[0])
        dims = ", ".join(map(str, d["dims"].iloc[0]))
        ax.set_xticks([0, 1], ["outlier dims" if rule else "largest LN\ndeviations*", "random dims"], fontsize=7)
        ax.set_xlim(-0.6, 1.6)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{task}: dims {dims}", fontsize=8.5)
        ax.set_xlabel("")
        index = list(axes.flat).index(ax)
        ax.set_ylabel("points lost (intact − zeroed)" if index % ncols == 0 else "")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[3], marker="o", label="LayerNorm outlier dims zeroed (95 % interval)"),
               Line2D([], [], color="0.55", marker="o", label="a random set of as many dims zeroed"),
               Line2D([], [], color="0.3", label="null: no loss"),
               Line2D([], [], color="#d62728", linestyle=":", label=f"{margin:g}-point margin")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    return fig


def overlap_intervals(frame: pd.DataFrame, selections=None, ncols: int = 3,
                      title: str = "Selected dimensions among the outlier dimensions, against chance") -> Figure:
    """One panel per task: for each outlier set (x) and selection (colour), the observed number of selected
    dimensions that are also outliers (dot) and the range that holds 95 % of that number under chance (bar, from 0
    to the one-sided 95th percentile of the hypergeometric null of a selection drawn at random; line: its mean). A
    dot above its bar is an overlap with p < 0.05."""
    data = valid_rows(frame, "overlap")
    if selections is not None and len(data):
        data = data[data["selection"].isin(selections)]
    if data.empty:
        return message_figure(title, "no task with both outlier dimensions and selected dimensions")
    tasks = unique(data["task"])
    kinds = unique(data["outlier set"])
    chosen = unique(data["selection"])
    colors = colors_for(chosen)
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=(PANEL_HEIGHT + 0.3) * nrows + 0.8)
    width = 0.7 / max(1, len(chosen))
    for ax, task in zip(axes.flat, tasks):
        d = data[data["task"] == task]
        top = 1
        for i, kind in enumerate(kinds):
            for j, selection in enumerate(chosen):
                g = d[(d["outlier set"] == kind) & (d["selection"] == selection)]
                if not len(g):
                    continue
                r = g.iloc[0]
                x = i - 0.35 + width * (j + 0.5)
                ax.add_patch(Rectangle((x - width * 0.35, r["null_low"] - 0.05), width * 0.7,
                                       r["null_high"] - r["null_low"] + 0.1, color=colors[selection], alpha=0.22,
                                       linewidth=0, zorder=1))
                ax.plot([x - width * 0.35, x + width * 0.35], [r["expected"]] * 2, color=colors[selection],
                        linewidth=1.0, zorder=2)
                ax.plot([x], [r["overlap"]], marker="o", color=colors[selection], markeredgecolor="black",
                        markeredgewidth=0.4, markersize=6, zorder=3)
                top = max(top, r["overlap"], r["null_high"])
        ax.set_xticks(range(len(kinds)), [k.replace(" ", "\n", 1) for k in kinds], fontsize=7)
        ax.set_xlim(-0.6, len(kinds) - 0.4)
        ax.set_ylim(-0.4, top + 0.8)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="x", visible=False)
        ax.set_title(str(task))
        index = list(axes.flat).index(ax)
        ax.set_ylabel("selected dims that are outliers" if index % ncols == 0 else "")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=colors[s], marker="o", linestyle="", markeredgecolor="black",
                      markeredgewidth=0.4, label=f"observed: {s}") for s in chosen]
    handles += [Patch(color="0.5", alpha=0.3, label="null: 95 % of chance overlaps (line: their mean)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    return fig
