"""Training speed of fewdims against Hugging Face's Trainer, on the same data, in one run.

For each task, three trainers fine-tune the same backbone on the same train subset and evaluate on the whole
dev split, each in a fresh spawned process (so peak memory is its own and no state leaks; torch threads set in
each):

  fewdims  fewdims.train.train(RunConfig(...)), evaluated once at the end (epochs=1 by default)
  trainer  transformers.Trainer as examples/pytorch/text-classification/run_glue.py sets it up: fp32,
           padding='max_length' to max_length, default_data_collator, eval batch 8
  tuned    the best-configured Trainer: same plus bf16, dynamic padding (DataCollatorWithPadding),
           length-grouped sampling and eval batch 128
  tuned_kept_memory
           the tuned Trainer in a process with fewdims' allocator setting (fewdims.runtime.keep_freed_memory):
           how much of fewdims' lead is that one setting, which any PyTorch program can copy
  fewdims_default_malloc
           (only with --only) fewdims with that setting off, to measure it side by side

Then fewdims' achieved training GFLOP/s, against a measured bf16 matmul peak:

  model FLOPs = 6 * N * tokens  +  12 * L * d * sum_i len_i^2      (per epoch, times epochs)

where N counts the non-embedding parameters the training touches (encoder layers + head; not the embedding
tables, not the unused BERT pooler), tokens are the real (non-pad) train tokens, L the number of layers, d the
hidden size and len_i the token length of example i: the second term is the attention score and weighted-sum
matmuls (2 matmuls x 2 FLOP x len x d per token per layer forward, x3 for forward + backward). Padding tokens
are not counted: the FLOPs are what the task needs, not what an implementation chooses to spend.

Usage (defaults as `make bench`):
  .venv/bin/python bench/bench_training.py [--tasks sst2,rte] [--train-size 2000] [--epochs 1] [--model minilm]
      [--glue-dir DIR] [--only fewdims,trainer,tuned,tuned_kept_memory]

The last line of the output is
  speedup_vs_trainer=<min over tasks> speedup_vs_tuned_trainer=<min over tasks> metric_delta=<worst task>
      speedup_vs_tuned_kept_memory=<min over tasks>
with speedups = fewdims train examples/s / the Trainer's and metric deltas in points (fewdims minus Trainer).
The numbers also go to bench/out/bench_training.json.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINERS = ("fewdims", "trainer", "tuned", "tuned_kept_memory")
EXTRA_TRAINERS = ("fewdims_default_malloc",)


# --------------------------------------------------------------------------------------------------------------
# helpers that run inside the spawned workers
# --------------------------------------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space (VmHWM). ru_maxrss is not used: after exec it
    can still carry the parent's high-water mark."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    # fewdims.metrics imports scikit-learn and SciPy on first use (seconds on a busy machine): import them now,
    # in every worker alike, so that no trainer's evaluation time includes a one-off import
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401

    return torch


def _model_dir(model: str, scratch: str) -> str:
    """A Hugging Face model directory for the Trainer: the bundled MiniLM, a local dir, or the tiny BERT saved."""
    from fewdims.models import BUNDLED, TINY, bundled_model_dir, load_backbone

    if model in BUNDLED:
        return str(bundled_model_dir(model))
    if model == TINY:
        path = Path(scratch) / "tiny-model"
        if not (path / "config.json").exists():
            backbone, tokenizer = load_backbone(TINY)
            backbone.save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)
        return str(path)
    return model


def run_fewdims(p: dict) -> dict:
    torch = _setup_torch(p["threads"])
    import numpy as np

    from fewdims.batching import encode
    from fewdims.config import RunConfig
    from fewdims.data import load_split
    from fewdims.models import load_backbone
    from fewdims.tasks import get_task
    from fewdims.train import train

    config = RunConfig(task=p["task"], model=p["model"], epochs=p["epochs"], batch_size=p["batch_size"],
                       lr=p["lr"], seed=p["seed"], max_length=p["max_length"], train_size=p["train_size"],
                       data_seed=p["data_seed"])
    t0 = time.perf_counter()
    result = train(config, p["glue_dir"])
    wall = time.perf_counter() - t0
    task = get_task(p["task"])
    split = task.eval_splits[0]
    metric = result.metrics[split][task.main_metric]

    # FLOP accounting (outside the timed call): real train tokens and the parameter count.
    backbone, tokenizer = load_backbone(p["model"])
    data = load_split(task.name, config.train_split, p["glue_dir"]).subset(config.train_size, config.data_seed)
    lengths = encode(data, tokenizer, config.max_length, config.model).lengths.astype(np.float64)
    n_layers, d = backbone.config.num_hidden_layers, backbone.config.hidden_size
    n_encoder = sum(q.numel() for q in backbone.encoder.parameters())
    n_head = d * task.num_labels + task.num_labels
    n_params = n_encoder + n_head
    tokens = float(lengths.sum()) * config.epochs
    flops = 6.0 * n_params * tokens + 12.0 * n_layers * d * float((lengths ** 2).sum()) * config.epochs
    t = result.timings
    return {
        "train_examples_per_s": t["train_examples_per_s"], "eval_examples_per_s": t["eval_examples_per_s"],
        "train_s": t["train_s"], "eval_s": t["eval_s"], "wall_s": wall, "metric": metric,
        "metric_name": task.main_metric, "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(),
        "mixed_precision": t["mixed_precision"], "train_tokens": tokens, "non_embedding_params": n_params,
        "train_flops": flops, "train_gflops_per_s": flops / t["train_s"] / 1e9,
    }


def run_hf_trainer(p: dict, tuned: bool) -> dict:
    """Hugging Face Trainer set up as run_glue.py does (tuned=False) or at its best (tuned=True)."""
    torch = _setup_torch(p["threads"])
    import numpy as np
    from datasets import Dataset, disable_progress_bars
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments,
                              default_data_collator)
    from transformers.utils import logging as hf_logging

    from fewdims.data import load_split
    from fewdims.metrics import compute_metrics
    from fewdims.tasks import get_task

    hf_logging.set_verbosity_error()  # quiet, as a benchmark log should be
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    task = get_task(p["task"])
    split = task.eval_splits[0]
    t0 = time.perf_counter()
    model_dir = p["model_dir"]
    train_data = load_split(task.name, "train", p["glue_dir"]).subset(p["train_size"], p["data_seed"])
    eval_data = load_split(task.name, split, p["glue_dir"])

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir, num_labels=task.num_labels, finetuning_task=task.name)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)

    padding = False if tuned else "max_length"

    def dataset(split_data):
        columns = {f"text{i}": list(c) for i, c in enumerate(split_data.texts)}
        columns["label"] = split_data.labels.tolist()
        ds = Dataset.from_dict(columns)
        text_keys = [k for k in columns if k.startswith("text")]

        def preprocess(examples):  # run_glue.py's preprocess_function
            args = [examples[k] for k in text_keys]
            return tokenizer(*args, padding=padding, max_length=p["max_length"], truncation=True)

        return ds.map(preprocess, batched=True, remove_columns=text_keys)

    train_ds, eval_ds = dataset(train_data), dataset(eval_data)

    def metrics(eval_pred):
        logits, labels = eval_pred
        preds = np.squeeze(logits) if task.is_regression else np.argmax(logits, axis=1)
        return compute_metrics(task.name, preds, labels)

    extra = dict(bf16=True, train_sampling_strategy="group_by_length", per_device_eval_batch_size=128) if tuned else {}
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=p["batch_size"], learning_rate=p["lr"],
            num_train_epochs=p["epochs"], seed=p["seed"], report_to=[], disable_tqdm=True, save_strategy="no",
            logging_strategy="no", use_cpu=True, **extra)
        collator = DataCollatorWithPadding(tokenizer) if tuned else default_data_collator
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, data_collator=collator, compute_metrics=metrics)
        trainer.remove_callback(PrinterCallback)  # disable_tqdm prints every log dict instead; we print our own
        t_train = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t_train
        t_eval = time.perf_counter()
        ev = trainer.evaluate()
        eval_s = time.perf_counter() - t_eval
    wall = time.perf_counter() - t0
    n_train, n_eval = len(train_ds) * p["epochs"], len(eval_ds)
    return {
        "train_examples_per_s": n_train / train_s, "eval_examples_per_s": n_eval / eval_s, "train_s": train_s,
        "eval_s": eval_s, "wall_s": wall, "metric": float(ev[f"eval_{task.main_metric}"]),
        "metric_name": task.main_metric, "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(),
        "mixed_precision": "bf16" if tuned else "no",
    }


def run_matmul_peak(p: dict) -> dict:
    """bf16 matmul throughput under the same thread count: the ceiling the GFLOP/s figure is compared with."""
    torch = _setup_torch(p["threads"])
    n = p["peak_n"]
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    for _ in range(2):  # warm-up (oneDNN picks and caches its kernel)
        torch.matmul(a, b)
    best, reps, deadline = math.inf, 0, time.perf_counter() + p["peak_seconds"]
    while reps < 3 or time.perf_counter() < deadline:
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
        reps += 1
    return {"n": n, "reps": reps, "best_s": best, "gflops_per_s": 2 * n ** 3 / best / 1e9,
            "threads": torch.get_num_threads()}


def _worker(kind: str, params: dict, queue) -> None:
    try:
        if kind == "fewdims_default_malloc":
            os.environ["FEWDIMS_KEEP_FREED_MEMORY"] = "0"  # this spawned worker only
        if kind in ("fewdims", "fewdims_default_malloc"):
            out = run_fewdims(params)
        elif kind in ("trainer", "tuned", "tuned_kept_memory"):
            if kind == "tuned_kept_memory":
                from fewdims.runtime import keep_freed_memory

                keep_freed_memory()
            out = run_hf_trainer(params, tuned=kind != "trainer")
        elif kind == "peak":
            out = run_matmul_peak(params)
        elif kind == "model_dir":
            out = {"model_dir": _model_dir(params["model"], params["scratch"])}
        else:
            raise ValueError(kind)
        queue.put(("ok", out))
    except BaseException as err:  # report, do not hang the parent
        import traceback

        queue.put(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def in_fresh_process(kind: str, params: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kind, params, queue))
    proc.start()
    status, out = queue.get()  # before join: a large result must be drained first
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{kind} worker failed:\n{out}")
    return out


# --------------------------------------------------------------------------------------------------------------
# the parent: orchestration and report
# --------------------------------------------------------------------------------------------------------------
def other_load(seconds: float = 2.0) -> float | None:
    """Share of all CPUs busy over `seconds` while this benchmark itself idles: other jobs on the machine. On a
    small machine they distort timings badly (two spinning OpenMP threads stall on every op when one of them is
    descheduled), so the share is printed next to every measurement."""
    def sample():
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _fmt(x, spec=".2f") -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--model", default="minilm", help="'minilm', 'tiny' or a local Hugging Face model directory")
    ap.add_argument("--glue-dir", default=None,
                    help="GLUE TSV directory (default: $FEWDIMS_GLUE_DIR, else ../shared/glue)")
    ap.add_argument("--only", default=",".join(TRAINERS),
                    help=f"comma-separated subset of {','.join(TRAINERS + EXTRA_TRAINERS)}")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    ap.add_argument("--peak-n", type=int, default=2048, help="matrix size of the bf16 matmul peak")
    ap.add_argument("--peak-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=str(HERE / "out" / "bench_training.json"))
    args = ap.parse_args(argv)

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    bad = [t for t in only if t not in TRAINERS + EXTRA_TRAINERS]
    if bad or not only:
        ap.error(f"--only takes a comma-separated subset of {','.join(TRAINERS + EXTRA_TRAINERS)}, got {args.only!r}")
    glue_dir = args.glue_dir or os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue")
    if not Path(glue_dir).is_dir():
        ap.error(f"GLUE directory {glue_dir} does not exist; pass --glue-dir or set FEWDIMS_GLUE_DIR")

    base = dict(train_size=args.train_size, data_seed=args.data_seed, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_length=args.max_length,
                model=args.model, glue_dir=str(Path(glue_dir).resolve()), threads=args.threads)
    print(f"# bench_training: tasks={','.join(tasks)} train_size={args.train_size} epochs={args.epochs} "
          f"batch={args.batch_size} lr={args.lr} seed={args.seed} max_length={args.max_length} "
          f"model={args.model} threads={args.threads} glue_dir={base['glue_dir']}", flush=True)
    print(f"# host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}", flush=True)

    record = {"args": vars(args), "glue_dir": base["glue_dir"], "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="fewdims-bench-") as scratch:
        if {"trainer", "tuned", "tuned_kept_memory"} & set(only):
            base["model_dir"] = in_fresh_process("model_dir", {"model": args.model, "scratch": scratch})["model_dir"]
        if "fewdims" in only:
            record["other_load_before_peak"] = other_load()
            peak = in_fresh_process("peak", {"threads": args.threads, "peak_n": args.peak_n,
                                             "peak_seconds": args.peak_seconds})
            record["matmul_peak"] = peak
            print(f"bf16 matmul peak: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['n']}x{peak['n']}, "
                  f"best of {peak['reps']}, {peak['threads']} threads) "
                  f"other_load_before={_fmt(record['other_load_before_peak'], '.0%')}", flush=True)
        for task in tasks:
            results = {}
            for kind in only:
                busy_before = other_load()
                res = in_fresh_process(kind, {**base, "task": task})
                res["other_load_before"] = busy_before
                results[kind] = res
                print(f"task={task} trainer={kind:8s} train_ex/s={res['train_examples_per_s']:8.2f} "
                      f"eval_ex/s={res['eval_examples_per_s']:8.2f} train_s={res['train_s']:7.2f} "
                      f"wall_s={res['wall_s']:7.2f} peak_rss_mb={res['peak_rss_mb']:7.1f} "
                      f"{res['metric_name']}={res['metric']:.4f} precision={res['mixed_precision']} "
                      f"other_load_before={_fmt(busy_before, '.0%')}", flush=True)
            summary = {}
            if "fewdims" in results:
                f = results["fewdims"]
                if "matmul_peak" in record:
                    f["share_of_peak"] = f["train_gflops_per_s"] / record["matmul_peak"]["gflops_per_s"]
                    print(f"task={task} fewdims_gflops_per_s={f['train_gflops_per_s']:.1f} "
                          f"share_of_bf16_peak={f['share_of_peak']:.1%} train_tokens={f['train_tokens']:.0f} "
                          f"non_embedding_params={f['non_embedding_params']}", flush=True)
                for kind, speed_key, delta_key in (
                        ("trainer", "speedup_vs_trainer", "metric_delta"),
                        ("tuned", "speedup_vs_tuned_trainer", "metric_delta_tuned"),
                        ("tuned_kept_memory", "speedup_vs_tuned_kept_memory", "metric_delta_tuned_kept_memory"),
                        ("fewdims_default_malloc", "speedup_vs_fewdims_default_malloc", "metric_delta_default_malloc")):
                    if kind in results:
                        r = results[kind]
                        summary[speed_key] = f["train_examples_per_s"] / r["train_examples_per_s"]
                        summary[delta_key] = 100 * (f["metric"] - r["metric"])  # points
            record["tasks"][task] = {"results": results, "summary": summary}
            print(f"task={task} speedup_vs_trainer={_fmt(summary.get('speedup_vs_trainer'))} "
                  f"speedup_vs_tuned_trainer={_fmt(summary.get('speedup_vs_tuned_trainer'))} "
                  f"metric_delta={_fmt(summary.get('metric_delta'), '+.2f')} "
                  f"metric_delta_tuned={_fmt(summary.get('metric_delta_tuned'), '+.2f')} "
                  f"speedup_vs_tuned_kept_memory={_fmt(summary.get('speedup_vs_tuned_kept_memory'))}"
                  + (f" speedup_vs_fewdims_default_malloc={_fmt(summary['speedup_vs_fewdims_default_malloc'])}"
                     if "speedup_vs_fewdims_default_malloc" in summary else ""), flush=True)

    def worst(key, pick):
        values = [s["summary"][key] for s in record["tasks"].values() if key in s["summary"]]
        return pick(values) if values else float("nan")

    final = {"speedup_vs_trainer": worst("speedup_vs_trainer", min),
             "speedup_vs_tuned_trainer": worst("speedup_vs_tuned_trainer", min),
             "metric_delta": worst("metric_delta", min),
             "speedup_vs_tuned_kept_memory": worst("speedup_vs_tuned_kept_memory", min)}
    record["final"] = final
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"# wrote {out}", flush=True)
    print(f"speedup_vs_trainer={_fmt(final['speedup_vs_trainer'])} "
          f"speedup_vs_tuned_trainer={_fmt(final['speedup_vs_tuned_trainer'])} "
          f"metric_delta={_fmt(final['metric_delta'], '+.2f')} "
          f"speedup_vs_tuned_kept_memory={_fmt(final['speedup_vs_tuned_kept_memory'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
