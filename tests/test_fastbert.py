"""The fast training forward (fewdims.fastbert.FastBert) against the Hugging Face forward it replaces, and its
switches (FastOptions)."""
from __future__ import annotations

import copy

import pytest
import torch

from fewdims.fastbert import FastBert, FastOptions, _Masks, fast_forward_supported
from fewdims.models import load_backbone


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


def test_options_come_from_the_environment_and_switch_the_forward(monkeypatch):
    monkeypatch.delenv("FEWDIMS_FAST_TRAIN", raising=False)
    assert FastOptions.from_env() == FastOptions()
    monkeypatch.setenv("FEWDIMS_FAST_TRAIN", "0")
    assert FastOptions.from_env() == FastOptions(enabled=False)
    backbone = _no_dropout_tiny()
    cpu = torch.device("cpu")
    assert fast_forward_supported(backbone, cpu, FastOptions())
    assert not fast_forward_supported(backbone, cpu, FastOptions(enabled=False))
    assert not fast_forward_supported(backbone, cpu)  # the default reads FEWDIMS_FAST_TRAIN=0
    assert not fast_forward_supported(backbone, torch.device("meta"), FastOptions())
    plain = FastBert(backbone, torch.float32, seed=0, cls_only=True,
                     options=FastOptions(cls_only=False, fused_dropout=False, embedding_buffer=False))
    assert not plain.cls_only and plain.masks is None
    plain(*_batch(backbone.config.vocab_size))[:, 0].sum().backward()
    assert plain._grad_buffer is None  # autograd's own embedding gradient, no persistent buffer
    assert backbone.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("options", [FastOptions(cls_only=False), FastOptions(fused_dropout=False),
                                     FastOptions(embedding_buffer=False)])
def test_every_option_computes_the_same_function(options):
    """Each switch changes how, not what: without dropout, outputs and gradients equal those with every option on."""
    backbone = _no_dropout_tiny()
    ids, mask, types = _batch(backbone.config.vocab_size)
    ref_model, model = copy.deepcopy(backbone), copy.deepcopy(backbone)
    ref = FastBert(ref_model, torch.float32, seed=0, cls_only=True)(ids, mask, types)[:, 0]
    out = FastBert(model, torch.float32, seed=0, cls_only=True, options=options)(ids, mask, types)[:, 0]
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    ref.pow(2).sum().backward()
    out.pow(2).sum().backward()
    for (name, p_ref), (_, p) in zip(ref_model.named_parameters(), model.named_parameters()):
        if p_ref.grad is None or name.endswith("key.bias"):
            continue
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-6, rtol=1e-4, msg=name)
