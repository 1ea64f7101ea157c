"""(e) Cross-fine-tuning (Fukuhata & Kano 2025): fine-tune on A, then on B; score B (against B fine-tuned
directly) and A's old head on the A -> B backbone (forgetting)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats
from ..analysis import retention_analysis
from ..cache import has_weights
from ..errors import FewdimsError
from ..predictions import unpack
from ..runner import Runner, score
from ..stats import Interval
from ..tables import fmt, frame, interval_cell_text, majority_points, row, stored_predictions
from ..tasks import get_task
from ..comparisons import (NO, NOT_WORSE, aggregate, compare, defined, informative_reference, interval_columns,
                           intervals_note, outcome, row_text, settle, tally)
from ..verdicts import CROSS_MARGIN, FUKUHATA, N_BOOT, RETENTION_MARGIN, finished, not_tested, result
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
        """Every pair on the section's first `n_seeds` seeds of the profile (1 if unset): stage A is the reference
        run of A at that seed (its weights kept, Chapter.baseline), stage B starts from it with the same seed, and
        'B directly' is B's reference at that seed, so each comparison pairs runs seed by seed."""
        pairs = self.pairs()
        rows = []
        for seed in self.profile.seeds[:self.section.get("n_seeds", 1)]:
            rows += self._pair_rows(pairs, seed)
        df = frame(rows)
        if len(df):
            df["relative_b"] = df["score"] / df["direct_b"]
            df["retention_a"] = df["a_after"] / df["a_before"]
        return df

    def _pair_rows(self, pairs: list[tuple[str, str]], seed: int) -> list[dict]:
        stage_a = {a: (self.base(a, seed=seed, save_weights=True), self.baseline(a, seed))
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
                         "a_after": 100.0 * ret_metrics.get(a_main, math.nan),
                         **stage_columns(rec_a, stage_a[b][1], retention)})
        return rows

    def _ensure_weights(self, config) -> None:
        """Stage-A weights live in a local cache that is never committed: recompute the run if they are gone."""
        if not has_weights(config):
            Runner(self.profile, force=True, store_root=self.runner.store.root, verbose=self.runner.verbose).run(
                config, self.baseline_analyses())


def stage_columns(rec_a: dict, rec_direct_b: dict, retention: dict) -> dict:
    """The columns the claims pair on, beside a stage-B row: direct B's and A-before's per-example predictions and
    labels (None for older records), direct B's seed, A's majority baseline (points), and A's head's predictions
    after B where the retention analysis stored them (`retention['predictions']`: records since 2026-12-03)."""
    b_preds, b_labels = stored_predictions(rec_direct_b)
    a_preds, a_labels = stored_predictions(rec_a)
    after = None
    try:
        stored = next(iter((retention.get("predictions") or {}).values()), None)
        after = unpack(stored["preds"]) if stored else None
    except (KeyError, TypeError, ValueError):
        after = None
    return {"direct_b_preds": b_preds, "direct_b_labels": b_labels,
            "direct_b_seed": rec_direct_b.get("config", {}).get("seed"), "majority_a": majority_points(rec_a),
            "a_before_preds": a_preds, "a_labels": a_labels, "a_after_preds": after}


CROSS_CLAIM = "Fine-tuning on A and then on B scores on B like fine-tuning on B directly."
FORGETTING_CLAIM = ("Fine-tuning on B after A leaves task A largely intact: one BERT holds both tasks "
                    "(little forgetting).")


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame.task_a, frame.task_b)))


def _direct_b_runs(pair: pd.DataFrame) -> pd.DataFrame:
    """Direct B's runs (one per seed) as rows compare() reads, from a pair's columns."""
    get = lambda c: list(pair[c]) if c in pair else [None] * len(pair)  # noqa: E731
    seeds = get("direct_b_seed") if "direct_b_seed" in pair else list(pair["seed"])
    ref = pd.DataFrame({"task": list(pair.task_b), "score": list(pair.direct_b), "seed": seeds,
                        "preds": get("direct_b_preds"), "labels": get("direct_b_labels")})
    return ref.drop_duplicates("seed") if ref["seed"].notna().all() else ref


