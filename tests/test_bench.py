"""The training benchmark (bench/bench_training.py) on the tiny model and the tiny GLUE fixture, and the fast
training forward (fewdims.train.FastBert) against the Hugging Face forward it replaces."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewdims.fixtures import write_tiny_glue
from fewdims.models import load_backbone
from fewdims.train import FastBert, _Masks

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"speedup_vs_trainer=(\d+\.\d+) speedup_vs_tuned_trainer=(\d+\.\d+) metric_delta=([+-]\d+\.\d+) "
                       r"speedup_vs_tuned_kept_memory=(\d+\.\d+)")


def test_bench_training_runs_and_ends_with_the_summary_line(tmp_path):
    glue = write_tiny_glue(tmp_path / "glue")
    out = tmp_path / "bench.json"
    env = {**os.environ, "FEWDIMS_CACHE": str(tmp_path / "cache"), "FEWDIMS_PROGRESS": "0"}
    # one task keeps it under a minute on a small machine: every trainer starts a fresh interpreter
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--model", "tiny", "--train-size", "32",
         "--tasks", "sst2", "--glue-dir", str(glue), "--out", str(out), "--peak-n", "256", "--peak-seconds", "0.2",
         "--threads", "1"],  # tiny ops gain nothing from threads; on a busy machine two threads stall
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert any(line.startswith("task=sst2 speedup_vs_trainer=") for line in lines)
    for kind in ("fewdims", "trainer", "tuned", "tuned_kept_memory"):
        assert any(line.startswith(f"task=sst2 trainer={kind}") for line in lines), proc.stdout
    record = json.loads(out.read_text())
    results = record["tasks"]["sst2"]["results"]
    assert set(results) == {"fewdims", "trainer", "tuned", "tuned_kept_memory"}
    for res in results.values():
        assert res["train_examples_per_s"] > 0 and res["peak_rss_mb"] > 0 and 0 <= res["metric"] <= 1
    assert record["matmul_peak"]["gflops_per_s"] > 0
    assert results["fewdims"]["train_flops"] > 0
    speedup, _, delta, kept = LAST_LINE.fullmatch(lines[-1]).groups()
    assert float(kept) == pytest.approx(record["final"]["speedup_vs_tuned_kept_memory"], abs=0.01)
    assert float(speedup) == pytest.approx(record["final"]["speedup_vs_trainer"], abs=0.01)
    assert float(delta) == pytest.approx(record["final"]["metric_delta"], abs=0.01)


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 9), generator=g)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(4, 9, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def _no_dropout_tiny():
    backbone, _ = load_backbone("tiny")
    for module in backbone.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return backbone.train()


@pytest.mark.parametrize("cls_only", [False, True])
def test_fast_forward_matches_the_hugging_face_forward(cls_only):
    """Without dropout, FastBert in fp32 computes what BertModel computes: outputs and every gradient."""
    backbone = _no_dropout_tiny()
    ids, mask, types = _batch(backbone.config.vocab_size)
    ref_model, fast_model = copy.deepcopy(backbone), copy.deepcopy(backbone)
    ref = ref_model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    out = FastBert(fast_model, torch.float32, seed=0, cls_only=cls_only)(ids, mask, types)
    if not cls_only:
        torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 0], ref[:, 0], atol=2e-5, rtol=1e-5)
    weights = torch.randn(ref.shape[-1], generator=torch.Generator().manual_seed(1))
    (ref[:, 0] @ weights).pow(2).sum().backward()
    (out[:, 0] @ weights).pow(2).sum().backward()
    for (name, p_ref), (_, p_fast) in zip(ref_model.named_parameters(), fast_model.named_parameters()):
        if p_ref.grad is None:  # the pooler is not used
            assert p_fast.grad is None, name
            continue
        if name.endswith("key.bias"):  # softmax ignores it: its gradient is rounding noise around 0
            continue
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_embedding_gradient_buffer_holds_only_this_steps_gradient():
    """FastBert keeps one word-embedding gradient buffer across steps; after zero_grad(set_to_none=True) and a
    second step it must equal the gradient of that step alone (rows of the first step cleared, padding row 0)."""
    backbone = _no_dropout_tiny()
    reference = copy.deepcopy(backbone)
    fast = FastBert(backbone, torch.float32, seed=0, cls_only=True)
    first, second = _batch(backbone.config.vocab_size, 0), _batch(backbone.config.vocab_size, 1)
    for batch in (first, second):
        backbone.zero_grad(set_to_none=True)
        fast(*batch)[:, 0].sum().backward()
    ids, mask, types = second
    reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, 0].sum().backward()
    got, want = backbone.embeddings.word_embeddings.weight.grad, reference.embeddings.word_embeddings.weight.grad
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    assert torch.all(got[0] == 0)


def test_dropout_masks_are_deterministic_and_scaled():
    a, b = _Masks(7), _Masks(7)
    for dtype, scale in ((torch.float32, 1 / 0.9), (torch.bfloat16, 1.109375)):
        a.new_step(), b.new_step()
        ma, mb = a((200, 500), 0.1, dtype), b((200, 500), 0.1, dtype)
        assert ma.dtype == dtype and torch.equal(ma, mb)
        assert set(ma.float().unique().tolist()) == {0.0, torch.tensor(scale, dtype=dtype).item()}
        assert abs((ma == 0).float().mean().item() - 0.1) < 0.01
