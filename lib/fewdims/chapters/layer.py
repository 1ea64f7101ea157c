"""(c) k dimensions of each hidden layer's CLS vector (Fukuhata & Kano 2025): the encoder truncated after layer l,
a head on k dimensions (and on all dimensions) of that layer's [CLS] vector, fine-tuned."""
from __future__ import annotations

import math

import pandas as pd

from ..stats import Interval
from ..tables import frame, row, score_table, sorted_unique, span
from ..comparisons import (BETTER, EQUIVALENT, FAILS, HOLDS, LEFT_OUT, NO, UNDECIDED, UNKNOWN, aggregate, compare,
                           informative_reference, interval_cell, interval_columns, interval_uninformative_note,
                           outcome, row_text, score_interval, settle, tally)
from ..verdicts import (FUKUHATA, INCONCLUSIVE, LOWER_LAYERS_MARGIN, NOT_SUPPORTED, NOT_TESTED, PARTLY, SUPPORTED,
                        UPPER_LAYERS_MARGIN, finished, not_tested, result, tasks_of)
from .base import Chapter, random_dim_sets

ALL_DIMS_LAYER = "all dims"  # the all-dimensions row of every layer


def k_variant(k: int) -> str:
    return f"k={k}"


class LayerChapter(Chapter):
    name = "layer"

    def compute(self) -> pd.DataFrame:
        """Per task, layer (0 = embeddings .. L) and seed: `dim_sets` random k-dim sets (the dimension grid's
        first ones, so the top layer's runs are shared with it) and all dimensions; the top layer's all-dims run is
        the reference itself; `all_dims_per_layer: false` leaves out the other layers' all-dims runs (a contrast
        curve beside the paper's k-dims one; the claim's verdict reads the k-dims curve). With `seed_per_set`, set i trains with the profile's seed i (cycling), so a layer's
        runs vary the training seed as well as the dimensions at no extra cost. Layer 0's [CLS] vector is the same
        for every input: it can show only the majority baseline, never what the embeddings hold."""
        sec = self.section
        k = sec["k"]
        sets = random_dim_sets(k, sec["dim_sets"], self.hidden)
        seeds = self.profile.seeds
        rows = []
        for task in self.tasks:
            for s, seed in enumerate(seeds[:sec["n_seeds"]]):
                for layer in range(self.n_layers + 1):
                    at = None if layer == self.n_layers else layer  # the top layer is the untruncated model
                    for i, d in enumerate(sets):
                        set_seed = seeds[(s + i) % len(seeds)] if sec.get("seed_per_set") else seed
                        rec = self.runner.run(self.base(task, layer=at, dims=d, seed=set_seed))
                        rows.append(row(rec, variant=k_variant(k), layer_index=layer, subset=i))
                    if at is None:  # the top layer's all-dims run is the reference: every curve's anchor
                        rows.append(row(self.baseline(task, seed), variant=ALL_DIMS_LAYER, layer_index=layer))
                    elif sec.get("all_dims_per_layer", True):
                        rec = self.runner.run(self.base(task, layer=at, seed=seed))
                        rows.append(row(rec, variant=ALL_DIMS_LAYER, layer_index=layer))
        return frame(rows)


LAYER_CLAIM = ("Reading k dimensions from lower layers scores lower; the higher layers differ little "
               "from one another.")


