"""(e) Cross-fine-tuning (Fukuhata & Kano 2025): fine-tune on A, then on B; score B (against B fine-tuned
directly) and A's old head on the A -> B backbone (forgetting)."""
from __future__ import annotations

import math

import pandas as pd

from ..analysis import retention_analysis
from ..cache import has_weights
from ..errors import FewdimsError
from ..runner import Runner, score
from ..tables import MAJORITY_MARK, fmt, frame, row
from ..tasks import get_task
from ..verdicts import CLOSE_POINTS, FUKUHATA, finished, informative, not_tested, result, share_verdict
from .base import Chapter


class CrossFinetuneChapter(Chapter):
    name = "cross_finetune"

    def pairs(self) -> list[tuple[str, str]]:
        """Ordered pairs (A, B), A != B, of the section's tasks that involve one of the profile's tasks (so that
        `-p task rte` narrows the chapter to the pairs with RTE)."""
        tasks = [get_task(t).name for t in self.section["tasks"]]
        pairs = [(a, b) for a in tasks for b in tasks if a != b and (a in self.profile.tasks or b in self.profile.tasks)]
        if not pairs:
            raise FewdimsError(f"cross-fine-tuning has no pair: none of the tasks {', '.join(self.profile.tasks)} is "
                               f"among cross_finetune.tasks ({', '.join(tasks)}); set the pairs' tasks with "
                               "-p tasks a,b on this notebook")
        return pairs

    def compute(self) -> pd.DataFrame:
        seed = self.profile.seeds[0]
        pairs = self.pairs()
        stage_a = {a: (self.base(a, seed=seed, save_weights=True), self.baseline(a))
                   for a in dict.fromkeys(t for pair in pairs for t in pair)}
        rows = []
        for a, b in pairs:
            cfg_a, rec_a = stage_a[a]
            cfg_b = self.base(b, seed=seed, init_from=cfg_a.to_dict())
            if self.runner.allow_compute and not self.runner.dry_run and \
                    (self.runner.force or self.runner.store.load(cfg_b) is None):
                self._ensure_weights(cfg_a)
            rec = self.runner.run(cfg_b, [retention_analysis(cfg_a, self.runner.source)])
            retention = rec.get("extra", {}).get("retention", {})
            ret_metrics = next(iter(retention.get("metrics", {}).values()), {})
            a_main = get_task(a).main_metric
            rows.append({**row(rec, variant=f"{get_task(a).display} -> {get_task(b).display}"),
                         "task_a": get_task(a).display, "task_b": get_task(b).display,
                         "direct_b": score(stage_a[b][1]), "a_before": score(rec_a),
                         "a_after": 100.0 * ret_metrics.get(a_main, math.nan)})
        df = frame(rows)
        if len(df):
            df["relative_b"] = df["score"] / df["direct_b"]
            df["retention_a"] = df["a_after"] / df["a_before"]
        return df

    def _ensure_weights(self, config) -> None:
        """Stage-A weights live in a local cache that is never committed: recompute the run if they are gone."""
        if not has_weights(config):
            Runner(self.profile, force=True, store_root=self.runner.store.root, verbose=self.runner.verbose).run(
                config, self.baseline_analyses())


CROSS_CLAIM = "Fine-tuning on A and then on B scores on B like fine-tuning on B directly."


def cross_claim(frame: pd.DataFrame) -> dict:
    """Per ordered pair: gap = score on B after A - direct B; 'like direct' = gap >= -CLOSE_POINTS; rule 'all'.
    Pairs whose direct-B model is at or below the majority baseline are uninformative."""
    frame = finished(frame)
    if frame.empty or "direct_b" not in frame:
        return not_tested(CROSS_CLAIM, FUKUHATA, "no cross-fine-tuning runs")
    frame = frame[frame.direct_b.notna()].copy()
    if frame.empty:
        return not_tested(CROSS_CLAIM, FUKUHATA, "no direct-B reference runs")
    frame["gap"] = frame.score - frame.direct_b
    frame["informative"] = [informative(d, m) for d, m in zip(frame.direct_b, frame.majority)]
    frame["close"] = frame.gap >= -CLOSE_POINTS
    details = frame[["task_a", "task_b", "score", "direct_b", "gap", "majority", "informative", "close"] +
                    [c for c in ("a_before", "a_after", "retention_a") if c in frame]].reset_index(drop=True)
    info = details[details.informative]
    bad = [f"{r.task_a} → {r.task_b}" for r in details[~details.informative].itertuples()]
    note = (f" Left out of the verdict because direct B is at or below the majority baseline: {', '.join(bad)}."
            if bad else "")
    if info.empty:
        return not_tested(CROSS_CLAIM, FUKUHATA, f"no informative pair.{note}".rstrip("."), details)
    parts = "; ".join(f"{r.task_a} → {r.task_b}: {fmt(r.score)} vs {fmt(r.direct_b)} direct "
                      f"({fmt(r.gap, signed=True)})" for r in details.itertuples())
    hits = int(info.close.sum())
    text = (f"Score on B after A vs B fine-tuned directly (one seed): {parts}. A → B is within "
            f"{CLOSE_POINTS:g} points of direct B, or better, on {hits} of {len(info)} informative pairs")
    if "a_after" in info and info.a_after.notna().any():
        text += (f"; A's own head on the A → B backbone keeps {fmt(100 * info.retention_a.mean(), 0)}% of A's "
                 f"score on average (forgetting, not a claim of the paper)")
    return result(CROSS_CLAIM, FUKUHATA, text + "." + note, share_verdict(hits, len(info), "all"), details)


def cross_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The cross-fine-tuning runs as a display table (points; ratios to 2 decimals)."""
    cols = {"task_a": "A", "task_b": "B", "score": "B after A", "direct_b": "B directly", "relative_b": "B ratio",
            "a_before": "A before B", "a_after": "A after B (A's head)", "retention_a": "A retained"}
    if frame is None or len(frame) == 0 or "task_a" not in frame:
        return pd.DataFrame(columns=list(cols.values()))
    out = frame[[c for c in cols if c in frame]].rename(columns=cols).copy()
    for c in ("B after A", "B directly", "A before B", "A after B (A's head)"):
        if c in out:
            out[c] = out[c].map(fmt)
    for c in ("B ratio", "A retained"):
        if c in out:
            out[c] = out[c].map(lambda x: fmt(x, 2))
    if "at_or_below_majority" in frame:
        out["B after A"] = [v + (f" {MAJORITY_MARK}" if flag else "")
                            for v, flag in zip(out["B after A"], frame["at_or_below_majority"])]
    return out.reset_index(drop=True)

