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
BELOW_FLOOR_COLOR = "0.85"  # heatmap cells below a noise floor
NOT_LEARNED_COLOR = "0.6"   # a layer-dropping panel of a task the model did not learn

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
    """One panel per task: mean over seeds per layer for each variant (band: its 95 % interval, `_spread`, where
    there is one), runs at or below the majority baseline as crosses, the majority baseline dashed."""
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
            colorbar_label: str = "", floor: float | None = None, annot_size: float = 7) -> Figure:
    """A matrix as coloured cells; None/NaN cells are left blank (hatched) and, with `note`, a line under the
    figure says what they mean. Annotated with values when the matrix is small (<= 8 x 8) unless told. `floor`:
    cells below it (e.g. a CKA noise floor) are drawn light grey instead of coloured, their values still written."""
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
    fig, axes = _figure(len(entries), 2, height=len(entries) * (panel + 0.75) + 0.9, width=2 * panel + 1.3)
    undefined = floored = False
    kind = estimator(cka)
    for r, (task, entry, rep) in enumerate(entries):
        floor = noise_floor(entry, representation)
        image = None
        for j, key in enumerate(("pretrained", "finetuned")):
            ax = axes[r, j]
            m = _as_array(rep[key])
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

    fig, axes = _figure(height=3.0, width=PAGE_WIDTH * 0.8)
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

    data = _valid(table, "score")
    if data.empty:
        return message_figure(title, "no stored layer-dropping results")
    tasks = _unique(data["task"])
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=PANEL_HEIGHT * nrows + 0.8)
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
    _hide_unused(axes, len(tasks))
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
        # the seconds are how long the scan took, not a property of the model: they belong in the text, not here
        ax.set_title(f"{r['task']}: all {int(r['pairs']):,} pairs")
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
        _min_span(ax, imp)
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
    data = _valid(conc, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    data = data[data["top"] == top]
    tasks = _unique(data["task"])
    groups = _unique(list(zip(data["model"], data["representation"])))
    colors = colors_for(groups)
    fig, axes = _figure(1, 2, height=PANEL_HEIGHT + 1.3)
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

    data = _valid(frame, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    order = [FULL, ONE_DIM, ONE_DIM_MEAN, K1_HEAD, RANDOM_DIM]
    short = {FULL: "full", ONE_DIM: "CLS\ndim", ONE_DIM_MEAN: "mean\ndim", K1_HEAD: "k=1\nhead",
             RANDOM_DIM: "random\ndims"}
    colors = {FULL: PALETTE[2], ONE_DIM: PALETTE[3], ONE_DIM_MEAN: PALETTE[1], K1_HEAD: PALETTE[0],
              RANDOM_DIM: "0.55"}
    tasks = _unique(data["task"])
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=(PANEL_HEIGHT + 0.4) * nrows + 0.8)
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
    _hide_unused(axes, len(tasks))
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

    data = _valid(frame, "estimate")
    if data.empty:
        return message_figure(title, "no stored outliers analysis")
    tasks = _unique(data["task"])
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=(PANEL_HEIGHT + 0.2) * nrows + 0.8)
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
    _hide_unused(axes, len(tasks))
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
    data = _valid(frame, "overlap")
    if selections is not None and len(data):
        data = data[data["selection"].isin(selections)]
    if data.empty:
        return message_figure(title, "no task with both outlier dimensions and selected dimensions")
    tasks = _unique(data["task"])
    kinds = _unique(data["outlier set"])
    chosen = _unique(data["selection"])
    colors = colors_for(chosen)
    nrows, ncols = _grid(len(tasks), ncols)
    fig, axes = _figure(nrows, ncols, height=(PANEL_HEIGHT + 0.3) * nrows + 0.8)
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
    _hide_unused(axes, len(tasks))
    handles = [Line2D([], [], color=colors[s], marker="o", linestyle="", markeredgecolor="black",
                      markeredgewidth=0.4, label=f"observed: {s}") for s in chosen]
    handles += [Patch(color="0.5", alpha=0.3, label="null: 95 % of chance overlaps (line: their mean)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    return fig


VERDICT_COLOURS = {"supported": PALETTE[2], "partly supported": PALETTE[1], "not supported": PALETTE[3],
                   "inconclusive": PALETTE[4], "not tested": PALETTE[9]}


def verdict_overview(claims: list[dict], title: str = "Every claim the book tests, and our verdict") -> Figure:
    """One row per claim (numbered as in the text), a box in the colour of its verdict."""
    from matplotlib.patches import Patch

    n = len(claims)
    fig, axes = _figure(height=0.32 * n + 1.2)
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
