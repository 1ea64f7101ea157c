"""The book's notebooks and the verdicts they print.

- Fast: the verdict logic of `fewdims.claims` on small hand-made frames (every verdict of every claim, the
  'not tested' reasons, the 'mean ± std (seeds)' cells), every `fewdims.plots` function on hand-made data, and the
  stored notebooks' shape (no outputs, a papermill `parameters` cell with the documented names).
- Slow (marked `slow`): every notebook executed by papermill under the smoke profile, sharing one results and
  cache directory for the whole session (the smoke grid is computed once); each must run without an error,
  print nothing to stderr and show at least one figure.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from fewdims import figures, tables, verdicts
from fewdims.chapters import cka as cka_chapter
from fewdims.chapters import cross_finetune as cross_finetune_chapter
from fewdims.chapters import dimension as dimension_chapter
from fewdims.chapters import freezing as freezing_chapter
from fewdims.chapters import layer as layer_chapter
from fewdims.chapters import summary as summary_chapter
from fewdims.chapters import token as token_chapter

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
# Experiments first, then the chapters that read every experiment (summary, setup): all reuse the smoke grid.
NOTEBOOKS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka", "summary", "setup")
COMMON_PARAMETERS = ("profile", "compute")  # every other profile key reaches the notebook through papermill -p
EXTRA_PARAMETERS = {"cka": ("representation",), "summary": ("representation",)}  # display options of a page


# -- hand-made frames ----------------------------------------------------------------------------------------------
def runs(task, variant, scores, majority=50.0, **fields):
    """Rows like Experiments' frames: one per score, seeds 0, 1, 2, ..."""
    return [{"task": task, "variant": variant, "seed": seed, "score": s, "majority": majority,
             "at_or_below_majority": bool(s <= majority), **fields} for seed, s in enumerate(scores)]


def frame(*groups):
    return pd.DataFrame([r for g in groups for r in g])


# -- summarise / score_table ---------------------------------------------------------------------------------------
def test_cell_shows_mean_std_and_every_seed():
    assert tables.cell_text([85.1, 85.8, 85.0]) == "85.3 ± 0.4 (85.1, 85.8, 85.0)"
    assert tables.cell_text([70.0]) == "70.0"
    assert tables.cell_text([math.nan]) == "not run"
    assert tables.cell_text([-1.5, 2.5]) == "0.5 ± 2.8 (−1.5, 2.5)"


def test_summarise_flags_runs_at_or_below_majority_and_skips_missing_runs():
    df = frame(runs("RTE", "cls", [66.0, 52.0, math.nan], majority=52.7))
    out = tables.summarise(df).iloc[0]
    assert out["n"] == 2 and out["missing"] == 1 and out["below_majority"] == 1
    assert out["cell"] == f"59.0 ± 9.9 (66.0, 52.0) {tables.MAJORITY_MARK}"
    assert out["seeds"] == [0, 1]


def test_score_table_has_matched_and_mismatched_mnli_columns():
    rows = []
    for seed, (m, mm) in enumerate([(80.0, 81.0), (82.0, 83.0)]):
        rows.append({"task": "MNLI", "variant": "cls", "seed": seed, "score": m, "majority": 35.0,
                     "at_or_below_majority": False, "validation_matched/accuracy": m,
                     "validation_mismatched/accuracy": mm})
    rows.append({"task": "CoLA", "variant": "cls", "seed": 0, "score": 0.0, "majority": 0.0,
                 "at_or_below_majority": True, "validation/matthews": 0.0})
    table = tables.score_table(pd.DataFrame(rows))
    assert list(table.columns) == ["MNLI-m (acc.)", "MNLI-mm (acc.)", "CoLA (MCC)"]
    assert table.loc["cls", "MNLI-mm (acc.)"] == "82.0 ± 1.4 (81.0, 83.0)"
    assert table.loc["cls", "CoLA (MCC)"].endswith(tables.MAJORITY_MARK)


# -- (a) token ---------------------------------------------------------------------------------------------------
def token_frame(cola_gap=0.5, sst_gap=-1.0, rte_gap=-6.0, majority=50.0):
    return frame(runs("CoLA", "cls", [55.0, 56.0, 57.0], majority=0.0),
                 runs("CoLA", "max_norm", [55.0 + cola_gap, 56.0 + cola_gap, 57.0 + cola_gap], majority=0.0),
                 runs("SST-2", "cls", [90.0, 91.0], majority=majority),
                 runs("SST-2", "max_norm", [90.0 + sst_gap, 91.0 + sst_gap], majority=majority),
                 runs("RTE", "cls", [65.0, 66.0], majority=52.7),
                 runs("RTE", "max_norm", [65.0 + rte_gap, 66.0 + rte_gap], majority=52.7))


