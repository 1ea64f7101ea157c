"""Training speed and dev metric of fewdims against Hugging Face's Trainer: one sitting, several seeds.

At its default budget every trainer learns both tasks (at the old 2,000 examples x 1 epoch RTE sat at chance for
all of them, so the metric difference was noise): SST-2 on 8,000 train examples, RTE on its whole train split
(2,490 rows), 3 epochs, batch 32, lr 5e-5, max_length 128, MiniLM, 2 torch threads, seeds 0, 1, 2. Each run
fine-tunes on the same train subset (--data-seed; the seeds vary the training, not the data), evaluates on the
whole dev split and happens in a fresh spawned process (its peak memory is its own, nothing leaks between runs).
The trainers:

  fewdims  fewdims.train.train(RunConfig(...), glue_dir); it evaluates after every epoch (counted in its wall
           time, not in its train examples/s)
  trainer  transformers.Trainer as examples/pytorch/text-classification/run_glue.py sets it up: fp32,
           padding='max_length' to max_length, default_data_collator, eval batch 8 (slow: ~10 train ex/s on
           2 cores, so ~40 min for 8,000 x 3 epochs)
  tuned    the best-configured Trainer: the same plus bf16, dynamic padding (DataCollatorWithPadding),
           length-grouped sampling and eval batch 128
  tuned_kept_memory
           the tuned Trainer in a process with fewdims' allocator setting (fewdims.runtime.keep_freed_memory):
           how much of fewdims' lead is that one setting, which any PyTorch program can copy
  fewdims_default_malloc
           (only when named in --trainers) fewdims with that setting off, to measure it side by side

The runs go seed-major (for each seed, for each task, every trainer in turn), so that a change in the machine's
load over the hours of a sitting falls on all trainers alike; the load (other processes' share of the CPUs over
2 s, and the load average) is recorded before every run. Before the first run the plan and an estimate of its
duration are printed, from the newest results file in bench/results/ of the same model and threads when there is
one, else from nominal MiniLM rates on 2 cores. Leave the slow run_glue-style Trainer out with
--trainers fewdims,tuned,tuned_kept_memory (its figures then read not_run).

Reported per task and trainer: train examples/s, wall time (of the train call / of data + model + train + eval for
the Trainers) and the dev metric (points), each as mean ± sample std over the seeds, and peak memory (RSS, max
over the seeds). And fewdims' achieved training GFLOP/s against a bf16 matmul peak measured once at the start:

  model FLOPs = 6 * N * tokens  +  12 * L * d * sum_i len_i^2      (per epoch, times epochs)

where N counts the non-embedding parameters the training touches (encoder layers + head; not the embedding
tables, not the unused BERT pooler), tokens are the real (non-pad) train tokens, L the number of layers, d the
hidden size and len_i the token length of example i: the second term is the attention score and weighted-sum
matmuls (2 matmuls x 2 FLOP x len x d per token per layer forward, x3 for forward + backward). Padding tokens
are not counted: the FLOPs are what the task needs, not what an implementation chooses to spend.

Usage (the defaults are the full sitting `make bench` runs: ~4 h on 2 quiet cores with every trainer):
  .venv/bin/python bench/bench_training.py [--tasks sst2,rte] [--train-size sst2=8000,rte=all] [--epochs 3]
      [--seeds 3] [--trainers fewdims,trainer,tuned,tuned_kept_memory] [--model minilm] [--glue-dir DIR]
      [--threads 2] [--out PATH] [--dry-run]
--train-size takes one number or 'all' for every task, or task=size pairs (tasks left out keep their default:
sst2 8000, rte all, any other 8000). --seeds N runs seeds 0..N-1; a comma-separated list runs those seeds.
--dry-run prints the plan and the estimate and stops.

Output: one line per run, then the table, then per task the speedups (fewdims' mean train examples/s over the
other trainer's) and metric_delta (fewdims' mean dev metric minus the run_glue-style Trainer's, in points) with
whether it lies within the Trainers' own seed spread: |delta| <= 2 x the pooled std over seeds of the Trainer runs
(trainer, tuned and tuned_kept_memory, each about its own mean). The last two lines are that statement for the
overall delta and

  speedup_vs_trainer=<x> speedup_vs_tuned_trainer=<x> speedup_vs_tuned_kept_memory=<x> metric_delta=<+x.xx>

where each speedup is the smallest over the tasks and metric_delta is the mean over the tasks of the per-task
deltas (the worst task's is in the JSON). A trainer left out of the sitting reads not_run (metric_delta too, when
the run_glue-style Trainer is left out: the statement line then gives the delta against the tuned Trainer), one
whose runs all failed reads failed. Every run, the table, the machine (CPU model, cores, torch version, threads,
load average before and after) and these lines go to bench/results/<date>-<host>.json (rewritten after every run,
"complete": false until every planned run has succeeded; --out overrides the path), so that the figures stay checkable.

A full sitting (~4 h) is longer than some machines are lent for. --resume FILE continues an interrupted sitting in
that file: the same plan (its tasks, sizes, epochs, seeds, trainers, threads, model: read from the file; passing a
different value is an error), on a machine with the same CPU model and core count (ratios from different CPUs
would mix), running only the runs not yet done (a failed run is run again; its entry moves to `replaced_runs`).
Each sitting measures its own matmul peak and load and is listed in `sittings`; fewdims' share of the peak is taken
per run against its own sitting's peak. Stop a sitting between seeds (its runs are seed-major) and every seed's
trainers ran side by side on one machine, in one sitting.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import platform
import queue as queue_module
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
TRAINERS = ("fewdims", "trainer", "tuned", "tuned_kept_memory")
EXTRA_TRAINERS = ("fewdims_default_malloc",)
HF_TRAINERS = ("trainer", "tuned", "tuned_kept_memory")  # the Trainers whose seed spread judges metric_delta
DEFAULT_TASKS = ("sst2", "rte")
DEFAULT_TRAIN_SIZES = {"sst2": 8000, "rte": None}  # None: the whole train split (RTE: 2,490 rows)
OTHER_TASK_TRAIN_SIZE = 8000
NOT_RUN, FAILED = "not_run", "failed"
# the last line's keys, in order: (key, the trainer fewdims is compared with)
SPEEDUP_KEYS = (("speedup_vs_trainer", "trainer"), ("speedup_vs_tuned_trainer", "tuned"),
                ("speedup_vs_tuned_kept_memory", "tuned_kept_memory"))


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
    peak_rss = _peak_rss_mb()  # before the FLOP accounting below loads the backbone a second time
    task = get_task(p["task"])
    split = task.eval_splits[0]
    metric = result.metrics[split][task.main_metric]

    # FLOP accounting (outside the timed call): real train tokens and the parameter count.
    backbone, tokenizer = load_backbone(p["model"])
    data = load_split(task.name, config.train_split, p["glue_dir"]).subset(config.train_size, config.data_seed)
    n_eval = sum(len(load_split(task.name, s, p["glue_dir"])) for s in (config.eval_splits or task.eval_splits))
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
        "metric_name": task.main_metric, "peak_rss_mb": peak_rss, "threads": torch.get_num_threads(),
        "n_train": len(data), "n_eval": n_eval, "eval_passes": config.epochs,
        # the examples train() itself trained on per epoch (differs from n_train only if it held some out)
        "n_train_trained": round(t["train_examples_per_s"] * t["train_s"] / config.epochs),
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
        "n_train": len(train_ds), "n_eval": n_eval, "eval_passes": 1, "mixed_precision": "bf16" if tuned else "no",
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
    while True:  # get before join: a large result must be drained first
        try:
            status, out = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():  # killed (e.g. out of memory) before it could report
                try:
                    status, out = queue.get(timeout=1)
                    break
                except queue_module.Empty:
                    proc.join()
                    raise RuntimeError(f"{kind} worker died without a result (exit code {proc.exitcode})") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{kind} worker failed:\n{out}")
    return out


# --------------------------------------------------------------------------------------------------------------
# the parent: what to run, how long it takes
# --------------------------------------------------------------------------------------------------------------
def parse_tasks(text: str) -> list[str]:
    """'sst2,RTE' -> ['sst2', 'rte'] (fewdims' task names; unknown names raise ValueError)."""
    from fewdims.errors import FewdimsError
    from fewdims.tasks import get_task

    tasks = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            name = get_task(item).name
        except FewdimsError as err:
            raise ValueError(str(err)) from None
        if name not in tasks:
            tasks.append(name)
    if not tasks:
        raise ValueError(f"--tasks names no task: {text!r}")
    return tasks


def _parse_size(text: str) -> int | None:
    value = text.strip().lower()
    if value in ("all", "full", "none"):
        return None
    try:
        size = int(value.replace("_", ""))
    except ValueError:
        raise ValueError(f"a train size is a positive number of examples or 'all', got {text!r}") from None
    if size <= 0:
        raise ValueError(f"a train size is a positive number of examples or 'all', got {text!r}")
    return size


def parse_train_sizes(text: str | None, tasks: list[str]) -> dict[str, int | None]:
    """Train examples per task (None: the whole train split). `text`: None (the defaults), one size or 'all' for
    every task, or 'task=size,...' pairs where tasks left out keep their default (sst2 8000, rte all, others
    8000)."""
    sizes = {t: DEFAULT_TRAIN_SIZES.get(t, OTHER_TASK_TRAIN_SIZE) for t in tasks}
    if text is None or not text.strip():
        return sizes
    if "=" not in text and ":" not in text:
        size = _parse_size(text)
        return {t: size for t in tasks}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not value.strip():
            raise ValueError(f"--train-size pairs read task=size, got {item!r}")
        (task,) = parse_tasks(key)
        size = _parse_size(value)
        if task in sizes:  # a pair for a task not in --tasks is allowed and unused
            sizes[task] = size
    return sizes


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5,7' -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
                raise ValueError
        else:
            n = int(text)
            if n <= 0:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise ValueError(f"--seeds takes a number of seeds (3 -> 0,1,2) or a list of distinct seeds, "
                         f"got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seeds names no seed: {text!r}")
    return seeds


def parse_trainers(text: str) -> list[str]:
    known = TRAINERS + EXTRA_TRAINERS
    trainers = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item not in known:
            raise ValueError(f"--trainers takes a comma-separated subset of {','.join(known)}, got {item!r}")
        if item not in trainers:
            trainers.append(item)
    if not trainers:
        raise ValueError(f"--trainers names no trainer: {text!r}")
    return trainers


# The arguments that make a sitting's plan: a resumed sitting takes them from its file
PLAN_ARGS = ("tasks", "train_size", "data_seed", "epochs", "batch_size", "lr", "seeds", "max_length", "model",
             "trainers", "threads", "peak_n", "peak_seconds")


def explicit_options(ap: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the options `argv` names (as --opt VALUE or --opt=VALUE)."""
    given = set()
    for action in ap._actions:
        if any(tok == opt or tok.startswith(opt + "=") for opt in action.option_strings for tok in argv):
            given.add(action.dest)
    return given


def load_unfinished(path: Path) -> dict:
    """An interrupted sitting's record, or ValueError saying why it cannot be resumed."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--resume: {path} does not exist (pass the results JSON of an interrupted sitting)")
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--resume: {path} is not a readable results JSON ({err})")
    if not isinstance(record, dict) or not all(k in record for k in ("args", "plan", "runs", "machine")):
        raise ValueError(f"--resume: {path} lacks args, plan, runs or machine: not a bench_training results file")
    if record.get("complete"):
        raise ValueError(f"--resume: {path} is a complete sitting; start a new one without --resume")
    return record


def resume_conflicts(stored: dict, current: dict, given: set[str]) -> list[str]:
    """The plan arguments passed on the command line that differ from the resumed sitting's."""
    return [f"--{k.replace('_', '-')} {current[k]!r} (the sitting has {stored.get(k)!r})"
            for k in PLAN_ARGS if k in given and current[k] != stored.get(k)]


def same_cpu(a: dict, b: dict) -> bool:
    return a.get("cpu_model") == b.get("cpu_model") and a.get("cores") == b.get("cores")


def plan_runs(seeds: list[int], tasks: list[str], trainers: list[str]) -> list[dict]:
    """Seed-major: for each seed, for each task, every trainer in turn (load drifts fall on all trainers alike)."""
    return [{"seed": seed, "task": task, "trainer": trainer}
            for seed in seeds for task in tasks for trainer in trainers]


# Nominal rates for the estimate when no earlier results file fits: all-MiniLM-L6-v2 at 2 torch threads on a quiet
# 2-core x86 machine. (train tokens/s, eval tokens/s, seconds per run besides training and evaluation: spawning,
# imports, model load, tokenization, fewdims' FLOP accounting). Tokens are real ones, except for the run_glue-style
# Trainer, which pads every example to max_length (so ~10 train examples/s whatever the task).
NOMINAL = {"fewdims": (3000.0, 6000.0, 25.0), "fewdims_default_malloc": (3000.0, 6000.0, 25.0),
           "trainer": (1300.0, 3900.0, 25.0), "tuned": (1500.0, 4500.0, 25.0),
           "tuned_kept_memory": (1500.0, 4500.0, 25.0)}


def _eval_passes(trainer: str, epochs: int) -> int:
    return epochs if trainer.startswith("fewdims") else 1  # fewdims evaluates after every epoch


def nominal_rates(trainer: str, task: str, model: str, max_length: int) -> tuple[float, float, float]:
    """(train examples/s, eval examples/s, other seconds) from NOMINAL, scaled to the task's mean length and, for
    another model than MiniLM, by its non-embedding parameter count."""
    from fewdims.runner import MEAN_TOKENS, NON_EMBEDDING_PARAMS

    train_tps, eval_tps, other = NOMINAL[trainer]
    scale = NON_EMBEDDING_PARAMS["minilm"] / NON_EMBEDDING_PARAMS.get(model, 85e6)
    tokens = max_length if trainer == "trainer" else min(MEAN_TOKENS.get(task, 40) + 3, max_length)
    return train_tps * scale / tokens, eval_tps * scale / tokens, other


def _results_files(results_dir: Path, exclude: Path | None = None) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if exclude is not None and path.resolve() == Path(exclude).resolve():
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("runs"), list):
            found.append((path, record))
    return found


def previous_rates(results_dir: Path, model: str, threads: int, host: str | None = None,
                   exclude: Path | None = None) -> tuple[dict, list[str]]:
    """{(trainer, task): (train ex/s, eval ex/s, other s)} measured in earlier results files of the same model and
    threads (this host's first, newest first; the first file that has a pair gives it), and the files used."""
    candidates = [(path, rec) for path, rec in _results_files(results_dir, exclude)
                  if rec.get("args", {}).get("model") == model and rec.get("args", {}).get("threads") == threads]
    candidates.sort(key=lambda pr: (pr[1].get("machine", {}).get("host") == host, pr[1].get("started", "")),
                    reverse=True)
    rates, used = {}, []
    for path, rec in candidates:
        per_pair = {}
        for run in rec["runs"]:
            if run.get("error") or not run.get("train_examples_per_s") or not run.get("eval_examples_per_s"):
                continue
            other = run.get("process_s", run.get("wall_s", 0.0)) - run.get("train_s", 0.0) - run.get("eval_s", 0.0)
            per_pair.setdefault((run["trainer"], run["task"]), []).append(
                (run["train_examples_per_s"], run["eval_examples_per_s"], max(0.0, other)))
        new = {k: tuple(sum(col) / len(col) for col in zip(*v)) for k, v in per_pair.items() if k not in rates}
        if new:
            rates.update(new)
            used.append(str(path))
    return rates, used


def estimate_run_seconds(run: dict, sizes: dict, epochs: int, model: str, max_length: int,
                         previous: dict | None = None) -> tuple[float, str]:
    """Estimated seconds of one planned run (and 'previous' or 'nominal': where its rates come from).
    sizes: {task: (train rows, eval rows)}."""
    trainer, task = run["trainer"], run["task"]
    n_train, n_eval = sizes[task]
    rates = (previous or {}).get((trainer, task))
    origin = "previous"
    if rates is None:
        rates, origin = nominal_rates(trainer, task, model, max_length), "nominal"
    train_rate, eval_rate, other = rates
    seconds = n_train * epochs / train_rate + n_eval * _eval_passes(trainer, epochs) / eval_rate + other
    return seconds + 2.0, origin  # + the 2 s load sample before every run


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------------------------------------------
# the parent: aggregation and report (pure functions of the per-run records, tested on fake ones)
# --------------------------------------------------------------------------------------------------------------
def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def mean_std(values) -> dict:
    """Mean and sample standard deviation (n - 1; None below two values) of the finite values."""
    values = [float(v) for v in values if _finite(v)]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "values": []}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    return {"n": n, "mean": mean, "std": std, "values": values}


