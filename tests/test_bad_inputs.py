"""Bad inputs: each raises FewdimsError naming the offending thing, and leaves an existing store untouched."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import stored_run, tiny_config
from fewdims.config import RunConfig, RunResult
from fewdims.errors import FewdimsError
from fewdims.fixtures import write_tiny_glue
from fewdims.store import ResultStore
from fewdims.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every directory (None) under root, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def ctx(tmp_path, fewdims_env, tiny_glue):
    """A store that already holds a finished record, the tiny GLUE dir, and a scratch dir."""
    store = ResultStore("bad", root=tmp_path / "results")
    existing = tiny_config(task="rte")
    store.save(RunResult(config=existing, metrics={"validation": {"accuracy": 0.5}},
                         history=[{"epoch": 1, "train_loss": 0.7, "validation": {"accuracy": 0.5}}],
                         timings={"steps": 2}, data={}, extra={}))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return SimpleNamespace(store=store, glue=tiny_glue, scratch=scratch, existing=existing)


def run_config(**changes):
    """Build the config inside the action, so construction errors are part of what is checked."""
    return lambda c: stored_run(c.store, tiny_config(**changes), c.glue)


def edited_glue(edit):
    """Write a fresh tiny GLUE copy, apply edit(root) to it, then run SST-2 on it through the store."""
    def action(c):
        root = write_tiny_glue(c.scratch / "glue_copy")
        edit(root)
        return stored_run(c.store, tiny_config(), root)
    return action


def append_row(row: str):
    def edit(root):
        with open(root / "SST-2" / "train.tsv", "a", encoding="utf-8") as handle:
            handle.write(row + "\n")
    return edit


def model_dir_without_safetensors(c):
    model = c.scratch / "bert-no-weights"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    (model / "pytorch_model.bin").write_bytes(b"not loaded")
    return stored_run(c.store, tiny_config(model=str(model)), c.glue)


def edited_stsb(c):
    root = write_tiny_glue(c.scratch / "glue_copy")
    with open(root / "STS-B" / "train.tsv", "a", encoding="utf-8") as handle:
        handle.write("\t".join(["99", "main", "x", "2024", "0099", "none", "none", "A b.", "A c.", "five"]) + "\n")
    return stored_run(c.store, tiny_config(task="stsb"), root)


def init_from_never_run(c):
    stage_a = tiny_config(task="cola", seed=987, save_weights=True)
    return stored_run(c.store, tiny_config(init_from=stage_a.to_dict()), c.glue)


# (id, action, substrings the message must contain)
CASES = [
    ("unknown task", run_config(task="sst3"), ["'sst3'", "unknown task"]),
    ("task of wrong type", run_config(task=2), ["task", "int"]),
    ("unknown pooling", run_config(pooling="median"), ["pooling", "'median'"]),
    ("unknown head", run_config(head="transformer"), ["head", "'transformer'"]),
    ("dims beyond the model width", run_config(dims=(3, 40)), ["[40]", "32-dimensional"]),
    ("negative dim", run_config(dims=(2, -1)), ["dims", "-1"]),
    ("duplicate dims", run_config(dims=(3, 5, 3)), ["dims", "duplicates"]),
    ("empty dims", run_config(dims=()), ["dims", "empty"]),
    ("dims as a string", run_config(dims="12"), ["dims", "'12'"]),
    ("dims with a float", run_config(dims=(1, 2.0)), ["dims", "float"]),
    ("layer out of range", run_config(layer=5), ["layer=5", "2 layers"]),
    ("negative layer", run_config(layer=-1), ["layer", "-1"]),
    ("lr as a string", run_config(lr="1e-3"), ["lr", "str"]),
    ("negative lr", run_config(lr=-0.1), ["lr", "positive"]),
    ("batch_size 0", run_config(batch_size=0), ["batch_size", "0"]),
    ("batch_size as a float", run_config(batch_size=8.0), ["batch_size", "float"]),
    ("epochs as bool", run_config(epochs=True), ["epochs", "bool"]),
    ("train_size 0", run_config(train_size=0), ["train_size", "0"]),
    ("dropout 1", run_config(dropout=1.0), ["dropout"]),
    ("precision fp16", run_config(precision="fp16"), ["precision", "'fp16'"]),
    ("split test", run_config(train_split="test"), ["'test'", "hidden"]),
    ("unknown eval split", run_config(eval_splits=("validation_matched",)), ["'validation_matched'", "SST-2"]),
    ("missing GLUE directory", lambda c: stored_run(c.store, tiny_config(), c.scratch / "no-such-glue"),
     ["no-such-glue", "does not exist"]),
    ("not a GLUE directory", lambda c: stored_run(c.store, tiny_config(), c.scratch), ["scratch", "GLUE directory"]),
    ("task missing from the GLUE directory",
     edited_glue(lambda root: shutil.rmtree(root / "SST-2")), ["SST-2", "train.tsv"]),
    ("split missing from the GLUE directory", edited_glue(lambda root: (root / "SST-2" / "dev.tsv").unlink()),
     ["glue_copy", "SST-2", "'validation'", "dev.tsv", "'train'"]),
    ("malformed TSV row", edited_glue(append_row("a sentence without a label column")),
     ["train.tsv", "line 50", "malformed"]),
    ("unknown label in a TSV", edited_glue(append_row("a fine sentence\tmaybe")), ["train.tsv", "'maybe'"]),
    ("bad STS-B score", edited_stsb, ["STS-B", "'five'"]),
    ("model directory that does not exist",
     lambda c: stored_run(c.store, tiny_config(model=str(c.scratch / "no-such-model")), c.glue), ["no-such-model"]),
    ("model directory without safetensors", model_dir_without_safetensors, ["bert-no-weights", "safetensors"]),
    ("hub model id while offline", run_config(model="bert-base-uncased"), ["'bert-base-uncased'"]),
    ("unknown RunConfig field",
     lambda c: stored_run(c.store, RunConfig.from_dict({**tiny_config().to_dict(), "learning_rate": 1e-3}), c.glue),
     ["learning_rate"]),
    ("train() given a dict", lambda c: train(tiny_config().to_dict(), c.glue), ["RunConfig", "dict"]),
    ("init_from without cached weights", init_from_never_run, ["init_from", "no cached weights", "save_weights=True"]),
    ("init_from not a dict", run_config(init_from="stage-a"), ["init_from", "str"]),
    ("init_from with an unknown field", run_config(init_from={"task": "cola", "bogus": 1}), ["bogus"]),
]


@pytest.mark.parametrize("action, expected", [(a, e) for _, a, e in CASES], ids=[i for i, _, _ in CASES])
def test_bad_input_raises_and_leaves_the_store_unchanged(ctx, action, expected):
    before = snapshot(ctx.store.root)
    assert any(name.endswith(".json") for name in before)
    with pytest.raises(FewdimsError) as info:
        action(ctx)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(ctx.store.root) == before
    assert ctx.store.load(ctx.existing)["key"] == ctx.existing.key()


def test_there_are_enough_distinct_cases():
    assert len({case_id for case_id, _, _ in CASES}) >= 15


def test_hub_is_offline_in_tests():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_org_prefixed_hub_id_reaches_transformers(monkeypatch):
    """A hub id such as 'google/bert_uncased_L-2_H-128_A-2' must be handed to transformers, not rejected."""
    import transformers

    from fewdims.models import load_backbone

    calls = []

    def fake_from_pretrained(name, **kwargs):
        calls.append(name)
        raise OSError("offline in tests")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(fake_from_pretrained))
    with pytest.raises(FewdimsError, match="cannot load model"):
        load_backbone("google/bert_uncased_L-2_H-128_A-2")
    assert calls == ["google/bert_uncased_L-2_H-128_A-2"]


def test_store_run_given_a_dict_raises_fewdims_error(ctx):
    before = snapshot(ctx.store.root)
    with pytest.raises(FewdimsError, match="RunConfig"):
        stored_run(ctx.store, tiny_config().to_dict(), ctx.glue)
    assert snapshot(ctx.store.root) == before