def test_token_claim_supported_with_rte_as_exception():
    c = token_chapter.token_claim(token_frame())
    assert c["verdict"] == verdicts.SUPPORTED
    assert "2 of 2 informative tasks other than RTE" in c["measured"]
    assert "exception, as in the paper" in c["measured"]
    assert "CoLA +0.5" in c["measured"] and "RTE −6.0" in c["measured"]


def test_token_claim_partly_and_not_supported():
    assert token_chapter.token_claim(token_frame(sst_gap=-3.0))["verdict"] == verdicts.PARTLY      # 1 of 2
    assert token_chapter.token_claim(token_frame(cola_gap=-8, sst_gap=-3.0))["verdict"] == verdicts.NOT_SUPPORTED


def test_token_claim_not_tested_without_informative_tasks():
    assert token_chapter.token_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED
    only_rte = token_frame()
    only_rte = only_rte[only_rte.task == "RTE"]
    c = token_chapter.token_claim(only_rte)
    assert c["verdict"] == verdicts.NOT_TESTED and "other than RTE" in c["measured"]
    # SST-2 at the majority baseline is uninformative: left out and named
    df = token_frame(majority=95.0)
    c = token_chapter.token_claim(df)
    assert "SST-2" in c["measured"].split("majority-class baseline:")[1]
    assert "1 of 1 informative" in c["measured"]


# -- (b) dimensions ----------------------------------------------------------------------------------------------
def dim_frame(gaps, random_scores=(70.0, 72.0), selected=85.0):
    groups = []
    for task, gap in gaps.items():
        groups += [runs(task, "CLS, all dims", [90.0, 90.0, 90.0]),
                   runs(task, "best k=2", [90.0 - gap] * 3, k=2),
                   runs(task, "random k=2", list(random_scores), k=2),
                   runs(task, "random k=3", [60.0], k=3),
                   runs(task, "effective pair", [selected], k=2),
                   runs(task, "scan top pair", [selected - 5], k=2)]
    return frame(*groups)


def test_few_dims_verdicts():
    assert dimension_chapter.few_dims_claim(dim_frame({"SST-2": 1.0, "MRPC": 1.5, "RTE": 9.0}))["verdict"] == verdicts.SUPPORTED
    c = dimension_chapter.few_dims_claim(dim_frame({"SST-2": 1.0, "MRPC": 4.0, "RTE": 9.0}))
    assert c["verdict"] == verdicts.PARTLY and "1 of 3" in c["measured"]
    assert dimension_chapter.few_dims_claim(dim_frame({"SST-2": 4.0, "MRPC": 4.5}))["verdict"] == verdicts.PARTLY  # within 5
    assert dimension_chapter.few_dims_claim(dim_frame({"SST-2": 9.0, "MRPC": 9.0}))["verdict"] == verdicts.NOT_SUPPORTED
    assert dimension_chapter.few_dims_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED


def test_few_dims_uses_the_better_of_two_and_three_dims():
    df = dim_frame({"SST-2": 9.0})
    df.loc[df.variant == "random k=3", "score"] = 89.5
    c = dimension_chapter.few_dims_claim(df)
    assert c["verdict"] == verdicts.SUPPORTED
    assert c["details"].iloc[0]["best_selected"] == pytest.approx(89.5)


def test_selected_vs_random():
    assert dimension_chapter.selected_vs_random_claim(dim_frame({"SST-2": 1, "RTE": 1}))["verdict"] == verdicts.SUPPORTED
    c = dimension_chapter.selected_vs_random_claim(dim_frame({"SST-2": 1, "RTE": 1}, selected=71.5))
    assert c["verdict"] == verdicts.NOT_SUPPORTED  # 71.5 vs random mean 71.0: less than BEAT_POINTS
    c = dimension_chapter.selected_vs_random_claim(dim_frame({"SST-2": 1}, random_scores=(40.0, 50.0), selected=45.0))
    assert c["verdict"] == verdicts.NOT_TESTED  # nothing above the majority baseline (50)


