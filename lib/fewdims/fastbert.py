"""Fast training forward of a BERT backbone on a CPU: `FastBert`, switched by `FastOptions` (see below).

fewdims.train fine-tunes a BERT backbone on a CPU through it: the same computation as its Hugging Face forward,
with fewer and cheaper operations.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------------------------------------------
# The same computation as the Hugging Face BertModel under bf16 autocast (same weights, same dropout rates,
# linear layers in bf16, residual stream and LayerNorm in fp32, attention scores/softmax in fp32), done with
# fewer and cheaper operations. Measured on a 2-core CPU (see bench/profile_training.py), what it avoids:
#   * torch's CPU dropout: bernoulli_ runs serially on non-Intel CPUs and then takes div_ + mul passes; the keep
#     masks here come from numpy's PCG64 (seeded from torch's generator, so runs stay deterministic per seed),
#     already scaled, and cost one multiply;
#   * SDPA's math path (the one used whenever attention dropout is on): it upcasts q, k, v separately, scales q and
#     k separately and checks the mask for -inf rows; here one fused q|k|v projection, one baddbmm with the mask,
#     softmax, dropout, bmm;
#   * re-casting the same fp32 input to bf16 for each of query, key and value;
#   * in the last layer, rows nobody reads: with 'cls' or 'pooler' pooling only position 0 of the last layer
#     reaches the loss, so that layer computes keys and values for every token but queries, attention output and
#     feed-forward for [CLS] only (identical gradients);
#   * separate dropout and residual-add passes: one addcmul does both (the product rounded once, in fp32);
#   * the word-embedding gradient: autograd would allocate a fresh dense vocab x hidden fp32 tensor every step
#     (47 MB for MiniLM: zeroing fresh pages took 70 ms, refilling a kept buffer 5 ms); here the rows are added
#     into one persistent buffer, and only the rows written in the previous step are cleared.
# Gradient clipping is folded into the fused AdamW step as well (fewdims.train.clip_in_optimizer). Outputs and
# gradients match the Hugging Face forward (tests/test_bench.py); set FEWDIMS_FAST_TRAIN=0 to train through the
# Hugging Face forward instead. The other FastOptions exist for side-by-side measurements (bench/ab_train_step.py).
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastOptions:
    """Switches of the fast forward. `enabled`: use it at all (where supported); `cls_only`: the last layer
    computes [CLS] rows only where only [CLS] is read; `fused_dropout`: keep-masks from numpy's PCG64, fused into
    addcmul; `embedding_buffer`: the word-embedding gradient goes into one persistent buffer."""

    enabled: bool = True
    cls_only: bool = True
    fused_dropout: bool = True
    embedding_buffer: bool = True

    @classmethod
    def from_env(cls) -> "FastOptions":
        """Every option on, unless FEWDIMS_FAST_TRAIN=0 (or 'false', or empty) turns the fast forward off."""
        return cls(enabled=os.environ.get("FEWDIMS_FAST_TRAIN", "1") not in ("0", "false", ""))


def fast_forward_supported(backbone: nn.Module, device: torch.device, options: FastOptions | None = None) -> bool:
    """A plain BERT encoder (absolute positions, exact GELU, no decoder parts) on a CPU, with the fast forward
    enabled in `options` (default: FastOptions.from_env())."""
    options = FastOptions.from_env() if options is None else options
    cfg = getattr(backbone, "config", None)
    if not options.enabled or device.type != "cpu" or cfg is None or getattr(cfg, "model_type", None) != "bert":
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute" or cfg.hidden_act != "gelu":
        return False
    return getattr(cfg, "chunk_size_feed_forward", 0) == 0


class _Masks:
    """Dropout keep-masks already scaled by 1/(1-p), in the dtype of the tensor they multiply.

    The masks of one step live in one reused buffer (`new_step` rewinds it): fresh multi-MB arrays each step
    cost more in page faults than generating the bits. A step that needs more than the buffer holds gets the rest
    as separate arrays, and the next step's buffer is sized to that need. A buffer that some tensor still uses
    (a graph kept alive past its step) is never rewound: a new one is made instead."""

    def __init__(self, seed: int):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.arena, self.offset, self.needed = np.empty(0, dtype=np.uint8), 0, 0

    def new_step(self):
        in_use = sys.getrefcount(self.arena) > 2  # this attribute + getrefcount's argument; more = views alive
        if in_use or self.needed > len(self.arena):
            self.arena = np.empty(max(self.needed, len(self.arena)), dtype=np.uint8)
        self.offset = self.needed = 0

    def _take(self, nbytes: int) -> np.ndarray:
        slot = -(-nbytes // 64) * 64  # 64-byte aligned
        self.needed += slot
        if self.offset + nbytes > len(self.arena):
            return np.empty(nbytes, dtype=np.uint8)
        out = self.arena[self.offset:self.offset + nbytes]
        self.offset += slot
        return out

    def __call__(self, shape, p: float, dtype: torch.dtype) -> torch.Tensor:
        n = int(np.prod(shape))
        bits = self.rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]  # 32 random bits per element
        keep = bits >= np.uint32(min(round(p * 2 ** 32), 2 ** 32 - 1))  # drop with probability p (to 2^-32)
        # torch's dropout scales by 1/(1-p) computed in the tensor's dtype; do the same (bf16: 1.109375 for p=0.1)
        scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
        if dtype == torch.bfloat16:  # numpy has no bf16: multiply the bit pattern of the scale by 0/1
            out = self._take(2 * n).view(np.uint16)
            np.multiply(keep, np.uint16(scale.view(torch.int16).item() & 0xFFFF), out=out)
            return torch.from_numpy(out).view(torch.bfloat16).view(shape)
        if dtype != torch.float32:
            return self(shape, p, torch.float32).to(dtype)
        out = self._take(4 * n).view(np.float32)
        np.multiply(keep, np.float32(scale.item()), out=out)
        return torch.from_numpy(out).view(shape)


def _rate(dropout: nn.Dropout) -> float:
    return dropout.p if dropout.training else 0.0  # model.eval() switches dropout off, as in the module itself


def _dropout(x: torch.Tensor, p: float, masks) -> torch.Tensor:
    if p <= 0.0:
        return x
    if masks is None:
        return nn.functional.dropout(x, p, True)
    return x * masks(x.shape, p, x.dtype)


def _dropout_add(x: torch.Tensor, residual: torch.Tensor, p: float, masks) -> torch.Tensor:
    """residual + dropout(x) in one op (addcmul); the product is formed in the residual's fp32, so it is rounded
    once instead of twice."""
    if p <= 0.0 or masks is None:
        return residual + _dropout(x, p, None)
    return torch.addcmul(residual, x, masks(x.shape, p, x.dtype))


def _contiguous(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as a contiguous tensor of `dtype`: layout change and cast in a single copy."""
    return x.to(dtype, memory_format=torch.contiguous_format) if x.dtype != dtype else x.contiguous()


