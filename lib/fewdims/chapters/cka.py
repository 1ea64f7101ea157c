"""CKA between all layer pairs (Phang, Liu & Bowman 2021), read from the analyses the reference run carries
(`extra.layers` of its record): no run of its own. Dropping the top layers, their other analysis, is in layer_drop.py."""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from .. import verdicts
from ..cka import best_split, block_means, cka_noise_floor, noise_floor_draws
from ..errors import FewdimsError
from ..runner import score
from ..tables import fmt, sorted_unique, span, stored_predictions
from ..tasks import get_task
from ..verdicts import (BLOCK_CONTRAST, NOT_SUPPORTED, PARTLY, PHANG, SUPPORTED, not_tested, result)
from .base import Chapter
# layer dropping, the other half of Phang et al.'s analyses, lives in its own module; its names stay reachable here
from .layer_drop import (DROP_CLAIM, NOT_LEARNED, drop_difference, layer_drop_claim,  # noqa: F401
                         layer_drop_differences, layer_drop_pivot, layer_drop_table, majority_of)

# verdicts.INCONCLUSIVE where it exists (another chapter's rules add it); the same word otherwise
INCONCLUSIVE = getattr(verdicts, "INCONCLUSIVE", "inconclusive")
MIN_BLOCK_SPAN = 2         # a block (a cluster of similar layers) spans at least 2 layers
MIN_DEFINED_LAYERS = 2 * MIN_BLOCK_SPAN  # two such blocks need at least 4 layers with a defined representation
REPRESENTATION_NAMES = {"cls": "[CLS] vector", "mean": "mean of the tokens", "token": "sampled token positions"}


class CkaChapter(Chapter):
    name = "cka"

    def compute(self) -> dict:
        """{task display: {'layers': the stored analysis, 'score', 'metric', 'key', 'width', 'preds', 'labels'}}
        for every stored reference ('width': the backbone's hidden size, for the noise floor of records that did not
        store it; 'preds' / 'labels': the reference's dev predictions, for the intervals of layer dropping)."""
        out = {}
        for task in self.tasks:
            rec = self.baseline(task)
            if rec.get("missing"):
                continue
            preds, labels = stored_predictions(rec)
            out[get_task(task).display] = {"layers": rec.get("extra", {}).get("layers"), "score": score(rec),
                                            "metric": get_task(task).main_metric, "key": rec["key"],
                                            "width": self.hidden, "preds": preds, "labels": labels}
        return out


BLOCK_CLAIM = "After fine-tuning, the CKA similarity of all layer pairs shows a block-diagonal structure."


def _result(claim: str, measured: str, verdict: str, details) -> dict:
    """verdicts.result, also for INCONCLUSIVE while verdicts.VERDICTS may not list it."""
    if verdict in verdicts.VERDICTS:
        return result(claim, PHANG, measured, verdict, details)
    return {"claim": claim, "paper": PHANG, "measured": measured, "verdict": verdict, "details": details}


def as_matrix(matrix) -> np.ndarray:
    """A stored CKA matrix (lists with None for undefined entries) as a float array with NaN."""
    return np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)


def defined_layers(matrix) -> list[int]:
    """Layers whose representation is defined (diagonal not NaN), e.g. not the embedding layer's constant CLS."""
    m = as_matrix(matrix)
    return [i for i in range(len(m)) if not math.isnan(m[i, i])]


def block_split(matrix, min_block: int = MIN_BLOCK_SPAN) -> dict:
    """fewdims.cka.best_split on the defined layers of a stored matrix, both blocks spanning at least `min_block`
    layers: {'layers': defined layer indices, 'split': first layer of the upper block (a real layer index),
    'contrast', 'lower' / 'upper': mean CKA within each block, 'between'}; split None (and NaN) when there are
    fewer than 2 * min_block defined layers."""
    m = as_matrix(matrix)
    keep = defined_layers(matrix)
    sub = m[np.ix_(keep, keep)]
    ok = [i for i in range(len(keep)) if np.all(np.isfinite(sub[i]))]
    keep, sub = [keep[i] for i in ok], sub[np.ix_(ok, ok)]
    if len(keep) < 2 * min_block:
        return {"layers": keep, "split": None, "contrast": math.nan, "lower": math.nan, "upper": math.nan,
                "between": math.nan}
    s, contrast = best_split(sub, min_block)
    lower, upper, between = block_means(sub, s)
    return {"layers": keep, "split": keep[s], "contrast": contrast, "lower": lower, "upper": upper,
            "between": between}