def pooled_std(groups) -> tuple[float | None, int, int]:
    """Pooled standard deviation of several groups, each about its own mean: sqrt(sum (n_i - 1) s_i^2 / sum
    (n_i - 1)); groups of fewer than two values add nothing. Returns (std or None, groups used, values used)."""
    ss, dof, used, n_values = 0.0, 0, 0, 0
    for values in groups:
        values = [float(v) for v in values if _finite(v)]
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        ss += sum((v - mean) ** 2 for v in values)
        dof += len(values) - 1
        used += 1
        n_values += len(values)
    return (math.sqrt(ss / dof) if dof else None), used, n_values


def aggregate(runs: list[dict], tasks: list[str], trainers: list[str], peak_gflops: float | None = None) -> dict:
    """{task: {trainer: summary over its seeds}} for every planned pair (runs == 0 when all failed). The dev
    metric is in points (x100)."""
    table = {}
    for task in tasks:
        table[task] = {}
        for trainer in trainers:
            mine = [r for r in runs if r["task"] == task and r["trainer"] == trainer]
            ok = [r for r in mine if not r.get("error")]
            row = {"runs": len(ok), "failed": len(mine) - len(ok), "seeds": [r["seed"] for r in ok],
                   "metric_name": ok[0].get("metric_name") if ok else None,
                   "mixed_precision": ok[0].get("mixed_precision") if ok else None,
                   "n_train": ok[0].get("n_train") if ok else None}
            for key in ("train_examples_per_s", "eval_examples_per_s", "train_s", "eval_s", "wall_s", "process_s"):
                row[key] = mean_std(r.get(key) for r in ok)
            row["metric"] = mean_std(100.0 * r["metric"] for r in ok if _finite(r.get("metric")))
            rss = [r["peak_rss_mb"] for r in ok if _finite(r.get("peak_rss_mb"))]
            row["peak_rss_mb"] = {"max": max(rss) if rss else None, "mean": sum(rss) / len(rss) if rss else None}
            if any("train_gflops_per_s" in r for r in ok):
                row["train_gflops_per_s"] = mean_std(r.get("train_gflops_per_s") for r in ok)
                # each run against its own sitting's peak where it has one (a resumed sitting measures its own)
                shares = [r["share_of_peak"] if _finite(r.get("share_of_peak")) else
                          r["train_gflops_per_s"] / peak_gflops for r in ok if _finite(r.get("train_gflops_per_s"))
                          and (_finite(r.get("share_of_peak")) or (_finite(peak_gflops) and peak_gflops > 0))]
                if shares:
                    row["share_of_peak"] = mean_std(shares)
            table[task][trainer] = row
    return table