def layer_halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Lower = encoder layers 1..floor(L/2), upper = floor(L/2)+1..L. The embedding layer (0) is left out: its
    CLS vector is the same for every input, so it scores the majority baseline by construction."""
    half = n_layers // 2
    return list(range(1, half + 1)), list(range(half + 1, n_layers + 1))


def by_layer(layers: pd.DataFrame) -> pd.DataFrame:
    """Per task, variant and layer: the layer's mean score with its 95 % interval (`score`), and the layer minus the
    top layer of the same variant with the interval of the difference (`vs_top`, verdicts.compare: paired over the
    dev examples where the runs stored predictions) and its outcome under the 'higher layers differ little' rule
    (within +-UPPER_LAYERS_MARGIN: 'holds')."""
    layers = finished(layers)
    if layers.empty or "layer_index" not in layers:
        return pd.DataFrame()
    top = int(layers.layer_index.max())
    rows = []
    for task in tasks_of(layers):
        t = layers[layers.task == task]
        for variant in sorted_unique(t.variant):
            v = t[t.variant == variant]
            ref = v[v.layer_index == top]
            for layer in sorted(int(x) for x in v.layer_index.unique()):
                runs = v[v.layer_index == layer]
                out = {"task": task, "variant": variant, "layer": layer}
                if layer == top or not len(ref):  # the top layer against itself: exactly 0
                    out.update(interval_columns("score", score_interval(runs), float(runs.score.mean()), len(runs)))
                    out.update({"vs_top": 0.0, "vs_top_low": 0.0, "vs_top_high": 0.0, "vs_top_n": len(runs)}
                               if layer == top else interval_columns("vs_top", None, math.nan, 0))
                    out.update({"interval": "", "outcome": "reference" if layer == top else "not run"})
                else:
                    c = compare(ref, runs)
                    out.update(interval_columns("score", c.variant, c.variant_mean, c.n_variant))
                    out.update(interval_columns("vs_top", c.difference, c.variant_mean - c.reference_mean,
                                                min(c.n_reference, c.n_variant)))
                    out.update({"interval": c.method,
                                "outcome": outcome(c.difference, UPPER_LAYERS_MARGIN, EQUIVALENT)})
                rows.append(out)
    return pd.DataFrame(rows)


def _all_hold(outcomes) -> str:
    """HOLDS if every outcome holds, FAILS if one fails, else UNDECIDED (and UNDECIDED for none)."""
    outcomes = list(outcomes)
    if any(o == FAILS for o in outcomes):
        return FAILS
    return HOLDS if outcomes and all(o == HOLDS for o in outcomes) else UNDECIDED


def _both(lower: str, upper: str) -> str:
    """The verdict of a claim of two parts: the same verdict when both agree; partly supported when one part is
    (partly) supported; not supported when one part is and the other is not supported either; a part that cannot
    be tested leaves the other part's verdict, at most partly supported."""
    if upper == NOT_TESTED or lower == NOT_TESTED:
        other = lower if upper == NOT_TESTED else upper
        return PARTLY if other == SUPPORTED else other
    if lower == upper:
        return lower
    if SUPPORTED in (lower, upper) or PARTLY in (lower, upper):
        return PARTLY
    return NOT_SUPPORTED if NOT_SUPPORTED in (lower, upper) else INCONCLUSIVE


