"""The CKA chapter's figures (Phang et al. 2021): CKA heatmaps with the noise floor, CKA against the pretrained
model, and dropping the top layers. Shared style and helpers: fewdims.figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .figures import (BELOW_FLOOR_COLOR, MAJORITY_STYLE, PAGE_WIDTH, PALETTE, PANEL_HEIGHT,
                      UNDEFINED_NOTE, as_array, colors_for, grid_shape, heatmap, hide_unused, message_figure,
                      new_figure, unique, valid_rows)

NOT_LEARNED_COLOR = "0.6"   # a layer-dropping panel of a task the model did not learn


def cka_grid(cka: dict, representation: str = "cls", ncols: int = 2, title: str | None = None) -> Figure:
    """One row per task: the CKA of every pair of layers in the pretrained model (left) and the fine-tuned model
    (right), each panel at least 3 inches wide, one colour scale 0..1, values written in the cells up to 13 x 13
    layers; undefined cells hatched; cells below the noise floor at that task's size and estimator (its 95th
    percentile, chapters.cka.noise_floor) drawn light grey, the floor marked on the row's colour bar. `ncols` is
    kept for callers and ignored (the pair of panels is the row)."""
    from .chapters.cka import REPRESENTATION_NAMES, estimator, noise_floor

    title = title or (f"Linear CKA between layers ({REPRESENTATION_NAMES.get(representation, representation)}): "
                      "pretrained vs fine-tuned")
    entries = [(t, e, e["layers"][representation]) for t, e in (cka or {}).items()
               if (e or {}).get("layers") and representation in e["layers"]]
    if not entries:
        return message_figure(title, f"no stored CKA matrices for the {representation!r} representation")
    panel = 3.5  # inches per heatmap cell of the layout (constrained layout leaves each square >= 3 inches)
    fig, axes = new_figure(len(entries), 2, height=len(entries) * (panel + 0.75) + 0.9, width=2 * panel + 1.3)
    undefined = floored = False
    kind = estimator(cka)
    for r, (task, entry, rep) in enumerate(entries):
        floor = noise_floor(entry, representation)
        image = None
        for j, key in enumerate(("pretrained", "finetuned")):
            ax = axes[r, j]
            m = as_array(rep[key])
            undefined |= not np.isfinite(m).all()
            floored |= floor is not None and bool((np.isfinite(m) & (m < floor["p95"])).any())
            heatmap(m, ax=ax, colorbar=False, note=False, annotate=len(m) <= 13, floor=floor and floor["p95"],
                    annot_size=max(4.5, min(8.0, 56.0 / len(m))),
                    title=f"{task}: {'pretrained' if key == 'pretrained' else 'fine-tuned'}",
                    xlabel="layer (0 = embeddings)", ylabel="layer" if j == 0 else "")
            image = ax.images[0]
        label = f"{kind} CKA" + (f"; n = {floor['n']:,}" if floor else "")
        bar = fig.colorbar(image, ax=axes[r, :].tolist(), shrink=0.85, fraction=0.04, pad=0.03, label=label)
        if floor is not None:  # a red line across the bar, labelled on its left
            bar.ax.axhline(floor["p95"], color="#d62728", linewidth=2)
            bar.ax.set_yticks([floor["p95"]], labels=[f"floor {floor['p95']:.2f}"], minor=True)
            bar.ax.tick_params(which="minor", left=True, labelleft=True, right=False, labelright=False,
                               labelsize=7, labelcolor="#d62728", color="#d62728", length=3)
    notes = []
    if floored:
        notes.append("grey cells: below the noise floor (95th percentile of CKA between independent Gaussian "
                     "matrices of the same size, same estimator; red mark on each colour bar)")
    if undefined:
        notes.append(UNDEFINED_NOTE)
    if notes:
        fig.text(0.0, -0.005, "\n".join(notes), fontsize=7, color="0.35", ha="left", va="top")
    fig.suptitle(title)
    return fig


def cka_layer_curves(cka: dict, representation: str = "cls",
                     title: str = "How much fine-tuning changes each layer") -> Figure:
    """CKA between layer l of the pretrained model and layer l of the fine-tuned model, one line per task
    (1 = the same representation up to rotation and scale; lower = changed more); a grey band up to the highest
    task's noise floor (chapters.cka.noise_floor), where a value cannot be told from unrelated representations."""
    lines = [(t, e["layers"][representation]["pretrained_vs_finetuned"]) for t, e in (cka or {}).items()
             if (e or {}).get("layers") and representation in e["layers"]]
    if not lines:
        return message_figure(title, f"no stored CKA values for the {representation!r} representation")
    from .chapters.cka import noise_floor

    fig, axes = new_figure(height=3.0, width=PAGE_WIDTH * 0.8)
    ax = axes[0, 0]
    colors = colors_for([t for t, _ in lines])
    floors = [f["p95"] for f in (noise_floor(e, representation) for e in (cka or {}).values()
                                 if (e or {}).get("layers") and representation in e["layers"]) if f]
    if floors:  # the highest task's floor: below it a value cannot be told from unrelated representations
        ax.axhspan(min(0.0, min(floors)), max(floors), color=BELOW_FLOOR_COLOR, alpha=0.6, linewidth=0, zorder=0,
                   label=f"below the noise floor (up to {max(floors):.2f})")
    for task, values in lines:
        v = np.array([np.nan if x is None else x for x in values], dtype=float)
        ax.plot(range(len(v)), v, marker="o", markersize=3.5, color=colors[task], label=task)
    n = max(len(v) for _, v in lines)
    ax.set_xticks(range(n))
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("CKA(pretrained, fine-tuned)")
    ax.legend(title="task", loc="lower left", frameon=False)
    fig.suptitle(f"{title} ({representation} representation)")
    return fig


