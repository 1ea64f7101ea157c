"""What the classification head reads, and the head itself.

The paper's head is a new linear layer straight on the chosen vector (no BERT pooler). `pool` picks the vector;
`Head` applies dropout and a linear layer (or a 2-layer MLP) whose input columns outside `dims` are masked to
zero (DropConnect on the head's weights), so only the selected dimensions influence the output or get gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import FewdimsError


def max_norm_token(hidden: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Per example, the token vector of largest L2 norm among `eligible` tokens (B×T bool).
    Examples with no eligible token (an empty text) fall back to position 0, the [CLS] vector."""
    norms = hidden.float().norm(dim=-1).masked_fill(~eligible, -1.0)
    index = norms.argmax(dim=1)
    index = torch.where(eligible.any(dim=1), index, torch.zeros_like(index))
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def eligible_tokens(input_ids, attention_mask, special_ids, special_tokens_eligible: bool) -> torch.Tensor:
    mask = attention_mask.bool()
    if not special_tokens_eligible:
        for token_id in special_ids:
            mask = mask & (input_ids != token_id)
    return mask


def pool(hidden, input_ids, attention_mask, pooling: str, special_ids=(), special_tokens_eligible=False):
    """Reduce token vectors (B×T×H) to one vector per example."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = eligible_tokens(input_ids, attention_mask, special_ids, special_tokens_eligible)
    # An example whose only tokens are special keeps them, so mean/max are defined.
    mask = torch.where(mask.any(dim=1, keepdim=True), mask, attention_mask.bool())
    if pooling == "max_norm":
        return max_norm_token(hidden, mask)
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if pooling == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(dim=1)
    raise FewdimsError(f"pooling {pooling!r} is not handled by pool(); 'pooler' is applied by the Classifier")


def predictions_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """What a head's outputs predict: the score of a one-output (regression) head, else the class id."""
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)


class Head(nn.Module):
    """dropout -> linear (kind='linear') or dropout -> dense -> tanh -> dropout -> linear (kind='mlp')."""

    def __init__(self, hidden: int, num_outputs: int, kind: str = "linear", dropout: float = 0.1, dims=None):
        super().__init__()
        self.kind, self.dropout = kind, nn.Dropout(dropout)
        if dims is not None:
            bad = [d for d in dims if not 0 <= d < hidden]
            if bad:
                raise FewdimsError(f"dims {bad} are out of range for a {hidden}-dimensional vector; use 0..{hidden - 1}")
        mask = torch.zeros(hidden) if dims is not None else torch.ones(hidden)
        if dims is not None:
            mask[list(dims)] = 1.0
        self.register_buffer("input_mask", mask, persistent=False)
        first_out = hidden if kind == "mlp" else num_outputs
        self.first = nn.Linear(hidden, first_out)
        self.out = nn.Linear(hidden, num_outputs) if kind == "mlp" else None
        for layer in (self.first, self.out):
            if layer is not None:  # BERT's initialisation for new layers
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # DropConnect: masking the weight columns (not the input) keeps masked columns' gradients at exactly zero.
        weight = self.first.weight * self.input_mask.to(self.first.weight.dtype)
        x = F.linear(self.dropout(x), weight, self.first.bias)
        if self.out is not None:
            x = self.out(self.dropout(torch.tanh(x)))
        return x


class Classifier(nn.Module):
    """backbone -> vector chosen by `pooling` at the backbone's last computed layer -> Head."""

    def __init__(self, backbone: nn.Module, head: Head, pooling: str, special_ids=(), special_tokens_eligible=False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.pooling, self.special_ids, self.special_tokens_eligible = pooling, tuple(special_ids), special_tokens_eligible

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None, all_layers=False):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            output_hidden_states=all_layers)
        return out.hidden_states if all_layers else out.last_hidden_state

    def features(self, input_ids, attention_mask, token_type_ids=None, hidden=None):
        if hidden is None:
            hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        if self.pooling == "pooler":
            if getattr(self.backbone, "pooler", None) is None:
                raise FewdimsError("pooling='pooler' needs a backbone with a BERT pooler; this one has none")
            return self.backbone.pooler(hidden)
        return pool(hidden, input_ids, attention_mask, self.pooling, self.special_ids, self.special_tokens_eligible)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.head(self.features(input_ids, attention_mask, token_type_ids))
