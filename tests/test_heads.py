"""Tests for fewdims.heads (DropConnect head, pooling) and fewdims.models.truncate_encoder."""
from __future__ import annotations

import copy

import pytest
import torch

from fewdims.errors import FewdimsError
from fewdims.heads import Head, eligible_tokens, max_norm_token, pool
from fewdims.models import load_backbone, truncate_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN = 32
CLS, SEP, PAD = 2, 3, 0  # the ids of the tiny vocabulary (and of BERT's conventions in these tests)


def _inputs(seed=0, n=8, hidden=HIDDEN):
    return torch.randn(n, hidden, generator=torch.Generator().manual_seed(seed))


# -- DropConnect ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_only_selected_columns_get_gradient(kind, dropout):
    torch.manual_seed(0)
    head = Head(HIDDEN, 3, kind=kind, dropout=dropout, dims=(1, 4))
    head.train()
    head(_inputs()).pow(2).sum().backward()
    grad = head.first.weight.grad
    assert grad.shape == (HIDDEN if kind == "mlp" else 3, HIDDEN)
    nonzero_columns = torch.nonzero(grad.abs().sum(dim=0)).flatten().tolist()
    assert nonzero_columns == [1, 4]
    if head.out is not None:  # the second MLP layer is not masked
        assert head.out.weight.grad.abs().sum() > 0


def test_without_dims_every_column_gets_gradient():
    torch.manual_seed(0)
    head = Head(HIDDEN, 2, kind="linear", dropout=0.0, dims=None)
    head(_inputs()).sum().backward()
    assert bool((head.first.weight.grad.abs().sum(dim=0) > 0).all())


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_masked_dimensions_do_not_change_the_output(kind):
    torch.manual_seed(0)
    head = Head(HIDDEN, 2, kind=kind, dropout=0.1, dims=(1, 4)).eval()
    x = _inputs(seed=1)
    changed = _inputs(seed=2) * 100.0  # every dimension different ...
    changed[:, [1, 4]] = x[:, [1, 4]]  # ... except the selected ones
    with torch.no_grad():
        assert torch.equal(head(x), head(changed))
        moved = x.clone()
        moved[:, 4] += 1.0
        assert not torch.allclose(head(x), head(moved))  # a selected dimension does matter


@pytest.mark.parametrize("dims", [(32,), (0, 40), (-1,), (-1, 3)])
def test_out_of_range_dims_raise(dims):
    with pytest.raises(FewdimsError, match="out of range"):
        Head(HIDDEN, 2, dims=dims)


# -- max_norm_token and pooling -------------------------------------------------------------------------------

def _hand_built():
    """Two examples, five positions, 2-d vectors; norms written next to each row."""
    hidden = torch.tensor([
        [[9.0, 0.0],   # 9: [CLS]
         [1.0, 0.0],   # 1
         [0.0, 3.0],   # 3  <- largest ordinary token
         [2.0, 0.0],   # 2
         [0.0, 8.0]],  # 8: [SEP]
        [[0.5, 0.0],   # 0.5: [CLS]
         [0.0, 2.0],   # 2  <- largest ordinary, non-padding token
         [1.0, 1.0],   # 1.41: [SEP]
         [50.0, 0.0],  # 50: padding
         [0.0, 60.0]], # 60: padding
    ])
    input_ids = torch.tensor([[CLS, 10, 11, 12, SEP], [CLS, 13, SEP, PAD, PAD]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return hidden, input_ids, attention_mask


def test_max_norm_token_picks_the_largest_eligible_token():
    hidden, _, _ = _hand_built()
    eligible = torch.tensor([[True] * 5, [True, True, True, False, False]])
    picked = max_norm_token(hidden, eligible)
    assert torch.equal(picked, torch.stack([hidden[0, 0], hidden[1, 1]]))
    only_some = torch.tensor([[False, True, False, True, False], [False, False, True, False, False]])
    assert torch.equal(max_norm_token(hidden, only_some), torch.stack([hidden[0, 3], hidden[1, 2]]))


def test_max_norm_token_respects_padding_and_special_tokens():
    hidden, input_ids, attention_mask = _hand_built()
    excluded = eligible_tokens(input_ids, attention_mask, (CLS, SEP), special_tokens_eligible=False)
    assert excluded.tolist() == [[False, True, True, True, False], [False, True, False, False, False]]
    assert torch.equal(max_norm_token(hidden, excluded), torch.stack([hidden[0, 2], hidden[1, 1]]))
    included = eligible_tokens(input_ids, attention_mask, (CLS, SEP), special_tokens_eligible=True)
    assert torch.equal(max_norm_token(hidden, included), torch.stack([hidden[0, 0], hidden[1, 1]]))
    # The same through pool(): padding (norms 50 and 60) is never chosen.
    pooled = pool(hidden, input_ids, attention_mask, "max_norm", (CLS, SEP), special_tokens_eligible=False)
    assert torch.equal(pooled, torch.stack([hidden[0, 2], hidden[1, 1]]))
    pooled = pool(hidden, input_ids, attention_mask, "max_norm", (CLS, SEP), special_tokens_eligible=True)
    assert torch.equal(pooled, torch.stack([hidden[0, 0], hidden[1, 1]]))


def test_max_norm_token_falls_back_to_position_zero():
    hidden, _, _ = _hand_built()
    nothing = torch.zeros(2, 5, dtype=torch.bool)
    assert torch.equal(max_norm_token(hidden, nothing), hidden[:, 0])
    mixed = torch.tensor([[False] * 5, [False, False, False, False, True]])
    assert torch.equal(max_norm_token(hidden, mixed), torch.stack([hidden[0, 0], hidden[1, 4]]))


def test_pool_of_a_text_with_only_special_tokens_uses_them():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 4.0], [7.0, 7.0]]])
    input_ids = torch.tensor([[CLS, SEP, PAD]])
    attention_mask = torch.tensor([[1, 1, 0]])
    out = pool(hidden, input_ids, attention_mask, "max_norm", (CLS, SEP), special_tokens_eligible=False)
    assert torch.equal(out, hidden[:, 1])  # the largest non-padding token, not padding (norm 9.9)
    out = pool(hidden, input_ids, attention_mask, "mean", (CLS, SEP), special_tokens_eligible=False)
    assert torch.allclose(out, torch.tensor([[0.5, 2.0]]))


