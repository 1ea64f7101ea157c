"""(d) A frozen backbone with a 2-layer head vs a fine-tuned backbone with a 1-layer head (Fukuhata & Kano 2025).
The frozen runs read `head_lr` and `epochs` from the chapter's section (they win over the profile's)."""
from __future__ import annotations

import math

import pandas as pd

from ..stats import Interval
from ..tables import fmt, frame, row
from ..comparisons import (FAILS, HOLDS, NO, NOT_WORSE, UNDECIDED, aggregate, compare, defined,
                           informative_reference, interval_columns, interval_uninformative_note, intervals_note,
                           outcome, row_text, score_interval, settle, tally)
from ..verdicts import (COLLAPSE_MARGIN_POINTS, FUKUHATA, HARDER_TASKS, INCONCLUSIVE, LARGE_DROP_POINTS,
                        NOT_SUPPORTED, PARTLY, SUPPORTED, finished, not_tested, result, tasks_of)
from .base import Chapter

FINE_TUNED, FROZEN_MLP, FROZEN_PROBE = "fine-tuned, linear head", "frozen, 2-layer head", "frozen, linear probe"


class FreezingChapter(Chapter):
    name = "freezing"

    def compute(self) -> pd.DataFrame:
        rows = []
        for task in self.tasks:
            rows += [{**r, "variant": FINE_TUNED} for r in self.baseline_rows(task)]
            for head, variant in (("mlp", FROZEN_MLP), ("linear", FROZEN_PROBE)):
                for seed in self.profile.seeds:
                    rec = self.runner.run(self.base(task, seed=seed, freeze_backbone=True, head=head,
                                                    head_lr=self.setting("head_lr"),
                                                    epochs=self.setting("epochs")))
                    rows.append(row(rec, variant=variant))
        return frame(rows)


FREEZING_CLAIM = "With a frozen backbone, even a 2-layer head collapses on the harder tasks."


def collapse(frozen: Interval | None, majority: float) -> str:
    """HOLDS (collapsed) when the frozen model's interval is not above the majority baseline and reaches at most
    COLLAPSE_MARGIN_POINTS above it; FAILS when it lies above the baseline; else (a wide interval, none, or an
    unknown baseline) UNDECIDED."""
    if not defined(frozen) or majority is None or math.isnan(majority):
        return UNDECIDED
    if frozen.low > majority:
        return FAILS
    return HOLDS if frozen.high <= majority + COLLAPSE_MARGIN_POINTS else UNDECIDED


def freezing_claim(frame: pd.DataFrame) -> dict:
    """Per task: the frozen backbone with a 2-layer head against the fine-tuned one (verdicts.compare: frozen minus
    fine-tuned, with the interval of the difference). On the harder tasks (HARDER_TASKS) the claim holds where the
    frozen model collapses (`collapse`: its interval is not above the majority baseline), fails where its interval
    lies above the baseline. Verdict over the informative harder tasks (the fine-tuned interval above the baseline):
    verdicts.aggregate; partly supported instead of not supported / inconclusive when the frozen model lies more than
    LARGE_DROP_POINTS below fine-tuning on most of them (a large drop without a collapse). Easier tasks are reported
    for contrast."""
    frame = finished(frame)
    rows = []
    for task in tasks_of(frame):
        t = frame[frame.task == task]
        ft, fr, pr = (t[t.variant == v] for v in (FINE_TUNED, FROZEN_MLP, FROZEN_PROBE))
        if not (len(ft) and len(fr)):
            continue
        maj = float(t["majority"].mean()) if "majority" in t and t["majority"].notna().any() else math.nan
        c = compare(ft, fr)
        rows.append({"task": task, "harder": task in HARDER_TASKS, **c.columns("fine_tuned", "frozen_mlp"),
                     **interval_columns("frozen_probe", score_interval(pr), float(pr.score.mean()) if len(pr)
                                        else math.nan, len(pr)),
                     "majority": maj, "informative": informative_reference(c.reference, c.reference_mean, maj),
                     "collapse": collapse(c.variant, maj),
                     # a large drop 'holds' when frozen minus fine-tuned lies below -LARGE_DROP_POINTS
                     "large_drop": {HOLDS: FAILS, FAILS: HOLDS}.get(
                         outcome(c.difference, LARGE_DROP_POINTS, NOT_WORSE), UNDECIDED)})
    details = pd.DataFrame(rows)
    if details.empty:
        return not_tested(FREEZING_CLAIM, FUKUHATA, "no task has both fine-tuned and frozen 2-layer-head runs",
                           details)
    settle(details, ["collapse", "large_drop"])
    note = interval_uninformative_note(details[details.informative == NO].task.tolist(), "the fine-tuned model")
    hard = details[(details.informative != NO) & details.harder]
    if hard.empty:
        return not_tested(FREEZING_CLAIM, FUKUHATA, f"no informative harder task ({', '.join(HARDER_TASKS)})."
                           f"{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task}{' (harder)' if r.harder else ''}: fine-tuned {row_text(r, 'fine_tuned')}, frozen + "
                      f"2-layer head {row_text(r, 'frozen_mlp')}, difference {row_text(r, 'difference', True)}, "
                      f"majority {fmt(r.majority)}" for r in details.itertuples())
    verdict = aggregate(hard.collapse)
    if verdict in (NOT_SUPPORTED, INCONCLUSIVE) and aggregate(hard.large_drop) == SUPPORTED:
        verdict = PARTLY
    easy = details[(details.informative != NO) & ~details.harder]
    text = (f"Points of each task's metric, mean over seeds with 95 % intervals: {parts}. A collapse (the frozen "
            f"model's interval not above the majority baseline and at most {COLLAPSE_MARGIN_POINTS:g} points above "
            f"it) {tally(hard.collapse, 'informative harder tasks')}; a drop of more than {LARGE_DROP_POINTS:g} "
            f"points below fine-tuning {tally(hard.large_drop, 'informative harder tasks')}")
    if len(easy):
        text += (f"; mean difference {fmt(easy['difference'].mean(), signed=True)} points on the easier tasks vs "
                 f"{fmt(hard['difference'].mean(), signed=True)} on the harder")
    return result(FREEZING_CLAIM, FUKUHATA, text + "." + intervals_note(details) + note, verdict, details)
