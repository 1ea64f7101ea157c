"""Intervals, comparisons and the rules read off them: the machinery behind every interval verdict.

`compare(reference, variant)` gives a claim the interval of a difference (paired bootstrap over dev examples and
seeds where runs kept their predictions, else a seed t-interval, else an unpaired Welch interval, so labelled);
`outcome` reads a task's outcome off it with the claim's margin; `aggregate` turns the tasks' outcomes into the
verdict (fewdims.verdicts). The formatting helpers write intervals into sentences and display tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .stats import Interval
from .tables import fmt, sorted_unique
from .verdicts import (FUKUHATA, INCONCLUSIVE, MOST, NOT_SUPPORTED, NOT_TESTED, N_BOOT, PARTLY, SUPPORTED,
                       finished, not_tested)


# -- intervals, comparisons and the rules read off them ---------------------------------------------------------
HOLDS, FAILS, UNDECIDED = "holds", "fails", "inconclusive"  # a task's outcome under a claim's rule
NOT_WORSE, EQUIVALENT, BETTER = "not worse", "equivalent", "better"  # the test a claim applies to a difference
YES, NO, UNKNOWN = "yes", "no", "unknown (one run)"  # informative task? unknown: the reference has no interval


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, list, tuple))


def run_predictions(rows: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray] | None:
    """(per-run dev predictions, their shared labels) when every run of `rows` stored its per-example predictions
    on the same dev examples (tables.row's `preds` and `labels`), else None (older records, mixed dev sets)."""
    if rows is None or len(rows) == 0 or "preds" not in rows or "labels" not in rows:
        return None
    preds, labels = list(rows["preds"]), list(rows["labels"])
    if not all(_is_array(p) and _is_array(y) for p, y in zip(preds, labels)):
        return None
    first = np.asarray(labels[0])
    if any(len(p) != len(first) or not np.array_equal(np.asarray(y), first) for p, y in zip(preds, labels)):
        return None
    return [np.asarray(p) for p in preds], first


def _task(rows: pd.DataFrame) -> str:
    return str(rows["task"].iloc[0])


def score_interval(rows: pd.DataFrame) -> Interval | None:
    """The 95 % interval of a group of runs' mean score (points): two-way bootstrap over runs and dev examples
    (stats.combined_interval; one run: over the examples) when every run has predictions, else a t-interval over
    the runs' scores (stats.seed_interval), else None (one run without predictions, or none)."""
    rows = finished(rows)
    if len(rows) == 0:
        return None
    stored = run_predictions(rows)
    if stored:
        return stats.combined_interval(_task(rows), stored[0], stored[1], n_boot=N_BOOT)
    if len(rows) >= 2:
        return stats.seed_interval(rows["score"].astype(float).to_numpy())
    return None


@dataclass(frozen=True)
class Comparison:
    """A variant's runs against a reference's runs on one task. `difference` = variant minus reference (points),
    None when no interval can be computed; `method` says how it was (short), or why not."""
    reference: Interval | None
    variant: Interval | None
    difference: Interval | None
    method: str
    n_reference: int
    n_variant: int
    reference_mean: float
    variant_mean: float

    def columns(self, reference: str, variant: str, difference: str = "difference") -> dict:
        """The comparison as details columns: each number with its _low, _high and _n (runs) columns."""
        return {**interval_columns(reference, self.reference, self.reference_mean, self.n_reference),
                **interval_columns(variant, self.variant, self.variant_mean, self.n_variant),
                **interval_columns(difference, self.difference, self.variant_mean - self.reference_mean,
                                   min(self.n_reference, self.n_variant)),
                "interval": self.method}


def _welch(reference: np.ndarray, variant: np.ndarray, level: float = 0.95) -> Interval:
    """mean(variant) - mean(reference) with a Welch t-interval (unpaired, unequal variances)."""
    from scipy.stats import t

    va, vb = reference.var(ddof=1) / len(reference), variant.var(ddof=1) / len(variant)
    est, se = float(variant.mean() - reference.mean()), math.sqrt(va + vb)
    if se == 0:
        return Interval(est, est, est, min(len(reference), len(variant)), "Welch t-interval", level=level)
    df = (va + vb) ** 2 / (va ** 2 / (len(reference) - 1) + vb ** 2 / (len(variant) - 1))
    half = float(t.ppf((1 + level) / 2, df)) * se
    return Interval(est, est - half, est + half, min(len(reference), len(variant)), "Welch t-interval", level=level)


def _paired_seeds(reference: pd.DataFrame, variant: pd.DataFrame) -> np.ndarray | None:
    """Per-seed differences (variant - reference) over the seeds both groups ran once each; None under 2."""
    if "seed" not in reference or "seed" not in variant:
        return None
    if reference["seed"].duplicated().any() or variant["seed"].duplicated().any():
        return None
    ref, var = reference.set_index("seed")["score"], variant.set_index("seed")["score"]
    common = [s for s in var.index if s in ref.index]
    if len(common) < 2:
        return None
    return np.array([float(var[s]) - float(ref[s]) for s in common])


def compare(reference: pd.DataFrame, variant: pd.DataFrame) -> Comparison:
    """Variant runs against reference runs of one task (rows of tables.row; finished runs only).

    The difference's interval, in order of preference: (1) every run of both groups stored its predictions on the
    same dev examples: stats.paired_seed_difference, a bootstrap over the dev examples shared by both groups
    (paired) and over each group's runs; (2) seeds pair up (both groups ran the same seeds, at least 2, once each):
    a t-interval over the per-seed differences (stats.seed_interval); (3) both groups have at least 2 runs:
    an unpaired Welch t-interval, labelled as such; (4) none (one run without predictions): inconclusive."""
    ref, var = finished(reference), finished(variant)
    n_r, n_v = len(ref), len(var)
    r_mean = float(ref["score"].mean()) if n_r else math.nan
    v_mean = float(var["score"].mean()) if n_v else math.nan
    ref_iv, var_iv = score_interval(ref), score_interval(var)
    diff, method = None, "none: not run"
    if n_r and n_v:
        p_ref, p_var = run_predictions(ref), run_predictions(var)
        seeds = _paired_seeds(ref, var)
        if p_ref and p_var and np.array_equal(p_ref[1], p_var[1]):
            diff = stats.paired_seed_difference(_task(ref), p_var[0], p_ref[0], p_ref[1], n_boot=N_BOOT)
            n_ex = len(p_ref[1])
            method = (f"paired bootstrap, {n_ex} examples" if n_r == n_v == 1 else
                      f"paired bootstrap, {n_v} vs {n_r} runs × {n_ex} examples")
        elif seeds is not None:
            diff, method = stats.seed_interval(seeds), f"t over {len(seeds)} paired seeds"
        elif n_r >= 2 and n_v >= 2:
            diff = _welch(ref["score"].astype(float).to_numpy(), var["score"].astype(float).to_numpy())
            method = f"unpaired Welch, {n_v} vs {n_r} runs"
        else:
            method = "none: one run, no predictions"
    return Comparison(ref_iv, var_iv, diff, method, n_r, n_v, r_mean, v_mean)


def defined(interval: Interval | None) -> bool:
    return interval is not None and math.isfinite(interval.low) and math.isfinite(interval.high)


def outcome(difference: Interval | None, margin: float, test: str) -> str:
    """A task's outcome (HOLDS / FAILS / UNDECIDED) from the interval of a difference (variant - reference) and the
    claim's margin. NOT_WORSE: holds if the interval lies above -margin, fails if below it. EQUIVALENT: holds if
    it lies within +-margin, fails if wholly outside (stats.equivalence_verdict). BETTER: holds if it lies above
    +margin (stats.superiority_verdict), fails if below +margin. An interval across the line, or none, is
    UNDECIDED."""
    if not defined(difference):
        return UNDECIDED
    if test == EQUIVALENT:
        return {"equivalent": HOLDS, "different": FAILS}.get(stats.equivalence_verdict(difference, margin), UNDECIDED)
    if test == NOT_WORSE:
        return HOLDS if difference.low >= -margin else FAILS if difference.high < -margin else UNDECIDED
    if test == BETTER:
        return HOLDS if stats.superiority_verdict(difference, margin) == "better" else \
            FAILS if difference.high < margin else UNDECIDED
    raise ValueError(f"unknown test {test!r}; use NOT_WORSE, EQUIVALENT or BETTER")


def informative_reference(interval: Interval | None, mean: float, majority: float) -> str:
    """YES when the reference's interval lies above the majority-class baseline (stats.above_majority), NO when it
    does not (or the mean is at or below it, or nothing ran), UNKNOWN when the reference has no interval (one run
    without predictions: it counts, as an inconclusive task). An unknown baseline counts as YES."""
    if mean is None or math.isnan(mean):
        return NO
    if majority is not None and not math.isnan(majority) and mean <= majority + 1e-9:
        return NO
    if not defined(interval):
        return UNKNOWN
    if majority is None or math.isnan(majority):
        return YES
    return YES if stats.above_majority(interval, majority) else NO


LEFT_OUT = "left out"  # the outcome shown for a task that does not count (its reference did not learn)


def settle(details: pd.DataFrame, columns=("outcome",)) -> pd.DataFrame:
    """Apply the informative-task rule to a details frame's outcome columns: a task whose reference is not
    informative (NO) is LEFT_OUT; one whose reference has no interval (UNKNOWN) is inconclusive, whatever its
    difference shows. Returns the counted rows (informative YES or UNKNOWN)."""
    if details.empty:
        return details
    columns = [c for c in columns if c in details]
    details.loc[details.informative == NO, columns] = LEFT_OUT
    details.loc[details.informative == UNKNOWN, columns] = UNDECIDED
    return details[details.informative != NO]


def aggregate(outcomes) -> str:
    """The verdict over the counted tasks' outcomes: supported if the claim holds on most (more than MOST), not
    supported if it fails on most, inconclusive if most are inconclusive, partly supported if the outcomes are mixed
    with at least one that holds, else inconclusive; not tested without any task."""
    outcomes = list(outcomes)
    n = len(outcomes)
    if n == 0:
        return NOT_TESTED
    holds, fails, undecided = (outcomes.count(x) for x in (HOLDS, FAILS, UNDECIDED))
    if holds > MOST * n:
        return SUPPORTED
    if fails > MOST * n:
        return NOT_SUPPORTED
    if undecided > MOST * n:
        return INCONCLUSIVE
    return PARTLY if holds else INCONCLUSIVE


def tally(outcomes, what: str = "informative tasks") -> str:
    """'holds on 2 of 3 informative tasks, fails on 0, inconclusive on 1'."""
    outcomes = list(outcomes)
    return (f"holds on {outcomes.count(HOLDS)} of {len(outcomes)} {what}, fails on {outcomes.count(FAILS)}, "
            f"inconclusive on {outcomes.count(UNDECIDED)}")


def interval_cell(estimate, low, high, n=None, signed: bool = False, digits: int = 1) -> str:
    """'85.8 [84.9, 86.7]' (typographic minus), '85.8 (one run, no interval)', 'not run', or 'n/a' for n = 0 (a
    comparison that does not exist)."""
    if n is not None and not (isinstance(n, float) and math.isnan(n)) and int(n) == 0:
        return "n/a"
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return "not run"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        one = n is not None and not (isinstance(n, float) and math.isnan(n)) and int(n) == 1
        return f"{fmt(estimate, digits, signed)} ({'one run, ' if one else ''}no interval)"
    return f"{fmt(estimate, digits, signed)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def interval_text(interval: Interval | None, estimate: float = math.nan, n=None, signed: bool = False,
                  digits: int = 1) -> str:
    if defined(interval):
        return interval_cell(interval.estimate, interval.low, interval.high, n, signed, digits)
    return interval_cell(interval.estimate if interval is not None else estimate, math.nan, math.nan, n, signed,
                         digits)