@pytest.mark.parametrize("pooling", ["mean", "max", "max_norm", "cls"])
@pytest.mark.parametrize("special_tokens_eligible", [False, True])
def test_pooling_ignores_padding_values(pooling, special_tokens_eligible):
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    input_ids = torch.tensor([[CLS, 7, 8, 9, SEP, PAD], [CLS, 7, SEP, PAD, PAD, PAD], [CLS, 5, 6, 7, 8, SEP]])
    attention_mask = (input_ids != PAD).long()
    args = (input_ids, attention_mask, pooling, (CLS, SEP), special_tokens_eligible)
    before = pool(hidden, *args)
    noisy = hidden.clone()
    noisy[attention_mask == 0] = 1e4  # huge padding vectors: would win max / max_norm and shift a mean
    assert torch.equal(pool(noisy, *args), before)
    noisy[attention_mask == 0] = -1e4
    assert torch.equal(pool(noisy, *args), before)


@pytest.mark.parametrize("special_tokens_eligible", [False, True])
def test_mean_and_max_pooling_match_a_manual_reduction(special_tokens_eligible):
    torch.manual_seed(1)
    hidden = torch.randn(2, 5, 3)
    input_ids = torch.tensor([[CLS, 7, 8, SEP, PAD], [CLS, 7, 8, 9, SEP]])
    attention_mask = (input_ids != PAD).long()
    keep = [[0, 1, 2, 3], [0, 1, 2, 3, 4]] if special_tokens_eligible else [[1, 2], [1, 2, 3]]
    mean = pool(hidden, input_ids, attention_mask, "mean", (CLS, SEP), special_tokens_eligible)
    mx = pool(hidden, input_ids, attention_mask, "max", (CLS, SEP), special_tokens_eligible)
    for b, positions in enumerate(keep):
        assert torch.allclose(mean[b], hidden[b, positions].mean(0), atol=1e-6)
        assert torch.equal(mx[b], hidden[b, positions].amax(0))


def test_unknown_pooling_raises():
    hidden, input_ids, attention_mask = _hand_built()
    with pytest.raises(FewdimsError, match="median"):
        pool(hidden, input_ids, attention_mask, "median")


# -- encoder truncation ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_backbone():
    backbone, tokenizer = load_backbone("tiny")
    return backbone.eval(), tokenizer


def test_truncated_encoder_equals_hidden_states_of_the_full_model(tiny_backbone):
    backbone, tokenizer = tiny_backbone
    enc = tokenizer(["the movie was good", "bad", "a rather long sentence about a dull film"],
                    padding=True, return_tensors="pt")
    with torch.no_grad():
        full = backbone(**enc, output_hidden_states=True).hidden_states
    assert len(full) == 3
    for layer in range(3):
        cut = truncate_encoder(copy.deepcopy(backbone), layer).eval()
        assert len(cut.encoder.layer) == layer
        with torch.no_grad():
            out = cut(**enc).last_hidden_state
        torch.testing.assert_close(out, full[layer], atol=1e-5, rtol=0)
    assert len(backbone.encoder.layer) == 2  # the copies were cut, not the original


@pytest.mark.parametrize("layer", [3, -1])
def test_truncation_out_of_range_raises(tiny_backbone, layer):
    backbone, _ = tiny_backbone
    with pytest.raises(FewdimsError, match="out of range"):
        truncate_encoder(copy.deepcopy(backbone), layer)