def _layers_entry(entry: dict, representation: str):
    layers = (entry or {}).get("layers") or {}
    if representation not in layers:
        return None
    return layers[representation]


@functools.lru_cache(maxsize=64)
def _floor(n: int, width: int, debiased: bool) -> tuple[float, float, int]:
    f = cka_noise_floor(n, width, debiased, draws=noise_floor_draws(n, width))
    return f.mean, f.p95, f.draws


def noise_floor(entry: dict, representation: str = "cls") -> dict | None:
    """The CKA that unrelated representations of this size reach by chance, for one task's stored analysis:
    {'n', 'width', 'debiased', 'mean', 'p95', 'draws', 'stored'}. Read from the record's params (stored since the
    analysis records its sizes), else computed with fewdims.cka.cka_noise_floor at the stored number of examples
    and the backbone's width (`entry['width']`); None when the size is not known."""
    params = ((entry or {}).get("layers") or {}).get("params") or {}
    debiased = bool(params.get("debiased", False))
    size = (params.get("sizes") or {}).get(representation)
    if size and size.get("noise_floor"):
        f = size["noise_floor"]
        return {"n": size["n"], "width": size["width"], "debiased": debiased, "mean": f["mean"], "p95": f["p95"],
                "draws": f["draws"], "stored": True}
    n = size["n"] if size else params.get("n_examples") if representation != "token" else None
    width = size["width"] if size else (entry or {}).get("width")
    if not n or not width or n < (4 if debiased else 2):
        return None
    mean, p95, draws = _floor(int(n), int(width), debiased)
    return {"n": int(n), "width": int(width), "debiased": debiased, "mean": mean, "p95": p95, "draws": draws,
            "stored": False}


def block_status(ft: dict, pre: dict, floor: dict | None) -> str:
    """Whether one task's fine-tuned matrix shows a block structure, by the book's rule: two blocks of at least
    MIN_BLOCK_SPAN layers whose contrast is at least BLOCK_CONTRAST, each more similar within than to the other
    block (a lone outlying layer paired with a neighbour is no cluster), whose within-block mean CKA both clear
    the noise floor's 95th percentile, and whose contrast is stronger than the pretrained model's."""
    if ft["split"] is None:
        return f"n/a (fewer than {MIN_DEFINED_LAYERS} defined layers)"
    if ft["contrast"] < BLOCK_CONTRAST:
        return f"no block (contrast below {BLOCK_CONTRAST:g})"
    if not min(ft["lower"], ft["upper"]) > ft["between"]:
        return "no block (one side is not a cluster)"
    if floor is not None and not min(ft["lower"], ft["upper"]) > floor["p95"]:
        return "below the noise floor"
    pre_contrast = pre["contrast"] if not math.isnan(pre["contrast"]) else -math.inf
    if not ft["contrast"] > pre_contrast:
        return "block, but no stronger than pretrained"
    return "block"


def block_table(cka: dict, representation: str = "cls") -> pd.DataFrame:
    """Per task: the best split of the fine-tuned and of the pretrained CKA matrix into two blocks of at least
    MIN_BLOCK_SPAN defined layers, its contrast (mean within-block minus mean between-block similarity), the mean
    CKA within each fine-tuned block, the noise floor (95th percentile) at the same size and estimator, and
    `status` (block_status); `block` = the block counts."""
    rows = []
    for task, entry in (cka or {}).items():
        rep = _layers_entry(entry, representation)
        if rep is None:
            continue
        ft, pre = block_split(rep["finetuned"]), block_split(rep["pretrained"])
        floor = noise_floor(entry, representation)
        n = len(as_matrix(rep["finetuned"]))
        status = block_status(ft, pre, floor)
        rows.append({"task": task, "representation": representation, "n": floor["n"] if floor else math.nan,
                     "layers": n - 1, "defined layers": span(ft["layers"]) if ft["layers"] else "none",
                     "fine-tuned split": _blocks(ft), "fine-tuned contrast": ft["contrast"],
                     "lower block CKA": ft["lower"], "upper block CKA": ft["upper"],
                     "noise floor": floor["p95"] if floor else math.nan,
                     "pretrained split": _blocks(pre), "pretrained contrast": pre["contrast"],
                     "status": status, "block": status == "block"})
    return pd.DataFrame(rows)


