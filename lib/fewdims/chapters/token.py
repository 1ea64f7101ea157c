"""(a) CLS vs the max-norm token (Fukuhata & Kano 2025): a head on another token's vector instead of [CLS]."""
from __future__ import annotations

import math

import pandas as pd

from ..tables import frame, row
from ..comparisons import (FAILS, NO, NOT_WORSE, UNDECIDED, aggregate, compare, informative_reference,
                           interval_uninformative_note, intervals_note, outcome, row_text, settle, tally)
from ..verdicts import FUKUHATA, TOKEN_MARGIN, finished, not_tested, result, tasks_of
from .base import Chapter

CLS, MAX_NORM = "cls", "max_norm"  # the poolings the claim compares (RunConfig.pooling values)


class TokenChapter(Chapter):
    name = "token"

    def compute(self) -> pd.DataFrame:
        sec = self.section
        rows = []
        for task in self.tasks:
            for pooling in sec["poolings"]:
                seeds = self.profile.seeds if pooling in sec["headline_poolings"] else self.profile.seeds[:1]
                for seed in seeds:
                    if pooling == CLS:
                        rec = self.baseline(task, seed)
                    else:
                        rec = self.runner.run(self.base(task, seed=seed, pooling=pooling,
                                                        special_tokens_eligible=sec["special_tokens_eligible"]))
                    rows.append(row(rec, variant=pooling))
        return frame(rows)


TOKEN_CLAIM = "A head on the max-norm token scores like one on [CLS] on 7 of 8 GLUE tasks; RTE is the exception."


def token_claim(runs: pd.DataFrame, exception: str = "RTE") -> dict:
    """Per task: max-norm minus CLS with the paired interval of the difference (verdicts.compare). 'Matches' =
    the interval lies above -TOKEN_MARGIN (better also matches; verdicts.NOT_WORSE); below it the task fails;
    across it the task is inconclusive. A task counts when the CLS interval lies above the majority baseline. The
    verdict is taken over the counted tasks other than `exception` (verdicts.aggregate); the exception's
    difference is reported beside it."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        t = runs[runs.task == task]
        cls_runs, mn_runs = t[t.variant == CLS], t[t.variant == MAX_NORM]
        if len(cls_runs) and len(mn_runs):
            c = compare(cls_runs, mn_runs)
            maj = float(t["majority"].mean()) if "majority" in t else math.nan
            rows.append({"task": task, **c.columns("cls", "max_norm"), "majority": maj,
                         "informative": informative_reference(c.reference, c.reference_mean, maj),
                         "outcome": outcome(c.difference, TOKEN_MARGIN, NOT_WORSE)})
    details = pd.DataFrame(rows)
    if details.empty:
        return not_tested(TOKEN_CLAIM, FUKUHATA, "no task has both a CLS run and a max-norm-token run", details)
    counted = settle(details)
    others = counted[counted.task != exception]
    parts = "; ".join(f"{r.task}: CLS {row_text(r, 'cls')}, max-norm {row_text(r, 'max_norm')}, difference "
                      f"{row_text(r, 'difference', signed=True)}" for r in details.itertuples())
    note = interval_uninformative_note(details[details.informative == NO].task.tolist(), "the CLS model")
    if others.empty:
        return not_tested(TOKEN_CLAIM, FUKUHATA, f"no informative task other than {exception} ({parts}).{note}"
                          .rstrip("."), details)
    text = (f"Points of each task's metric, mean over seeds with 95 % intervals: {parts}. With a margin of "
            f"{TOKEN_MARGIN:g} points (the max-norm token matches when the difference's interval lies above "
            f"−{TOKEN_MARGIN:g}), the claim {tally(others.outcome, f'informative tasks other than {exception}')}")
    exc = counted[counted.task == exception]
    if len(exc):
        o = exc.outcome.iloc[0]
        text += (f"; on {exception} the max-norm token "
                 + ("falls short of CLS, an exception as in the paper" if o == FAILS else
                    "cannot be told apart from the margin (inconclusive)" if o == UNDECIDED else
                    "matches CLS (no exception)"))
    return result(TOKEN_CLAIM, FUKUHATA, text + "." + intervals_note(details) + note, aggregate(others.outcome),
                  details)