# -- (c) layers --------------------------------------------------------------------------------------------------
def layer_frame(curves, k_curves=None):
    rows = []
    for task, curve in curves.items():
        for layer, score in enumerate(curve):
            rows += runs(task, "all dims", [score], layer_index=layer)
            rows += runs(task, "k=2", [(k_curves or curves)[task][layer]], layer_index=layer)
    return pd.DataFrame(rows)


def test_layer_claim_verdicts():
    rising = [50, 60, 70, 80, 89, 90, 90]          # L = 6: lower = 1-3, upper = 4-6
    assert layer_chapter.layer_claim(layer_frame({"SST-2": rising, "RTE": rising}))["verdict"] == verdicts.SUPPORTED
    steep = [50, 60, 70, 75, 80, 85, 90]           # lower less, but the upper layers spread 10 points
    c = layer_chapter.layer_claim(layer_frame({"SST-2": steep, "RTE": steep}))
    assert c["verdict"] == verdicts.PARTLY and "layers 1-3" in c["measured"] and "layers 4-6" in c["measured"]
    flat_low = [50, 88, 88, 88, 60, 60, 60]        # upper flat but higher layers are worse
    assert layer_chapter.layer_claim(layer_frame({"SST-2": flat_low}))["verdict"] == verdicts.PARTLY
    bad = [50, 90, 90, 90, 60, 80, 70]
    assert layer_chapter.layer_claim(layer_frame({"SST-2": bad}))["verdict"] == verdicts.NOT_SUPPORTED
    assert layer_chapter.layer_claim(layer_frame({"SST-2": [50, 60, 70]}))["verdict"] in verdicts.VERDICTS
    assert layer_chapter.layer_claim(layer_frame({"SST-2": [50, 60]}))["verdict"] == verdicts.NOT_TESTED  # L = 1


# -- (d) freezing ------------------------------------------------------------------------------------------------
def freeze_frame(frozen_rte=53.0, frozen_cola=1.0, frozen_sst=85.0):
    return frame(runs("RTE", "fine-tuned, linear head", [66.0, 67.0], majority=52.7),
                 runs("RTE", "frozen, 2-layer head", [frozen_rte, frozen_rte], majority=52.7),
                 runs("CoLA", "fine-tuned, linear head", [55.0, 56.0], majority=0.0),
                 runs("CoLA", "frozen, 2-layer head", [frozen_cola, frozen_cola], majority=0.0),
                 runs("SST-2", "fine-tuned, linear head", [91.0, 92.0], majority=50.9),
                 runs("SST-2", "frozen, 2-layer head", [frozen_sst, frozen_sst], majority=50.9))


def test_freezing_verdicts():
    c = freezing_chapter.freezing_claim(freeze_frame())
    assert c["verdict"] == verdicts.SUPPORTED and "2 of 2 informative harder tasks" in c["measured"]
    assert "easier tasks" in c["measured"]
    assert freezing_chapter.freezing_claim(freeze_frame(frozen_rte=56.0, frozen_cola=30.0))["verdict"] == verdicts.PARTLY
    assert freezing_chapter.freezing_claim(freeze_frame(frozen_rte=64.0, frozen_cola=52.0))["verdict"] == verdicts.NOT_SUPPORTED
    only_easy = freeze_frame()
    assert freezing_chapter.freezing_claim(only_easy[only_easy.task == "SST-2"])["verdict"] == verdicts.NOT_TESTED


# -- (e) cross-fine-tuning ---------------------------------------------------------------------------------------
def cross_frame(scores):
    rows = []
    for (a, b), (score, direct) in scores.items():
        rows.append({"task": b, "task_a": a, "task_b": b, "seed": 0, "score": score, "direct_b": direct,
                     "majority": 50.0, "at_or_below_majority": score <= 50.0, "a_before": 80.0, "a_after": 60.0,
                     "relative_b": score / direct, "retention_a": 0.75})
    return pd.DataFrame(rows)


