"""Where one fewdims fine-tune spends its time: tokenization, collate, forward, backward, clipping, optimizer
step, evaluation (seconds and share of the train() call), plus optionally the top operators by torch.profiler.

  .venv/bin/python bench/profile_training.py [--task sst2] [--train-size 2000] [--ops 8]

Set FEWDIMS_FAST_TRAIN=0 to profile the plain Hugging Face forward instead of fewdims.fastbert.FastBert. The
phases are measured by wrapping the functions train() calls (wall-clock; on a CPU every op is synchronous,
so a phase's time is its own). `--ops N` profiles the first N training steps with torch.profiler afterwards
and prints the top operators.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

import fewdims.train as ft
from fewdims.config import RunConfig
from fewdims.fastbert import FastBert, FastOptions

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--glue-dir", default=os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", type=int, default=0, help="also profile this many steps with torch.profiler")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    spent = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    # train() looks these names up in its module, so patching the module attributes is enough.
    ft.collate = timed("collate", ft.collate)
    plain_forward = ft.forward_features
    ft.forward_features = lambda m, b: timed(
        "forward" if torch.is_grad_enabled() else "eval_forward", plain_forward)(m, b)
    FastBert.__call__ = timed("forward", FastBert.__call__)  # the training forward when the fast path is on
    ft.clip_in_optimizer = timed("clip_grad_norm", ft.clip_in_optimizer)
    from accelerate import Accelerator

    Accelerator.backward = timed("backward", Accelerator.backward)
    Accelerator.clip_grad_norm_ = timed("clip_grad_norm", Accelerator.clip_grad_norm_)
    step_start = {}
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(lambda *a: step_start.update(t=time.perf_counter()))
    register_optimizer_step_post_hook(
        lambda *a: spent.__setitem__("optimizer_step", spent["optimizer_step"] + time.perf_counter() - step_start["t"]))

    config = RunConfig(task=args.task, model=args.model, epochs=1, train_size=args.train_size)
    t0 = time.perf_counter()
    result = ft.train(config, args.glue_dir)
    total = time.perf_counter() - t0
    t = result.timings
    train_other = t["train_s"] - sum(spent[k] for k in ("collate", "forward", "backward", "clip_grad_norm",
                                                          "optimizer_step"))
    rows = [
        ("tokenization", t["tokenize_s"]),
        ("collate (train + eval)", spent["collate"]),
        ("forward: backbone + pooling (train)", spent["forward"]),
        ("backward", spent["backward"]),
        ("clip_grad_norm", spent["clip_grad_norm"]),
        ("optimizer step (+ schedule)", spent["optimizer_step"]),
        ("other train-loop work (head, loss, ...)", train_other),
        ("evaluation (all)", t["eval_s"]),
        ("setup (load data/model, accelerate)", total - t["train_s"] - t["eval_s"] - t["tokenize_s"]),
    ]
    print(f"# {config.label()} train_size={args.train_size} threads={torch.get_num_threads()} "
          f"fast_path={FastOptions.from_env().enabled} loadavg1={os.getloadavg()[0]:.2f} "
          f"train {t['train_examples_per_s']:.1f} ex/s, eval {t['eval_examples_per_s']:.1f} ex/s, "
          f"metric {result.metrics}")
    print(f"# eval: forward {spent['eval_forward']:.2f} s of {t['eval_s']:.2f} s")
    for name, secs in rows:
        print(f"{name:40s} {secs:8.2f} s  {100 * secs / total:5.1f} %")
    print(f"{'total train() call':40s} {total:8.2f} s")

    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        steps = {"n": 0}

        def on_step(step):
            steps["n"] = step
            if step >= args.ops:
                raise StopIteration

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            try:
                ft.train(config.replace(train_size=args.ops * config.batch_size), args.glue_dir, on_step=on_step)
            except StopIteration:
                pass
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