def _mean_of(table_task: dict, trainers: list[str], name: str, field: str):
    """A trainer's mean of `field`, or NOT_RUN (not planned) / FAILED (planned, no successful run)."""
    if name not in trainers:
        return NOT_RUN
    row = table_task.get(name)
    if not row or not row["runs"] or row[field]["mean"] is None:
        return FAILED
    return row[field]["mean"]


def _combine(a, b, op):
    if isinstance(a, str) or isinstance(b, str):
        return NOT_RUN if NOT_RUN in (a, b) else FAILED
    return op(a, b)


def compare(table: dict, trainers: list[str]) -> dict:
    """Per task: speedups (fewdims' mean train ex/s over the other's), metric deltas (fewdims' mean minus the
    other's, points) and the Trainers' pooled seed spread that judges the delta."""
    out = {}
    for task, rows in table.items():
        f_speed = _mean_of(rows, trainers, "fewdims", "train_examples_per_s")
        f_metric = _mean_of(rows, trainers, "fewdims", "metric")
        c = {}
        for key, other in SPEEDUP_KEYS + (("speedup_vs_fewdims_default_malloc", "fewdims_default_malloc"),):
            if key.endswith("default_malloc") and other not in trainers:
                continue
            c[key] = _combine(f_speed, _mean_of(rows, trainers, other, "train_examples_per_s"), lambda x, y: x / y)
        for key, other in (("metric_delta", "trainer"), ("metric_delta_tuned", "tuned"),
                           ("metric_delta_tuned_kept_memory", "tuned_kept_memory")):
            c[key] = _combine(f_metric, _mean_of(rows, trainers, other, "metric"), lambda x, y: x - y)
        std, groups, n = pooled_std(rows[k]["metric"]["values"] for k in HF_TRAINERS if k in rows)
        reference = next((k for k, other in (("metric_delta", "trainer"), ("metric_delta_tuned", "tuned"),
                                             ("metric_delta_tuned_kept_memory", "tuned_kept_memory"))
                          if _finite(c[k])), None)
        delta = c[reference] if reference else None
        c["spread"] = {"reference": reference, "delta": delta, "pooled_trainer_std": std, "groups": groups,
                       "runs": n, "threshold": 2 * std if std is not None else None,
                       "within": (abs(delta) <= 2 * std) if (delta is not None and std is not None) else None}
        out[task] = c
    return out


