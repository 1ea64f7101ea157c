"""The verdict type and the rules every chapter's claims share.

A claim function returns `{'claim', 'paper', 'measured', 'verdict', 'details'}` (see `result`): `measured` is a
sentence whose numbers are formatted from the data, `verdict` one of VERDICTS, `details` the per-task frame behind
the sentence. The thresholds of every verdict are the constants below (one place, printed by `thresholds()`).
A claim without the results it needs is 'not tested', and `measured` says why.

Rules shared by all claims:
- a task whose reference (the CLS / all-dims / fine-tuned / direct run) is at or below the majority-class
  baseline is *uninformative*: a comparison with a model that learned nothing proves nothing, so such tasks are
  named but left out of the verdict (their runs stay in every table, flagged with tables.MAJORITY_MARK);
- scores are points (x100) of each task's main metric on its first evaluation split (MNLI: matched);
- runs that are not stored (compute=False) have NaN scores and are left out of means, never counted as zeros.
"""
from __future__ import annotations

import math

import pandas as pd

from .tables import sorted_unique

SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_TESTED = "supported", "partly supported", "not supported", "not tested"
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_TESTED)

# -- thresholds (points of the task's main metric unless said otherwise) ------------------------------------------
CLOSE_POINTS = 2.0         # "close" / "matches": at most 2 points below the reference (mean over seeds)
PARTLY_POINTS = 5.0        # few dims: within 5 points on most tasks is partial support
BEAT_POINTS = 1.0          # selected dims "beat" random ones: best selected set >= mean random set + 1 point
LOWER_GAP_POINTS = 2.0     # layers: "lower layers contribute less" = bottom-half layers >= 2 points below top half
UPPER_SPREAD_POINTS = 2.0  # layers: "higher layers differ little" = max - min over the top-half layers <= 2 points
COLLAPSE_MARGIN_POINTS = 5.0  # frozen: "collapses" = within 5 points of the majority-class baseline
LARGE_DROP_POINTS = 10.0   # frozen: at least 10 points below fine-tuning is partial support (a drop, no collapse)
BLOCK_CONTRAST = 0.10      # CKA: best two-block split's within-minus-between mean similarity >= 0.10 = a block
MIN_BLOCK_LAYERS = 3       # CKA: a split needs at least 3 defined layers (with 2 the contrast is 0 by definition)
DROP_POINTS = 1.0          # layer dropping: a top layer is "droppable" if the score stays within 1 point of full
MOST = 0.5                 # "most tasks" = more than half of the informative tasks
# The four GLUE tasks with the smallest training sets (2.5k-8.5k examples), on which BERT-base has its lowest dev
# scores: the "harder" tasks of the freezing claim. The other tasks are the "easier" ones.
HARDER_TASKS = ("CoLA", "MRPC", "STS-B", "RTE")


def thresholds() -> pd.DataFrame:
    """The verdict thresholds above as a table for the book."""
    rows = [
        ("close / matches", f"at most {CLOSE_POINTS:g} points below the reference (mean over seeds)"),
        ("few dims, partly", f"within {PARTLY_POINTS:g} points of all dims on most tasks"),
        ("selected beat random", f"best selected set at least {BEAT_POINTS:g} point above the mean random set"),
        ("lower layers contribute less", f"bottom-half layers at least {LOWER_GAP_POINTS:g} points below the top half"),
        ("higher layers differ little", f"top-half layers within {UPPER_SPREAD_POINTS:g} points of one another"),
        ("collapse (frozen)", f"within {COLLAPSE_MARGIN_POINTS:g} points of the majority-class baseline"),
        ("large drop (frozen, partly)", f"at least {LARGE_DROP_POINTS:g} points below fine-tuning"),
        ("harder tasks", ", ".join(HARDER_TASKS) + " (the GLUE tasks with the smallest training sets)"),
        ("CKA block", f"best two-block contrast at least {BLOCK_CONTRAST:g}, over at least {MIN_BLOCK_LAYERS} "
                      "defined layers"),
        ("droppable top layer", f"dev score within {DROP_POINTS:g} point of the full model"),
        ("most tasks", f"more than {MOST:.0%} of the informative tasks"),
        ("informative task", "its reference run scores above the majority-class baseline"),
    ]
    return pd.DataFrame(rows, columns=["term", "meaning in the verdicts"]).set_index("term")


FUKUHATA = "Fukuhata & Kano (2025)"
PHANG = "Phang, Liu & Bowman (2021)"


# -- shared verdict rules -------------------------------------------------------------------------------------------
def result(claim: str, paper: str, measured: str, verdict: str, details=None) -> dict:
    assert verdict in VERDICTS
    return {"claim": claim, "paper": paper, "measured": measured, "verdict": verdict,
            "details": details if details is not None else pd.DataFrame()}


def not_tested(claim: str, paper: str, reason: str, details=None) -> dict:
    return result(claim, paper, f"Not tested: {reason}.", NOT_TESTED, details)


def share_verdict(hits: int, total: int, rule: str) -> str:
    """rule 'all': supported if every task, partly if at least half, else not supported.
    rule 'most': supported if more than half (MOST), partly if at least one, else not supported."""
    if total == 0:
        return NOT_TESTED
    if rule == "all":
        return SUPPORTED if hits == total else PARTLY if hits >= total / 2 else NOT_SUPPORTED
    return SUPPORTED if hits > MOST * total else PARTLY if hits > 0 else NOT_SUPPORTED


def informative(mean: float, majority: float) -> bool:
    """A reference that scores above the majority-class baseline (or whose baseline is unknown)."""
    if mean is None or math.isnan(mean):
        return False
    return True if majority is None or math.isnan(majority) else mean > majority + 1e-9


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["score"].notna()] if frame is not None and len(frame) and "score" in frame else \
        pd.DataFrame(columns=["task", "variant", "score"])


def tasks_of(frame: pd.DataFrame) -> list[str]:
    return sorted_unique(frame["task"]) if frame is not None and len(frame) and "task" in frame else []


def uninformative_note(names: list[str], what: str) -> str:
    if not names:
        return ""
    return (f" Left out of the verdict because {what} is at or below the majority-class baseline: "
            f"{', '.join(names)}.")


def informative_tasks(details: pd.DataFrame, claim: str, what: str, empty_reason: str, paper: str = FUKUHATA):
    """(informative rows, note naming the left-out tasks, a 'not tested' result or None) for a per-task claim."""
    if details.empty:
        return details, "", not_tested(claim, paper, empty_reason, details)
    info = details[details.informative]
    note = uninformative_note(details[~details.informative].task.tolist(), what)
    if info.empty:
        return info, note, not_tested(claim, paper, f"no informative task.{note}".rstrip("."), details)
    return info, note, None


def stat(frame: pd.DataFrame) -> tuple[float, float, int]:
    """(mean score, mean majority, n) of a group of runs."""
    if len(frame) == 0:
        return math.nan, math.nan, 0
    maj = frame["majority"].mean() if "majority" in frame else math.nan
    return float(frame["score"].mean()), float(maj), int(len(frame))



def verdict_markdown(claim: dict) -> str:
    """'**Claim** (paper): ... **Measured:** ... **Verdict: supported.**' for a notebook's Markdown output."""
    return (f"**Claim** ({claim['paper']}): {claim['claim']}\n\n**Measured:** {claim['measured']}\n\n"
            f"**Verdict: {claim['verdict']}.**")


def claims_table(claims: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: c[k] for k in ("paper", "claim", "measured", "verdict")} for c in claims])
