"""The verdict type and the rules every chapter's claims share.

A claim function returns `{'claim', 'paper', 'measured', 'verdict', 'details'}` (see `result`): `measured` is a
sentence whose numbers are formatted from the data (every score and every difference with its 95 % interval),
`verdict` one of VERDICTS, `details` the per-task frame behind the sentence (each compared number in a column X with
X_low and X_high beside it; `details_table` formats it for the book). The margins of every verdict are the constants
below (one place, each with its reason, printed by `thresholds()`). A claim without the results it needs is 'not
tested', and `measured` says why.

Rules shared by the claims of Fukuhata & Kano (token, dimensions, layers, freezing, cross-fine-tuning):
- each compared score carries a 95 % interval and each comparison the interval of its difference (`compare`): a
  paired bootstrap over the dev examples (and over the seeds when there are several) where every run stored its
  per-example predictions; else a t-interval over the per-seed differences where the seeds pair up; else an unpaired
  Welch interval, so labelled; else none (one run without predictions), and the task is *inconclusive*;
- a task's outcome under a claim is read off that interval with the claim's margin (`outcome`): the claim *holds*
  on the task, *fails* on it, or the interval straddles the margin and the task is *inconclusive* - a difference
  smaller than its own noise is a finding, not a failure;
- a task counts only when its reference's interval (the CLS / all-dims / fine-tuned / direct run) lies above the
  majority-class baseline (stats.above_majority): a comparison with a model that learned nothing proves nothing, so
  such tasks are named but left out of the verdict (their runs stay in every table, flagged with
  tables.MAJORITY_MARK). A reference without an interval (one run, no predictions) counts, as inconclusive;
- the verdict over the counted tasks (`aggregate`): supported if the claim holds on most, not supported if it fails
  on most, inconclusive if most are inconclusive, partly supported if the outcomes are mixed with at least one that
  holds, else inconclusive; not tested if no task counts;
- scores are points (x100) of each task's main metric on its first evaluation split (MNLI: matched);
- runs that are not stored (compute=False) have NaN scores and are left out of means, never counted as zeros.
"""
from __future__ import annotations

import math
import pandas as pd

from .tables import sorted_unique

SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_TESTED = "supported", "partly supported", "not supported", "not tested"
INCONCLUSIVE = "inconclusive"  # the intervals cannot decide: a finding (the difference is within its own noise)
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTED)

# -- margins (points of the task's main metric unless said otherwise): the book's choices ------------------------
# For scale: one dev-set standard error of an accuracy p on n examples is 100 * sqrt(p (1 - p) / n) points: 1.0 for
# SST-2 (872 examples at 90 %), 1.8 for MRPC (408 at 85 %), 2.9 for RTE (277 at 65 %).
TOKEN_MARGIN = 2.0         # max-norm token "scores like" CLS: its difference's interval lies above -2 points
FEW_DIMS_MARGIN = 2.0      # 2-3 dims "score close to" all dims: the difference's interval lies above -2 points
FEW_DIMS_WIDE_MARGIN = 5.0  # few dims, partial support: the same above -5 points on most tasks
SELECTED_MARGIN = 1.0      # selected dims "beat" random ones: the difference's interval lies above +1 point
LOWER_LAYERS_MARGIN = 2.0  # "lower layers contribute less": lower minus upper half lies below -2 points
UPPER_LAYERS_MARGIN = 2.0  # "higher layers differ little": each upper layer minus the top layer within +-2 points
COLLAPSE_MARGIN_POINTS = 5.0  # frozen "collapses": its interval is not above the majority baseline and its upper
                              # end at most 5 points above it
LARGE_DROP_POINTS = 10.0   # frozen, partly supported: frozen minus fine-tuned below -10 points (a drop, no collapse)
CROSS_MARGIN = 2.0         # B after A "scores like" B directly: the difference's interval lies above -2 points
RETENTION_MARGIN = 0.10    # "little forgetting": A's normalised retention after B has its interval above 0.90
N_BOOT = 1000              # bootstrap resamples of every interval (seed 0: the same resamples for every comparison)
BLOCK_CONTRAST = 0.10      # CKA: best two-block split's within-minus-between mean similarity >= 0.10 = a block
DROP_POINTS = 1.0          # layer dropping: a top layer is "droppable" if its loss's interval lies above -1 point
MOST = 0.5                 # "most tasks" = more than half of the informative tasks
# The four GLUE tasks with the smallest training sets (2.5k-8.5k examples), on which BERT-base has its lowest dev
# scores: the "harder" tasks of the freezing claim. The other tasks are the "easier" ones.
HARDER_TASKS = ("CoLA", "MRPC", "STS-B", "RTE")


