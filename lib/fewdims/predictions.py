"""Per-example dev predictions, kept in every record so that any comparison can be paired after the fact.

Compact JSON: class ids as one digit per example ("0110201..."), regression scores as float16 in base64 (two bytes
per example: STS-B's scores 0-5 keep about three significant digits, far below the bootstrap's resolution).
"""
from __future__ import annotations

import base64

import numpy as np

from .errors import FewdimsError


def pack(values) -> dict:
    """Class ids (integers 0-9) or regression scores as a small JSON object."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        if len(values) and (values.min() < 0 or values.max() > 9):
            raise FewdimsError(f"class ids must lie in 0..9 to be packed as digits, got {values.min()}..{values.max()}")
        return {"encoding": "digits", "n": int(len(values)), "data": "".join(map(str, values.astype(int).tolist()))}
    data = base64.b64encode(np.asarray(values, dtype="<f2").tobytes()).decode("ascii")
    return {"encoding": "float16-base64", "n": int(len(values)), "data": data}


def unpack(packed: dict) -> np.ndarray:
    try:
        encoding, n, data = packed["encoding"], packed["n"], packed["data"]
    except (KeyError, TypeError) as err:
        raise FewdimsError(f"stored predictions are malformed (need encoding, n, data): {packed!r:.80}") from err
    if encoding == "digits":
        out = np.frombuffer(data.encode("ascii"), dtype=np.uint8) - ord("0")
        out = out.astype(np.int64)
    elif encoding == "float16-base64":
        out = np.frombuffer(base64.b64decode(data), dtype="<f2").astype(np.float64)
    else:
        raise FewdimsError(f"unknown prediction encoding {encoding!r}; known: digits, float16-base64")
    if len(out) != n:
        raise FewdimsError(f"stored predictions hold {len(out)} values but say n={n}: the record is corrupt")
    return out


def pack_split(preds, labels) -> dict:
    return {"preds": pack(preds), "labels": pack(labels)}


def record_predictions(record: dict, split: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, labels) of a record's evaluation split (default: its first), or None for records stored
    before predictions were kept."""
    stored = record.get("predictions") or {}
    if not stored:
        return None
    split = split or next(iter(record["metrics"]))
    if split not in stored:
        raise FewdimsError(f"record {record.get('label')} has no predictions for split {split!r}; it has "
                           f"{', '.join(stored)}")
    return unpack(stored[split]["preds"]), unpack(stored[split]["labels"])
