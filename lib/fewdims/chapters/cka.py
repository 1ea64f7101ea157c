"""CKA between all layer pairs and dropping the top layers (Phang, Liu & Bowman 2021), read from the analyses the
reference run carries (`extra.layers` of its record): no run of its own."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ..cka import best_split
from ..errors import FewdimsError
from ..runner import score
from ..tables import fmt, sorted_unique, span
from ..tasks import get_task
from ..verdicts import (BLOCK_CONTRAST, DROP_POINTS, MIN_BLOCK_LAYERS, NOT_SUPPORTED, PARTLY, PHANG, SUPPORTED,
                        informative, not_tested, result, share_verdict, uninformative_note)
from .base import Chapter


class CkaChapter(Chapter):
    name = "cka"

    def compute(self) -> dict:
        """{task display: {'layers': the stored analysis, 'score', 'metric', 'key'}} for every stored reference."""
        out = {}
        for task in self.profile.tasks:
            rec = self.baseline(task)
            if rec.get("missing"):
                continue
            out[get_task(task).display] = {"layers": rec.get("extra", {}).get("layers"), "score": score(rec),
                                            "metric": get_task(task).main_metric, "key": rec["key"]}
        return out


BLOCK_CLAIM = "After fine-tuning, the CKA similarity of all layer pairs shows a block-diagonal structure."
DROP_CLAIM = "The top layers of a fine-tuned model can be dropped (head kept, no re-tuning) with little loss."


def as_matrix(matrix) -> np.ndarray:
    """A stored CKA matrix (lists with None for undefined entries) as a float array with NaN."""
    return np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def defined_layers(matrix) -> list[int]:
    """Layers whose representation is defined (diagonal not NaN), e.g. not the embedding layer's constant CLS."""
    m = as_matrix(matrix)
    return [i for i in range(len(m)) if not math.isnan(m[i, i])]


def block_split(matrix) -> dict:
    """fewdims.cka.best_split on the defined layers of a stored matrix: {'layers': defined layer indices,
    'split': first layer of the upper block (a real layer index), 'contrast'}; split None if < 3 layers."""
    m = as_matrix(matrix)
    keep = defined_layers(matrix)
    sub = m[np.ix_(keep, keep)]
    ok = [i for i in range(len(keep)) if np.all(np.isfinite(sub[i]))]
    keep, sub = [keep[i] for i in ok], sub[np.ix_(ok, ok)]
    if len(keep) < MIN_BLOCK_LAYERS:
        return {"layers": keep, "split": None, "contrast": math.nan}
    s, contrast = best_split(sub)
    return {"layers": keep, "split": keep[s], "contrast": contrast}


def _layers_entry(entry: dict, representation: str):
    layers = (entry or {}).get("layers") or {}
    if representation not in layers:
        return None
    return layers[representation]


def block_table(cka: dict, representation: str = "cls") -> pd.DataFrame:
    """Per task: the best two-block split of the fine-tuned and of the pretrained CKA matrix (defined layers only)
    and its contrast (mean within-block minus mean between-block similarity)."""
    rows = []
    for task, entry in (cka or {}).items():
        rep = _layers_entry(entry, representation)
        if rep is None:
            continue
        ft, pre = block_split(rep["finetuned"]), block_split(rep["pretrained"])
        n = len(as_matrix(rep["finetuned"]))
        rows.append({"task": task, "layers": n - 1, "defined layers": span(ft["layers"]) if ft["layers"] else "none",
                     "fine-tuned split": _blocks(ft), "fine-tuned contrast": ft["contrast"],
                     "pretrained split": _blocks(pre), "pretrained contrast": pre["contrast"],
                     "block": ft["contrast"] >= BLOCK_CONTRAST if not math.isnan(ft["contrast"]) else False})
    return pd.DataFrame(rows)


def block_table_shown(cka: dict, representation: str = "cls") -> pd.DataFrame:
    """block_table for display: contrasts to 3 decimals, 'n/a (fewer than 3 defined layers)' where no split exists."""
    table = block_table(cka, representation)
    for column in ("fine-tuned contrast", "pretrained contrast"):
        if column in table:
            table[column] = [f"n/a (fewer than {MIN_BLOCK_LAYERS} defined layers)" if math.isnan(x) else f"{x:.3f}"
                             for x in table[column]]
    return table


def _blocks(split: dict) -> str:
    if split["split"] is None:
        return "n/a"
    first, last = split["layers"][0], split["layers"][-1]
    lo = f"{first}" if split["split"] - 1 == first else f"{first}-{split['split'] - 1}"
    hi = f"{split['split']}" if split["split"] == last else f"{split['split']}-{last}"
    return f"[{lo}] [{hi}]"


