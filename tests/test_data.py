"""Tests of the task registry and the GLUE loaders (TSV, parquet, hub), on real and synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fewdims.data as data
import fewdims.tasks as tasks
from fewdims.errors import FewdimsError
from fewdims.fixtures import write_tiny_glue

OFFICIAL_ROWS = {  # (train, validation) row counts of the official GLUE release
    "cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277),
}
PARQUET_TASKS = ["cola", "mrpc", "stsb", "rte"]
THREE_WAYS = ("glue_dir", "parquet", "FEWDIMS_GLUE_DIR", "nyu-mll/glue")


# --- task registry -------------------------------------------------------------------------------

def test_registry_has_nine_tasks_with_consistent_specs():
    assert list(tasks.TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    for spec in tasks.TASKS.values():
        assert spec.main_metric in spec.metrics
        assert spec.num_labels == (1 if spec.is_regression else len(spec.label_names))
        assert spec.name in tasks.TSV_LAYOUTS
    assert tasks.get_task("mnli").num_labels == 3
    assert tasks.get_task("stsb").num_labels == 1 and tasks.get_task("stsb").is_regression
    assert tasks.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert tasks.get_task("rte").label_names[0] == "entailment"
    assert tasks.get_task("wnli").label_names[1] == "entailment"


@pytest.mark.parametrize("alias, name", [("SST-2", "sst2"), ("sst-2", "sst2"), ("Sst_2", "sst2"),
                                         ("STS-B", "stsb"), ("MNLI", "mnli"), (" cola ", "cola")])
def test_get_task_accepts_aliases(alias, name):
    assert tasks.get_task(alias).name == name


def test_unknown_and_non_string_task_raise_listing_known_tasks():
    with pytest.raises(FewdimsError, match="unknown task 'sst3'.*cola, sst2"):
        tasks.get_task("sst3")
    with pytest.raises(FewdimsError, match="task must be str.*cola"):
        tasks.get_task(2)


def test_test_split_and_wrong_splits_raise(tiny_glue):
    with pytest.raises(FewdimsError, match="test labels are hidden"):
        data.load_split("sst2", "test", tiny_glue)
    with pytest.raises(FewdimsError, match="validation_matched"):
        tasks.check_split("mnli", "validation")
    with pytest.raises(FewdimsError, match="no split 'dev'"):
        data.load_split("sst2", "dev", tiny_glue)
    with pytest.raises(FewdimsError, match="split must be str"):
        data.load_split("sst2", 1, tiny_glue)


# --- real GLUE files -----------------------------------------------------------------------------

@pytest.mark.shared_glue
@pytest.mark.parametrize("task", sorted(OFFICIAL_ROWS))
def test_official_row_counts_from_tsv(shared_glue, task):
    train, dev = OFFICIAL_ROWS[task]
    assert len(data.load_split(task, "train", shared_glue)) == train
    assert len(data.load_split(task, "validation", shared_glue)) == dev


@pytest.mark.shared_glue
@pytest.mark.parametrize("task", PARQUET_TASKS)
def test_parquet_matches_tsv(shared_glue, shared_glue_hf, task):
    for split, rows in zip(("train", "validation"), OFFICIAL_ROWS[task]):
        from_tsv = data.load_split(task, split, shared_glue)
        from_parquet = data.load_split(task, split, shared_glue_hf)
        assert from_parquet.source == f"parquet:{shared_glue_hf.resolve()}"
        assert len(from_parquet) == rows
        assert from_parquet.labels.dtype == from_tsv.labels.dtype
        np.testing.assert_array_equal(from_parquet.labels, from_tsv.labels)
        if task != "mrpc":  # the hub re-tokenised MRPC's text; the other texts are identical
            assert from_parquet.texts == from_tsv.texts


@pytest.mark.shared_glue
def test_mrpc_bom_and_control_character_row_survive(shared_glue):
    train = data.load_split("mrpc", "train", shared_glue)
    assert len(train) == 3668  # the \x12 row neither splits nor disappears
    assert not any(text.startswith("\ufeff") for column in train.texts for text in column)
    assert sum("\x12" in text for text in train.texts[0] + train.texts[1]) == 1
    assert train.texts[0][0].startswith("Amrozi accused his brother")
    assert train.labels[0] == 1 and train.labels[1] == 0


@pytest.mark.shared_glue
def test_real_label_encodings(shared_glue):
    rte = data.load_split("rte", "train", shared_glue)
    assert rte.labels[:2].tolist() == [1, 0]  # not_entailment, entailment (hub ids)
    stsb = data.load_split("stsb", "train", shared_glue)
    assert stsb.labels.dtype == np.float32 and stsb.labels[:2].tolist() == pytest.approx([5.0, 3.8])
    cola = data.load_split("cola", "validation", shared_glue)
    assert cola.labels.dtype == np.int64 and set(cola.labels.tolist()) == {0, 1}


# --- tiny synthetic directory --------------------------------------------------------------------

def test_tiny_glue_loads_every_task(tiny_glue):
    for task in ("sst2", "rte", "stsb", "cola"):
        train, dev = data.load_split(task, "train", tiny_glue), data.load_split(task, "validation", tiny_glue)
        assert (len(train), len(dev)) == (48, 16)
        assert train.source == f"tsv:{tiny_glue}"
        assert len(train.texts) == len(tasks.get_task(task).text_columns)
    again = write_tiny_glue(tiny_glue.parent / "again")  # same arguments, same bytes
    for folder in ("SST-2", "RTE", "STS-B", "CoLA"):
        assert (again / folder / "train.tsv").read_bytes() == (tiny_glue / folder / "train.tsv").read_bytes()
    other_seed = write_tiny_glue(tiny_glue.parent / "other", seed=1)
    assert (other_seed / "RTE" / "train.tsv").read_bytes() != (tiny_glue / "RTE" / "train.tsv").read_bytes()


def test_loads_return_independent_copies(tiny_glue):
    first = data.load_split("sst2", "train", tiny_glue)
    first.texts[0][0] = "changed"
    first.labels[0] = 99
    second = data.load_split("sst2", "train", tiny_glue)
    assert second.texts[0][0] != "changed" and second.labels[0] != 99


def test_fingerprint_stable_and_sensitive_to_content(tiny_glue):
    before = data.load_split("rte", "train", tiny_glue).fingerprint()
    assert before == data.load_split("rte", "train", tiny_glue).fingerprint()
    assert before["rows"] == 48 and len(before["sha256"]) == 64 and before["source"] == f"tsv:{tiny_glue}"
    path = tiny_glue / "RTE" / "train.tsv"
    lines = path.read_text().split("\n")
    lines[1] = lines[1].replace("not_entailment", "entailment") if "not_entailment" in lines[1] \
        else lines[1].replace("entailment", "not_entailment")
    path.write_text("\n".join(lines))
    after = data.load_split("rte", "train", tiny_glue).fingerprint()  # the cache notices the rewrite
    assert after["rows"] == 48 and after["sha256"] != before["sha256"]


def test_subset_is_deterministic(tiny_glue):
    full = data.load_split("sst2", "train", tiny_glue)
    a, b, c = full.subset(10, seed=1), full.subset(10, seed=1), full.subset(10, seed=2)
    assert len(a) == 10 and a.texts == b.texts and a.labels.tolist() == b.labels.tolist()
    assert a.texts != c.texts
    assert set(a.texts[0]) <= set(full.texts[0])
    for everything in (full.subset(None, seed=0), full.subset(1000, seed=3)):
        assert everything.texts == full.texts and everything.fingerprint() == full.fingerprint()


@pytest.mark.parametrize("size", [0, -3, 2.5, "10", True])
def test_subset_rejects_bad_sizes(tiny_glue, size):
    with pytest.raises(FewdimsError, match="size"):
        data.load_split("sst2", "train", tiny_glue).subset(size, seed=0)


def test_data_report(tiny_glue):
    report = data.data_report("SST-2", tiny_glue)
    assert f"tsv:{tiny_glue}" in report and "train: 48 rows" in report and "validation: 16 rows" in report
    assert "negative 24" in report and "positive 24" in report
    assert "score min" in data.data_report("stsb", tiny_glue)
    with pytest.raises(FewdimsError, match="missing file"):
        data.data_report("qqp", tiny_glue)


# --- tasks without local data: their layouts, written by hand ------------------------------------

def _write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def test_layouts_of_qqp_mnli_qnli_wnli(tmp_path):
    _write(tmp_path / "QQP" / "train.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                           ["0", "1", "2", "How?", "Why?", "0"], ["1", "3", "4", "A?", "A?", "1"]])
    mnli_header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                   "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "gold_label"]
    mnli_row = ["0", "1", "1n", "fiction", "(x)", "(y)", "(X)", "(Y)", "A man sleeps.", "A man is awake.",
                "neutral", "contradiction", "contradiction"]
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [mnli_header, mnli_row])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [mnli_header, mnli_row[:-1] + ["entailment"]])
    _write(tmp_path / "QNLI" / "train.tsv", [["index", "question", "sentence", "label"],
                                            ["0", "Who?", "Him.", "not_entailment"]])
    _write(tmp_path / "WNLI" / "train.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "1"]])
    qqp = data.load_split("qqp", "train", tmp_path)
    assert qqp.texts == (["How?", "A?"], ["Why?", "A?"]) and qqp.labels.tolist() == [0, 1]
    matched = data.load_split("MNLI", "validation_matched", tmp_path)
    assert matched.texts == (["A man sleeps."], ["A man is awake."]) and matched.labels.tolist() == [2]
    assert data.load_split("mnli", "validation_mismatched", tmp_path).labels.tolist() == [0]
    assert data.load_split("qnli", "train", tmp_path).labels.tolist() == [1]
    assert data.load_split("wnli", "train", tmp_path).labels.tolist() == [1]  # 1 = entailment


# --- sources and bad inputs ----------------------------------------------------------------------

def test_resolve_source_order(tiny_glue, monkeypatch):
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    assert data.resolve_source() == "hub:nyu-mll/glue"
    assert data.resolve_source("hub") == "hub:nyu-mll/glue"
    monkeypatch.setenv("FEWDIMS_GLUE_DIR", str(tiny_glue))
    assert data.resolve_source() == f"tsv:{tiny_glue}"
    assert data.resolve_source(f"tsv:{tiny_glue}") == f"tsv:{tiny_glue}"  # resolved sources pass through


@pytest.mark.shared_glue
def test_resolve_source_detects_parquet_layout(shared_glue_hf):
    assert data.resolve_source(shared_glue_hf) == f"parquet:{shared_glue_hf.resolve()}"
    assert data.resolve_source(str(shared_glue_hf)) == f"parquet:{shared_glue_hf.resolve()}"


def test_bad_directories_raise(tmp_path, tiny_glue):
    with pytest.raises(FewdimsError, match="does not exist"):
        data.resolve_source(tmp_path / "nowhere")
    with pytest.raises(FewdimsError, match="does not look like a GLUE directory"):
        data.resolve_source(tmp_path)
    with pytest.raises(FewdimsError, match="pass its parent directory"):
        data.load_split("sst2", "train", tiny_glue / "SST-2")
    with pytest.raises(FewdimsError, match="glue_dir must be"):
        data.resolve_source(3)


def test_missing_file_names_path_and_three_ways(tiny_glue):
    with pytest.raises(FewdimsError, match="MRPC") as error:
        data.load_split("mrpc", "train", tiny_glue)
    message = str(error.value)
    assert str(tiny_glue / "MRPC" / "train.tsv") in message
    assert all(way in message for way in THREE_WAYS)


def test_data_source_is_resolved_once_and_accepted_by_load_split(tiny_glue, monkeypatch):
    monkeypatch.delenv("FEWDIMS_GLUE_DIR", raising=False)
    source = data.DataSource.resolve(tiny_glue)
    assert (source.kind, source.location, str(source)) == ("tsv", str(tiny_glue), f"tsv:{tiny_glue}")
    assert data.DataSource.resolve(source) is source
    assert data.DataSource.resolve(str(source)) == source  # a resolved string passes through
    assert data.DataSource.resolve() == data.DataSource("hub", "nyu-mll/glue")
    monkeypatch.setenv("FEWDIMS_GLUE_DIR", str(tiny_glue))
    from_env = data.DataSource.resolve()
    assert from_env == source and from_env.origin == "FEWDIMS_GLUE_DIR"
    by_source, by_dir = data.load_split("sst2", "train", source), data.load_split("sst2", "train", tiny_glue)
    assert by_source.fingerprint() == by_dir.fingerprint() and by_source.source == f"tsv:{tiny_glue}"


def test_missing_split_names_directory_task_split_and_what_is_there(tiny_glue):
    (tiny_glue / "RTE" / "dev.tsv").unlink()
    with pytest.raises(FewdimsError) as error:
        data.load_split("rte", "validation", tiny_glue)
    message = str(error.value)
    assert str(tiny_glue / "RTE" / "dev.tsv") in message and f"GLUE directory {tiny_glue} (from glue_dir)" in message
    assert "RTE split 'validation'" in message and "holds the splits 'train' only" in message
    assert "pass glue_dir=" not in message  # the user passed one: it names what to change instead
    with pytest.raises(FewdimsError) as error:
        data.load_split("mrpc", "train", tiny_glue)
    assert "no MRPC folder (task folders found: CoLA, SST-2, STS-B, " in str(error.value)


def test_missing_parquet_split_lists_the_splits_found(tmp_path):
    import pandas as pd

    (tmp_path / "rte").mkdir()
    pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]}).to_parquet(
        tmp_path / "rte" / "train-00000-of-00001.parquet")
    assert data.load_split("rte", "train", tmp_path).labels.tolist() == [0]
    with pytest.raises(FewdimsError) as error:
        data.load_split("rte", "validation", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "rte" / "validation-*.parquet") in message and "'train' only" in message
    assert "RTE split 'validation'" in message and "pass glue_dir=" not in message


def test_malformed_row_names_file_and_line(tiny_glue):
    path = tiny_glue / "RTE" / "dev.tsv"
    path.write_text(path.read_text() + "99\tonly one sentence\n")
    with pytest.raises(FewdimsError, match=r"dev\.tsv, line 18: malformed row"):
        data.load_split("rte", "validation", tiny_glue)


def test_unknown_label_names_file_line_and_allowed_labels(tiny_glue):
    path = tiny_glue / "RTE" / "train.tsv"
    path.write_text(path.read_text() + "99\tA premise.\tA hypothesis.\tmaybe\n")
    with pytest.raises(FewdimsError, match=r"train\.tsv, line 50: unknown RTE label 'maybe'.*entailment, not_entailment"):
        data.load_split("rte", "train", tiny_glue)
    stsb = tiny_glue / "STS-B" / "dev.tsv"
    stsb.write_text(stsb.read_text().rstrip("\n").rsplit("\t", 1)[0] + "\thigh\n")  # last score -> 'high'
    with pytest.raises(FewdimsError, match="score 'high' is not a number"):
        data.load_split("stsb", "validation", tiny_glue)


def test_hub_unreachable_offline_names_three_ways(tmp_path, monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets.config
    import huggingface_hub.constants

    # The libraries read these variables at import; patch them in case another test imported them first.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    data.clear_cache()
    with pytest.raises(FewdimsError) as error:
        data.load_split("rte", "train", "hub")
    assert all(way in str(error.value) for way in THREE_WAYS)
