"""Verified equivalence of a code change: `python -m fewdims verify-code` re-runs one stored record per code path
and links the old code's fingerprint to the new one only when every re-run is the same bit for bit."""
from __future__ import annotations

import json

import pytest

import fewdims.store as store_module
from fewdims.cli import main as cli_main
from fewdims.config import RunConfig
from fewdims.errors import FewdimsError
from fewdims.reproduce import code_path, covering_sample, verify_code
from fewdims.store import (EQUIVALENCE_FILE, CorruptRecordError, ResultStore, add_equivalence_link,
                           stale_records)
from conftest import stored_run, tiny_config

CURRENT = "c0de0000c0de0000"


@pytest.fixture
def clean_checkout(monkeypatch):
    """This checkout's fingerprint is CURRENT and its tree clean (whatever git says while the suite runs)."""
    monkeypatch.setattr(store_module, "code_fingerprint", lambda: {"code_fingerprint": CURRENT, "dirty": False})


def _computed_by(store, record, fingerprint, **changes):
    """Rewrite a stored record as if code `fingerprint` had computed it."""
    record = {**record, **changes, "environment": {**record["environment"], "code_fingerprint": fingerprint,
                                                  "dirty": False}}
    store._write(store.path(RunConfig.from_dict(record["config"])), record)
    return record


def _record(fingerprint, dirty=False):
    return {"environment": {"code_fingerprint": fingerprint, "dirty": dirty}}


def test_links_make_older_codes_records_current_directly_and_through_others(tmp_path, clean_checkout):
    records = [_record(CURRENT), _record("old1"), _record("old2"), _record("other"), _record("old1", dirty=True), {}]
    assert len(stale_records(records, tmp_path)) == 5
    add_equivalence_link({"from": "old1", "to": CURRENT}, tmp_path)
    add_equivalence_link({"from": "old2", "to": "old1"}, tmp_path)
    stale = stale_records(records, tmp_path)
    # unlinked code, a dirty tree and a record without a fingerprint stay stale
    assert stale == [records[3], records[4], records[5]]
    assert [x["from"] for x in json.loads((tmp_path / EQUIVALENCE_FILE).read_text())["links"]] == ["old1", "old2"]


@pytest.mark.parametrize("text", ["{not json", '{"links": [{"from": "a"}]}', '{"no_links": []}'])
def test_a_corrupt_equivalence_file_raises_naming_it(tmp_path, clean_checkout, text):
    (tmp_path / EQUIVALENCE_FILE).write_text(text)
    with pytest.raises(CorruptRecordError, match=EQUIVALENCE_FILE):
        stale_records([_record("old")], tmp_path)


def test_one_record_per_code_path_the_cheapest():
    cheap, dear = ({"config": tiny_config(seed=s).to_dict(), "timings": {"total_s": t, "threads": 1}}
                   for s, t in ((0, 5.0), (1, 50.0)))
    frozen = {"config": tiny_config(freeze_backbone=True).to_dict(), "timings": {"total_s": 9.0, "threads": 1}}
    assert code_path(tiny_config(seed=0)) == code_path(tiny_config(seed=1, dims=None))
    assert code_path(tiny_config()) != code_path(tiny_config(dims=(1, 2)))
    sample = covering_sample([dear, frozen, cheap], store=None)
    assert len(sample) == 2 and cheap in sample and frozen in sample


def test_identical_reruns_link_the_old_code_and_a_different_one_links_nothing(fewdims_env, tiny_glue,
                                                                           clean_checkout, capsys):
    store = ResultStore("verify")
    tuned = stored_run(store, tiny_config(), tiny_glue)
    frozen = stored_run(store, tiny_config(freeze_backbone=True, head_lr=1e-2), tiny_glue)
    assert isinstance(tuned["timings"]["fast_forward"], dict) and tuned["timings"]["fast_forward"]["enabled"]
    assert frozen["timings"]["fast_forward"] is None  # a frozen backbone trains through the Hugging Face forward
    for record in (tuned, frozen):
        _computed_by(store, record, "01d0000000000000")
    assert len(stale_records(store.records())) == 2
    cli_main(["stale", "--profile", "verify"])
    out = capsys.readouterr().out
    assert "2 of 2 verify records were not computed" in out and "python -m fewdims verify-code" in out

    assert verify_code("verify", source=tiny_glue)
    out = capsys.readouterr().out
    assert "re-running 2 (one per code path" in out and "linked 01d0000000000000 -> " + CURRENT in out
    assert stale_records(store.records()) == []
    cli_main(["stale", "--profile", "verify"])
    assert capsys.readouterr().out.startswith("0 of 2 verify records")
    link = json.loads((fewdims_env["results"] / EQUIVALENCE_FILE).read_text())["links"][0]
    assert link["from"] == "01d0000000000000" and link["to"] == CURRENT and len(link["checked"]) == 2
    assert all(c["identical"] for c in link["checked"])
    assert sorted(c["code_path"]["frozen"] for c in link["checked"]) == [False, True]

    # a record the current code does not reproduce: one dev prediction flipped
    preds = json.loads(json.dumps(tuned["predictions"]))
    split = next(iter(preds))
    digits = preds[split]["preds"]["data"]
    preds[split]["preds"]["data"] = ("1" if digits[0] == "0" else "0") + digits[1:]
    _computed_by(store, tuned, "0ther00000000000", predictions=preds)
    assert not verify_code("verify", source=tiny_glue)
    assert "DIFFERS" in capsys.readouterr().out
    links = json.loads((fewdims_env["results"] / EQUIVALENCE_FILE).read_text())["links"]
    assert [x["from"] for x in links] == ["01d0000000000000"]
    assert len(stale_records(store.records())) == 1


def test_verify_code_refuses_a_dirty_tree(fewdims_env, monkeypatch):
    monkeypatch.setattr(store_module, "code_fingerprint", lambda: {"code_fingerprint": CURRENT, "dirty": True})
    with pytest.raises(FewdimsError, match="uncommitted changes"):
        verify_code("verify", source="unused")


def test_reruns_in_worker_processes_give_the_same_verdict(fewdims_env, tiny_glue, clean_checkout, capsys):
    store = ResultStore("verify")
    for config in (tiny_config(), tiny_config(pooling="max_norm")):
        _computed_by(store, stored_run(store, config, tiny_glue), "01d0000000000000")
    assert verify_code("verify", source=tiny_glue, workers=2)
    assert "2 at a time" in capsys.readouterr().out
    assert stale_records(store.records()) == []


@pytest.mark.parametrize("workers", [0, "2"])
def test_verify_code_refuses_bad_workers(fewdims_env, clean_checkout, workers):
    with pytest.raises(FewdimsError, match="workers"):
        verify_code("verify", source="unused", workers=workers)