def block_table_shown(cka: dict, representation: str = "cls") -> pd.DataFrame:
    """block_table for display: numbers to 3 decimals, words where a number does not exist (no NaN cells)."""
    table = block_table(cka, representation)
    if table.empty:
        return table
    none = "n/a"  # the status column says why (fewer than MIN_DEFINED_LAYERS defined layers)
    for column in ("fine-tuned contrast", "pretrained contrast", "lower block CKA", "upper block CKA"):
        table[column] = [none if math.isnan(x) else f"{x:.3f}" for x in table[column]]
    table["noise floor"] = ["unknown (size not stored)" if math.isnan(x) else f"{x:.3f}" for x in table["noise floor"]]
    table["n"] = ["unknown" if math.isnan(x) else f"{int(x):,}" for x in table["n"]]
    table["block"] = ["yes" if b else "no" for b in table["block"]]
    return table


def block_tables_shown(cka: dict, representations=("cls", "token")) -> pd.DataFrame:
    """block_table_shown of every representation in `representations` that is stored, one after the other
    (e.g. the [CLS] rows beside the token rows), sorted by task."""
    parts = [block_table_shown(cka, r) for r in representations if r in stored_representations(cka)]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    order = {t: i for i, t in enumerate(cka)}
    return table.sort_values(["task", "representation"], key=lambda c: c.map(order) if c.name == "task" else
                             c.map({r: i for i, r in enumerate(representations)})).reset_index(drop=True)


def _blocks(split: dict) -> str:
    if split["split"] is None:
        return "n/a"
    first, last = split["layers"][0], split["layers"][-1]
    lo = f"{first}" if split["split"] - 1 == first else f"{first}-{split['split'] - 1}"
    hi = f"{split['split']}" if split["split"] == last else f"{split['split']}-{last}"
    return f"[{lo}] [{hi}]"


def estimator(cka: dict) -> str:
    """'debiased' or 'biased' (or 'biased and debiased' when the stored records differ)."""
    kinds = sorted({bool((((e or {}).get("layers") or {}).get("params") or {}).get("debiased", False))
                    for e in (cka or {}).values() if (e or {}).get("layers")})
    return " and ".join("debiased" if k else "biased" for k in kinds) or "biased"


def representation_source(entry: dict) -> str:
    """Where a record's representations come from, in words: the held-out slice of the train split or the dev set."""
    params = ((entry or {}).get("layers") or {}).get("params") or {}
    split = params.get("split", "")
    if "-heldout" in split:
        train_split, rows = split.split("-heldout")
        return f"the {int(rows):,} held-out rows of the {train_split} split (never trained on)"
    return f"the dev set ({split})" if split else "the dev set"


def cka_block_claim(cka: dict, representation: str = "cls") -> dict:
    """A block counts on a task when its fine-tuned matrix splits into two blocks of at least MIN_BLOCK_SPAN layers
    with contrast >= BLOCK_CONTRAST, both within-block means above the noise floor (95th percentile of CKA between
    independent Gaussians at the same n and width, same estimator) and a contrast stronger than the pretrained
    model's. Supported if a block counts on every task; partly if on at least one; inconclusive if no block
    counts and every task's block is below the noise floor; else not supported."""
    table = block_table(cka, representation)
    if table.empty:
        return not_tested(BLOCK_CLAIM, PHANG, f"no stored CKA matrices for the {representation!r} representation",
                          table)
    tested = table[table["fine-tuned contrast"].notna()]
    if tested.empty:
        return not_tested(BLOCK_CLAIM, PHANG, f"fewer than {MIN_DEFINED_LAYERS} layers with a defined "
                          f"{representation} representation, so no split into two blocks of at least "
                          f"{MIN_BLOCK_SPAN} layers can be measured", table)

    def part(r) -> str:
        floor = "" if math.isnan(r["noise floor"]) else f", floor {fmt(r['noise floor'], 2)}"
        return (f"{r['task']}: {r['fine-tuned split']} contrast {fmt(r['fine-tuned contrast'], 2)}, within "
                f"{fmt(r['lower block CKA'], 2)} / {fmt(r['upper block CKA'], 2)}{floor} (pretrained "
                f"{fmt(r['pretrained contrast'], 2)}): {r['status']}")

    hits = int(tested.block.sum())
    below = int((tested.status == "below the noise floor").sum())
    weaker = int((tested.status == "block, but no stronger than pretrained").sum())
    verdict = (SUPPORTED if hits == len(tested) else PARTLY if hits else
               INCONCLUSIVE if below == len(tested) else NOT_SUPPORTED)
    name = REPRESENTATION_NAMES.get(representation, representation)
    text = (f"{estimator(cka).capitalize()} linear CKA of the {name} ({representation}); best split of the "
            f"fine-tuned matrix into two blocks of at least {MIN_BLOCK_SPAN} layers (layers in brackets), its "
            f"contrast (within minus between blocks), the mean CKA within each block against the noise floor: "
            f"{'; '.join(part(r) for _, r in tested.iterrows())}. A block counts (contrast >= {BLOCK_CONTRAST:g}, "
            f"both blocks above the floor, stronger than pretrained) on {hits} of {len(tested)} tasks")
    extra = [f"{below} below the noise floor" if below else "",
             f"{weaker} with a block no stronger than in the pretrained model" if weaker else ""]
    extra = [e for e in extra if e]
    text += (f" ({'; '.join(extra)})." if extra else ".")
    return _result(BLOCK_CLAIM, text, verdict, table)