_REFERENCE_NAME = {"metric_delta": "the run_glue-style Trainer", "metric_delta_tuned": "the tuned Trainer",
                   "metric_delta_tuned_kept_memory": "the tuned Trainer with kept memory"}


def final_summary(table: dict, comparisons: dict, trainers: list[str]) -> dict:
    """The last line's figures (speedups: the smallest over tasks; metric_delta: the mean over tasks) and the
    overall spread verdict (delta against the first reference every task has; the pooled std over all tasks'
    Trainer runs)."""
    final = {}
    for key, _other in SPEEDUP_KEYS + (("metric_delta", "trainer"),):
        values = [c[key] for c in comparisons.values()]
        numbers = [v for v in values if _finite(v)]
        if numbers:
            final[key] = min(numbers) if key.startswith("speedup") else sum(numbers) / len(numbers)
        else:
            final[key] = NOT_RUN if (not values or NOT_RUN in values) else FAILED
    deltas = [c["metric_delta"] for c in comparisons.values() if _finite(c["metric_delta"])]
    final["metric_delta_worst_task"] = min(deltas) if deltas else final["metric_delta"]
    reference = next((k for k in _REFERENCE_NAME
                      if comparisons and all(_finite(c[k]) for c in comparisons.values())), None)
    delta = (sum(c[reference] for c in comparisons.values()) / len(comparisons)) if reference else None
    std, groups, n = pooled_std(rows[k]["metric"]["values"] for rows in table.values() for k in HF_TRAINERS
                                if k in rows)
    final["spread"] = {"reference": reference, "delta": delta, "pooled_trainer_std": std, "groups": groups,
                       "runs": n, "threshold": 2 * std if std is not None else None,
                       "within": (abs(delta) <= 2 * std) if (delta is not None and std is not None) else None}
    return final


