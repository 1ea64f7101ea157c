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

from .chapters.base import ALL_DIMS
from .chapters.dimension import LEAVE_ONE_OUT

PAGE_WIDTH = 7.0          # inches: the text width of a book page
PANEL_HEIGHT = 2.6        # inches per row of panels
DPI = 110
PALETTE = sns.color_palette("colorblind")
MAJORITY_STYLE = dict(color="0.35", linestyle="--", linewidth=1.0)
UNDEFINED_NOTE = "hatched cells: undefined (e.g. the embedding layer's [CLS] vector is the same for every input)"

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
def _unique(values) -> list:
    out = []
    for v in values:
        if v not in out and not (isinstance(v, float) and math.isnan(v)):
            out.append(v)
    return out


def _figure(rows: int = 1, cols: int = 1, height: float | None = None, width: float = PAGE_WIDTH,
            **kwargs) -> tuple[Figure, np.ndarray]:
    use_style()
    fig = Figure(figsize=(width, height or PANEL_HEIGHT * rows + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def _grid(n: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def message_figure(title: str, message: str) -> Figure:
    """A small figure that says why there is nothing to draw (e.g. no stored results with compute=False)."""
    fig, axes = _figure(height=1.6)
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


def _valid(df: pd.DataFrame | None, column: str) -> pd.DataFrame:
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
def score_bars(df: pd.DataFrame, x: str = "task", hue: str | None = "variant", y: str = "score",
               col: str | None = None, order=None, hue_order=None, col_order=None, labels: dict | None = None,
               title: str = "Scores", xlabel: str | None = None, ylabel: str = "score (points of the task's metric)",
               ncols: int = 3, panel_height: float = PANEL_HEIGHT, kind: str = "bar", majority: bool = True,
               legend_title: str | None = None, rotate: int | None = None) -> Figure:
    """Mean over seeds (bar, or a dot with kind='dot') ± one standard deviation (error bar, when there are at
    least two runs), every run as a point (an 'x' when at or below the majority baseline), and the majority
    baseline of each x as a dashed line. `col` makes one panel per value (e.g. per task); `labels` renames
    x / hue values for display."""
    data = _valid(df, y)
    if data.empty:
        return message_figure(title, "no stored results to draw")
    labels = {**NAMES, **(labels or {})}
    hues = (hue_order or _unique(data[hue])) if hue else [None]
    hues = [h for h in hues if hue is None or (data[hue] == h).any()]
    colors = colors_for(hues) if hue else {None: PALETTE[0]}
    panels = (col_order or _unique(data[col])) if col else [None]
    nrows, ncols = _grid(len(panels), ncols)
    fig, axes = _figure(nrows, ncols, height=panel_height * nrows + 0.9)
    rng = np.random.default_rng(0)
    for ax, panel in zip(axes.flat, panels):
        d = data if col is None else data[data[col] == panel]
        xs = [v for v in (order or _unique(d[x])) if (d[x] == v).any()]
        width = 0.8 / len(hues)
        for i, xv in enumerate(xs):
            for j, hv in enumerate(hues):
                g = d[(d[x] == xv) & ((d[hue] == hv) if hue else True)]
                if g.empty:
                    continue
                pos = i - 0.4 + width * (j + 0.5)
                mean, std = g[y].mean(), g[y].std(ddof=1) if len(g) > 1 else math.nan
                color = colors[hv] if hue else colors_for(xs)[xv]
                if kind == "bar":
                    ax.bar(pos, mean, width * 0.9, color=color, alpha=0.85, zorder=2)
                else:
                    ax.scatter(pos, mean, s=40, color=color, marker="D", zorder=3, edgecolor="black", linewidth=0.5)
                if not math.isnan(std):
                    ax.errorbar(pos, mean, yerr=std, color="black", capsize=2.5, linewidth=1, zorder=3)
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
    _hide_unused(axes, len(panels))
    handles = [Patch(color=colors[h], alpha=0.85, label=str(labels.get(h, h))) for h in hues] if hue else []
    fig.legend(handles=handles + _majority_handles(), loc="outside lower center",
               ncol=min(4, len(handles) + 3), title=legend_title, frameon=False)
    fig.suptitle(title)
    return fig


def layer_curves(df: pd.DataFrame, x: str = "layer_index", hue: str = "variant", y: str = "score",
                 col: str = "task", title: str = "Score when the head reads one layer",
                 xlabel: str = "layer (0 = embeddings)", ylabel: str = "score (points)", ncols: int = 3,
                 hue_order=None) -> Figure:
    """One panel per task: mean over seeds per layer for each variant (band: ± one std when there are several
    seeds), every run as a point, the majority baseline dashed."""
    data = _valid(df, y)
    if data.empty:
        return message_figure(title, "no stored results to draw")
    panels = _unique(data[col])
    hues = hue_order or _unique(data[hue])
    colors = colors_for(hues)
    nrows, ncols = _grid(len(panels), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    rng = np.random.default_rng(0)
    for ax, panel in zip(axes.flat, panels):
        d = data[data[col] == panel]
        for hv in hues:
            g = d[d[hue] == hv]
            if g.empty:
                continue
            stats = g.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3.5, color=colors[hv], label=str(hv), zorder=3)
            if (stats["count"] > 1).any():
                ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), color=colors[hv], alpha=0.2, linewidth=0)
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
    _hide_unused(axes, len(panels))
    handles = [Line2D([], [], color=colors[h], marker="o", markersize=3.5, label=str(h)) for h in hues]
    handles += [Line2D([], [], marker="x", color="#d62728", linestyle="", label="run at or below majority"),
                Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    return fig


# -- matrices ------------------------------------------------------------------------------------------------------
def _as_array(matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def heatmap(matrix, labels=None, ax=None, title: str = "", vmin: float | None = 0.0, vmax: float | None = 1.0,
            cmap: str = "viridis", annotate: bool | None = None, fmt: str = ".2f", colorbar: bool = True,
            xlabel: str = "layer", ylabel: str = "layer", note: bool = True, center: float | None = None,
            colorbar_label: str = "") -> Figure:
    """A matrix as coloured cells; None/NaN cells are left blank (hatched) and, with `note`, a line under the
    figure says what they mean. Annotated with values when the matrix is small (<= 8 x 8) unless told."""
    m = _as_array(matrix)
    own = ax is None
    if own:
        fig, axes = _figure(height=3.6, width=4.4)
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
    for i, j in zip(*np.where(~np.isfinite(m))):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.75", linewidth=0))
    if annotate is None:
        annotate = max(m.shape) <= 8
    if annotate:
        norm = image.norm
        for i in range(n_rows):
            for j in range(n_cols):
                if np.isfinite(m[i, j]):
                    dark = cm(norm(m[i, j]))
                    lum = 0.299 * dark[0] + 0.587 * dark[1] + 0.114 * dark[2]
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
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


def cka_grid(cka: dict, representation: str = "cls", ncols: int = 3, title: str | None = None) -> Figure:
    """For each task, the CKA of every pair of layers in the pretrained model (upper row) and the fine-tuned model
    (lower row), one colour scale 0..1 for all panels; undefined cells hatched."""
    title = title or f"Linear CKA between layers ({representation} representation): pretrained vs fine-tuned"
    entries = [(t, e["layers"][representation]) for t, e in (cka or {}).items()
               if (e or {}).get("layers") and representation in e["layers"]]
    if not entries:
        return message_figure(title, f"no stored CKA matrices for the {representation!r} representation")
    chunks = [entries[i:i + ncols] for i in range(0, len(entries), ncols)]
    cols = min(ncols, len(entries))
    size = min(2.3, PAGE_WIDTH / cols - 0.25)
    fig, axes = _figure(2 * len(chunks), cols, height=2 * len(chunks) * (size + 0.35) + 0.8,
                        width=min(PAGE_WIDTH, cols * (size + 0.5) + 1.6))
    undefined = False
    image = None
    for c, chunk in enumerate(chunks):
        for j in range(cols):
            for r, kind in enumerate(("pretrained", "finetuned")):
                ax = axes[2 * c + r, j]
                if j >= len(chunk):
                    ax.set_visible(False)
                    continue
                task, rep = chunk[j]
                m = _as_array(rep[kind])
                undefined |= not np.isfinite(m).all()
                heatmap(m, ax=ax, colorbar=False, note=False, annotate=len(m) <= 4,
                        title=f"{task}: {'pretrained' if kind == 'pretrained' else 'fine-tuned'}",
                        xlabel="layer", ylabel="layer" if j == 0 else "")
                image = ax.images[0]
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="linear CKA")
    if undefined:
        fig.text(0.0, -0.005, UNDEFINED_NOTE, fontsize=7, color="0.35", ha="left", va="top")
    fig.suptitle(title)
    return fig


def cka_layer_curves(cka: dict, representation: str = "cls",
                     title: str = "How much fine-tuning changes each layer") -> Figure:
    """CKA between layer l of the pretrained model and layer l of the fine-tuned model, one line per task
    (1 = the same representation up to rotation and scale; lower = changed more)."""
    lines = [(t, e["layers"][representation]["pretrained_vs_finetuned"]) for t, e in (cka or {}).items()
             if (e or {}).get("layers") and representation in e["layers"]]
    if not lines:
        return message_figure(title, f"no stored CKA values for the {representation!r} representation")
    fig, axes = _figure(height=3.0, width=PAGE_WIDTH * 0.8)
    ax = axes[0, 0]
    colors = colors_for([t for t, _ in lines])
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


def layer_drop_curves(table: pd.DataFrame, tolerance: float = 1.0, ncols: int = 3,
                      title: str = "Dropping the top layers: the fine-tuned head on a lower layer") -> Figure:
    """One panel per task: dev score when the fine-tuned head reads layer i (the layers above are dropped, no
    re-tuning), the full model's score and a band `tolerance` points below it, and the majority baseline."""
    data = _valid(table, "score")
    if data.empty:
        return message_figure(title, "no stored layer-dropping results")
    tasks = _unique(data["task"])
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
    for ax, task in zip(axes.flat, tasks):
        d = data[data["task"] == task].sort_values("layers_kept")
        full = float(d["full"].iloc[0])
        ax.axhspan(full - tolerance, full, color=PALETTE[2], alpha=0.18, linewidth=0)
        ax.axhline(full, color=PALETTE[2], linewidth=1)
        ax.plot(d["layers_kept"], d["score"], marker="o", markersize=3.5, color=PALETTE[0], zorder=3)
        if "majority" in d and d["majority"].notna().any():
            ax.axhline(d["majority"].iloc[0], **MAJORITY_STYLE)
        n = int(d["droppable"].iloc[0])
        ax.set_title(f"{task}: {n} top layer{'s' if n != 1 else ''} droppable")
        ax.set_xticks(d["layers_kept"].tolist())
        ax.set_xlabel("layers kept (0 = embeddings)")
        ax.set_ylabel("dev score (points)")
    _hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", markersize=3.5, label="head on the top kept layer"),
               Line2D([], [], color=PALETTE[2], label="full model"),
               Patch(color=PALETTE[2], alpha=0.18, label=f"within {tolerance:g} point of full"),
               Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    return fig


def relative_matrix(df: pd.DataFrame, value: str = "relative_b", row: str = "task_a", col: str = "task_b",
                    title: str = "Score on B after fine-tuning on A, relative to fine-tuning on B directly",
                    fmt: str = ".2f", center: float = 1.0, colorbar_label: str = "ratio") -> Figure:
    """An A x B matrix of `value` (diverging colours centred on `center`); the diagonal (A = B) is blank."""
    data = _valid(df, value)
    if data.empty:
        return message_figure(title, "no stored cross-fine-tuning results")
    order = _unique(list(data[row]) + list(data[col]))
    m = data.pivot_table(index=row, columns=col, values=value, aggfunc="mean").reindex(index=order, columns=order)
    spread = float(np.nanmax(np.abs(m.values - center))) if np.isfinite(m.values).any() else 0.1
    spread = max(spread, 0.02 if center == 1.0 else 1.0)
    size = min(PAGE_WIDTH * 0.75, 1.2 + 0.75 * len(order))
    fig, axes = _figure(height=size, width=size + 1.2)
    heatmap(m.values, labels=order, ax=axes[0, 0], vmin=center - spread, vmax=center + spread, cmap="RdBu",
            fmt=fmt, annotate=True, note=False, xlabel="B (fine-tuned second; scored)",
            ylabel="A (fine-tuned first)", colorbar_label=colorbar_label)
    fig.text(0.01, -0.01, "blank diagonal: A = B is not a cross-fine-tuning pair", fontsize=7, color="0.35",
             ha="left", va="top")
    fig.suptitle(title)
    return fig


def delta_heatmap(effects: pd.DataFrame, title: str = "Change against the CLS, all-dims, fine-tuned baseline",
                  colorbar_label: str = "points") -> Figure:
    """Rows = manipulations, columns = tasks, cells = score difference in points (diverging colours at 0)."""
    data = _valid(effects, "delta")
    if data.empty:
        return message_figure(title, "no stored results to compare")
    rows, cols = _unique(data["manipulation"]), _unique(data["task"])
    m = data.pivot_table(index="manipulation", columns="task", values="delta", aggfunc="mean").reindex(
        index=rows, columns=cols)
    spread = max(float(np.nanmax(np.abs(m.values))), 1.0)
    fig, axes = _figure(height=0.45 * len(rows) + 1.6, width=min(PAGE_WIDTH, 2.6 + 0.95 * len(cols)))
    heatmap(m.values, labels=cols, ax=axes[0, 0], vmin=-spread, vmax=spread, cmap="RdBu", fmt="+.1f",
            annotate=True, note=False, xlabel="task", ylabel="", colorbar_label=colorbar_label)
    axes[0, 0].set_yticks(range(len(rows)), rows)
    axes[0, 0].set_aspect("auto")
    fig.suptitle(title)
    return fig


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
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
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
        ax.set_title(f"{r['task']}: {int(r['pairs']):,} pairs in {float(r['seconds']):.1f} s")
        ax.set_xlabel(f"pair's dev {r.get('score', 'score')} (points)")
        ax.set_ylabel("fraction of pairs ≤ x")
    _hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", markersize=3.5, label="quantiles of all pairs"),
               Line2D([], [], color=PALETTE[3], marker="|", linestyle="", markersize=8, label="20 best pairs")]
    if drawn["reference"]:
        handles.append(Line2D([], [], color=PALETTE[2], label="fine-tuned model, all dims"))
    if drawn["majority"]:
        handles.append(Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline"))
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    return fig


def importance_plot(scan: pd.DataFrame, highlight: dict | None = None, ncols: int = 3, label_top: int = 5,
                    title: str = "Dimension importance: the best pair score that each dimension takes part in"
                    ) -> Figure:
    """Per task, every dimension's importance (best score of a pair containing it) in decreasing order; the
    `label_top` best dimensions are labelled and dims in `highlight` {task: [dims]} marked."""
    if scan is None or len(scan) == 0:
        return message_figure(title, "no stored pair scans")
    tasks = list(scan["task"])
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
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
        ax.set_title(str(r["task"]))
        ax.set_xlabel("dimensions, best first")
        ax.set_ylabel("best pair score (points)")
    _hide_unused(axes, len(tasks))
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
    data = _valid(runs, "removal_cost") if runs is not None and "removal_cost" in runs else pd.DataFrame()
    if data.empty:
        return message_figure(title, "no stored leave-one-out runs")
    data = data[data["variant"] == LEAVE_ONE_OUT].copy()
    data["group"] = [f"{t}" + (f" (set {int(b) + 1})" if data["best_set"].max() > 0 else "")
                     for t, b in zip(data["task"], data["best_set"].fillna(0))]
    groups = _unique(data["group"])
    nrows, ncols = _grid(len(groups), ncols)
    fig, axes = _figure(nrows, ncols, height=2.2 * nrows + 0.5)
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
    _hide_unused(axes, len(groups))
    fig.suptitle(title)
    return fig


def masking_contrast(runs: pd.DataFrame, masking: pd.DataFrame, ncols: int = 3,
                     title: str = "Fine-tuning with k dims (the paper) vs masking k dims at inference (not the paper)"
                     ) -> Figure:
    """Per task and k: the random k-dim sets fine-tuned with DropConnect (the paper's protocol) next to the same
    sets masked at inference on the normally fine-tuned model (not the paper's protocol); grey lines join the
    same set; the all-dims score is the green line."""
    r = _valid(runs, "score")
    msk = _valid(masking, "score")
    if r.empty and msk.empty:
        return message_figure(title, "no stored results to draw")
    rnd = r[r["variant"].astype(str).str.startswith("random")] if len(r) else r
    if len(msk) and "split" in msk:  # first evaluation split only (MNLI: matched)
        msk = msk[msk["split"] == msk.groupby("task")["split"].transform("first")]
    tasks = _unique(list(rnd["task"] if len(rnd) else []) + list(msk["task"] if len(msk) else []))
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
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
    _hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=PALETTE[0], marker="o", linestyle="", label="fine-tuned with k dims (DropConnect)"),
               Line2D([], [], color=PALETTE[1], marker="s", linestyle="",
                      label="masked at inference only (not the paper's protocol)"),
               Line2D([], [], color=PALETTE[2], label="all dims"),
               Line2D([], [], **MAJORITY_STYLE, label="majority-class baseline")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    return fig


# -- the setup chapter ---------------------------------------------------------------------------------------------
def compute_bars(runs: pd.DataFrame, title: str = "Compute time of the stored runs the book uses") -> Figure:
    """Horizontal stacked bars: minutes of training + evaluation per experiment (where a run is first used),
    stacked by task."""
    data = _valid(runs, "seconds")
    if data.empty:
        return message_figure(title, "no stored runs yet")
    table = data.pivot_table(index="experiment", columns="task", values="seconds", aggfunc="sum").fillna(0) / 60
    table = table.reindex([e for e in _unique(data["experiment"])])
    tasks = list(table.columns)
    colors = colors_for(tasks)
    fig, axes = _figure(height=0.4 * len(table) + 1.5)
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