def test_cross_verdicts():
    good = {("SST-2", "RTE"): (65.0, 66.0), ("RTE", "SST-2"): (92.0, 91.0)}
    c = cross_finetune_chapter.cross_claim(cross_frame(good))
    assert c["verdict"] == verdicts.SUPPORTED and "75%" in c["measured"]
    half = {("SST-2", "RTE"): (60.0, 66.0), ("RTE", "SST-2"): (92.0, 91.0)}
    assert cross_finetune_chapter.cross_claim(cross_frame(half))["verdict"] == verdicts.PARTLY
    bad = {("SST-2", "RTE"): (55.0, 66.0), ("RTE", "SST-2"): (80.0, 91.0), ("MRPC", "RTE"): (60.0, 66.0)}
    assert cross_finetune_chapter.cross_claim(cross_frame(bad))["verdict"] == verdicts.NOT_SUPPORTED
    useless = {("SST-2", "RTE"): (50.0, 50.0)}
    assert cross_finetune_chapter.cross_claim(cross_frame(useless))["verdict"] == verdicts.NOT_TESTED
    assert cross_finetune_chapter.cross_claim(pd.DataFrame())["verdict"] == verdicts.NOT_TESTED


# -- CKA ---------------------------------------------------------------------------------------------------------
def block_matrix(n=7, split=4, within=0.9, between=0.3, undefined_first=True):
    m = np.full((n, n), between)
    m[:split, :split] = within
    m[split:, split:] = within
    np.fill_diagonal(m, 1.0)
    out = m.tolist()
    if undefined_first:
        out = [[None] * n] + [[None] + row[1:] for row in out[1:]]
    return out


def cka_entry(finetuned, pretrained, drop_scores, metric="accuracy"):
    return {"layers": {"cls": {"finetuned": finetuned, "pretrained": pretrained,
                               "pretrained_vs_finetuned": [None] + [0.9] * (len(finetuned) - 1)},
                       "layer_drop": [{metric: s / 100} for s in drop_scores],
                       "params": {"representations": ["cls", "mean"]}},
            "score": drop_scores[-1], "metric": metric, "key": "x"}


def test_block_split_ignores_undefined_layers():
    out = cka_chapter.block_split(block_matrix())
    assert out["layers"] == [1, 2, 3, 4, 5, 6] and out["split"] == 4
    assert out["contrast"] == pytest.approx(0.6)


def test_cka_block_verdicts():
    flat = block_matrix(within=0.8, between=0.8)
    drops = [50, 55, 60, 70, 85, 89.5, 90]
    both = {"SST-2": cka_entry(block_matrix(), flat, drops), "RTE": cka_entry(block_matrix(), flat, drops)}
    c = cka_chapter.cka_block_claim(both)
    assert c["verdict"] == verdicts.SUPPORTED and "[1-3] [4-6]" in c["measured"]
    one = {"SST-2": cka_entry(block_matrix(), flat, drops), "RTE": cka_entry(flat, flat, drops)}
    assert cka_chapter.cka_block_claim(one)["verdict"] == verdicts.PARTLY
    assert cka_chapter.cka_block_claim({"RTE": cka_entry(flat, flat, drops)})["verdict"] == verdicts.NOT_SUPPORTED
    tiny = {"RTE": cka_entry(block_matrix(n=3, split=2), block_matrix(n=3, split=2), [50, 60, 70])}
    c = cka_chapter.cka_block_claim(tiny)  # layers 1-2 only: no room for two blocks
    assert c["verdict"] == verdicts.NOT_TESTED and "fewer than 3" in c["measured"]
    with pytest.raises(Exception, match="representation"):
        cka_chapter.check_representation(both, "pooler")


def test_layer_drop_verdicts():
    m = block_matrix()
    good = {"SST-2": cka_entry(m, m, [50, 55, 60, 70, 85, 89.5, 90])}
    c = cka_chapter.layer_drop_claim(good, majority={"SST-2": 50.9})
    assert c["verdict"] == verdicts.SUPPORTED and "1 of 6" in c["measured"]
    table = cka_chapter.layer_drop_table(good)
    assert table.droppable.iloc[0] == 1 and list(table.layers_kept) == list(range(7))
    bad = {"RTE": cka_entry(m, m, [50, 55, 60, 70, 85, 80, 90]), **good}
    assert cka_chapter.layer_drop_claim(bad)["verdict"] == verdicts.PARTLY
    flat = {"SST-2": cka_entry(m, m, [50.9] * 7)}
    assert cka_chapter.layer_drop_claim(flat, majority={"SST-2": 50.9})["verdict"] == verdicts.NOT_TESTED
    assert cka_chapter.layer_drop_claim({})["verdict"] == verdicts.NOT_TESTED


