"""Figures of the book, in one style: seaborn 'whitegrid', the colour-blind palette, fonts readable at a book
page's width (PAGE_WIDTH inches), every figure with a title and axis labels.

Every function returns a `matplotlib.figure.Figure` built without pyplot: nothing is shown or registered as a
side effect, so a notebook shows each figure exactly once with `display(fig)`. Scores are points of each task's
main metric; a run at or below the majority-class baseline is drawn with an 'x' (kept, never dropped), and the
majority baseline itself as a dashed grey line. Missing values (runs that are not stored) are skipped; an empty
input gives a figure that says so instead of an error.
"""
from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

PAGE_WIDTH = 7.0          # inches: the text width of a book page
PANEL_HEIGHT = 2.6        # inches per row of panels
DPI = 110
PALETTE = sns.color_palette("colorblind")
MAJORITY_STYLE = dict(color="0.35", linestyle="--", linewidth=1.0)
UNDEFINED_NOTE = "hatched cells: undefined (e.g. the embedding layer's [CLS] vector is the same for every input)"
BELOW_FLOOR_COLOR = "0.85"  # heatmap cells below a noise floor

NAMES = {  # display names of variants used across notebooks
    "cls": "CLS", "max_norm": "max-norm token", "mean": "mean of tokens", "max": "element-wise max",
    "pooler": "BERT pooler (reference)",
}


def use_style() -> None:
    """The book's matplotlib/seaborn style (idempotent)."""
    sns.set_theme(style="whitegrid", palette="colorblind", font_scale=0.85)
    mpl.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": DPI, "figure.facecolor": "white", "savefig.facecolor": "white",
        "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
        "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 11, "figure.titleweight": "bold",
        "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
    })


use_style()


# -- helpers -------------------------------------------------------------------------------------------------------
def unique(values) -> list:
    out = []
    for v in values:
        if v not in out and not (isinstance(v, float) and math.isnan(v)):
            out.append(v)
    return out


