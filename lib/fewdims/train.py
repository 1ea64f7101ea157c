"""Fine-tune a backbone + head from a RunConfig and evaluate it each epoch: the training loop.

One small loop on `accelerate` (see fewdims.runtime for the process settings). On a CPU, a BERT backbone is
fine-tuned through `fewdims.fastbert.FastBert`: the same computation as its Hugging Face forward, with fewer and
cheaper operations (see there). Cached weights and frozen features live in fewdims.cache.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn

from . import __version__
from .batching import collate, encode, length_grouped_batches, sorted_batches
from .cache import frozen_features, load_weights, save_weights, weights_path
from .config import RunConfig, RunResult
from .data import DataSource, load_split
from .errors import FewdimsError
from .fastbert import FastBert, FastOptions, fast_forward_supported
from .heads import Classifier, Head, predictions_from_logits
from .metrics import compute_metrics, majority_baseline
from .predictions import pack_split
from .models import load_backbone, model_source, truncate_encoder
from .runtime import make_accelerator, show_progress
from .tasks import get_task

EVAL_BATCH = 128


def build_classifier(config: RunConfig):
    """Backbone (optionally started from a stage-A run and truncated to `layer`) + a new head."""
    task = get_task(config.task)
    backbone, tokenizer = load_backbone(config.model)
    if config.init_from is not None:
        stage_a = RunConfig.from_dict(config.init_from)
        path = weights_path(stage_a, "backbone")
        if not path.exists():
            raise FewdimsError(f"init_from: no cached weights for stage-A run {stage_a.label()} at {path}; "
                               "run it with save_weights=True first (fewdims.experiments does this for you)")
        load_weights(stage_a, backbone=backbone)
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
    return predictions_from_logits(logits).numpy()


def target_scale(task, config: RunConfig, labels) -> tuple[float, float] | None:
    """(mean, std) of the training labels when a regression target is standardised, else None. A 1-3 dimension
    head starts near zero output: on STS-B's 0-5 scale it needs many steps to reach the labels' scale."""
    if not (config.standardize_target and task.is_regression):
        return None
    labels = np.asarray(labels, dtype=np.float64)
    return float(labels.mean()), float(labels.std()) or 1.0


def unscale(preds: np.ndarray, target: tuple[float, float] | None) -> np.ndarray:
    return preds if target is None else preds * target[1] + target[0]


class EpochChooser:
    """The epoch with the best held-out score (the earliest of equal ones)."""

    def __init__(self):
        self.epoch, self.best, self.scores = 0, -np.inf, []

    def offer(self, epoch: int, score: float) -> bool:
        """Record an epoch's held-out score; True when it is the best so far."""
        self.scores.append(float(score))
        value = -np.inf if np.isnan(score) else float(score)  # an undefined score (e.g. constant output) is worst
        if value > self.best or self.epoch == 0:
            self.epoch, self.best = epoch, value
            return True
        return False

    def summary(self, epochs: int) -> dict:
        improving = len(self.scores) > 1 and self.epoch == epochs and self.scores[-1] > self.scores[-2]
        return {"chosen_epoch": self.epoch, "heldout_scores": self.scores, "still_improving": bool(improving)}


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