def test_all_claims_on_nothing_are_not_tested_with_a_reason():
    out = summary_chapter.all_claims({})
    assert len(out) == 8 and {c["verdict"] for c in out} == {verdicts.NOT_TESTED}
    assert all(c["measured"].startswith("Not tested: ") for c in out)
    table = verdicts.claims_table(out)
    assert list(table.columns) == ["paper", "claim", "measured", "verdict"]


# -- plots -------------------------------------------------------------------------------------------------------
def test_every_plot_returns_a_titled_figure_with_labelled_axes():
    from matplotlib.figure import Figure

    m = block_matrix()
    cka = {"SST-2": cka_entry(m, m, [50, 55, 60, 70, 85, 89.5, 90])}
    dims = dim_frame({"SST-2": 1.0, "RTE": 3.0})
    dims["dims"] = [(1, 2)] * len(dims)
    dims["removal_cost"], dims["left_out"], dims["best_set"] = 1.0, 3, 0
    dims.loc[dims.index[:3], "variant"] = "leave one out"
    scan = pd.DataFrame([{"task": "SST-2", "pairs": 10, "seconds": 0.5, "score": "accuracy",
                          "quantiles": {"0.0": 0.5, "0.5": 0.6, "1.0": 0.9}, "top": [[1, 2, 0.9]],
                          "importance": [0.7, 0.9, 0.9, 0.6]}])
    masking = pd.DataFrame([{"task": "SST-2", "split": "validation", "dims": (1, 2), "k": 2, "score": 60.0}])
    drawn = [
        figures.score_bars(token_frame()), figures.score_bars(dims, x="variant", hue=None, col="task", kind="dot"),
        figures.layer_curves(layer_frame({"SST-2": [50, 60, 70, 80, 89, 90, 90]})),
        figures.heatmap(m), figures.cka_grid(cka), figures.cka_layer_curves(cka),
        figures.layer_drop_curves(cka_chapter.layer_drop_table(cka)),
        figures.relative_matrix(cross_frame({("SST-2", "RTE"): (65.0, 66.0), ("RTE", "SST-2"): (92.0, 91.0)})),
        figures.scan_histogram(scan, reference={"SST-2": 90.0}), figures.importance_plot(scan, {"SST-2": [1]}),
        figures.removal_cost_bars(dims), figures.masking_contrast(dims, masking),
        figures.delta_heatmap(pd.DataFrame({"task": ["SST-2"], "manipulation": ["x"], "delta": [-1.0]})),
        figures.compute_bars(pd.DataFrame({"experiment": ["token"], "task": ["SST-2"], "seconds": [60.0]})),
        figures.score_bars(pd.DataFrame(), title="nothing"),
    ]
    for fig in drawn:
        assert isinstance(fig, Figure)
        assert fig._suptitle is not None and fig._suptitle.get_text()
        for ax in fig.axes:
            if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.has_data():
                assert ax.get_xlabel() or ax.get_xticklabels(), ax
                assert ax.get_ylabel() or ax.get_yticklabels(), ax


# -- the stored notebooks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean_with_a_parameters_cell(name):
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store notebooks without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    translators = pytest.importorskip("papermill.translators")
    names = [p.name for p in translators.PythonTranslator.inspect(params[0])]  # what `papermill -p` can set
    assert set(names) == set(COMMON_PARAMETERS) | set(EXTRA_PARAMETERS.get(name, ()))
    assert len(names) == len([line for line in params[0].source.splitlines() if line.strip() and not line.startswith("#")])
    assert f'open_chapter("{name}", globals())' in "".join(c.source for c in code)


# -- executing the notebooks (slow) --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """One results/cache directory for every notebook of the session, so the smoke grid is computed once."""
    root = tmp_path_factory.mktemp("notebooks")
    values = {"FEWDIMS_RESULTS": str(root / "results"), "FEWDIMS_CACHE": str(root / "cache"),
              "FEWDIMS_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_the_smoke_profile(name, smoke_env):
    papermill = pytest.importorskip("papermill")
    out = smoke_env / "executed" / f"{name}.ipynb"
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(NB_DIR / f"{name}.ipynb"), str(out), parameters=dict(profile="smoke"),
                               kernel_name="python3", cwd=str(NB_DIR), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{name} printed to stderr (warnings or progress bars): {stderr[:2]}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} produced no figure"
    provenance = [o for o in outputs if "Provenance:" in o.get("data", {}).get("text/markdown", "")]
    assert provenance, f"{name} has no provenance line"
