"""Fine-tune a backbone + head from a RunConfig and evaluate it each epoch.

One small loop on `accelerate`: on a CPU it runs in-process (bf16 autocast where the CPU supports it); on one
or several GPUs the same code runs under `accelerate launch`. Note: a bare `accelerate launch` on a CPU sets
one thread per process; pass `--cpu --num_processes 1` (or just call `train` in-process) to use every core.
On a CPU, a BERT backbone is fine-tuned through `FastBert`: the same computation as its Hugging Face forward,
with fewer and cheaper operations (see there).
"""
from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .batching import collate, encode, length_grouped_batches, sorted_batches
from .config import RunConfig, RunResult
from .data import load_split
from .errors import FewdimsError
from .heads import Classifier, Head
from .metrics import compute_metrics, majority_baseline
from .models import cache_root, load_backbone, model_source, truncate_encoder
from .tasks import get_task

EVAL_BATCH = 128


def show_progress() -> bool:
    """Bars on a terminal only: papermill kernels have no tty, and their logs would flood."""
    env = os.environ.get("FEWDIMS_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "")
    return sys.stderr.isatty() and "ipykernel" not in sys.modules


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def weights_dir(config: RunConfig) -> Path:
    return cache_root() / "weights" / config.key()


@functools.cache  # process-wide and not undoable: decided once, on the first run
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    By default every tensor above ~128 KB-32 MB is a fresh mmap, and unmapped again when freed: each training
    step then page-faults its activations in anew, and the kernel zeroes every page. Measured on a 2-core CPU:
    on a quiet machine fewdims gains little from it (it already reuses its big buffers; bench, one run each:
    0.97x on SST-2, within noise, 1.12x on RTE), but while another process shares the cores, page faults stall
    both threads and SST-2 runs trained 2-5x faster with it (alternating runs beside the cpu grid). The Trainer,
    which allocates more per step, gained 23 % on a quiet machine (bench, tuned_kept_memory). Only where memory
    comes from; the arithmetic is unchanged (tested). Linux/glibc only; FEWDIMS_KEEP_FREED_MEMORY=0 turns it off
    (for side-by-side measurements). Returns whether it is on."""
    if os.environ.get("FEWDIMS_KEEP_FREED_MEMORY", "1") in ("0", "false", "") or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))


def make_accelerator(precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    keep_freed_memory()  # every training or analysis pass starts here

    # Each run may ask for a different precision; accelerate keeps a process-wide singleton state.
    AcceleratorState._reset_state(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_available(device))
    if use_bf16 and not bf16_available(device):
        raise FewdimsError("precision='bf16' is not supported on this device; use precision='auto' or 'fp32'")
    return Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=device.type == "cpu")


def build_classifier(config: RunConfig):
    """Backbone (optionally started from a stage-A run and truncated to `layer`) + a new head."""
    task = get_task(config.task)
    backbone, tokenizer = load_backbone(config.model)
    if config.init_from is not None:
        stage_a = RunConfig.from_dict(config.init_from)
        path = weights_dir(stage_a) / "backbone.pt"
        if not path.exists():
            raise FewdimsError(f"init_from: no cached weights for stage-A run {stage_a.label()} at {path}; "
                               "run it with save_weights=True first (fewdims.experiments does this for you)")
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    n_layers = len(backbone.encoder.layer)
    if config.layer is not None:
        if config.layer > n_layers:
            raise FewdimsError(f"layer={config.layer} is out of range: {config.model} has {n_layers} layers "
                               f"(0 = embeddings .. {n_layers})")
        truncate_encoder(backbone, config.layer)
    torch.manual_seed(config.seed)  # the head's initialisation depends on the seed only
    head = Head(backbone.config.hidden_size, task.num_labels, config.head, config.dropout, config.dims)
    special = [t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None]
    return Classifier(backbone, head, config.pooling, special, config.special_tokens_eligible), tokenizer


def param_groups(model: Classifier, config: RunConfig) -> list[dict]:
    """No weight decay on biases and LayerNorm weights; the head may have its own learning rate."""
    groups = {"decay": [], "no_decay": [], "head": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            groups["head"].append(p)
        elif p.ndim == 1 or "LayerNorm" in name:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    return [g for g in (
        {"params": groups["decay"], "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": groups["no_decay"], "weight_decay": 0.0, "lr": config.lr},
        {"params": groups["head"], "weight_decay": 0.0, "lr": config.head_lr or config.lr},
    ) if g["params"]]


def forward_features(model: Classifier, batch: dict) -> torch.Tensor:
    return model.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


@torch.inference_mode()
def compute_features(model: Classifier, encoded, accelerator, pad_id: int) -> torch.Tensor:
    """Pooled vectors of every example (original order), in large length-sorted batches."""
    out = None
    for index in sorted_batches(encoded.lengths, EVAL_BATCH):
        batch = {k: v.to(accelerator.device) for k, v in collate(encoded, index, pad_id).items()}
        with accelerator.autocast():
            feats = forward_features(model, batch).float()
        if out is None:
            out = torch.zeros(len(encoded), feats.shape[1])
        out[batch["index"].cpu()] = feats.cpu()
    return out


@torch.inference_mode()
def predict(model: Classifier, encoded, accelerator, pad_id: int, features=None) -> np.ndarray:
    """Head outputs for every example: class ids, or scores for regression."""
    model.eval()
    if features is None:
        features = compute_features(model, encoded, accelerator, pad_id)
    with accelerator.autocast():
        logits = model.head(features.to(accelerator.device)).float().cpu()
    return logits.squeeze(-1).numpy() if logits.shape[-1] == 1 else logits.argmax(-1).numpy()


def _feature_cache(config: RunConfig, name: str, encoded, model, accelerator, pad_id) -> torch.Tensor:
    """Frozen-backbone features depend on the backbone and the data only, so every frozen run shares them."""
    fields = ("model", "pooling", "special_tokens_eligible", "layer", "max_length", "precision", "init_from")
    from .batching import content_hash
    key = content_hash(np.frombuffer(repr([getattr(config, f) for f in fields]).encode(), dtype=np.uint8),
                       np.concatenate(encoded.input_ids), np.concatenate(encoded.token_type_ids))
    path = cache_root() / "features" / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    feats = compute_features(model, encoded, accelerator, pad_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(feats, tmp)
    os.replace(tmp, path)
    return feats


# ----------------------------------------------------------------------------------------------------------------
# Fast training forward of a BERT backbone on a CPU
#
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
# Gradient clipping is folded into the fused AdamW step as well (clip_in_optimizer). Outputs and gradients match
# the Hugging Face forward (tests/test_bench.py); set FEWDIMS_FAST_TRAIN=0 to train through the Hugging Face
# forward instead. The other switches exist for side-by-side measurements (bench/ab_train_step.py).
# ----------------------------------------------------------------------------------------------------------------
_FAST = {"enabled": os.environ.get("FEWDIMS_FAST_TRAIN", "1") not in ("0", "false", ""),
         "cls_only": True, "fused_dropout": True, "embedding_buffer": True}


def fast_forward_supported(backbone: nn.Module, device: torch.device) -> bool:
    """A plain BERT encoder (absolute positions, exact GELU, no decoder parts) on a CPU."""
    cfg = getattr(backbone, "config", None)
    if not _FAST["enabled"] or device.type != "cpu" or cfg is None or getattr(cfg, "model_type", None) != "bert":
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

    def __init__(self, backbone: nn.Module, compute_dtype: torch.dtype, seed: int, cls_only: bool):
        self.backbone, self.dtype = backbone, compute_dtype
        self.heads = backbone.config.num_attention_heads
        self.cls_only = cls_only and _FAST["cls_only"]
        self.masks = _Masks(seed) if _FAST["fused_dropout"] else None
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
        if _FAST["embedding_buffer"] and weight.requires_grad and torch.is_grad_enabled():
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


def clip_in_optimizer(optimizer: torch.optim.Optimizer, params, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ without its second pass over every gradient: a fused Adam/AdamW divides each gradient by
    `optimizer.grad_scale` inside its own kernel (the hook torch's GradScaler uses), so the clipping factor is
    handed to it instead of being multiplied into the gradients first. Returns the total norm, as
    clip_grad_norm_ does."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # the same factor clip_grad_norm_ multiplies by
    optimizer.grad_scale = (1.0 / coef).to(torch.float32)
    return total


def train(config: RunConfig, glue_dir=None, *, keep_model: bool = False, analyses=(),
          use_feature_cache: bool = True, on_step=None) -> RunResult:
    """Fine-tune and evaluate. `analyses`: callables (model, context) -> dict run after training while the
    weights are in memory; their results land in RunResult.extra. `on_step(step)` is called after every step."""
    if not isinstance(config, RunConfig):
        raise FewdimsError(f"train() needs a RunConfig, got {type(config).__name__}; build one with RunConfig(...)")
    t_start = time.perf_counter()
    task = get_task(config.task)
    train_data = load_split(task.name, config.train_split, glue_dir).subset(config.train_size, config.data_seed)
    eval_names = config.eval_splits or task.eval_splits
    eval_data = {s: load_split(task.name, s, glue_dir).subset(config.eval_size, config.data_seed) for s in eval_names}

    torch.manual_seed(config.seed)
    model, tokenizer = build_classifier(config)
    pad_id = tokenizer.pad_token_id or 0
    t_tok = time.perf_counter()
    train_enc = encode(train_data, tokenizer, config.max_length, config.model)
    eval_enc = {s: encode(d, tokenizer, config.max_length, config.model) for s, d in eval_data.items()}
    tokenize_s = time.perf_counter() - t_tok

    accelerator = make_accelerator(config.precision)
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.999), eps=1e-8,
                                  fused=accelerator.device.type in ("cpu", "cuda"))
    batches_per_epoch = -(-len(train_enc) // config.batch_size)
    total_steps = batches_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)

    cached = {}
    if config.freeze_backbone and use_feature_cache:
        inner.backbone.eval()
        cached = {"train": _feature_cache(config, "train", train_enc, inner, accelerator, pad_id)}
        cached |= {s: _feature_cache(config, s, e, inner, accelerator, pad_id) for s, e in eval_enc.items()}
    loss_fn = nn.MSELoss() if task.is_regression else nn.CrossEntropyLoss()
    # fused AdamW can take the clipping factor (see clip_in_optimizer); accelerate's own paths (GradScaler for
    # fp16, sharded or distributed models) keep accelerator.clip_grad_norm_
    fold_clip = (optimizer.optimizer.defaults.get("fused") and accelerator.scaler is None
                 and accelerator.distributed_type == "NO")
    trainable = [p for p in model.parameters() if p.requires_grad]
    fast = None
    if not config.freeze_backbone and fast_forward_supported(inner.backbone, accelerator.device):
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        fast = FastBert(inner.backbone, dtype, seed=int(torch.randint(0, 2 ** 62, (1,)).item()),
                        cls_only=config.pooling in ("cls", "pooler"))

    history, step, train_s, eval_s = [], 0, 0.0, 0.0
    bar = None
    if show_progress():
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, desc=config.label(), leave=False)
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        if config.freeze_backbone:
            inner.backbone.eval()  # frozen means no dropout either: the features are fixed
        batches = length_grouped_batches(train_enc.lengths, config.batch_size, seed=config.seed * 1000 + epoch)
        losses = []
        for index in batches:
            batch = {k: v.to(accelerator.device) for k, v in collate(train_enc, index, pad_id).items()}
            with accelerator.autocast():
                if "train" in cached:
                    feats = cached["train"][batch["index"].cpu()].to(accelerator.device)
                elif config.freeze_backbone:
                    with torch.no_grad():
                        feats = forward_features(inner, batch)
                elif fast is not None:
                    with torch.autocast(accelerator.device.type, enabled=False):  # it does its own casting
                        hidden = fast(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                    feats = inner.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                           hidden=hidden)
                else:
                    feats = forward_features(inner, batch)
                out = inner.head(feats).float()
            labels = batch["labels"]
            loss = loss_fn(out.squeeze(-1), labels) if task.is_regression else loss_fn(out, labels)
            accelerator.backward(loss)
            if fold_clip:
                clip_in_optimizer(optimizer.optimizer, trainable, 1.0)
            else:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            step += 1
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step)
        train_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "train_loss": float(torch.stack(losses).mean())}
        for s, enc in eval_enc.items():
            preds = predict(inner, enc, accelerator, pad_id, cached.get(s))
            row[s] = compute_metrics(task.name, preds, enc.labels)
        eval_s += time.perf_counter() - t0
        history.append(row)
    if bar is not None:
        bar.close()

    context = {"config": config, "accelerator": accelerator, "eval": eval_enc, "pad_id": pad_id, "task": task,
               "tokenizer": tokenizer}
    extra = {}
    for analysis in analyses:
        try:
            extra.update(analysis(inner, context))
        except Exception as err:  # keep the fine-tune: the runner re-runs a failed analysis from cached weights
            extra.setdefault("analysis_errors", []).append(f"{getattr(analysis, '__qualname__', analysis)}: "
                                                           f"{type(err).__name__}: {err}")
    if config.save_weights:
        path = weights_dir(config)
        path.mkdir(parents=True, exist_ok=True)
        for part, module in (("backbone", inner.backbone), ("head", inner.head)):
            tmp = path / f"{part}.pt.tmp{os.getpid()}"
            torch.save({k: v.cpu() for k, v in module.state_dict().items()}, tmp)
            os.replace(tmp, path / f"{part}.pt")

    n_train = len(train_enc) * config.epochs
    n_eval = sum(len(e) for e in eval_enc.values()) * config.epochs
    result = RunResult(
        config=config,
        metrics={s: history[-1][s] for s in eval_enc},
        history=history,
        timings={
            "total_s": time.perf_counter() - t_start, "tokenize_s": tokenize_s, "train_s": train_s,
            "eval_s": eval_s, "train_examples_per_s": n_train / max(train_s, 1e-9),
            "eval_examples_per_s": n_eval / max(eval_s, 1e-9), "steps": step,
            "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
            "threads": torch.get_num_threads(),
        },
        data={
            "train": train_data.fingerprint(), "eval": {s: d.fingerprint() for s, d in eval_data.items()},
            "majority_baseline": {s: majority_baseline(task.name, train_data.labels, d.labels)
                                  for s, d in eval_data.items()},
        },
        extra={**extra, "model_source": model_source(config.model), "fewdims_version": __version__},
    )
    if keep_model:
        result.model = inner
        result.tokenizer = tokenizer
    return result
