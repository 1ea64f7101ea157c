"""Figures of the book's own pages: the summary's effect heatmap, the setup page's compute bars and the glance
page's verdict overview (the chapters' figures are in figures.py and the *_figures modules, in the same style)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import PAGE_WIDTH, PALETTE, colors_for, heatmap, message_figure, new_figure, unique, valid_rows


def delta_heatmap(effects: pd.DataFrame, title: str = "Change against the CLS, all-dims, fine-tuned baseline",
                  colorbar_label: str = "points") -> Figure:
    """Rows = manipulations, columns = tasks, cells = score difference in points (diverging colours at 0)."""
    data = valid_rows(effects, "delta")
    if data.empty:
        return message_figure(title, "no stored results to compare")
    rows, cols = unique(data["manipulation"]), unique(data["task"])
    m = data.pivot_table(index="manipulation", columns="task", values="delta", aggfunc="mean").reindex(
        index=rows, columns=cols)
    spread = max(float(np.nanmax(np.abs(m.values))), 1.0)
    fig, axes = new_figure(height=0.45 * len(rows) + 1.6, width=min(PAGE_WIDTH, 2.6 + 0.95 * len(cols)))
    heatmap(m.values, labels=cols, ax=axes[0, 0], vmin=-spread, vmax=spread, cmap="RdBu", fmt="+.1f",
            annotate=True, note=False, xlabel="task", ylabel="", colorbar_label=colorbar_label)
    axes[0, 0].set_yticks(range(len(rows)), rows)
    axes[0, 0].set_aspect("auto")
    fig.suptitle(title)
    return fig


# -- the setup chapter ---------------------------------------------------------------------------------------------
def compute_bars(runs: pd.DataFrame, title: str = "Compute time of the stored runs the book uses") -> Figure:
    """Horizontal stacked bars: minutes of training + evaluation per experiment (where a run is first used),
    stacked by task."""
    data = valid_rows(runs, "seconds")
    if data.empty:
        return message_figure(title, "no stored runs yet")
    table = data.pivot_table(index="experiment", columns="task", values="seconds", aggfunc="sum").fillna(0) / 60
    table = table.reindex([e for e in unique(data["experiment"])])
    tasks = list(table.columns)
    colors = colors_for(tasks)
    fig, axes = new_figure(height=0.4 * len(table) + 1.5)
    ax = axes[0, 0]
    left = np.zeros(len(table))
    for task in tasks:
        ax.barh(range(len(table)), table[task], left=left, color=colors[task], label=task)
        left += table[task].to_numpy()
    counts = data.groupby("experiment").size().reindex(table.index)
    for i, (total, n) in enumerate(zip(left, counts)):
        ax.text(total, i, f"  {n} runs", va="center", fontsize=7, color="0.3")
    ax.set_yticks(range(len(table)), table.index)
    ax.invert_yaxis()
    ax.set_xlim(0, left.max() * 1.2 if left.max() > 0 else 1)
    ax.set_xlabel("minutes (training + evaluation + analyses)")
    ax.set_ylabel("experiment (first use)")
    ax.legend(title="task", loc="lower right", frameon=False)
    fig.suptitle(title)
    return fig


VERDICT_COLOURS = {"supported": PALETTE[2], "partly supported": PALETTE[1], "not supported": PALETTE[3],
                   "inconclusive": PALETTE[4], "not tested": PALETTE[9]}


def verdict_overview(claims: list[dict], title: str = "Every claim the book tests, and our verdict") -> Figure:
    """One row per claim (numbered as in the text), a box in the colour of its verdict."""
    from matplotlib.patches import Patch

    n = len(claims)
    fig, axes = new_figure(height=0.32 * n + 1.2)
    ax = axes[0, 0]
    for i, claim in enumerate(claims):
        colour = VERDICT_COLOURS.get(claim["verdict"], "0.5")
        ax.barh(i, 1.0, color=colour, edgecolor="white")
        ax.text(0.02, i, f"{claim['verdict']}", va="center", fontsize=8, color="black")
    ax.set_yticks(range(n), [f"{i}. {c['claim'][:70]}{'…' if len(c['claim']) > 70 else ''}"
                             for i, c in enumerate(claims, start=1)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    ax.set_xlabel("verdict")
    ax.grid(False)
    present = [v for v in VERDICT_COLOURS if any(c["verdict"] == v for c in claims)]
    fig.legend(handles=[Patch(color=VERDICT_COLOURS[v], label=v) for v in present], loc="outside lower center",
               ncol=len(present), frameon=False)
    fig.suptitle(title)
    return fig