def _num(x, spec=".2f") -> str:
    return x if isinstance(x, str) else ("nan" if not _finite(x) else format(x, spec))


def _verdict(spread: dict) -> str:
    if spread["within"] is None:
        return ": cannot tell whether it lies within the Trainers' own seed spread (that needs >= 2 seeds of a Trainer)"
    std = spread["pooled_trainer_std"]
    word, rel = ("within", "<=") if spread["within"] else ("outside", ">")
    return (f" lies {word} the Trainers' own seed spread: |delta| {rel} 2 x pooled std = 2 x {std:.2f} = "
            f"{2 * std:.2f} points ({spread['runs']} Trainer runs in {spread['groups']} "
            f"group{'s' if spread['groups'] != 1 else ''})")


def task_statement(task: str, comparison: dict, table_task: dict) -> str:
    spread = comparison["spread"]
    ref = spread["reference"]
    if ref is None:
        return f"task={task} metric_delta={_num(comparison['metric_delta'], '+.2f')}: no fewdims and Trainer pair to compare"
    other = {"metric_delta": "trainer", "metric_delta_tuned": "tuned",
             "metric_delta_tuned_kept_memory": "tuned_kept_memory"}[ref]
    f, o = table_task["fewdims"]["metric"], table_task[other]["metric"]
    head = (f"task={task} metric_delta={_num(comparison['metric_delta'], '+.2f')}" if ref == "metric_delta" else
            f"task={task} metric_delta={comparison['metric_delta']} {ref}={spread['delta']:+.2f}")
    def pm(stat):
        return f"{stat['mean']:.2f} ± {'-' if stat['std'] is None else format(stat['std'], '.2f')}"

    return (f"{head} points (fewdims {pm(f)}, {other} {pm(o)} over {f['n']}/{o['n']} seeds){_verdict(spread)}")


def spread_statement(final: dict, comparisons: dict) -> str:
    """The line before the last: does metric_delta lie within the Trainers' own seed spread (overall, per task)?"""
    spread = final["spread"]
    ref = spread["reference"]
    if ref is None:
        return (f"metric_delta={_num(final['metric_delta'], '+.2f')}: no task has both a fewdims and a Trainer "
                f"result, nothing to judge")
    over = f"mean over {len(comparisons)} tasks" if len(comparisons) > 1 else "one task"
    if ref == "metric_delta":
        head = f"metric_delta={spread['delta']:+.2f} points ({over})"
    else:
        head = (f"metric_delta={final['metric_delta']} (the run_glue-style Trainer "
                f"{'was not run' if final['metric_delta'] == NOT_RUN else 'failed'}); fewdims minus "
                f"{_REFERENCE_NAME[ref]} instead: {spread['delta']:+.2f} points ({over})")
    parts = []
    for task, c in comparisons.items():
        s = c["spread"]
        if s["delta"] is None:
            parts.append(f"{task} none")
        elif s["within"] is None:
            parts.append(f"{task} {s['delta']:+.2f} (spread unknown)")
        else:
            parts.append(f"{task} {s['delta']:+.2f} {'within' if s['within'] else 'outside'} "
                         f"(2 x {s['pooled_trainer_std']:.2f} = {s['threshold']:.2f})")
    return f"{head}{_verdict(spread)}; per task: {', '.join(parts)}"


def last_line(final: dict) -> str:
    return (f"speedup_vs_trainer={_num(final['speedup_vs_trainer'])} "
            f"speedup_vs_tuned_trainer={_num(final['speedup_vs_tuned_trainer'])} "
            f"speedup_vs_tuned_kept_memory={_num(final['speedup_vs_tuned_kept_memory'])} "
            f"metric_delta={_num(final['metric_delta'], '+.2f')}")


def summarize(record: dict) -> dict:
    """Table, comparisons, final figures and the two closing lines from a record's runs and plan."""
    plan = record["plan"]
    peak = (record.get("matmul_peak") or {}).get("gflops_per_s")
    table = aggregate(record["runs"], plan["tasks"], plan["trainers"], peak)
    comparisons = compare(table, plan["trainers"])
    final = final_summary(table, comparisons, plan["trainers"])
    return {"table": table, "comparisons": comparisons, "final": final,
            "spread_statement": spread_statement(final, comparisons), "last_line": last_line(final)}


def _pm(stat: dict, spec: str) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:{spec}} ± {_num(stat['std'], spec) if stat['std'] is not None else '-'}"


def format_table(table: dict) -> list[str]:
    header = (f"{'task':6s} {'trainer':22s} {'runs':>4s} {'train_ex/s':>17s} {'wall_s':>17s} {'peak_rss_mb':>11s} "
              f"{'dev metric (points)':>24s} precision")
    lines = [header]
    for task, rows in table.items():
        for trainer, row in rows.items():
            metric = f"{row['metric_name'] or '':>9s} {_pm(row['metric'], '.2f'):>14s}"
            runs = f"{row['runs']}" + (f"/{row['runs'] + row['failed']}" if row["failed"] else "")  # ok/tried
            rss = row["peak_rss_mb"]["max"]
            lines.append(f"{task:6s} {trainer:22s} {runs:>4s} {_pm(row['train_examples_per_s'], '.1f'):>17s} "
                         f"{_pm(row['wall_s'], '.1f'):>17s} {_num(rss, '.0f') if rss is not None else '-':>11s} "
                         f"{metric:>24s} {row['mixed_precision'] or '-'}")
    return lines