def cross_claim(frame: pd.DataFrame) -> dict:
    """Per ordered pair (A, B): the score on B after A against B fine-tuned directly (verdicts.compare: B after A
    minus B directly, paired over B's dev examples where both runs stored predictions). 'Like direct' = the
    interval lies above -CROSS_MARGIN (verdicts.NOT_WORSE); below it the pair fails. A pair counts when direct B's
    interval lies above B's majority baseline. Verdict: verdicts.aggregate over the counted pairs."""
    frame = finished(frame)
    if frame.empty or "direct_b" not in frame:
        return not_tested(CROSS_CLAIM, FUKUHATA, "no cross-fine-tuning runs")
    frame = frame[frame.direct_b.notna()]
    if frame.empty:
        return not_tested(CROSS_CLAIM, FUKUHATA, "no direct-B reference runs")
    rows = []
    for a, b in _pairs(frame):
        pair = frame[(frame.task_a == a) & (frame.task_b == b)]
        c = compare(_direct_b_runs(pair), pair)
        maj = float(pair["majority"].mean()) if "majority" in pair else math.nan
        rows.append({"pair": f"{a} → {b}", "task_a": a, "task_b": b, **c.columns("b_directly", "b_after_a"),
                     "majority": maj, "informative": informative_reference(c.reference, c.reference_mean, maj),
                     "outcome": outcome(c.difference, CROSS_MARGIN, NOT_WORSE)})
    details = pd.DataFrame(rows)
    info, note, untested = _counted_pairs(details, CROSS_CLAIM, "direct B does not lie above the majority-class")
    if untested:
        return untested
    parts = "; ".join(f"{r.pair}: {row_text(r, 'b_after_a')} vs {row_text(r, 'b_directly')} directly, difference "
                      f"{row_text(r, 'difference', signed=True)}" for r in details.itertuples())
    text = (f"Score on B after A vs B fine-tuned directly, points of B's metric with 95 % intervals: {parts}. With a "
            f"margin of {CROSS_MARGIN:g} points (B after A scores like B directly when the difference's interval lies "
            f"above −{CROSS_MARGIN:g}), the claim {tally(info.outcome, 'informative pairs')}."
            f"{intervals_note(details, label='pair')}{note}")
    return result(CROSS_CLAIM, FUKUHATA, text, aggregate(info.outcome), details)


def normalised_retention(a_after: float, a_before: float, majority: float) -> float:
    """(A after B - majority) / (A before - majority): the share of what A learned over the majority class that
    survives fine-tuning on B; NaN when A before does not beat the majority (or a value is missing)."""
    if any(x is None or math.isnan(x) for x in (a_after, a_before, majority)) or not a_before > majority:
        return math.nan
    return stats.retention(a_after, a_before, majority)


def with_retention(frame: pd.DataFrame) -> pd.DataFrame:
    """The chapter's frame with `retention_norm` (normalised_retention; NaN where undefined) beside the raw ratio."""
    if frame is None or len(frame) == 0 or "a_after" not in frame:
        return frame
    out = frame.copy()
    majority = out["majority_a"] if "majority_a" in out else pd.Series(math.nan, index=out.index)
    out["retention_norm"] = [normalised_retention(x, y, m) for x, y, m in zip(out.a_after, out.a_before, majority)]
    return out


def _forgetting(pair: pd.DataFrame, task: str, majority: float):
    """(A before's interval, A after minus A before's interval, retention's interval, method) of one pair."""
    before, after = pair.a_before.astype(float).to_numpy(), pair.a_after.astype(float).to_numpy()
    if len(pair) >= 2:  # several seeds: t-intervals over the per-seed values
        ret = [normalised_retention(x, y, majority) for x, y in zip(after, before)]
        before_iv = stats.seed_interval(before)
        diff = stats.seed_interval(after - before)
        ret_iv = stats.seed_interval(ret, unit="fraction") if all(map(math.isfinite, ret)) else None
        return before_iv, diff, ret_iv, f"t over {len(pair)} seeds"
    r = pair.iloc[0]
    preds, labels = r.get("a_before_preds"), r.get("a_labels")
    if not isinstance(preds, np.ndarray) or not isinstance(labels, np.ndarray):
        return None, None, None, "none: one run, no predictions"
    before_iv = stats.bootstrap_metric(task, preds, labels, n_boot=N_BOOT)
    after_preds = r.get("a_after_preds")
    fixed = not isinstance(after_preds, np.ndarray)
    defined_gain = not math.isnan(majority) and before_iv.estimate > majority
    if fixed:  # A after B is a stored score only: the intervals cover A before's dev-set noise
        samples = stats.bootstrap_samples(task, preds, labels, n_boot=N_BOOT)
        low, high = np.quantile(float(after[0]) - samples, [0.025, 0.975])
        diff = Interval(float(after[0]) - before_iv.estimate, float(low), float(high), len(labels),
                        "bootstrap of A before only")
        ret_iv = stats.retention_interval(task, float(after[0]), preds, labels, majority, n_boot=N_BOOT) \
            if defined_gain else None
        return before_iv, diff, ret_iv, (f"bootstrap over {len(labels)} examples of A before only (A after B's "
                                         "predictions are not stored)")
    diff = stats.paired_difference(task, after_preds, preds, labels, n_boot=N_BOOT)
    ret_iv = stats.retention_interval(task, after_preds, preds, labels, majority, n_boot=N_BOOT) \
        if defined_gain else None
    return before_iv, diff, ret_iv, f"paired bootstrap, {len(labels)} examples"


