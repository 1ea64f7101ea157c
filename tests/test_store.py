"""Tests for fewdims.store.ResultStore: reuse, force, interrupted runs, corrupt records, atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fewdims.train
from conftest import stored_run, tiny_config
from fewdims.config import RunResult
from fewdims.errors import FewdimsError
from fewdims.store import CorruptRecordError, ResultStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_result(config, accuracy=0.5) -> RunResult:
    """A RunResult as train() would return it, without training (numpy values included, as train may give)."""
    metrics = {"validation": {"accuracy": accuracy}}
    return RunResult(
        config=config, metrics=metrics,
        history=[{"epoch": 1, "train_loss": np.float32(0.69), **metrics}],
        timings={"steps": np.int64(2), "train_examples_per_s": 10.0},
        data={"train": {"rows": 16, "sha256": "0" * 64, "source": "fake"}},
        extra={"vector": np.arange(3)},
    )


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_train(*args, **kwargs):
    raise AssertionError("train() must not be called: the stored record should have been reused")


@pytest.fixture
def store(tmp_path, fewdims_env):
    return ResultStore("unit", root=tmp_path / "store")


def test_finished_run_is_reused_and_force_recomputes(store, tiny_glue, monkeypatch):
    """A stored record is reused (by the runner; `stored_run` here) instead of training again."""
    config = tiny_config()
    first = stored_run(store, config, tiny_glue)
    path = store.path(config)
    assert path == store.dir / "sst2" / f"{config.key()}.json" and path.is_file()
    assert first["key"] == config.key() and first["config"] == config.to_dict()
    assert first["timings"]["steps"] == 2 and "created" in first and "environment" in first
    stored = path.read_bytes()

    monkeypatch.setattr(fewdims.train, "train", no_train)
    again = stored_run(store, config, tiny_glue)
    assert again == first and again["created"] == first["created"]
    assert path.read_bytes() == stored
    assert stored_run(store, config.replace(save_weights=True), tiny_glue) == first  # save_weights is not in the key

    calls = []

    def fake_train(cfg, glue_dir=None, **kwargs):
        calls.append((cfg, glue_dir, kwargs))
        return fake_result(cfg, accuracy=0.125)

    monkeypatch.setattr(fewdims.train, "train", fake_train)
    forced = stored_run(store, config, tiny_glue, force=True)
    assert len(calls) == 1 and calls[0][0] == config
    assert forced["metrics"] == {"validation": {"accuracy": 0.125}}
    assert store.load(config)["metrics"] == forced["metrics"]
    assert stored_run(store, config, tiny_glue)["metrics"] == forced["metrics"]  # and reused afterwards
    assert len(calls) == 1


def test_interrupted_run_leaves_nothing_and_is_redone(store, tiny_glue):
    config = tiny_config(train_size=32)  # 4 steps per epoch

    def interrupt(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stored_run(store, config, tiny_glue, on_step=interrupt)
    assert store.load(config) is None
    assert not store.path(config).exists()
    assert not store.dir.exists() or files_under(store.dir) == {}  # not even a temp file

    steps = []
    record = stored_run(store, config, tiny_glue, on_step=steps.append)
    assert steps == [1, 2, 3, 4]
    assert record["timings"]["steps"] == 4
    assert store.load(config) == record
    assert list(files_under(store.dir)) == [f"sst2/{config.key()}.json"]


def test_save_round_trips_and_converts_numpy(store):
    config = tiny_config()
    record = store.save(fake_result(config))
    loaded = store.load(config)
    assert loaded == json.loads(json.dumps(record, default=lambda o: o.tolist() if hasattr(o, "tolist") else o))
    assert loaded["extra"]["vector"] == [0, 1, 2]
    assert loaded["timings"]["steps"] == 2 and loaded["label"] == config.label() and loaded["profile"] == "unit"


def test_unfinished_config_loads_as_none(store):
    assert store.load(tiny_config()) is None
    assert store.records() == []


@pytest.mark.parametrize("how", ["truncated", "empty", "not_json", "a_list"])
def test_corrupt_record_raises_with_its_path_and_is_kept(store, tiny_glue, monkeypatch, how):
    config = tiny_config()
    store.save(fake_result(config))
    path = store.path(config)
    text = path.read_text()
    broken = {"truncated": text[: len(text) // 2], "empty": "", "not_json": "{oops", "a_list": "[1, 2]"}[how]
    path.write_text(broken)
    with pytest.raises(CorruptRecordError) as info:
        store.load(config)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FewdimsError)
    assert path.read_text() == broken  # load() never rewrites or deletes it

    monkeypatch.setattr(fewdims.train, "train", no_train)
    with pytest.raises(CorruptRecordError):
        stored_run(store, config, tiny_glue)  # never silently recomputed over the corrupt file either
    assert path.read_text() == broken
    if how != "a_list":  # records() reads any JSON; only undecodable files make it raise
        with pytest.raises(CorruptRecordError, match=str(path)):
            store.records()


def test_record_of_another_config_raises(store):
    config_a, config_b = tiny_config(seed=0), tiny_config(seed=1)
    store.save(fake_result(config_a))
    store.path(config_b).write_bytes(store.path(config_a).read_bytes())  # a's record under b's name
    with pytest.raises(CorruptRecordError, match="does not belong") as info:
        store.load(config_b)
    assert str(store.path(config_b)) in str(info.value)
    assert store.load(config_a)["key"] == config_a.key()


def test_record_without_metrics_raises(store):
    config = tiny_config()
    store.save(fake_result(config))
    record = json.loads(store.path(config).read_text())
    del record["metrics"]
    store.path(config).write_text(json.dumps(record))
    with pytest.raises(CorruptRecordError, match="incomplete"):
        store.load(config)


def test_writes_leave_no_temp_files(store):
    configs = [tiny_config(seed=s) for s in range(3)] + [tiny_config(task="rte")]
    for config in configs:
        store.save(fake_result(config))
        store.save(fake_result(config, accuracy=0.75))  # overwrite in place
    names = sorted(files_under(store.dir))
    assert names == sorted(f"{c.task}/{c.key()}.json" for c in configs)
    assert not [p for p in store.dir.rglob("*") if ".tmp" in p.name]


def test_failed_serialisation_keeps_the_old_record(store):
    config = tiny_config()
    store.save(fake_result(config))
    before = files_under(store.dir)
    bad = fake_result(config, accuracy=0.9)
    bad.extra["model"] = object()  # not JSON-serialisable
    with pytest.raises(TypeError, match="cannot store object"):
        store.save(bad)
    assert files_under(store.dir) == before


def test_failed_rename_leaves_no_temp_file(store, monkeypatch):
    config = tiny_config()
    store.save(fake_result(config))
    before = files_under(store.dir)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("fewdims.store.os.replace", failing_replace)
    with pytest.raises(OSError):
        store.save(fake_result(config, accuracy=0.9))
    monkeypatch.undo()
    assert files_under(store.dir) == before


def test_records_lists_finished_records(store):
    configs = [tiny_config(seed=0), tiny_config(seed=1), tiny_config(task="rte")]
    for config in configs:
        store.save(fake_result(config))
    records = store.records()
    assert sorted(r["key"] for r in records) == sorted(c.key() for c in configs)
    assert {r["key"] for r in store.records("sst2")} == {configs[0].key(), configs[1].key()}
    assert [r["key"] for r in store.records("rte")] == [configs[2].key()]
    assert store.records("cola") == []
    other_profile = ResultStore("other", root=store.root)
    assert other_profile.records() == []


def test_default_root_follows_the_environment(fewdims_env):
    store = ResultStore("envprofile")
    assert store.dir == fewdims_env["results"] / "envprofile"


@pytest.mark.parametrize("profile", ["", "a/b", ".hidden", None, 3])
def test_bad_profile_names_raise(profile, tmp_path):
    with pytest.raises(FewdimsError, match="profile"):
        ResultStore(profile, root=tmp_path)


def test_equivalent_spellings_share_one_record(store):
    a = tiny_config(task="SST-2", dims=[4, 1], lr=1)
    b = tiny_config(task="sst2", dims=(1, 4), lr=1.0)
    assert a == b and a.key() == b.key() and store.path(a) == store.path(b)


def test_default_eval_splits_spelled_out_share_one_record():
    assert tiny_config(eval_splits=None).key() == tiny_config(eval_splits=("validation",)).key()


def test_a_rerun_uses_the_records_thread_count_and_restores_it():
    import torch

    from fewdims.reproduce import threads_like

    before = torch.get_num_threads()
    with threads_like({"timings": {"threads": 1}}):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with threads_like({"timings": {}}):  # older records without it: the process's own count
        assert torch.get_num_threads() == before