# --------------------------------------------------------------------------------------------------------------
# the parent: machine, files, orchestration
# --------------------------------------------------------------------------------------------------------------
def other_load(seconds: float = 2.0) -> float | None:
    """Share of all CPUs busy over `seconds` while this benchmark itself idles: other jobs on the machine. On a
    small machine they distort timings badly (two spinning OpenMP threads stall on every op when one of them is
    descheduled), so the share is recorded next to every measurement."""
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


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (x86 'model name'; ARM 'Model'/'CPU part'), else platform's."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "CPU part"):
        match = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    commit = None
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE).group(1).split())
    except (OSError, AttributeError):
        flags = set()
    return {"host": socket.gethostname(), "cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "bf16_cpu_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}),
            "torch": _version("torch"), "transformers": _version("transformers"), "fewdims": _version("fewdims"),
            "git_commit": commit, "python": platform.python_version(), "platform": platform.platform(),
            "threads": threads, "loadavg_before": _loadavg(), "loadavg_after": None}


def default_out_path(started: dt.datetime, host: str, results_dir: Path = RESULTS_DIR) -> Path:
    """results_dir/<YYYY-MM-DD>-<host>.json; -2, -3, ... when a sitting that day already wrote one."""
    safe_host = re.sub(r"[^A-Za-z0-9._-]+", "_", host.split(".")[0] or "host")
    stem = f"{started:%Y-%m-%d}-{safe_host}"
    path, k = Path(results_dir) / f"{stem}.json", 2
    while path.exists():
        path, k = Path(results_dir) / f"{stem}-{k}.json", k + 1
    return path