def _score_limits(values, min_span: float = 10.0, pad: float = 0.08) -> tuple[float, float]:
    """y-limits spanning `values` (scores, the full model, the majority baseline) with a margin, and at least
    `min_span` points, so that a difference of a fraction of a point is not blown up to fill the panel."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    margin = pad * (hi - lo)
    return lo - margin, hi + margin


def layer_drop_curves(table: pd.DataFrame, tolerance: float = 1.0, ncols: int = 3,
                      title: str = "Dropping the top layers: the fine-tuned head on a lower layer") -> Figure:
    """One panel per task: dev score when the fine-tuned head reads layer i (the layers above are dropped, no
    re-tuning), the full model's score and a band `tolerance` points below it, and the majority baseline. A task
    whose full model is at or below the majority baseline (column `informative` False, else computed from `full`
    and `majority`) is drawn grey with 'model did not learn this task' and no band. The y-axis spans the scores,
    the full model and the majority baseline with a margin, and at least 10 points."""
    from .chapters.cka import NOT_LEARNED
    from .verdicts import informative

    data = valid_rows(table, "score")
    if data.empty:
        return message_figure(title, "no stored layer-dropping results")
    tasks = unique(data["task"])
    nrows, ncols = grid_shape(len(tasks), ncols)
    fig, axes = new_figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    any_grey = False
    for ax, task in zip(axes.flat, tasks):
        d = data[data["task"] == task].sort_values("layers_kept")
        full = float(d["full"].iloc[0])
        majority = float(d["majority"].iloc[0]) if "majority" in d and d["majority"].notna().any() else math.nan
        learned = bool(d["informative"].iloc[0]) if "informative" in d else informative(full, majority)
        if learned:
            ax.axhspan(full - tolerance, full, color=PALETTE[2], alpha=0.18, linewidth=0)
            ax.axhline(full, color=PALETTE[2], linewidth=1)
            ax.plot(d["layers_kept"], d["score"], marker="o", markersize=3.5, color=PALETTE[0], zorder=3)
            n = int(d["droppable"].iloc[0])
            ax.set_title(f"{task}: {n} top layer{'s' if n != 1 else ''} droppable")
        else:
            any_grey = True
            ax.set_facecolor("0.95")
            ax.plot(d["layers_kept"], d["score"], marker="o", markersize=3.5, color=NOT_LEARNED_COLOR, zorder=3)
            ax.text(0.5, 0.85, NOT_LEARNED, transform=ax.transAxes, ha="center", va="center", fontsize=9,
                    color="0.3", bbox=dict(facecolor="white", edgecolor="0.7", boxstyle="round,pad=0.3"))
            ax.set_title(f"{task}: not learned", color="0.35")
        if np.isfinite(majority):
            ax.axhline(majority, **MAJORITY_STYLE)
        ax.set_ylim(*_score_limits(list(d["score"]) + [full, majority] + ([full - tolerance] if learned else [])))
        ax.set_xticks(d["layers_kept"].tolist())
        ax.set_xlabel("layers kept (0 = embeddings)")
        ax.set_ylabel("dev score (points)")
    hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", markersize=3.5, label="head on the top kept layer"),
               Line2D([], [], color=PALETTE[2], label="full model"),
               Patch(color=PALETTE[2], alpha=0.18, label=f"within {tolerance:g} point of full"),
               Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    if any_grey:
        handles.append(Line2D([], [], color=NOT_LEARNED_COLOR, marker="o", markersize=3.5,
                              label=f"{NOT_LEARNED} (full model at or below majority)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3 if any_grey else 4, frameon=False)
    fig.suptitle(title)
    return fig
