"""(a) CLS vs the max-norm token (Fukuhata & Kano 2025): a head on another token's vector instead of [CLS]."""
from __future__ import annotations

import pandas as pd

from ..tables import fmt, frame, row
from ..verdicts import (CLOSE_POINTS, FUKUHATA, finished, informative, not_tested, result, share_verdict, stat,
                        tasks_of, uninformative_note)
from .base import Chapter

CLS, MAX_NORM = "cls", "max_norm"  # the poolings the claim compares (RunConfig.pooling values)


class TokenChapter(Chapter):
    name = "token"

    def compute(self) -> pd.DataFrame:
        sec = self.section
        rows = []
        for task in self.profile.tasks:
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
    """Per task: mean(max_norm) - mean(cls). 'Matches' = at most CLOSE_POINTS below (better also matches).
    Verdict on the tasks other than `exception` (rule 'all'); the exception's gap is reported."""
    runs = finished(runs)
    rows = []
    for task in tasks_of(runs):
        cls_m, maj, n_cls = stat(runs[(runs.task == task) & (runs.variant == CLS)])
        mn_m, _, n_mn = stat(runs[(runs.task == task) & (runs.variant == MAX_NORM)])
        if n_cls and n_mn:
            gap = mn_m - cls_m
            rows.append({"task": task, "cls": cls_m, "max_norm": mn_m, "gap": gap, "seeds_cls": n_cls,
                         "seeds_max_norm": n_mn, "majority": maj, "informative": informative(cls_m, maj),
                         "matches": gap >= -CLOSE_POINTS})
    details = pd.DataFrame(rows)
    if details.empty:
        return not_tested(TOKEN_CLAIM, FUKUHATA, "no task has both a CLS run and a max-norm-token run", details)
    info = details[details.informative]
    others = info[info.task != exception]
    gaps = "; ".join(f"{r.task} {fmt(r.gap, signed=True)}" for r in details.itertuples())
    note = uninformative_note(details[~details.informative].task.tolist(), "the CLS model")
    if others.empty:
        return not_tested(TOKEN_CLAIM, FUKUHATA, f"no informative task other than {exception} "
                           f"(max-norm minus CLS, points: {gaps}).{note}".rstrip("."), details)
    hits = int(others.matches.sum())
    text = (f"Max-norm token minus CLS (mean over seeds, points of each task's metric): {gaps}. "
            f"The max-norm token is within {CLOSE_POINTS:g} points of CLS, or better, on {hits} of "
            f"{len(others)} informative tasks other than {exception}")
    exc = info[info.task == exception]
    if len(exc):
        gap = float(exc.gap.iloc[0])
        text += (f"; on {exception} it is {fmt(abs(gap))} points {'below' if gap < 0 else 'above'} CLS"
                 f" ({'an exception, as in the paper' if gap < -CLOSE_POINTS else 'no exception'})")
    return result(TOKEN_CLAIM, FUKUHATA, text + "." + note, share_verdict(hits, len(others), "all"), details)

