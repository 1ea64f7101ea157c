"""(c) k dimensions of each hidden layer's CLS vector (Fukuhata & Kano 2025): the encoder truncated after layer l,
a head on k dimensions (and on all dimensions) of that layer's [CLS] vector, fine-tuned."""
from __future__ import annotations

import pandas as pd

from ..tables import fmt, frame, row, score_table, sorted_unique, span
from ..verdicts import (FUKUHATA, LOWER_GAP_POINTS, MOST, NOT_SUPPORTED, PARTLY, SUPPORTED, UPPER_SPREAD_POINTS,
                        finished, informative, not_tested, result, share_verdict, stat, tasks_of, uninformative_note)
from .base import Chapter, random_dim_sets

ALL_DIMS_LAYER = "all dims"  # the all-dimensions row of every layer


def k_variant(k: int) -> str:
    return f"k={k}"


class LayerChapter(Chapter):
    name = "layer"

    def compute(self) -> pd.DataFrame:
        """Per task, layer (0 = embeddings .. L) and seed: `dim_sets` random k-dim sets (the dimension grid's
        first ones, so the top layer's runs are shared with it) and all dimensions; the top layer's all-dims run is
        the reference itself. Layer 0's [CLS] vector is the same for every input: it can show only the majority
        baseline, never what the embeddings hold."""
        sec = self.section
        k = sec["k"]
        sets = random_dim_sets(k, sec["dim_sets"], self.hidden)
        rows = []
        for task in self.profile.tasks:
            for seed in self.profile.seeds[:sec["n_seeds"]]:
                for layer in range(self.n_layers + 1):
                    at = None if layer == self.n_layers else layer  # the top layer is the untruncated model
                    for i, d in enumerate(sets):
                        rec = self.runner.run(self.base(task, layer=at, dims=d, seed=seed))
                        rows.append(row(rec, variant=k_variant(k), layer_index=layer, subset=i))
                    rec = self.baseline(task, seed) if at is None else self.runner.run(self.base(task, layer=at,
                                                                                                 seed=seed))
                    rows.append(row(rec, variant=ALL_DIMS_LAYER, layer_index=layer))
        return frame(rows)


LAYER_CLAIM = ("Reading k dimensions from lower layers scores lower; the higher layers differ little "
               "from one another.")


def layer_halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Lower = encoder layers 1..floor(L/2), upper = floor(L/2)+1..L. The embedding layer (0) is left out: its
    CLS vector is the same for every input, so it scores the majority baseline by construction."""
    half = n_layers // 2
    return list(range(1, half + 1)), list(range(half + 1, n_layers + 1))


def layer_claim(layers: pd.DataFrame) -> dict:
    """Per task, on the k-dims curve: gap = mean(upper) - mean(lower) >= LOWER_GAP_POINTS ('lower contribute
    less') and spread = max(upper) - min(upper) <= UPPER_SPREAD_POINTS ('higher differ little').
    Supported if both hold on most tasks; partly if one of them does; else not supported."""
    layers = finished(layers)
    if layers.empty or "layer_index" not in layers:
        return not_tested(LAYER_CLAIM, FUKUHATA, "no layer runs")
    n_layers = int(layers.layer_index.max())
    lower, upper = layer_halves(n_layers)
    if not lower or not upper:
        return not_tested(LAYER_CLAIM, FUKUHATA, f"the model has {n_layers} layer(s); lower and upper halves "
                           "need at least 2")
    k_dims = next((v for v in sorted_unique(layers.variant) if v != ALL_DIMS_LAYER), None)
    rows = []
    for task in tasks_of(layers):
        t = layers[layers.task == task]
        ref_m, maj, _ = stat(t[(t.variant == ALL_DIMS_LAYER) & (t.layer_index == n_layers)])
        for variant in [v for v in (k_dims, ALL_DIMS_LAYER) if v]:
            curve = t[t.variant == variant].groupby("layer_index").score.mean()
            if not (set(lower) | set(upper)) <= set(curve.index):
                continue
            lo, up = float(curve[lower].mean()), float(curve[upper].mean())
            spread = float(curve[upper].max() - curve[upper].min())
            rows.append({"task": task, "variant": variant, "lower_mean": lo, "upper_mean": up, "gap": up - lo,
                         "upper_spread": spread, "majority": maj, "informative": informative(ref_m, maj),
                         "lower_less": up - lo >= LOWER_GAP_POINTS, "upper_flat": spread <= UPPER_SPREAD_POINTS})
    details = pd.DataFrame(rows)
    kd = details[details.variant == k_dims] if len(details) else details
    if kd.empty:
        return not_tested(LAYER_CLAIM, FUKUHATA, "no task has k-dim runs at every layer", details)
    info = kd[kd.informative]
    note = uninformative_note(kd[~kd.informative].task.tolist(), "the full model")
    if info.empty:
        return not_tested(LAYER_CLAIM, FUKUHATA, f"no informative task.{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task}: lower {fmt(r.lower_mean)}, upper {fmt(r.upper_mean)} "
                      f"(spread {fmt(r.upper_spread)})" for r in kd.itertuples())
    n_less, n_flat = int(info.lower_less.sum()), int(info.upper_flat.sum())
    both = int((info.lower_less & info.upper_flat).sum())
    verdict = share_verdict(both, len(info), "most")
    if verdict != SUPPORTED:
        verdict = PARTLY if max(n_less, n_flat) > MOST * len(info) else NOT_SUPPORTED
    text = (f"{k_dims} of each layer's CLS vector, mean score of the lower layers "
            f"({span(lower)}) and the upper layers ({span(upper)}): {parts}. Lower layers are at least "
            f"{LOWER_GAP_POINTS:g} points below the upper ones on {n_less} of {len(info)} informative tasks; the "
            f"upper layers lie within {UPPER_SPREAD_POINTS:g} points of one another on {n_flat} of "
            f"{len(info)}.{note}")
    return result(LAYER_CLAIM, FUKUHATA, text, verdict, details)


def layer_tables(layers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{variant: score table with one row per layer and one column per task}."""
    if layers is None or len(layers) == 0 or "variant" not in layers:
        return {}
    return {v: score_table(layers[layers["variant"] == v], rows="layer_index", rename={"layer_index": "layer"})
            for v in sorted_unique(layers["variant"])}