def interval_columns(name: str, interval: Interval | None, estimate: float = math.nan, n=None) -> dict:
    """{name: estimate, name_low, name_high[, name_n]}; low and high are NaN without a (finite) interval."""
    est = interval.estimate if interval is not None else estimate
    low, high = (interval.low, interval.high) if defined(interval) else (math.nan, math.nan)
    out = {name: est, f"{name}_low": low, f"{name}_high": high}
    if n is not None:
        out[f"{name}_n"] = n
    return out


def row_text(row, name: str, signed: bool = False, digits: int = 1) -> str:
    """A details row's `name` with its interval: '85.8 [84.9, 86.7]'."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    return interval_cell(get(name), get(f"{name}_low"), get(f"{name}_high"), get(f"{name}_n"), signed, digits)


SIGNED_PREFIXES = ("difference", "diff", "vs_top", "worst_vs_top")  # details columns shown with a sign


def details_table(details: pd.DataFrame, drop=(), digits: dict | None = None) -> pd.DataFrame:
    """A claim's `details` for the book: every column X with X_low / X_high becomes one cell '85.8 [84.9, 86.7]'
    ('85.8 (one run, no interval)' without one, 'not run' without a score), the _low/_high/_n helper columns go,
    booleans read yes/no, other numbers are rounded, missing values read 'n/a'; column names lose underscores."""
    if details is None or len(details) == 0:
        return pd.DataFrame()
    digits = digits or {}
    cols = [c for c in details.columns if c not in drop and not any(
        c.endswith(suffix) and c[:-len(suffix)] in details.columns for suffix in ("_low", "_high", "_n"))]
    out = pd.DataFrame(index=details.index)
    for c in cols:
        d = digits.get(c, 2 if c.startswith("retention") else 1)
        if f"{c}_low" in details and f"{c}_high" in details:
            n = details[f"{c}_n"] if f"{c}_n" in details else [None] * len(details)
            out[c] = [interval_cell(e, lo, hi, k, c.startswith(SIGNED_PREFIXES), d)
                      for e, lo, hi, k in zip(details[c], details[f"{c}_low"], details[f"{c}_high"], n)]
        else:
            out[c] = [_plain(v, d) for v in details[c]]
    return out.rename(columns=lambda c: c.replace("_", " ")).reset_index(drop=True)


def _plain(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return fmt(float(value), digits)
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def intervals_note(details: pd.DataFrame, label: str = "task", column: str = "interval") -> str:
    """'95 % intervals of the differences: SST-2, MRPC: paired bootstrap, 5 vs 5 runs × 872 examples; RTE: ...'."""
    if details is None or len(details) == 0 or column not in details:
        return ""
    groups: dict = {}
    for name, method in zip(details[label], details[column]):
        groups.setdefault(str(method), []).append(str(name))
    parts = "; ".join(f"{', '.join(sorted_unique(names))}: {method}" for method, names in groups.items())
    return f" 95 % intervals of the differences ({parts})."


def interval_uninformative_note(names: list[str], what: str) -> str:
    if not names:
        return ""
    return (f" Left out of the verdict because the interval of {what} does not lie above the majority-class "
            f"baseline: {', '.join(sorted_unique(names))}.")


def informative_tasks(details: pd.DataFrame, claim: str, what: str, empty_reason: str, paper: str = FUKUHATA,
                      label: str = "task"):
    """(counted rows, note naming the left-out tasks, a 'not tested' result or None) for a per-task claim. The
    frame's `informative` column is True/False or YES/NO/UNKNOWN (`informative_reference`); UNKNOWN rows count."""
    if details.empty:
        return details, "", not_tested(claim, paper, empty_reason, details)
    counted = details.informative.map(lambda v: v is True or v in (YES, UNKNOWN))
    info = details[counted]
    note = interval_uninformative_note(details[~counted][label].tolist(), what)
    if info.empty:
        return info, note, not_tested(claim, paper, f"no informative task.{note}".rstrip("."), details)
    return info, note, None