def cka_block_claim(cka: dict, representation: str = "cls") -> dict:
    """Block = fine-tuned contrast >= BLOCK_CONTRAST. Supported if a block on every task and stronger than in the
    pretrained model on every task; partly if a block on at least one task; else not supported."""
    table = block_table(cka, representation)
    if table.empty:
        return not_tested(BLOCK_CLAIM, PHANG, f"no stored CKA matrices for the {representation!r} representation",
                           table)
    tested = table[table["fine-tuned contrast"].notna()]
    if tested.empty:
        return not_tested(BLOCK_CLAIM, PHANG, f"fewer than {MIN_BLOCK_LAYERS} layers with a defined "
                           f"{representation} representation, so no two-block split can be measured", table)
    parts = "; ".join(f"{r['task']}: {r['fine-tuned split']} contrast {fmt(r['fine-tuned contrast'], 2)} "
                      f"(pretrained {fmt(r['pretrained contrast'], 2)})" for _, r in tested.iterrows())
    blocks = int(tested.block.sum())
    stronger = int((tested.block & (tested["fine-tuned contrast"] > tested["pretrained contrast"].fillna(-1))).sum())
    verdict = SUPPORTED if stronger == len(tested) else PARTLY if blocks else NOT_SUPPORTED
    text = (f"Best two-block split of the fine-tuned {representation} CKA matrix (layers in brackets) and its "
            f"contrast, within minus between blocks: {parts}. A block (contrast >= {BLOCK_CONTRAST:g}) appears on "
            f"{blocks} of {len(tested)} tasks, stronger than in the pretrained model on {stronger}.")
    return result(BLOCK_CLAIM, PHANG, text, verdict, table)


def layer_drop_table(cka: dict, majority: dict | None = None) -> pd.DataFrame:
    """Per task and number of layers kept (0 = embeddings only .. L = full): the dev score of the fine-tuned head
    on that layer (no re-tuning), its loss against the full model, and `droppable` = how many top layers can be
    dropped (consecutively from the top) with the score within DROP_POINTS of the full model."""
    rows = []
    for task, entry in (cka or {}).items():
        drop = ((entry or {}).get("layers") or {}).get("layer_drop")
        if not drop:
            continue
        metric = entry.get("metric") or get_task(task).main_metric
        scores = [100.0 * d[metric] for d in drop]
        full = scores[-1]
        n = 0
        while n + 1 < len(scores) and scores[-2 - n] >= full - DROP_POINTS:
            n += 1
        maj = (majority or {}).get(task, math.nan)
        for kept, s in enumerate(scores):
            rows.append({"task": task, "layers_kept": kept, "score": s, "full": full, "loss": full - s,
                         "droppable": n, "majority": maj})
    return pd.DataFrame(rows)


def layer_drop_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Dev score (points) by layers kept (rows) and task (columns, in the book's order)."""
    if table is None or len(table) == 0:
        return pd.DataFrame()
    out = table.pivot(index="layers_kept", columns="task", values="score")[sorted_unique(table["task"])]
    out.columns.name = None
    return out.rename_axis("layers kept").round(1)


def layer_drop_claim(cka: dict, majority: dict | None = None) -> dict:
    """Droppable = at least one top layer within DROP_POINTS of the full model; rule 'all' over informative tasks
    (full model above the majority baseline, when `majority` {task: points} is given)."""
    table = layer_drop_table(cka, majority)
    if table.empty:
        return not_tested(DROP_CLAIM, PHANG, "no stored layer-dropping results", table)
    per = table.groupby("task", sort=False).agg(full=("full", "first"), droppable=("droppable", "first"),
                                                layers=("layers_kept", "max"), majority=("majority", "first"))
    per["informative"] = [informative(f, m) for f, m in zip(per.full, per.majority)]
    info = per[per.informative]
    note = uninformative_note([t for t in per.index if not per.informative[t]], "the full model")
    if info.empty:
        return not_tested(DROP_CLAIM, PHANG, f"no informative task.{note}".rstrip("."), table)
    parts = "; ".join(f"{t}: {int(r.droppable)} of {int(r.layers)} (full {fmt(r.full)})" for t, r in per.iterrows())
    hits = int((info.droppable >= 1).sum())
    text = (f"Top layers that can be dropped with the dev score within {DROP_POINTS:g} point of the full model "
            f"(fine-tuned head kept, no re-tuning): {parts}. At least one layer can be dropped on {hits} of "
            f"{len(info)} informative tasks.{note}")
    return result(DROP_CLAIM, PHANG, text, share_verdict(hits, len(info), "all"), table)


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



def check_representation(cka: dict, representation: str) -> None:
    """Raise a FewdimsError naming the stored representations if `representation` is not among them."""
    for entry in (cka or {}).values():
        layers = (entry or {}).get("layers") or {}
        reps = layers.get("params", {}).get("representations")
        if reps and representation not in reps:
            raise FewdimsError(f"representation={representation!r} was not stored; this profile stores "
                               f"{', '.join(map(repr, reps))} (cka.representations in its params file)")
