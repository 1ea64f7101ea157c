"""Side-by-side timing of training-step variants on real, length-grouped batches (one process, interleaved).

  .venv/bin/python bench/ab_train_step.py --task sst2 --variants hf,fast --steps 20

Every batch is trained on by every variant in turn (rotating the order), on one shared model and optimizer, so
a slow period on a busy machine hits all variants alike. Variants:
  hf                   the Hugging Face forward under bf16 autocast (fewdims before the fast path)
  fast                 fewdims.fastbert.FastBert with every option on
  fast-no_<option>     the same with one fewdims.fastbert.FastOptions switch off (cls_only, fused_dropout,
                       embedding_buffer); several may follow each other: fast-no_cls_only-no_fused_dropout
A variant may add `+threads1` to run that step on one thread, `+foldclip` to clip with
fewdims.train.clip_in_optimizer instead of accelerator.clip_grad_norm_. Two modifiers bound what is left to gain (they
do not train correctly; they only time): `+nodropout` runs the step with every dropout rate at 0 (what the dropout
masks cost), `+nostep` skips clipping and the optimizer step (what they cost), `+noembgrad` leaves the word embeddings
out of the backward and the optimizer step (at most what a sparse or lazy embedding update could gain). Wall and process CPU time are both reported: on
a machine shared with other jobs, the CPU time of a one-thread run is the steadier measure of the work done.
The allocator setting (fewdims.runtime.keep_freed_memory) is on unless FEWDIMS_KEEP_FREED_MEMORY=0.
`--out FILE` also writes the table, the arguments and the machine (as bench_training.py records it) as JSON, e.g.
  .venv/bin/python bench/ab_train_step.py --task sst2 --train-size 4000 --steps 120 \
      --variants fast+foldclip,fast+foldclip+nodropout,fast+foldclip+noembgrad,fast+foldclip+nostep \
      --out bench/results/headroom-sst2-<date>.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fewdims.train as ft
from fewdims.batching import collate, encode, length_grouped_batches
from fewdims.config import RunConfig
from fewdims.data import load_split
from fewdims.fastbert import FastBert, FastOptions
from fewdims.runtime import keep_freed_memory, make_accelerator

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--variants", default="hf,fast")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=None,
                    help="train rows the batches are drawn from (default: RunConfig's); more rows, more steps")
    ap.add_argument("--out", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--glue-dir", default=os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# keep_freed_memory={keep_freed_memory()} (FEWDIMS_KEEP_FREED_MEMORY=0 turns it off)")

    config = RunConfig(task=args.task, model=args.model, epochs=1)
    if args.train_size is not None:
        config = config.replace(train_size=args.train_size)
    data = load_split(config.task, "train", args.glue_dir).subset(config.train_size, config.data_seed)
    torch.manual_seed(config.seed)
    model, tokenizer = ft.build_classifier(config)
    enc = encode(data, tokenizer, config.max_length, config.model)
    accelerator = make_accelerator("auto")
    optimizer = torch.optim.AdamW(ft.param_groups(model, config), fused=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    trainable = [p for p in model.parameters() if p.requires_grad]
    variants = args.variants.split(",")
    fast = {}
    for v in variants:
        if v.startswith("fast"):
            options = dataclasses.replace(FastOptions(), **{opt: False for opt in v.split("+")[0].split("-no_")[1:]})
            fast[v] = FastBert(inner.backbone, torch.bfloat16, seed=0, cls_only=True, options=options)

    dropouts = [m for m in inner.modules() if isinstance(m, nn.Dropout)]
    rates = [m.p for m in dropouts]
    word_embeddings = inner.backbone.embeddings.word_embeddings.weight

    def step(variant, batch):
        threads = torch.get_num_threads()
        if "+threads1" in variant:
            torch.set_num_threads(1)
        for m, p in zip(dropouts, rates):
            m.p = 0.0 if "+nodropout" in variant else p
        word_embeddings.requires_grad_("+noembgrad" not in variant)
        t, c = time.perf_counter(), time.process_time()
        with accelerator.autocast():
            if variant.startswith("fast"):
                with torch.autocast("cpu", enabled=False):
                    hidden = fast[variant](batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                feats = inner.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], hidden=hidden)
            else:
                feats = ft.forward_features(inner, batch)
            out = inner.head(feats).float()
        loss = loss_fn(out, batch["labels"])
        t_fwd = time.perf_counter()
        accelerator.backward(loss)
        t_bwd = time.perf_counter()
        if "+nostep" not in variant:
            if "+foldclip" in variant:
                ft.clip_in_optimizer(optimizer.optimizer, trainable, 1.0)
            else:
                optimizer.optimizer.grad_scale = None
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t_end = time.perf_counter()
        cpu = time.process_time() - c
        torch.set_num_threads(threads)
        return t_end - t, t_fwd - t, t_bwd - t_fwd, t_end - t_bwd, cpu

    batches = length_grouped_batches(enc.lengths, config.batch_size, seed=0)[: args.steps + 1]
    times = {v: [] for v in variants}
    for i, index in enumerate(batches):
        batch = collate(enc, index, tokenizer.pad_token_id)
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        for v in order:
            r = step(v, batch)
            if i > 0:  # the first batch warms every variant up
                times[v].append(r)
    load = os.getloadavg()[0]
    tokens = float(np.mean([len(b) * enc.lengths[b].max() for b in batches[1:]]))
    print(f"# task={args.task} steps={len(batches) - 1} threads={args.threads} loadavg1={load:.2f} "
          f"tokens/step={tokens:.0f}")
    rows, lines = [], []
    for v in variants:
        a = np.array(times[v])
        row = {"variant": v, "wall_s": a[:, 0].sum(), "median_step_s": float(np.median(a[:, 0])),
               "forward_s": a[:, 1].sum(), "backward_s": a[:, 2].sum(), "clip_and_step_s": a[:, 3].sum(),
               "cpu_s": a[:, 4].sum()}
        row["speedup_vs_first"] = rows[0]["wall_s"] / row["wall_s"] if rows else 1.0
        row["cpu_speedup_vs_first"] = rows[0]["cpu_s"] / row["cpu_s"] if rows else 1.0
        rows.append({k: float(x) if isinstance(x, np.floating) else x for k, x in row.items()})
        lines.append(f"{v:32s} wall {row['wall_s']:7.2f} s  median step {row['median_step_s']:.3f} s  "
                     f"(fwd {row['forward_s']:6.2f} bwd {row['backward_s']:6.2f} clip+step {row['clip_and_step_s']:6.2f})"
                     f"  speedup vs first {row['speedup_vs_first']:.2f}x | cpu {row['cpu_s']:7.2f} s, "
                     f"cpu-time speedup {row['cpu_speedup_vs_first']:.2f}x")
        print(lines[-1])
    if args.out:
        from bench_training import machine_info  # same folder: the machine as the training bench records it

        out = {"args": vars(args), "steps": len(batches) - 1, "tokens_per_step": tokens, "loadavg1_after": load,
               "machine": machine_info(args.threads), "rows": rows, "lines": lines}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
