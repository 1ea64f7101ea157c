"""(d) A frozen backbone with a 2-layer head vs a fine-tuned backbone with a 1-layer head (Fukuhata & Kano 2025).
The frozen runs read `head_lr` and `epochs` from the chapter's section (they win over the profile's)."""
from __future__ import annotations

import math

import pandas as pd

from ..tables import fmt, frame, row
from ..verdicts import (COLLAPSE_MARGIN_POINTS, FUKUHATA, HARDER_TASKS, LARGE_DROP_POINTS, MOST, NOT_SUPPORTED,
                        PARTLY, SUPPORTED, finished, informative, not_tested, result, share_verdict, stat, tasks_of,
                        uninformative_note)
from .base import Chapter

FINE_TUNED, FROZEN_MLP, FROZEN_PROBE = "fine-tuned, linear head", "frozen, 2-layer head", "frozen, linear probe"


class FreezingChapter(Chapter):
    name = "freezing"

    def compute(self) -> pd.DataFrame:
        rows = []
        for task in self.profile.tasks:
            rows += [{**r, "variant": FINE_TUNED} for r in self.baseline_rows(task)]
            for head, variant in (("mlp", FROZEN_MLP), ("linear", FROZEN_PROBE)):
                for seed in self.profile.seeds:
                    rec = self.runner.run(self.base(task, seed=seed, freeze_backbone=True, head=head,
                                                    head_lr=self.setting("head_lr"),
                                                    epochs=self.setting("epochs")))
                    rows.append(row(rec, variant=variant))
        return frame(rows)


FREEZING_CLAIM = "With a frozen backbone, even a 2-layer head collapses on the harder tasks."


def freezing_claim(frame: pd.DataFrame) -> dict:
    """Per harder task (HARDER_TASKS): 'collapse' = frozen 2-layer head mean <= majority + COLLAPSE_MARGIN.
    Supported if it collapses on most harder tasks; partly if it is LARGE_DROP_POINTS below fine-tuning on most
    of them without collapsing; else not supported. Easier tasks are reported for contrast."""
    frame = finished(frame)
    rows = []
    for task in tasks_of(frame):
        t = frame[frame.task == task]
        ft, maj, n_ft = stat(t[t.variant == FINE_TUNED])
        fr, maj_fr, n_fr = stat(t[t.variant == FROZEN_MLP])
        pr, _, _ = stat(t[t.variant == FROZEN_PROBE])
        maj = maj if not math.isnan(maj) else maj_fr
        if n_ft and n_fr:
            rows.append({"task": task, "harder": task in HARDER_TASKS, "fine_tuned": ft, "frozen_mlp": fr,
                         "frozen_probe": pr, "drop_points": ft - fr, "majority": maj,
                         "above_majority": fr - maj if not math.isnan(maj) else math.nan,
                         "informative": informative(ft, maj),
                         "collapse": (not math.isnan(maj)) and fr <= maj + COLLAPSE_MARGIN_POINTS,
                         "large_drop": ft - fr >= LARGE_DROP_POINTS})
    details = pd.DataFrame(rows)
    if details.empty:
        return not_tested(FREEZING_CLAIM, FUKUHATA, "no task has both fine-tuned and frozen 2-layer-head runs",
                           details)
    note = uninformative_note(details[~details.informative].task.tolist(), "the fine-tuned model")
    hard = details[details.informative & details.harder]
    if hard.empty:
        return not_tested(FREEZING_CLAIM, FUKUHATA, f"no informative harder task ({', '.join(HARDER_TASKS)})."
                           f"{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task}{' (harder)' if r.harder else ''}: fine-tuned {fmt(r.fine_tuned)}, frozen + "
                      f"2-layer head {fmt(r.frozen_mlp)}, majority {fmt(r.majority)}" for r in details.itertuples())
    n_col, n_drop = int(hard.collapse.sum()), int(hard.large_drop.sum())
    verdict = share_verdict(n_col, len(hard), "most")
    if verdict != SUPPORTED:
        verdict = PARTLY if n_drop > MOST * len(hard) else NOT_SUPPORTED
    easy = details[details.informative & ~details.harder]
    text = (f"{parts}. On {n_col} of {len(hard)} informative harder tasks the frozen backbone with a 2-layer head "
            f"is within {COLLAPSE_MARGIN_POINTS:g} points of the majority baseline (collapse); it is at least "
            f"{LARGE_DROP_POINTS:g} points below fine-tuning on {n_drop}")
    if len(easy):
        text += f"; mean drop on the easier tasks {fmt(easy['drop_points'].mean())} vs "
        text += f"{fmt(hard['drop_points'].mean())} on the harder"
    return result(FREEZING_CLAIM, FUKUHATA, text + "." + note, verdict, details)