def new_figure(rows: int = 1, cols: int = 1, height: float | None = None, width: float = PAGE_WIDTH,
            **kwargs) -> tuple[Figure, np.ndarray]:
    use_style()
    fig = Figure(figsize=(width, height or PANEL_HEIGHT * rows + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def message_figure(title: str, message: str) -> Figure:
    """A small figure that says why there is nothing to draw (e.g. no stored results with compute=False)."""
    fig, axes = new_figure(height=1.6)
    ax = axes[0, 0]
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3", wrap=True,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.grid(False)
    fig.suptitle(title)
    return fig


def valid_rows(df: pd.DataFrame | None, column: str) -> pd.DataFrame:
    if df is None or len(df) == 0 or column not in df:
        return pd.DataFrame()
    return df[df[column].notna()]


def colors_for(values) -> dict:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}


def _majority_handles() -> list:
    return [Line2D([], [], marker="o", color="black", linestyle="", markersize=4, label="one run (seed)"),
            Line2D([], [], marker="x", color="#d62728", linestyle="", markersize=5,
                   label="run at or below majority"),
            Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]


def _seed_points(ax, pos: float, values, below, width: float, rng) -> None:
    values, below = np.asarray(values, float), np.asarray(below, bool)
    jitter = (rng.random(len(values)) - 0.5) * width * 0.5
    ok = ~below
    ax.scatter(pos + jitter[ok], values[ok], s=10, color="black", zorder=4, linewidths=0)
    if below.any():
        ax.scatter(pos + jitter[below], values[below], s=22, color="#d62728", marker="x", zorder=5, linewidths=1.2)


# -- scores --------------------------------------------------------------------------------------------------------
def _spread(g: pd.DataFrame, y: str) -> tuple[float, float] | None:
    """(low, high) drawn around a group's mean: for y='score' its 95 % interval (verdicts.score_interval: a
    bootstrap over dev examples and runs where the runs stored predictions, else a t-interval over the runs), for
    any other column mean ± one standard deviation; None when there is none (one run without predictions)."""
    from .comparisons import defined, score_interval

    if y == "score":
        iv = score_interval(g)
        return (iv.low, iv.high) if defined(iv) else None
    if len(g) < 2:
        return None
    mean, std = float(g[y].mean()), float(g[y].std(ddof=1))
    return mean - std, mean + std


def score_bars(df: pd.DataFrame, x: str = "task", hue: str | None = "variant", y: str = "score",
               col: str | None = None, order=None, hue_order=None, col_order=None, labels: dict | None = None,
               title: str = "Scores", xlabel: str | None = None, ylabel: str = "score (points of the task's metric)",
               ncols: int = 3, panel_height: float = PANEL_HEIGHT, kind: str = "bar", majority: bool = True,
               legend_title: str | None = None, rotate: int | None = None) -> Figure:
    """Mean over seeds (bar, or a dot with kind='dot') with its 95 % interval as the error bar (`_spread`; none for
    one run without predictions), every run as a point (an 'x' when at or below the majority baseline), and the majority
    baseline of each x as a dashed line. `col` makes one panel per value (e.g. per task); `labels` renames
    x / hue values for display."""
    data = valid_rows(df, y)
    if data.empty:
        return message_figure(title, "no stored results to draw")
    labels = {**NAMES, **(labels or {})}
    hues = (hue_order or unique(data[hue])) if hue else [None]
    hues = [h for h in hues if hue is None or (data[hue] == h).any()]
    colors = colors_for(hues) if hue else {None: PALETTE[0]}
    panels = (col_order or unique(data[col])) if col else [None]
    nrows, ncols = grid_shape(len(panels), ncols)
    fig, axes = new_figure(nrows, ncols, height=panel_height * nrows + 0.9)
    rng = np.random.default_rng(0)
    for ax, panel in zip(axes.flat, panels):
        d = data if col is None else data[data[col] == panel]
        xs = [v for v in (order or unique(d[x])) if (d[x] == v).any()]
        width = 0.8 / len(hues)
        for i, xv in enumerate(xs):
            for j, hv in enumerate(hues):
                g = d[(d[x] == xv) & ((d[hue] == hv) if hue else True)]
                if g.empty:
                    continue
                pos = i - 0.4 + width * (j + 0.5)
                mean, spread = g[y].mean(), _spread(g, y)
                color = colors[hv] if hue else colors_for(xs)[xv]
                if kind == "bar":
                    ax.bar(pos, mean, width * 0.9, color=color, alpha=0.85, zorder=2)
                else:
                    ax.scatter(pos, mean, s=40, color=color, marker="D", zorder=3, edgecolor="black", linewidth=0.5)
                if spread is not None:
                    err = [[max(mean - spread[0], 0.0)], [max(spread[1] - mean, 0.0)]]
                    ax.errorbar(pos, mean, yerr=err, color="black", capsize=2.5, linewidth=1, zorder=3)
                below = g["at_or_below_majority"] if "at_or_below_majority" in g else np.zeros(len(g), bool)
                _seed_points(ax, pos, g[y], below, width, rng)
            if majority and "majority" in d and d.loc[d[x] == xv, "majority"].notna().any():
                ax.hlines(d.loc[d[x] == xv, "majority"].mean(), i - 0.45, i + 0.45, zorder=5, **MAJORITY_STYLE)
        names = [str(labels.get(v, v)) for v in xs]
        long = rotate if rotate is not None else (30 if max((len(n) for n in names), default=0) * len(xs) > 60 else 0)
        ax.set_xticks(range(len(xs)), names, rotation=long, ha="right" if long else "center")
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel(xlabel if xlabel is not None else x)
        index = list(axes.flat).index(ax)
        ax.set_ylabel(ylabel if index % ncols == 0 else "")
        if panel is not None:
            ax.set_title(str(panel))
    hide_unused(axes, len(panels))
    handles = [Patch(color=colors[h], alpha=0.85, label=str(labels.get(h, h))) for h in hues] if hue else []
    fig.legend(handles=handles + _majority_handles(), loc="outside lower center",
               ncol=min(4, len(handles) + 3), title=legend_title, frameon=False)
    fig.suptitle(title)
    return fig


def layer_curves(df: pd.DataFrame, x: str = "layer_index", hue: str = "variant", y: str = "score",
                 col: str = "task", title: str = "Score when the head reads one layer",
                 xlabel: str = "layer (0 = embeddings)", ylabel: str = "score (points)", ncols: int = 3,
                 hue_order=None) -> Figure:
    """One panel per task: mean over seeds per layer for each variant (band: its 95 % interval, `_spread`, where
    there is one), runs at or below the majority baseline as crosses, the majority baseline dashed."""
    data = valid_rows(df, y)
    if data.empty:
        return message_figure(title, "no stored results to draw")
    panels = unique(data[col])
    hues = hue_order or unique(data[hue])
    colors = colors_for(hues)
    nrows, ncols = grid_shape(len(panels), ncols)
    fig, axes = new_figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    rng = np.random.default_rng(0)
    for ax, panel in zip(axes.flat, panels):
        d = data[data[col] == panel]
        for hv in hues:
            g = d[d[hue] == hv]
            if g.empty:
                continue
            stats = g.groupby(x)[y].agg(["mean", "count"]).sort_index()
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3.5, color=colors[hv], label=str(hv), zorder=3)
            spreads = {xv: _spread(g[g[x] == xv], y) for xv in stats.index}
            if any(v is not None for v in spreads.values()):
                low = [spreads[xv][0] if spreads[xv] else m for xv, m in stats["mean"].items()]
                high = [spreads[xv][1] if spreads[xv] else m for xv, m in stats["mean"].items()]
                ax.fill_between(stats.index, low, high, color=colors[hv], alpha=0.2, linewidth=0)
            below = g["at_or_below_majority"].astype(bool) if "at_or_below_majority" in g else \
                pd.Series(False, index=g.index)
            if below.any():
                xs = g.loc[below, x] + (rng.random(below.sum()) - 0.5) * 0.15
                ax.scatter(xs, g.loc[below, y], marker="x", color="#d62728", s=20, zorder=5, linewidths=1.1)
        if "majority" in d and d["majority"].notna().any():
            ax.axhline(d["majority"].mean(), zorder=1, **MAJORITY_STYLE)
        layers = sorted(d[x].unique())
        ax.set_xticks(layers)
        ax.set_title(str(panel))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    hide_unused(axes, len(panels))
    handles = [Line2D([], [], color=colors[h], marker="o", markersize=3.5, label=str(h)) for h in hues]
    handles += [Line2D([], [], marker="x", color="#d62728", linestyle="", label="run at or below majority"),
                Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    return fig


# -- matrices ------------------------------------------------------------------------------------------------------
def as_array(matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def heatmap(matrix, labels=None, ax=None, title: str = "", vmin: float | None = 0.0, vmax: float | None = 1.0,
            cmap: str = "viridis", annotate: bool | None = None, fmt: str = ".2f", colorbar: bool = True,
            xlabel: str = "layer", ylabel: str = "layer", note: bool = True, center: float | None = None,
            colorbar_label: str = "", floor: float | None = None, annot_size: float = 7) -> Figure:
    """A matrix as coloured cells; None/NaN cells are left blank (hatched) and, with `note`, a line under the
    figure says what they mean. Annotated with values when the matrix is small (<= 8 x 8) unless told. `floor`:
    cells below it (e.g. a CKA noise floor) are drawn light grey instead of coloured, their values still written."""
    m = as_array(matrix)
    own = ax is None
    if own:
        fig, axes = new_figure(height=3.6, width=4.4)
        ax = axes[0, 0]
    fig = ax.figure
    n_rows, n_cols = m.shape
    labels = [str(v) for v in (labels if labels is not None else range(n_cols))]
    row_labels = labels if len(labels) == n_rows else [str(i) for i in range(n_rows)]
    if center is not None and (vmin is None or vmax is None):
        spread = np.nanmax(np.abs(m - center)) if np.isfinite(m).any() else 1.0
        spread = spread or 1.0
        vmin, vmax = center - spread, center + spread
    cm = mpl.colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cm, vmin=vmin, vmax=vmax, aspect="equal", origin="upper")
    below = np.isfinite(m) & (m < floor) if floor is not None else np.zeros(m.shape, dtype=bool)
    if below.any():
        grey = mpl.colors.ListedColormap([BELOW_FLOOR_COLOR])
        ax.imshow(np.ma.masked_where(~below, np.zeros(m.shape)), cmap=grey, vmin=0, vmax=1, aspect="equal",
                  origin="upper")
    for i, j in zip(*np.where(~np.isfinite(m))):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.75", linewidth=0))
    if annotate is None:
        annotate = max(m.shape) <= 8
    if annotate:
        norm = image.norm
        for i in range(n_rows):
            for j in range(n_cols):
                if np.isfinite(m[i, j]):
                    dark = mpl.colors.to_rgba(BELOW_FLOOR_COLOR) if below[i, j] else cm(norm(m[i, j]))
                    lum = 0.299 * dark[0] + 0.587 * dark[1] + 0.114 * dark[2]
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=annot_size,
                            color="black" if lum > 0.5 else "white")
    rotate = sum(len(s) for s in labels) > 6 * n_cols and max(len(s) for s in labels) > 6
    ax.set_xticks(range(n_cols), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n_rows), row_labels)
    ax.grid(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if own:
        fig.suptitle(title or "Similarity matrix")
    elif title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, shrink=0.85, label=colorbar_label)
    if note and not np.isfinite(m).all():
        fig.text(0.01, -0.01, UNDEFINED_NOTE, fontsize=7, color="0.35", ha="left", va="top")
    return fig


