"""Every notebook parameter reaches its runs: the precedence rule (explicit > environment > profile file), the
chapter's section over the top level, and errors that name what is wrong (fewdims.profiles, fewdims.notebook)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from fewdims.errors import FewdimsError
from fewdims.fixtures import write_tiny_glue
from fewdims.notebook import notebook_parameters, open_chapter
from fewdims.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWDIMS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FEWDIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    return tmp_path


def test_a_chapter_section_wins_over_the_top_level_for_its_chapter(isolated):
    frozen = load_profile("smoke", chapter="freezing", epochs=5, head_lr=0.02)
    assert frozen.section("freezing")["epochs"] == 5 and frozen.section("freezing")["head_lr"] == 0.02
    assert frozen["epochs"] == 1  # the profile's (reference) runs keep theirs
    token = load_profile("smoke", chapter="token", epochs=5)
    assert token["epochs"] == 5 and token.section("freezing")["epochs"] == 3
    assert load_profile("smoke", chapter="dimension", k=3).section("layer")["k"] == 2
    assert load_profile("smoke", chapter="token", poolings="cls,mean").section("token")["poolings"] == ["cls", "mean"]


def test_frozen_runs_read_the_chapter_section(isolated):
    from fewdims.chapters import open_chapter as chapter
    from fewdims.runner import Runner

    profile = load_profile("smoke", chapter="freezing", task="sst2", seeds=1, epochs=2, head_lr=0.05)
    runner = Runner(profile, dry_run=True)
    chapter("freezing", profile, runner).results()
    frozen = [c for c in runner.planned if c.freeze_backbone]
    assert frozen and all(c.epochs == 2 and c.head_lr == 0.05 for c in frozen)
    assert all(c.epochs == 1 for c in runner.planned if not c.freeze_backbone)


def test_task_narrows_cross_finetuning_to_its_pairs(isolated):
    from fewdims.chapters.cross_finetune import CrossFinetuneChapter

    profile = load_profile("smoke", chapter="cross_finetune", task="rte")
    assert CrossFinetuneChapter(profile).pairs() == [("sst2", "rte"), ("rte", "sst2")]
    with pytest.raises(FewdimsError, match="has no pair"):
        CrossFinetuneChapter(load_profile("smoke", chapter="cross_finetune", task="cola")).pairs()


def test_a_chapter_section_may_narrow_the_tasks_and_says_so(isolated):
    from fewdims.chapters import open_chapter as chapter
    from fewdims.provenance import compute_text, setup_tables

    edition = load_profile("cpu")
    assert chapter("dimension", edition).tasks == ["cola", "sst2", "mrpc", "stsb"]
    assert chapter("layer", edition).left_out_tasks() == ["rte"]
    assert chapter("token", edition).tasks == edition.tasks  # no `tasks` in its section: every task
    assert "dimension, layer chapters: CoLA, SST-2, MRPC, STS-B" in setup_tables(edition, {})["profile"].loc["tasks",
                                                                                                          "value"]
    # one task (notebook or grid): every narrowing chapter runs it; the notebook's `tasks` sets its chapter's
    assert chapter("dimension", load_profile("cpu", chapter="dimension", task="rte")).tasks == ["rte"]
    assert chapter("layer", load_profile("cpu", chapter="layer", tasks="rte,cola")).tasks == ["cola", "rte"]
    page = open_chapter("dimension", {"profile": "cpu", "compute": False})
    assert "leaves out the profile's RTE" in page.tasks_left_out()
    # nothing kept, or an empty list: an error that names both lists and the fix, never an empty chapter
    with pytest.raises(FewdimsError, match="runs none of the profile's tasks .rte.*-p tasks rte"):
        chapter("dimension", load_profile("cpu", tasks="rte")).tasks
    with pytest.raises(FewdimsError, match="dimension.tasks must be a non-empty list"):
        load_profile("cpu", chapter="dimension", tasks=[])
    # compute in words: two one-thread runs side by side on two cores take half their summed time
    runs = [{"timings": {"total_s": 3600.0, "threads": 1}, "environment": {"cpu_count": 2}}] * 2
    assert compute_text(runs).startswith("2.00 hours") and "1.00 hours of the machine's time" in compute_text(runs)
    assert "core-hours" not in compute_text([{"timings": {"total_s": 60.0, "threads": 2},
                                              "environment": {"cpu_count": 2}}])


def test_verdict_pages_warn_when_their_grid_is_incomplete(isolated):
    page = open_chapter("summary", {"profile": "smoke", "compute": False})  # nothing stored in this results dir
    note = page.incomplete_note()
    assert note.startswith("**This page reads an incomplete grid**: 0 runs are stored and at least")
    assert f"at least {len(page.runner.missing)} are not computed yet" in note and page.runner.missing
    page.runner.missing.clear()  # every run stored: no warning
    assert page.incomplete_note() == ""


def test_precedence_explicit_over_environment_over_profile_file(isolated, monkeypatch):
    other = write_tiny_glue(isolated / "env-glue")
    explicit = write_tiny_glue(isolated / "explicit-glue")
    assert load_profile("smoke").values["glue_dir"] == "fixture:tiny"
    monkeypatch.setenv("FEWDIMS_GLUE_DIR", str(other))
    assert load_profile("smoke").glue_dir == str(other)
    assert load_profile("smoke", glue_dir=str(explicit)).glue_dir == str(explicit)
    assert load_profile("smoke", train_size="all").base_config("sst2").train_size is None


def test_epochs_and_sizes_may_be_given_per_task_and_are_worded_per_task():
    from fewdims.profiles import per_task_text

    profile = load_profile("smoke", epochs={"rte": 5, "default": 2}, train_size={"sst2": 30, "default": "all"})
    assert profile.base_config("rte").epochs == 5 and profile.base_config("sst2").epochs == 2
    assert profile.base_config("sst2").train_size == 30 and profile.base_config("rte").train_size is None
    words = per_task_text({"rte": 5, "default": 2}, lambda e: f"{e} epochs")
    assert words == "RTE: 5 epochs; other tasks: 2 epochs"
    assert per_task_text(3, lambda e: f"{e} epochs") == "3 epochs"
    # a mapping without the profile's tasks and without a default is named when the profile loads
    with pytest.raises(FewdimsError, match="epochs gives no value for sst2 and no 'default'"):
        load_profile("smoke", epochs={"rte": 5})


@pytest.mark.parametrize("params, fragment", [
    ({"learning_rate": 1e-3}, "unknown parameter 'learning_rate'.*known parameters: .*head_lr"),
    ({"k": 3}, "unknown parameter 'k'"),  # k belongs to the dimension and layer chapters, not to token
    ({"compute": "yes"}, "compute must be True or False"),
    ({"train_size": "most"}, "train_size must be a number of rows, 'all'"),
])
def test_unknown_or_wrong_parameters_stop_the_notebook(isolated, params, fragment):
    with pytest.raises(FewdimsError, match=fragment):
        open_chapter("token", {"profile": "smoke", **params})


def test_a_missing_glue_dir_is_named(isolated):
    page = open_chapter("token", {"profile": "smoke", "glue_dir": str(isolated / "nowhere")})
    with pytest.raises(FewdimsError, match="nowhere"):
        page.results


def test_notebook_parameters_ignore_modules_functions_and_ipython_names():
    import math

    namespace = {"profile": "smoke", "task": "rte", "math": math, "open_chapter": open_chapter, "In": [],
                 "_private": 1, "display": print}
    assert notebook_parameters(namespace) == {"profile": "smoke", "task": "rte"}


@pytest.mark.slow
def test_papermill_trains_on_the_splits_and_data_it_is_given(isolated, tmp_path):
    """The README's example: train on MNLI matched, evaluate on mismatched, from a user's GLUE directory."""
    papermill = pytest.importorskip("papermill")
    glue = write_tiny_glue(tmp_path / "user-glue", n_train=24, n_dev=18)
    out = tmp_path / "token.ipynb"
    papermill.execute_notebook(
        str(NB_DIR / "token.ipynb"), str(out), kernel_name="python3", cwd=str(NB_DIR), progress_bar=False,
        parameters=dict(profile="smoke", task="mnli", glue_dir=str(glue), train_split="validation_matched",
                        eval_splits="validation_mismatched", train_size=12, epochs=1, seeds=1, poolings="cls"))
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    records = [json.loads(p.read_text()) for p in (isolated / "results" / "smoke" / "mnli").glob("*.json")]
    assert len(records) == 1
    record = records[0]
    assert record["config"]["train_split"] == "validation_matched"
    assert record["config"]["eval_splits"] == ["validation_mismatched"] and record["config"]["train_size"] == 12
    assert list(record["metrics"]) == ["validation_mismatched"]
    assert record["data"]["train"]["rows"] == 12 and record["data"]["eval"]["validation_mismatched"]["rows"] == 18
    assert str(glue) in record["data"]["train"]["source"]


@pytest.mark.slow
def test_papermill_unknown_parameter_fails_with_the_known_ones(isolated, tmp_path):
    papermill = pytest.importorskip("papermill")
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="unknown parameter 'learning_rate'"):
        papermill.execute_notebook(str(NB_DIR / "token.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   cwd=str(NB_DIR), progress_bar=False,
                                   parameters=dict(profile="smoke", learning_rate=0.1))