def train(config: RunConfig, source=None, *, analyses=(), use_feature_cache: bool = True, on_step=None,
          fast_options: FastOptions | None = None) -> RunResult:
    """Fine-tune and evaluate. `source`: a DataSource or a glue_dir (see DataSource.resolve). `analyses`:
    callables (model, context) -> dict (e.g. fewdims.analysis.Analysis) run after training while the weights are
    in memory; their results land in RunResult.extra. `on_step(step)` is called after every step.
    `fast_options`: the CPU fast forward's switches (default FastOptions.from_env())."""
    if not isinstance(config, RunConfig):
        raise FewdimsError(f"train() needs a RunConfig, got {type(config).__name__}; build one with RunConfig(...)")
    t_start = time.perf_counter()
    task = get_task(config.task)
    source = DataSource.resolve(source)
    full_train = load_split(task.name, config.train_split, source)
    if config.holdout_size:
        train_data, heldout_data = full_train.split_off(config.holdout_size, config.train_size, config.data_seed)
    else:
        train_data, heldout_data = full_train.subset(config.train_size, config.data_seed), None
    target = target_scale(task, config, train_data.labels)
    eval_names = config.eval_splits or task.eval_splits
    eval_data = {s: load_split(task.name, s, source).subset(config.eval_size, config.data_seed) for s in eval_names}

    torch.manual_seed(config.seed)
    model, tokenizer = build_classifier(config)
    pad_id = tokenizer.pad_token_id or 0
    t_tok = time.perf_counter()
    train_enc = encode(train_data, tokenizer, config.max_length, config.model)
    eval_enc = {s: encode(d, tokenizer, config.max_length, config.model) for s, d in eval_data.items()}
    heldout_enc = encode(heldout_data, tokenizer, config.max_length, config.model) if heldout_data else None
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

    train_feats, eval_feats, heldout_feats = None, {}, None  # frozen-backbone features, from the cache
    if config.freeze_backbone and use_feature_cache:
        inner.backbone.eval()

        def features(encoded):
            return frozen_features(config, encoded, lambda: compute_features(inner, encoded, accelerator, pad_id))

        train_feats = features(train_enc)
        eval_feats = {s: features(e) for s, e in eval_enc.items()}
        heldout_feats = features(heldout_enc) if heldout_enc is not None else None
    loss_fn = nn.MSELoss() if task.is_regression else nn.CrossEntropyLoss()
    # fused AdamW can take the clipping factor (see clip_in_optimizer); accelerate's own paths (GradScaler for
    # fp16, sharded or distributed models) keep accelerator.clip_grad_norm_
    fold_clip = (optimizer.optimizer.defaults.get("fused") and accelerator.scaler is None
                 and accelerator.distributed_type == "NO")
    trainable = [p for p in model.parameters() if p.requires_grad]
    fast = None
    fast_options = FastOptions.from_env() if fast_options is None else fast_options
    if not config.freeze_backbone and fast_forward_supported(inner.backbone, accelerator.device, fast_options):
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        fast = FastBert(inner.backbone, dtype, seed=int(torch.randint(0, 2 ** 62, (1,)).item()),
                        cls_only=config.pooling in ("cls", "pooler"), options=fast_options)

    history, step, train_s, eval_s = [], 0, 0.0, 0.0
    chooser, best_state, dev_preds = EpochChooser(), None, {}
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
                if train_feats is not None:
                    feats = train_feats[batch["index"].cpu()].to(accelerator.device)
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
            labels = batch["labels"] if target is None else (batch["labels"] - target[0]) / target[1]
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
        if heldout_enc is not None:  # choose the epoch on held-out train rows; the dev splits wait for the choice
            preds = unscale(predict(inner, heldout_enc, accelerator, pad_id, heldout_feats), target)
            row["heldout"] = compute_metrics(task.name, preds, heldout_enc.labels)
            if chooser.offer(epoch + 1, row["heldout"][task.main_metric]) and epoch + 1 < config.epochs:
                best_state = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        else:
            for s, enc in eval_enc.items():
                dev_preds[s] = unscale(predict(inner, enc, accelerator, pad_id, eval_feats.get(s)), target)
                row[s] = compute_metrics(task.name, dev_preds[s], enc.labels)
        eval_s += time.perf_counter() - t0
        history.append(row)
    if bar is not None:
        bar.close()
    if heldout_enc is not None:
        t0 = time.perf_counter()
        if chooser.epoch < config.epochs:
            inner.load_state_dict(best_state)
        for s, enc in eval_enc.items():  # scored once, at the chosen epoch
            dev_preds[s] = unscale(predict(inner, enc, accelerator, pad_id, eval_feats.get(s)), target)
        eval_s += time.perf_counter() - t0
    metrics = {s: compute_metrics(task.name, dev_preds[s], enc.labels) for s, enc in eval_enc.items()}

    context = {"config": config, "accelerator": accelerator, "eval": eval_enc, "pad_id": pad_id, "task": task,
               "tokenizer": tokenizer}
    extra = {}
    for analysis in analyses:
        try:
            extra.update(analysis(inner, context))
        except Exception as err:  # keep the fine-tune: the runner re-runs a failed analysis from cached weights
            name = getattr(analysis, "name", None) or getattr(analysis, "__qualname__", analysis)
            extra.setdefault("analysis_errors", []).append(f"{name}: {type(err).__name__}: {err}")
    if config.save_weights:
        save_weights(config, inner.backbone, inner.head)

    n_train = len(train_enc) * config.epochs
    n_eval = sum(len(e) for e in eval_enc.values()) * (1 if heldout_enc is not None else config.epochs) + \
        (len(heldout_enc) * config.epochs if heldout_enc is not None else 0)
    selection = {"heldout_rows": len(heldout_enc), "metric": task.main_metric, **chooser.summary(config.epochs)} \
        if heldout_enc is not None else {}
    if target is not None:
        selection["target_mean_std"] = [float(target[0]), float(target[1])]
    return RunResult(
        config=config,
        metrics=metrics,
        predictions={s: pack_split(dev_preds[s], enc.labels) for s, enc in eval_enc.items()},
        selection=selection,
        history=history,
        timings={
            "total_s": time.perf_counter() - t_start, "tokenize_s": tokenize_s, "train_s": train_s,
            "eval_s": eval_s, "train_examples_per_s": n_train / max(train_s, 1e-9),
            "eval_examples_per_s": n_eval / max(eval_s, 1e-9), "steps": step,
            "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
            "threads": torch.get_num_threads(),
            # which training forward computed it: the fast path's switches, or None for the Hugging Face forward
            # (FEWDIMS_FAST_TRAIN=0, a frozen backbone, a GPU): the two draw different dropout masks
            "fast_forward": dataclasses.asdict(fast.options) if fast is not None else None,
        },
        data={
            "train": train_data.fingerprint(), "eval": {s: d.fingerprint() for s, d in eval_data.items()},
            **({"heldout": heldout_data.fingerprint()} if heldout_data is not None else {}),
            "majority_baseline": {s: majority_baseline(task.name, train_data.labels, d.labels)
                                  for s, d in eval_data.items()},
        },
        extra={**extra, "model_source": model_source(config.model), "fewdims_version": __version__},
    )