def thresholds() -> pd.DataFrame:
    """Every verdict rule in words, with its margin and the reason for the value, as a table for the book."""
    rows = [
        ("interval", "95 %: a bootstrap over the dev examples for one run, over seeds and examples for several "
                     "(a difference paired over the examples) where every run stored its predictions; else a "
                     "t-interval over the seeds (a difference: over paired seeds, else an unpaired Welch interval, "
                     "so labelled); none for one run without predictions",
         "Dror et al. (2018); Dodge et al. (2020): seeds move BERT fine-tuning by points"),
        ("informative task", "its reference's interval (CLS, all dims, top layer, fine-tuned, direct B, A before B) "
                             "lies above the majority-class baseline; the other tasks are named and left out; a "
                             "reference without an interval (one run) counts, as an inconclusive task",
         "a comparison with a model that learned nothing proves nothing"),
        ("task outcome", "the claim holds, fails, or is inconclusive when the interval of the difference straddles "
                         "the margin", "a difference smaller than its own noise decides nothing"),
        ("verdict", f"supported: holds on more than {MOST:.0%} of the informative tasks; not supported: fails on "
                    f"more than {MOST:.0%}; inconclusive: more than {MOST:.0%} inconclusive; partly supported: mixed "
                    "with at least one task where it holds; else inconclusive; not tested: no informative task",
         "one rule for every claim"),
        ("max-norm token scores like CLS", f"max-norm minus CLS: interval above −{TOKEN_MARGIN:g} points (holds), "
                                           f"below −{TOKEN_MARGIN:g} (fails)",
         f"{TOKEN_MARGIN:g} points: about two dev-set standard errors of SST-2 accuracy (1.0 point at 90 %)"),
        ("2-3 dims score close to all dims",
         f"best 2- or 3-dim set minus all dims: interval above −{FEW_DIMS_MARGIN:g} points (holds if either "
         f"set does, fails if both fall below); partly supported: the same above −{FEW_DIMS_WIDE_MARGIN:g} on most "
         "tasks", f"as for the token; {FEW_DIMS_WIDE_MARGIN:g} points: a visible but moderate loss"),
        ("selected beat random dims", f"selected set minus the random sets: interval above +{SELECTED_MARGIN:g} "
                                      f"point (holds), below +{SELECTED_MARGIN:g} (fails); the task counts when the "
                                      "all-dims model's interval lies above the majority baseline",
         f"a gain under {SELECTED_MARGIN:g} point does not pay for a selection procedure"),
        ("lower layers contribute less", f"lower-half minus upper-half layers: interval below "
                                         f"−{LOWER_LAYERS_MARGIN:g} points (holds), above it (fails)",
         f"{LOWER_LAYERS_MARGIN:g} points, as for the token"),
        ("higher layers differ little", f"each upper-half layer minus the top layer: interval within "
                                        f"±{UPPER_LAYERS_MARGIN:g} points (holds), one outside (fails)",
         f"{UPPER_LAYERS_MARGIN:g} points, as for the token"),
        ("collapse (frozen)", f"the frozen model's interval is not above the majority baseline and reaches at most "
                              f"{COLLAPSE_MARGIN_POINTS:g} points above it (holds); above the baseline (fails)",
         "a model no better than the majority class"),
        ("large drop (frozen, partly)", f"frozen minus fine-tuned: interval below −{LARGE_DROP_POINTS:g} points on "
                                        "most harder tasks makes 'not supported' or 'inconclusive' partly supported",
         "a loss nobody would call small"),
        ("harder tasks", ", ".join(HARDER_TASKS), "the GLUE tasks with the smallest training sets"),
        ("B after A scores like B directly", f"B after A minus B directly: interval above −{CROSS_MARGIN:g} points",
         f"{CROSS_MARGIN:g} points, as for the token"),
        ("little forgetting of A", f"A's head on the A → B backbone: normalised retention (score − majority) / "
                                   f"(A before − majority), interval above {1 - RETENTION_MARGIN:.2f} (holds), "
                                   f"below it (fails)", f"keeping {1 - RETENTION_MARGIN:.0%} of what A learned "
                                                        "over the majority class"),
        ("CKA block", f"two blocks of at least 2 layers each, contrast (within minus between) at least "
                      f"{BLOCK_CONTRAST:g}, each block more alike within than to the other, both within-block means "
                      "above the noise floor's 95th percentile (independent data at the same n and width), and a "
                      "contrast stronger than the pretrained model's",
         "the book's choice; the floor: Kornblith et al. 2019 / Nguyen et al. 2021"),
        ("droppable top layer", f"the interval of (truncated minus full model) lies above −{DROP_POINTS:g} point; "
                                "droppable layers count from the top while each one's does",
         "the book's choice"),
    ]
    return pd.DataFrame(rows, columns=["term", "rule", "why this value"]).set_index("term")


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
    """One row per claim, numbered from 1 as the claims are in the text."""
    table = pd.DataFrame([{k: c[k] for k in ("paper", "claim", "measured", "verdict")} for c in claims])
    table.index = pd.RangeIndex(1, len(table) + 1, name="#")
    return table