def forgetting_claim(frame: pd.DataFrame) -> dict:
    """Per ordered pair (A, B): A's own head put back on the A -> B backbone and scored on A's dev set ('A after
    B', stored in the stage-B record's extra.retention), against A's score before B. Normalised retention =
    (A after B - majority) / (A before - majority), with its interval (stats.retention_interval where A before's
    predictions are stored; A after B's are not, so that interval covers A before's dev-set noise only, and says
    so; a t-interval over seeds where there are several). Little forgetting = the retention's interval lies above
    1 - RETENTION_MARGIN; below it the pair fails. A pair counts when A before's interval lies above A's majority
    baseline. Verdict: verdicts.aggregate over the counted pairs."""
    frame = finished(frame)
    if frame.empty or "a_after" not in frame:
        return not_tested(FORGETTING_CLAIM, FUKUHATA, "no cross-fine-tuning runs")
    frame = frame[frame.a_after.notna() & frame.a_before.notna()]
    if frame.empty:
        return not_tested(FORGETTING_CLAIM, FUKUHATA, "no stage-B record scored A's head (extra.retention)")
    rows = []
    for a, b in _pairs(frame):
        pair = frame[(frame.task_a == a) & (frame.task_b == b)]
        maj = float(pair["majority_a"].mean()) if "majority_a" in pair else math.nan
        before_iv, diff, ret_iv, method = _forgetting(pair, a, maj)
        before, after = float(pair.a_before.mean()), float(pair.a_after.mean())
        ret = normalised_retention(after, before, maj)
        shifted = None if not defined(ret_iv) else Interval(ret_iv.estimate - 1, ret_iv.low - 1, ret_iv.high - 1,
                                                            ret_iv.n, ret_iv.method, "fraction")
        rows.append({"pair": f"{a} → {b}", "task_a": a, "task_b": b,
                     **interval_columns("a_before", before_iv, before, len(pair)),
                     "a_after": after,
                     **interval_columns("difference", diff, after - before, len(pair)),
                     **interval_columns("retention", ret_iv, ret, len(pair) if math.isfinite(ret) else 0),
                     "interval": method, "majority_a": maj,
                     "informative": informative_reference(before_iv, before, maj),
                     "outcome": outcome(shifted, RETENTION_MARGIN, NOT_WORSE)})
    details = pd.DataFrame(rows)
    info, note, untested = _counted_pairs(details, FORGETTING_CLAIM, "A before B does not lie above A's majority-class")
    if untested:
        return untested
    parts = "; ".join(f"{r.pair}: A before {row_text(r, 'a_before')}, A after B {fmt(r.a_after)}, difference "
                      f"{row_text(r, 'difference', signed=True)}, normalised retention "
                      f"{row_text(r, 'retention', digits=2)}" for r in details.itertuples())
    text = (f"A's own fine-tuned head on the A → B backbone, scored on A's dev set (points of A's metric, 95 % "
            f"intervals; retention = (A after B − majority) / (A before − majority)): {parts}. With a margin of "
            f"{RETENTION_MARGIN:g} (little forgetting when the retention's interval lies above "
            f"{1 - RETENTION_MARGIN:.2f}), the claim {tally(info.outcome, 'informative pairs')}."
            f"{intervals_note(details, label='pair')}{note}")
    return result(FORGETTING_CLAIM, FUKUHATA, text, aggregate(info.outcome), details)


def cross_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The cross-fine-tuning runs as a display table (points; ratios to 2 decimals; 'A retained' is the normalised
    retention, `normalised_retention`, 'n/a' where A before does not beat its majority baseline). 'B after A'
    carries its 95 % interval over dev examples (tables.interval_cell_text); the comparisons' paired intervals are in
    the claims' tables."""
    cols = {"task_a": "A", "task_b": "B", "score": "B after A", "direct_b": "B directly", "relative_b": "B ratio",
            "a_before": "A before B", "a_after": "A after B (A's head)", "retention_norm": "A retained"}
    if frame is None or len(frame) == 0 or "task_a" not in frame:
        return pd.DataFrame(columns=list(cols.values()))
    if "seed" in frame and frame["seed"].nunique() > 1:  # one row per pair and seed
        cols = {"task_a": "A", "task_b": "B", "seed": "seed", **cols}
    frame = with_retention(frame)
    out = frame[[c for c in cols if c in frame]].rename(columns=cols).copy()
    for c in ("B after A", "B directly", "A before B", "A after B (A's head)"):
        if c in out:
            out[c] = out[c].map(fmt)
    for c in ("B ratio", "A retained"):
        if c in out:
            out[c] = out[c].map(lambda x: fmt(x, 2))
    if "B after A" in out:
        flags = frame["at_or_below_majority"] if "at_or_below_majority" in frame else [False] * len(frame)
        out["B after A"] = [interval_cell_text(frame.iloc[[i]], [frame["score"].iloc[i]], bool(flag))
                            for i, flag in enumerate(flags)]
    return out.reset_index(drop=True)


def _counted_pairs(details: pd.DataFrame, claim: str, reference_fails: str):
    """(the pairs that count, a note naming those left out, a 'not tested' result or None)."""
    info = settle(details)
    bad = details[details.informative == NO].pair.tolist()
    note = (f" Left out of the verdict because the interval of {reference_fails} baseline: {', '.join(bad)}."
            if bad else "")
    untested = not_tested(claim, FUKUHATA, f"no informative pair.{note}".rstrip("."), details) if info.empty else None
    return info, note, untested
