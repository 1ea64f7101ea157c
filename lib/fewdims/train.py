"""Fine-tune a backbone + head from a RunConfig and evaluate it each epoch.

One small loop on `accelerate`: on a CPU it runs in-process (bf16 autocast where the CPU supports it); on one
or several GPUs the same code runs under `accelerate launch`. Note: a bare `accelerate launch` on a CPU sets
one thread per process; pass `--cpu --num_processes 1` (or just call `train` in-process) to use every core.
"""
from __future__ import annotations

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


def make_accelerator(precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

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
                else:
                    feats = forward_features(inner, batch)
                out = inner.head(feats).float()
            labels = batch["labels"]
            loss = loss_fn(out.squeeze(-1), labels) if task.is_regression else loss_fn(out, labels)
            accelerator.backward(loss)
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
        extra.update(analysis(inner, context))
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