def stored_representations(cka: dict) -> list[str]:
    """The representations the stored analyses hold (union over tasks, in the order first seen)."""
    out = []
    for entry in (cka or {}).values():
        layers = (entry or {}).get("layers") or {}
        for r in layers.get("params", {}).get("representations") or [k for k in layers if k in REPRESENTATION_NAMES]:
            if r in layers and r not in out:
                out.append(r)
    return out


def setup_markdown(cka: dict, representations=("cls", "token")) -> str:
    """What the stored analyses measured, for the page's prose: the estimator, where the representations come
    from, and per representation the number of rows, the width and the noise floor (mean and 95th percentile of
    CKA between independent Gaussian matrices of that size, same estimator)."""
    if not any((e or {}).get("layers") for e in (cka or {}).values()):
        return "No stored CKA analyses yet."
    kind = estimator(cka)
    sources = sorted_unique([representation_source(e) for e in cka.values() if (e or {}).get("layers")])
    why = {"debiased": " (Nguyen et al.'s unbiased HSIC: unrelated representations score about 0)",
           "biased": " (as in Phang et al.'s public code; it is inflated when the width is not small next to the "
                     "number of rows, so a value means something only above the noise floor)"}.get(kind, "")
    lines = [f"**Estimator:** {kind} linear CKA{why}. **Representations from:** {'; '.join(sources)}."]
    rows = []
    for r in representations:
        for task, entry in cka.items():
            if _layers_entry(entry, r) is None:
                continue
            f = noise_floor(entry, r)
            rows.append(f"{task} {r}: " + (f"n = {f['n']:,}, width {f['width']}, floor {f['mean']:.3f} "
                                           f"(95th percentile {f['p95']:.3f})" if f else "size not stored"))
    if rows:
        where = "stored with the analysis" if all_stored(cka, representations) else "computed for this page"
        lines.append("**Noise floor** (CKA between independent Gaussian matrices of the same n and width, "
                     f"{kind} estimator, {where}): " + "; ".join(rows) + ".")
    missing = [r for r in representations if r not in stored_representations(cka)]
    if "token" in missing:
        lines.append("No token-level rows are stored for this profile (its `cka.representations` has no `token`), "
                     "so only the [CLS] / mean rows are shown.")
    return "\n\n".join(lines)


def all_stored(cka: dict, representations) -> bool:
    return all(((noise_floor(e, r) or {}).get("stored", False)) for e in (cka or {}).values()
               for r in representations if _layers_entry(e, r) is not None)


def check_representation(cka: dict, representation: str) -> None:
    """Raise a FewdimsError naming the stored representations if `representation` is not among them."""
    for entry in (cka or {}).values():
        layers = (entry or {}).get("layers") or {}
        reps = layers.get("params", {}).get("representations")
        if reps and representation not in reps:
            raise FewdimsError(f"representation={representation!r} was not stored; this profile stores "
                               f"{', '.join(map(repr, reps))} (cka.representations in its params file)")