def relative_matrix(df: pd.DataFrame, value: str = "relative_b", row: str = "task_a", col: str = "task_b",
                    title: str = "Score on B after fine-tuning on A, relative to fine-tuning on B directly",
                    fmt: str = ".2f", center: float = 1.0, colorbar_label: str = "ratio") -> Figure:
    """An A x B matrix of `value` (diverging colours centred on `center`); the diagonal (A = B) is blank."""
    data = valid_rows(df, value)
    if data.empty:
        return message_figure(title, "no stored cross-fine-tuning results")
    order = unique(list(data[row]) + list(data[col]))
    m = data.pivot_table(index=row, columns=col, values=value, aggfunc="mean").reindex(index=order, columns=order)
    spread = float(np.nanmax(np.abs(m.values - center))) if np.isfinite(m.values).any() else 0.1
    spread = max(spread, 0.02 if center == 1.0 else 1.0)
    size = min(PAGE_WIDTH * 0.75, 1.2 + 0.75 * len(order))
    fig, axes = new_figure(height=size, width=size + 1.2)
    heatmap(m.values, labels=order, ax=axes[0, 0], vmin=center - spread, vmax=center + spread, cmap="RdBu",
            fmt=fmt, annotate=True, note=False, xlabel="B (fine-tuned second; scored)",
            ylabel="A (fine-tuned first)", colorbar_label=colorbar_label)
    fig.text(0.01, -0.01, "blank diagonal: A = B is not a cross-fine-tuning pair", fontsize=7, color="0.35",
             ha="left", va="top")
    fig.suptitle(title)
    return fig