def layer_claim(layers: pd.DataFrame) -> dict:
    """Per task and curve (the k-dims curve decides; all dims for contrast):
    - 'lower layers contribute less': the runs of the lower-half layers (layer_halves) against those of the upper
      half, pooled (verdicts.compare; the runs of a half are resampled like seeds): holds if upper minus lower lies
      above +LOWER_LAYERS_MARGIN, fails if below it;
    - 'higher layers differ little': each upper-half layer other than the top against the top layer (by_layer):
      holds if every difference lies within +-UPPER_LAYERS_MARGIN, fails if one lies outside.
    A task counts when the top layer's all-dims interval lies above the majority baseline. Each part gets its
    verdict (verdicts.aggregate); the claim's verdict joins them (_both). The per-layer comparisons are in the
    result's 'by_layer' frame."""
    layers = finished(layers)
    if layers.empty or "layer_index" not in layers:
        return not_tested(LAYER_CLAIM, FUKUHATA, "no layer runs")
    n_layers = int(layers.layer_index.max())
    lower, upper = layer_halves(n_layers)
    if not lower or not upper:
        return not_tested(LAYER_CLAIM, FUKUHATA, f"the model has {n_layers} layer(s); lower and upper halves "
                           "need at least 2")
    k_dims = next((v for v in sorted_unique(layers.variant) if v != ALL_DIMS_LAYER), None)
    per_layer = by_layer(layers)
    rows = []
    for task in tasks_of(layers):
        t = layers[layers.task == task]
        ref = t[(t.variant == ALL_DIMS_LAYER) & (t.layer_index == n_layers)]
        ref_iv = score_interval(ref)
        maj = float(t["majority"].mean()) if "majority" in t else math.nan
        for variant in [v for v in (k_dims, ALL_DIMS_LAYER) if v]:
            v = t[t.variant == variant]
            if not (set(lower) | set(upper)) <= set(v.layer_index):
                continue
            c = compare(v[v.layer_index.isin(lower)], v[v.layer_index.isin(upper)])
            pl = per_layer[(per_layer.task == task) & (per_layer.variant == variant) &
                           per_layer.layer.isin([u for u in upper if u != n_layers])]
            flat = _all_hold(pl.outcome) if len(pl) else "n/a (one upper layer)"
            worst = None
            if len(pl):  # the upper layer that decides: a failing one, else an undecided one, else the farthest
                rank = pl.outcome.map({FAILS: 0, UNDECIDED: 1}).fillna(2) * 1e6 - pl.vs_top.abs().fillna(0)
                worst = pl.loc[rank.idxmin()]
            rows.append({"task": task, "variant": variant,
                         **interval_columns("top", score_interval(v[v.layer_index == n_layers]),
                                            float(v[v.layer_index == n_layers].score.mean()),
                                            int((v.layer_index == n_layers).sum())),
                         **c.columns("lower", "upper", "difference"),
                         "worst_upper_layer": int(worst.layer) if worst is not None else "n/a",
                         **interval_columns("worst_vs_top", None if worst is None else _iv(worst),
                                            math.nan if worst is None else worst.vs_top,
                                            0 if worst is None else worst.vs_top_n),
                         "majority": maj,
                         "informative": informative_reference(ref_iv, float(ref.score.mean()) if len(ref)
                                                              else math.nan, maj),
                         "lower_less": outcome(c.difference, LOWER_LAYERS_MARGIN, BETTER), "upper_flat": flat})
    details = pd.DataFrame(rows)
    kd = details[details.variant == k_dims] if len(details) else details
    if kd.empty:
        return {**not_tested(LAYER_CLAIM, FUKUHATA, "no task has k-dim runs at every layer", details),
                "by_layer": per_layer}
    settle(details, ["lower_less"])
    details.loc[details.informative == NO, "upper_flat"] = LEFT_OUT
    details.loc[(details.informative == UNKNOWN) & details.upper_flat.isin([HOLDS, FAILS]), "upper_flat"] = UNDECIDED
    kd = details[details.variant == k_dims]
    info = kd[kd.informative != NO]
    note = interval_uninformative_note(kd[kd.informative == NO].task.tolist(), "the full model")
    if info.empty:
        return {**not_tested(LAYER_CLAIM, FUKUHATA, f"no informative task.{note}".rstrip("."), details),
                "by_layer": per_layer}
    parts = "; ".join(f"{r.task}: lower {row_text(r, 'lower')}, upper {row_text(r, 'upper')}, difference "
                      f"{row_text(r, 'difference', signed=True)}"
                      + (f"; layer {r.worst_upper_layer} minus the top layer {row_text(r, 'worst_vs_top', True)}"
                         if r.worst_upper_layer != "n/a" else "") for r in kd.itertuples())
    flat_outcomes = [o for o in info.upper_flat if o in (HOLDS, FAILS, UNDECIDED)]
    v_lower, v_upper = aggregate(info.lower_less), aggregate(flat_outcomes)
    text = (f"{k_dims} of each layer's CLS vector, points of each task's metric with 95 % intervals, the lower "
            f"layers ({span(lower)}) and the upper layers ({span(upper)}) pooled: {parts}. 'Lower layers contribute "
            f"less' (upper minus lower above +{LOWER_LAYERS_MARGIN:g} points) {tally(info.lower_less)}: "
            f"{v_lower}. ")
    if flat_outcomes:
        text += (f"'Higher layers differ little' (every upper layer within ±{UPPER_LAYERS_MARGIN:g} points of the "
                 f"top layer) {tally(flat_outcomes)}: {v_upper}.")
    else:
        text += "'Higher layers differ little' is not tested: the upper half has only the top layer."
    methods = sorted_unique(list(kd.interval) + list(per_layer[per_layer.variant == k_dims].interval))
    text += f" 95 % intervals: {'; '.join(m for m in methods if m)}.{note}"
    out = result(LAYER_CLAIM, FUKUHATA, text, _both(v_lower, v_upper), details)
    out["by_layer"] = per_layer
    return out


def vs_top_table(per_layer: pd.DataFrame | None, variant: str | None = None) -> pd.DataFrame:
    """by_layer as a display table for one curve (default: the k-dims one): one row per layer, one column per
    task, each cell the layer minus the top layer with its interval ('−1.2 [−2.5, 0.1]'), 'top layer' for the
    reference row."""
    if per_layer is None or len(per_layer) == 0:
        return pd.DataFrame()
    variant = variant or next((v for v in sorted_unique(per_layer.variant) if v != ALL_DIMS_LAYER), ALL_DIMS_LAYER)
    d = per_layer[per_layer.variant == variant]
    cells = d.assign(cell=[("top layer" if o == "reference" else
                            interval_cell(e, lo, hi, n, signed=True))
                           for o, e, lo, hi, n in zip(d.outcome, d.vs_top, d.vs_top_low, d.vs_top_high, d.vs_top_n)])
    table = cells.pivot(index="layer", columns="task", values="cell")[sorted_unique(d.task)].fillna("not run")
    table.columns.name = None
    table.index.name = f"layer ({variant})"
    return table


def _iv(r) -> Interval | None:
    if math.isnan(r.vs_top_low) or math.isnan(r.vs_top_high):
        return None
    return Interval(float(r.vs_top), float(r.vs_top_low), float(r.vs_top_high), int(r.vs_top_n), "")


def layer_tables(layers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{variant: score table with one row per layer and one column per task}."""
    if layers is None or len(layers) == 0 or "variant" not in layers:
        return {}
    return {v: score_table(layers[layers["variant"] == v], rows="layer_index", rename={"layer_index": "layer"})
            for v in sorted_unique(layers["variant"])}


