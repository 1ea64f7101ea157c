"""The summary chapter: every claim of both papers at once, and each manipulation's effect against the reference."""
from __future__ import annotations

import math

import pandas as pd

from ..verdicts import finished, tasks_of
from . import EXPERIMENTS, open_chapter
from .base import ALL_DIMS
from .cka import cka_block_claim, layer_drop_claim, layer_drop_table
from .cross_finetune import cross_claim, forgetting_claim
from .dimension import CLAIM_KS, best_k, few_dims_claim, random_variant, selected_vs_random_claim
from .freezing import FINE_TUNED, FROZEN_MLP, freezing_claim
from .layer import ALL_DIMS_LAYER, layer_claim
from .token import CLS, MAX_NORM, token_claim
from ..tables import sorted_unique


def collect(profile, runner, experiments=EXPERIMENTS) -> dict:
    """Every chapter's results: {name: what its `results()` returns}."""
    return {name: open_chapter(name, profile, runner).results() for name in experiments}


def _dimension_runs(results: dict):
    return getattr(results.get("dimension"), "runs", None)


def majority_from_frames(results: dict) -> dict:
    """{task display: majority-baseline points} from any experiment frame of `results` that has one."""
    out: dict = {}
    frames = [results.get("token"), _dimension_runs(results), results.get("layer"), results.get("freezing")]
    for frame in frames:
        if frame is None or len(frame) == 0 or "majority" not in frame:
            continue
        for task, value in frame.groupby("task", sort=False)["majority"].mean().items():
            if not math.isnan(value):
                out.setdefault(task, float(value))
    return out


def all_claims(results: dict, representation: str = "cls", majority: dict | None = None) -> list[dict]:
    """Every claim of both papers, in the book's order, from the results of `collect`, then the outliers chapter's
    external claims (see `external`). `majority` (for the layer-dropping claim) defaults to the majority baselines
    found in the other experiments' frames."""
    runs = _dimension_runs(results)
    dim = results.get("dimension")
    if majority is None:
        majority = majority_from_frames(results)
    return [
        token_claim(results.get("token")),
        few_dims_claim(runs),
        selected_vs_random_claim(runs, *([dim.k] if dim is not None else [])),
        layer_claim(results.get("layer")),
        freezing_claim(results.get("freezing")),
        cross_claim(results.get("cross_finetune")),
        forgetting_claim(results.get("cross_finetune")),
        cka_block_claim(results.get("cka"), representation),
        layer_drop_claim(results.get("cka"), majority),
    ] + external(results)


def external(results: dict) -> list[dict]:
    """The external claims of the outliers chapter (Rudman et al. 2023, Kovaleva et al. 2021, Timkey & van
    Schijndel 2021), after both papers' claims, when `results` holds that chapter (its results may be None: then
    they are 'not tested'). Their verdicts may also be 'inconclusive' (verdicts.INCONCLUSIVE)."""
    if "outliers" not in results:
        return []
    from .outlier_claims import external_claims

    return external_claims(results["outliers"])


def effect_table(results: dict) -> pd.DataFrame:
    """Long table for the book's summary figure: per task, each manipulation's mean score minus the CLS,
    all-dims, fine-tuned reference (points)."""
    rows = []

    def add(task, name, value, base):
        if not (math.isnan(value) or math.isnan(base)):
            rows.append({"task": task, "manipulation": name, "delta": value - base})

    token = finished(results.get("token"))
    base = {t: token[(token.task == t) & (token.variant == CLS)].score.mean() for t in tasks_of(token)}
    for t in tasks_of(token):
        add(t, "max-norm token", token[(token.task == t) & (token.variant == MAX_NORM)].score.mean(), base[t])
    runs = finished(_dimension_runs(results))
    for t in tasks_of(runs):
        r = runs[runs.task == t]
        ref = r[r.variant == ALL_DIMS].score.mean()
        for k in CLAIM_KS:
            add(t, f"best {k} dims", best_k(r, k)[0], ref)
        add(t, "random 2 dims", r[r.variant == random_variant(2)].score.mean(), ref)
    layers = finished(results.get("layer"))
    if len(layers) and "layer_index" in layers:
        top = int(layers.layer_index.max())
        for t in tasks_of(layers):
            r = layers[layers.task == t]
            ref = r[(r.variant == ALL_DIMS_LAYER) & (r.layer_index == top)].score.mean()
            for variant in sorted_unique(r.variant):  # the k-dims curve (and all dims where the profile runs it)
                mid = r[(r.variant == variant) & (r.layer_index == top // 2)].score
                add(t, f"{'all dims' if variant == ALL_DIMS_LAYER else variant.replace('k=', '') + ' dims'}, "
                       f"layer {top // 2}", mid.mean() if len(mid) else math.nan, ref)
    frz = finished(results.get("freezing"))
    for t in tasks_of(frz):
        r = frz[frz.task == t]
        add(t, FROZEN_MLP, r[r.variant == FROZEN_MLP].score.mean(), r[r.variant == FINE_TUNED].score.mean())
    cross = finished(results.get("cross_finetune"))
    if len(cross) and "task_b" in cross:
        for t in sorted_unique(cross.task_b):
            r = cross[cross.task_b == t]
            add(t, "A → B (mean over A)", r.score.mean(), r.direct_b.mean())
    drop = layer_drop_table(results.get("cka"))
    for t in tasks_of(drop):
        r = drop[drop.task == t]
        top = int(r.layers_kept.max())
        if top >= 1:
            add(t, "top layer dropped", float(r[r.layers_kept == top - 1].score.iloc[0]), float(r.full.iloc[0]))
    return pd.DataFrame(rows, columns=["task", "manipulation", "delta"])


# -- the at-a-glance page ------------------------------------------------------------------------------------------
CHAPTER_OF = {"token": "token", "few_dims": "dimension", "selected_vs_random": "dimension", "layer": "layer",
              "freezing": "freezing", "cross": "cross_finetune", "forgetting": "cross_finetune", "cka_block": "cka",
              "layer_drop": "cka"}


def glance_html(claims: list[dict]) -> str:
    """One HTML table (a pandas 'dataframe' table, so the book's table style applies): # | the paper says (source) |
    our verdict | what we measured | chapter (a link to its page)."""
    from html import escape

    from ..sources import SOURCES, source_of

    rows = []
    for i, claim in enumerate(claims, start=1):
        source = source_of(claim)
        key = next((k for k, v in SOURCES.items() if v is source), None)
        said = (f"“{escape(source.quote)}” <i>({escape(source.where)})</i>" if source
                else f"{escape(claim['claim'])} <i>({escape(claim['paper'])})</i>")
        chapter = CHAPTER_OF.get(key) or claim.get("chapter") or "outliers"
        measured = escape(claim.get("effect") or _first_sentence(claim["measured"]))
        rows.append({"#": i, "the paper says": said, "our verdict": f"<b>{escape(claim['verdict'])}</b>",
                     "what we measured": measured,
                     "chapter": f'<a href="{chapter}.html">{chapter.replace("_", " ")}</a>'})
    return pd.DataFrame(rows).to_html(escape=False, index=False, classes="glance")


def _first_sentence(text: str) -> str:
    """The measured sentence's first sentence, whole (a cut sentence would hide numbers the verdict rests on)."""
    return text.split(". ")[0].rstrip(".") + "."