class _EmbeddingRows(torch.autograd.Function):
    """F.embedding whose backward adds the looked-up rows' gradients into a persistent buffer (see FastBert)."""

    @staticmethod
    def forward(ctx, weight, ids, owner):
        ctx.save_for_backward(ids)
        ctx.weight, ctx.owner = weight, owner
        return nn.functional.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        ctx.owner.add_embedding_grad(ctx.weight, ids, grad)
        return None, None, None


class FastBert:
    """Training forward of a Hugging Face BertModel (see the comment above); reads the module's parameters on
    every call, so optimizer updates and the module stay the single source of truth."""

    def __init__(self, backbone: nn.Module, compute_dtype: torch.dtype, seed: int, cls_only: bool,
                 options: FastOptions = FastOptions()):
        self.backbone, self.dtype, self.options = backbone, compute_dtype, options
        self.heads = backbone.config.num_attention_heads
        self.cls_only = cls_only and options.cls_only
        self.masks = _Masks(seed) if options.fused_dropout else None
        self.pad_id = backbone.embeddings.word_embeddings.padding_idx
        self._grad_buffer, self._rows_written = None, None

    # -- the word-embedding gradient ---------------------------------------------------------------------------
    def add_embedding_grad(self, weight: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor):
        ids, grad = ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
        if self.pad_id is not None:  # nn.Embedding(padding_idx=...) never updates the padding row
            grad = grad.masked_fill((ids == self.pad_id).unsqueeze(1), 0.0)
        if weight.grad is None:  # zero_grad(set_to_none=True) dropped it: re-attach the cleared buffer
            if self._grad_buffer is None or self._grad_buffer.shape != weight.shape:
                self._grad_buffer = torch.zeros_like(weight)
            elif self._rows_written is not None:
                self._grad_buffer.index_fill_(0, self._rows_written, 0.0)
            weight.grad, self._rows_written = self._grad_buffer, None
        weight.grad.index_add_(0, ids, grad)
        if weight.grad is self._grad_buffer:
            self._rows_written = ids if self._rows_written is None else torch.cat([self._rows_written, ids])

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.backbone.embeddings.word_embeddings.weight
        if self.options.embedding_buffer and weight.requires_grad and torch.is_grad_enabled():
            return _EmbeddingRows.apply(weight, ids, self)
        return nn.functional.embedding(ids, weight, self.pad_id)

    # -- forward -----------------------------------------------------------------------------------------------
    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        emb = self.backbone.embeddings
        B, T = input_ids.shape
        if self.masks is not None:
            self.masks.new_step()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        x = x + emb.position_embeddings.weight[:T]
        x = nn.functional.layer_norm(x, x.shape[-1:], emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
        h = _dropout(x, _rate(emb.dropout), self.masks)
        # additive mask over keys, one row per (example, head): broadcast over queries by baddbmm
        bias = (1.0 - attention_mask.to(torch.float32)) * torch.finfo(torch.float32).min
        bias = bias[:, None, None, :].expand(B, self.heads, 1, T).reshape(B * self.heads, 1, T)
        layers = self.backbone.encoder.layer
        for i, layer in enumerate(layers):
            h = self.layer(layer, h, bias, last_rows_only=self.cls_only and i == len(layers) - 1)
        return h

    def layer(self, layer, h: torch.Tensor, bias: torch.Tensor, last_rows_only: bool) -> torch.Tensor:
        dt, F = self.dtype, nn.functional
        B, T, H = h.shape
        nh = self.heads
        hd = H // nh
        att = layer.attention.self
        q_w, k_w, v_w = att.query.weight, att.key.weight, att.value.weight
        q_b, k_b, v_b = att.query.bias, att.key.bias, att.value.bias
        hb = h.to(dt)
        if last_rows_only:  # keys and values for every token, the query for [CLS] only
            q = F.linear(hb[:, :1], q_w.to(dt), q_b.to(dt))
            q = _contiguous(q.view(B, 1, nh, hd).transpose(1, 2), torch.float32).view(B * nh, 1, hd)
            kv = F.linear(hb, torch.cat([k_w, v_w]).to(dt), torch.cat([k_b, v_b]).to(dt))
            k, v = _contiguous(kv.view(B, T, 2, nh, hd).permute(2, 0, 3, 1, 4), torch.float32)
            Tq, h = 1, h[:, :1]
        else:
            qkv = F.linear(hb, torch.cat([q_w, k_w, v_w]).to(dt), torch.cat([q_b, k_b, v_b]).to(dt))
            # one copy puts the heads next to the batch and upcasts (SDPA's math path also attends in fp32)
            q, k, v = _contiguous(qkv.view(B, T, 3, nh, hd).permute(2, 0, 3, 1, 4), torch.float32)
            Tq = T
        q, k, v = q.reshape(B * nh, Tq, hd), k.reshape(B * nh, T, hd), v.reshape(B * nh, T, hd)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=getattr(att, "scaling", hd ** -0.5))
        probs = _dropout(torch.softmax(scores, dim=-1), _rate(att.dropout), self.masks)
        ctx = _contiguous(torch.bmm(probs, v).view(B, nh, Tq, hd).transpose(1, 2), dt).view(B, Tq, H)
        out = layer.attention.output
        a = F.linear(ctx, out.dense.weight.to(dt), out.dense.bias.to(dt))
        a = F.layer_norm(_dropout_add(a, h, _rate(out.dropout), self.masks), (H,), out.LayerNorm.weight,
                         out.LayerNorm.bias, out.LayerNorm.eps)
        mid = layer.intermediate.dense
        i = F.gelu(F.linear(a.to(dt), mid.weight.to(dt), mid.bias.to(dt)))
        out = layer.output
        o = F.linear(i, out.dense.weight.to(dt), out.dense.bias.to(dt))
        return F.layer_norm(_dropout_add(o, a, _rate(out.dropout), self.masks), (H,), out.LayerNorm.weight,
                            out.LayerNorm.bias, out.LayerNorm.eps)