def _clean(x):
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_record(path: Path, record: dict) -> None:
    """Write atomically (a crash mid-write leaves the previous version)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, default=float, allow_nan=False) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    ap.add_argument("--train-size", default=None,
                    help="one size or 'all' for every task, or task=size pairs (default sst2=8000,rte=all)")
    ap.add_argument("--data-seed", type=int, default=0, help="which train subset (the same for every run)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seeds", default="3", help="N (seeds 0..N-1) or a comma-separated list of seeds")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--model", default="minilm", help="'minilm', 'tiny' or a local Hugging Face model directory")
    ap.add_argument("--glue-dir", default=None,
                    help="GLUE TSV directory (default: $FEWDIMS_GLUE_DIR, else ../shared/glue)")
    ap.add_argument("--trainers", "--only", dest="trainers", default=",".join(TRAINERS),
                    help=f"comma-separated subset of {','.join(TRAINERS + EXTRA_TRAINERS)} (default: the first four)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    ap.add_argument("--peak-n", type=int, default=2048, help="matrix size of the bf16 matmul peak")
    ap.add_argument("--peak-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/<date>-<host>.json)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR), help=argparse.SUPPRESS)  # where estimates look
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    ap.add_argument("--resume", default=None, metavar="FILE",
                    help="continue the interrupted sitting in FILE (its plan; only the runs not yet done)")
    ap.add_argument("--hours", type=float, default=None, metavar="H",
                    help="end this sitting before a run that would end more than H hours after it started "
                         "(estimates scaled by how its runs so far compared with theirs); the file stays "
                         "incomplete and --resume FILE continues it on another day")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    resumed = None
    if args.resume:
        if args.out:
            ap.error("--resume writes to the file it continues: leave out --out")
        try:
            resumed = load_unfinished(Path(args.resume))
        except ValueError as err:
            ap.error(str(err))
        conflicts = resume_conflicts(resumed["args"], vars(args), explicit_options(ap, argv))
        if conflicts:
            ap.error(f"--resume {args.resume}: these differ from the sitting's plan: {'; '.join(conflicts)}. Leave "
                     "them out (the plan comes from the file) or start a new sitting without --resume")
        for key in PLAN_ARGS:
            setattr(args, key, resumed["args"][key])

    try:
        tasks = parse_tasks(args.tasks)
        sizes_arg = parse_train_sizes(args.train_size, tasks)
        seeds = parse_seeds(args.seeds)
        trainers = parse_trainers(args.trainers)
    except ValueError as err:
        ap.error(str(err))
    if args.epochs <= 0 or args.batch_size <= 0 or args.threads <= 0:
        ap.error("--epochs, --batch-size and --threads must be positive")
    if args.hours is not None and not (math.isfinite(args.hours) and args.hours > 0):
        ap.error(f"--hours must be a positive number of hours, got {args.hours}")
    glue_dir = args.glue_dir or os.environ.get("FEWDIMS_GLUE_DIR") or str(HERE.parent.parent / "shared" / "glue")
    if not Path(glue_dir).is_dir():
        ap.error(f"GLUE directory {glue_dir} does not exist; pass --glue-dir or set FEWDIMS_GLUE_DIR")
    glue_dir = str(Path(glue_dir).resolve())

    from fewdims.data import load_split
    from fewdims.tasks import get_task

    sizes = {}  # task: (train rows used, eval rows of the first eval split)
    for task in tasks:
        spec = get_task(task)
        n_train = len(load_split(task, "train", glue_dir).subset(sizes_arg[task], args.data_seed))
        sizes[task] = (n_train, len(load_split(task, spec.eval_splits[0], glue_dir)))

    started = dt.datetime.now().astimezone()
    host = socket.gethostname()
    out = Path(args.resume) if resumed else Path(args.out) if args.out else default_out_path(started, host)
    plan = plan_runs(seeds, tasks, trainers)
    if resumed:  # only the runs not done yet (a failed one again)
        done = {(r["seed"], r["task"], r["trainer"]) for r in resumed["runs"] if not r.get("error")}
        print(f"# resuming {out}: {len(done)} of {len(plan)} runs done in {len(resumed.get('sittings') or [1])} "
              f"sitting(s)", flush=True)
        plan = [r for r in plan if (r["seed"], r["task"], r["trainer"]) not in done]
    previous, used = previous_rates(Path(args.results_dir), args.model, args.threads, host, exclude=out)
    estimates = [estimate_run_seconds(r, sizes, args.epochs, args.model, args.max_length, previous) for r in plan]
    setup_s = (10.0 if set(trainers) & set(HF_TRAINERS) else 0) + (args.peak_seconds + 10 if "fewdims" in trainers else 0)
    total_est = sum(s for s, _ in estimates) + setup_s
    origins = {o for _, o in estimates}
    source = (" and ".join(filter(None, [f"rates measured in {', '.join(used)}" if "previous" in origins else "",
                                         "nominal MiniLM rates on 2 cores" if "nominal" in origins else ""])))

    size_text = ",".join(f"{t}={'all' if sizes_arg[t] is None else sizes_arg[t]}" for t in tasks)
    print(f"# bench_training: tasks={','.join(tasks)} train_size={size_text} (rows: "
          f"{', '.join(f'{t} {sizes[t][0]} train / {sizes[t][1]} dev' for t in tasks)}) epochs={args.epochs} "
          f"batch={args.batch_size} lr={args.lr} seeds={','.join(map(str, seeds))} max_length={args.max_length} "
          f"model={args.model} threads={args.threads} glue_dir={glue_dir}", flush=True)
    print(f"# plan: {len(plan)} runs ({len(seeds)} seeds x {len(tasks)} tasks x {len(trainers)} trainers: "
          f"{','.join(trainers)}{', those not done yet' if resumed else ''}), seed-major, each in a fresh process",
          flush=True)
    per_pair = {}  # (trainer, task) -> estimated seconds of its runs; a resumed plan may hold fewer for some pairs
    for (seconds, _), run in zip(estimates, plan):
        per_pair.setdefault((run["trainer"], run["task"]), []).append(seconds)
    for trainer in trainers:
        per_task = ", ".join(f"{task} {_hms(sum(per_pair[trainer, task]) / len(per_pair[trainer, task]))}"
                             for task in tasks if (trainer, task) in per_pair)
        if per_task:  # a resumed sitting may have nothing left for a trainer
            print(f"#   {trainer:22s} per run: {per_task}", flush=True)
    print(f"# estimated total: {_hms(total_est)} (h:mm:ss; from {source}; a busy machine takes longer)", flush=True)
    if "trainer" in trainers and len(trainers) > 1:
        trainer_s = sum(sum(per_pair.get(("trainer", task), [])) for task in tasks)
        print(f"# the run_glue-style Trainer is {_hms(trainer_s)} of it: --trainers "
              f"{','.join(t for t in trainers if t != 'trainer')} leaves it out", flush=True)
    if args.dry_run:
        return 0

    machine = machine_info(args.threads)
    sitting = {"started": started.isoformat(timespec="seconds"), "finished": None, "host": host,
               "glue_dir": glue_dir, "machine": machine}
    if resumed:
        if not same_cpu(resumed["machine"], machine):
            print(f"bench_training: --resume {out}: this machine has {machine['cores']} x {machine['cpu_model']!r}, "
                  f"the sitting ran on {resumed['machine'].get('cores')} x {resumed['machine'].get('cpu_model')!r}: "
                  "its ratios would mix CPUs; start a new sitting without --resume", file=sys.stderr)
            return 2
        record = resumed
        record.setdefault("sittings", [{k: record.get(k) for k in ("started", "finished", "glue_dir", "machine",
                                                                    "matmul_peak", "sitting_s")}])
        failed_before = [r for r in record["runs"] if r.get("error")]
        record["replaced_runs"] = record.get("replaced_runs", []) + failed_before
        record["runs"] = [r for r in record["runs"] if not r.get("error")]
        record["sittings"].append(sitting)
        record.pop("stopped", None)  # an earlier sitting's --hours stop
        write_record(out, record)
    else:
        record = {"schema": 2, "started": started.isoformat(timespec="seconds"), "finished": None, "complete": False,
                  "args": {k: v for k, v in vars(args).items() if k != "resume"}, "glue_dir": glue_dir,
                  "machine": machine,
                  "plan": {"tasks": tasks, "trainers": trainers, "seeds": seeds, "order": "seed-major",
                           "train_size": sizes_arg, "train_rows": {t: sizes[t][0] for t in tasks},
                           "eval_rows": {t: sizes[t][1] for t in tasks}, "estimated_s": total_est,
                           "estimate_from": source},
                  "runs": [], "sittings": [sitting]}
        write_record(out, record)
    print(f"# writing {out} (after every run)", flush=True)
    base = dict(data_seed=args.data_seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                max_length=args.max_length, model=args.model, glue_dir=glue_dir, threads=args.threads)
    t_sitting = time.perf_counter()
    interrupted = False
    stopped_at_limit = 0  # runs left unrun by --hours
    with tempfile.TemporaryDirectory(prefix="fewdims-bench-") as scratch:
        try:
            if set(trainers) & set(HF_TRAINERS):
                base["model_dir"] = in_fresh_process("model_dir", {"model": args.model, "scratch": scratch})["model_dir"]
            if "fewdims" in trainers:
                record["other_load_before_peak"] = other_load()
                peak = in_fresh_process("peak", {"threads": args.threads, "peak_n": args.peak_n,
                                                 "peak_seconds": args.peak_seconds})
                sitting["matmul_peak"] = peak
                record.setdefault("matmul_peak", peak)  # the first sitting's; runs carry their own sitting's share
                print(f"bf16 matmul peak: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['n']}x{peak['n']}, "
                      f"best of {peak['reps']}, {peak['threads']} threads) "
                      f"other_load_before={_num(record['other_load_before_peak'], '.0%')}", flush=True)
            done_est = elapsed_runs = 0.0  # the finished runs' estimates and measured seconds (for --hours)
            for i, (run, (est, _)) in enumerate(zip(plan, estimates), 1):
                if args.hours is not None:
                    elapsed = time.perf_counter() - t_sitting
                    pace = elapsed_runs / done_est if done_est > 0 else 1.0  # measured over estimated so far
                    if elapsed + est * pace > args.hours * 3600:
                        stopped_at_limit = len(plan) - i + 1
                        print(f"# --hours {args.hours:g}: the next run ({run['trainer']} {run['task']} seed "
                              f"{run['seed']}, ~{_hms(est * pace)}) would end past the limit after "
                              f"{_hms(elapsed)}; {stopped_at_limit} runs left: continue with --resume {out}",
                              flush=True)
                        break
                run_t0 = time.perf_counter()
                entry = {**run, "index": len(record["runs"]) + 1, "sitting": len(record["sittings"]) - 1,
                         "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                         "train_size": sizes_arg[run["task"]], "other_load_before": other_load(),
                         "loadavg_before": _loadavg(), "estimated_s": est}
                t0 = time.perf_counter()
                try:
                    entry.update(in_fresh_process(run["trainer"], {**base, "task": run["task"], "seed": run["seed"],
                                                                    "train_size": sizes_arg[run["task"]]}))
                except RuntimeError as err:
                    entry["error"] = str(err)
                entry["process_s"] = time.perf_counter() - t0
                if _finite(entry.get("train_gflops_per_s")) and sitting.get("matmul_peak"):
                    entry["share_of_peak"] = entry["train_gflops_per_s"] / sitting["matmul_peak"]["gflops_per_s"]
                record["runs"].append(entry)
                write_record(out, record)
                done_est += est
                elapsed_runs += time.perf_counter() - run_t0
                elapsed = time.perf_counter() - t_sitting
                left = sum(e for e, _ in estimates[i:]) * (elapsed / max(done_est, 1e-9))
                where = f"[{i}/{len(plan)} {_hms(elapsed)} elapsed, ~{_hms(left)} left]"
                if entry.get("error"):
                    print(f"task={run['task']} trainer={run['trainer']} seed={run['seed']} FAILED {where}\n"
                          f"{entry['error']}", file=sys.stderr, flush=True)
                    print(f"task={run['task']} trainer={run['trainer']:8s} seed={run['seed']} FAILED (see stderr) "
                          f"{where}", flush=True)
                    continue
                trained = entry.get("n_train_trained", entry["n_train"])
                if trained != sizes[run["task"]][0]:
                    print(f"# warning: {run['trainer']} trained on {trained} examples per epoch, "
                          f"not the {sizes[run['task']][0]} the Trainers get", flush=True)
                print(f"task={run['task']} trainer={run['trainer']:8s} seed={run['seed']} "
                      f"train_ex/s={entry['train_examples_per_s']:8.2f} eval_ex/s={entry['eval_examples_per_s']:8.2f} "
                      f"train_s={entry['train_s']:7.1f} wall_s={entry['wall_s']:7.1f} "
                      f"peak_rss_mb={entry['peak_rss_mb']:7.1f} {entry['metric_name']}={entry['metric']:.4f} "
                      f"precision={entry['mixed_precision']} other_load_before="
                      f"{_num(entry['other_load_before'], '.0%')} {where}", flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print(f"# interrupted after {len(record['runs'])} of {len(plan)} runs; summarizing those", flush=True)

    machine["loadavg_after"] = _loadavg()
    sitting["finished"] = record["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    sitting["sitting_s"] = time.perf_counter() - t_sitting
    record["sitting_s"] = sum(s.get("sitting_s") or 0.0 for s in record["sittings"])
    planned = plan_runs(seeds, tasks, trainers)
    done = {(r["seed"], r["task"], r["trainer"]) for r in record["runs"] if not r.get("error")}
    if stopped_at_limit:
        sitting["stopped"] = record["stopped"] = f"--hours {args.hours:g}: {stopped_at_limit} runs left for --resume"
    record["complete"] = not interrupted and all((r["seed"], r["task"], r["trainer"]) in done for r in planned)
    record.update(summarize(record))
    write_record(out, record)

    print(f"# sitting took {_hms(sitting['sitting_s'])} (estimated {_hms(total_est)}); load average before "
          f"{machine['loadavg_before']}, after {machine['loadavg_after']}"
          + (f"; {len(record['sittings'])} sittings in all, {_hms(record['sitting_s'])}" if resumed else ""),
          flush=True)
    for line in format_table(record["table"]):
        print(line, flush=True)
    for task, c in record["comparisons"].items():
        print(f"task={task} " + " ".join(f"{k}={_num(v, '+.2f' if k.startswith('metric') else '.2f')}"
                                         for k, v in c.items() if k != "spread"), flush=True)
        f = record["table"][task].get("fewdims")
        if f and "share_of_peak" in f and f["share_of_peak"]["mean"] is not None:
            print(f"task={task} fewdims_gflops_per_s={_pm(f['train_gflops_per_s'], '.1f')} "
                  f"share_of_bf16_peak={f['share_of_peak']['mean']:.1%}", flush=True)
        print(task_statement(task, c, record["table"][task]), flush=True)
    failed = sum(1 for r in record["runs"] if r.get("error"))
    if failed:
        print(f"# {failed} of {len(record['runs'])} runs failed (errors in the JSON and on stderr)", flush=True)
    print(f"# wrote {out}", flush=True)
    print(record["spread_statement"], flush=True)
    print(record["last_line"], flush=True)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
