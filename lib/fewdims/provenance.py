"""Where the book's numbers come from: the stored runs each chapter used, the data they saw, the machine and the
versions, and the closing provenance line of every notebook."""
from __future__ import annotations

import math
import platform
from importlib import metadata

import pandas as pd

from .chapters import EXPERIMENTS
from .chapters.summary import collect
from .errors import FewdimsError
from .profiles import ALL_ROWS, per_task_text
from .tasks import get_task


def grid_records(profile, runner, experiments=EXPERIMENTS) -> tuple[dict, dict]:
    """Every chapter's results and every record the runner handed out for them.

    Returns (results, records): results as `chapters.summary.collect`, records {key: {'record': ...,
    'chapters': [...]}} for every run the book uses (placeholders of runs that are not stored carry 'missing')."""
    results = collect(profile, runner, experiments)
    return results, runner.handed_out


def _stored(records: dict) -> list[dict]:
    return [e for e in records.values() if not e["record"].get("missing") and not e["record"].get("planned")]


def runs_table(records: dict) -> pd.DataFrame:
    """One row per stored run: experiment (the first that uses it), task, label, seconds, device, precision."""
    rows = []
    for entry in _stored(records):
        rec = entry["record"]
        t = rec.get("timings", {})
        rows.append({"experiment": entry["chapters"][0], "experiments": ", ".join(entry["chapters"]),
                     "task": get_task(rec["config"]["task"]).display, "label": rec.get("label"),
                     "seconds": t.get("total_s", math.nan), "device": t.get("device"),
                     "mixed precision": t.get("mixed_precision"), "threads": t.get("threads"),
                     "created": rec.get("created")})
    return pd.DataFrame(rows, columns=["experiment", "experiments", "task", "label", "seconds", "device",
                                       "mixed precision", "threads", "created"])


def data_table(records: dict) -> pd.DataFrame:
    """Per task and split: the data source, rows and sha256 prefix the runs saw (one row per distinct
    fingerprint: two rows for a split means two runs saw different data)."""
    seen = {}
    for entry in _stored(records):
        rec = entry["record"]
        task = get_task(rec["config"]["task"]).display
        data = rec.get("data", {})
        parts = [("train", data.get("train"))] + list((data.get("eval") or {}).items())
        for split, fp in parts:
            if not fp:
                continue
            key = (task, split, fp.get("sha256"))
            if key not in seen:
                seen[key] = {"task": task, "split": split, "rows": fp.get("rows"),
                             "sha256": (fp.get("sha256") or "")[:16], "source": fp.get("source"), "runs": 0}
            seen[key]["runs"] += 1
    return pd.DataFrame(list(seen.values()), columns=["task", "split", "rows", "sha256", "source", "runs"])


def _values(records, get) -> str:
    counts: dict = {}
    for entry in _stored(records):
        try:
            v = get(entry["record"])
        except (KeyError, TypeError):
            v = None
        counts[v] = counts.get(v, 0) + 1
    if not counts:
        return "n/a"
    if len(counts) == 1:
        return str(next(iter(counts)))
    return "; ".join(f"{k} ({n} runs)" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def compute_text(records: list[dict]) -> str:
    """The runs' compute in words: their summed run time, and the machine time it took where runs ran side by side
    with fewer threads than cores (core-seconds / cores: two one-thread runs at once on two cores take half their
    summed time)."""
    summed = core = machine = 0.0
    for r in records:
        seconds = (r.get("timings") or {}).get("total_s") or 0.0
        threads = (r.get("timings") or {}).get("threads") or 1
        cores = (r.get("environment") or {}).get("cpu_count") or threads
        summed, core = summed + seconds, core + seconds * threads
        machine += seconds * min(threads, cores) / cores
    text = f"{summed / 3600:.2f} hours of training and evaluation (sum over the stored runs)"
    if records and abs(machine - summed) > 1.0:
        text += f"; {core / 3600:.2f} core-hours, {machine / 3600:.2f} hours of the machine's time (all its cores)"
    return text


def _narrowed(profile) -> str:
    """'; dimension, layer chapters: CoLA, SST-2, ...' for the chapters whose section narrows the tasks."""
    from .profiles import NARROWING_SECTIONS

    by_tasks: dict = {}
    for name in NARROWING_SECTIONS:
        try:
            kept = profile.chapter_tasks(name)
        except FewdimsError:  # the chapter keeps none of the profile's tasks (its page says so)
            kept = []
        if kept != profile.tasks:
            by_tasks.setdefault(tuple(kept), []).append(name)
    return "".join(f"; {', '.join(names)} chapter{'s' if len(names) > 1 else ''}: "
                   f"{', '.join(get_task(t).display for t in kept) or 'none'} (the profile's choice)"
                   for kept, names in by_tasks.items())


def setup_tables(profile, records: dict, runner=None) -> dict[str, pd.DataFrame]:
    """The setup chapter's tables: 'profile', 'hardware', 'versions' (two columns: item, value)."""
    from .store import git_commit

    v = profile.values
    stored = _stored(records)
    missing = len(records) - len(stored)
    prof = [
        ("profile", f"{profile.name}: {v.get('description', '')}"),
        ("backbone", f"{v['model']} ({_values(records, lambda r: r['extra']['model_source'])})"),
        ("tasks", ", ".join(get_task(t).display for t in profile.tasks) + _narrowed(profile)),
        ("seeds", ", ".join(map(str, profile.seeds)) + " (headline cells use every seed, the rest the first)"),
        ("train subset", per_task_text(v.get("train_size"), lambda n: "whole training split" if n in (None, ALL_ROWS)
                                       else f"{n:,} examples") + f" (data seed {v.get('data_seed', 0)})"
         + (f"; {v['holdout_size']:,} train rows held out to choose epochs and sets" if v.get("holdout_size") else "")),
        ("evaluation", per_task_text(v.get("eval_size"), lambda n: "whole dev split" if n in (None, ALL_ROWS)
                                     else f"{n:,} dev examples")),
        ("recipe", per_task_text(v["epochs"], lambda e: f"{e} epochs") + f", batch {v['batch_size']}, lr {v['lr']:g}, warm-up "
                   f"{v['warmup_ratio']:g}, weight decay {v['weight_decay']:g}, dropout {v['dropout']:g}, "
                   f"max length {v['max_length']}, precision {v['precision']}"),
        ("runs", f"{len(stored)} stored runs used by the book" + (f", {missing} not stored" if missing else "")),
        ("compute", compute_text([e["record"] for e in stored])),
    ]
    hardware = [
        ("processor", _values(records, lambda r: r["environment"]["processor"] or r["environment"]["machine"])),
        ("CPU model (this notebook's machine)", _cpu_model()),
        ("platform", _values(records, lambda r: r["environment"]["platform"])),
        ("CPU count", _values(records, lambda r: r["environment"]["cpu_count"])),
        ("torch threads", _values(records, lambda r: r["timings"]["threads"])),
        ("device", _values(records, lambda r: r["timings"]["device"])),
        ("GPU", _values(records, lambda r: r["environment"]["cuda"] or "none")),
        ("mixed precision", _values(records, lambda r: r["timings"]["mixed_precision"])),
    ]
    versions = [
        ("python (runs)", _values(records, lambda r: r["environment"]["python"])),
        ("torch (runs)", _values(records, lambda r: r["environment"]["torch"])),
        ("transformers (runs)", _values(records, lambda r: r["environment"]["transformers"])),
        ("accelerate (runs)", _values(records, lambda r: r["environment"]["accelerate"])),
        ("fewdims (runs)", _values(records, lambda r: r["extra"]["fewdims_version"])),
        ("commit (runs)", _values(records, lambda r: r["environment"]["commit"])),
        ("commit (this notebook)", git_commit() or "unknown"),
        ("python (this notebook)", platform.python_version()),
    ]
    for pkg in ("numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn", "papermill"):
        try:
            versions.append((f"{pkg} (this notebook)", metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            pass
    frame = lambda items: pd.DataFrame(items, columns=["item", "value"]).set_index("item")  # noqa: E731
    return {"profile": frame(prof), "hardware": frame(hardware), "versions": frame(versions)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(params: dict, runner) -> str:
    """The closing line of every notebook: profile, parameters, commit, runs reused / computed."""
    from .store import git_commit

    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return (f"Provenance: profile **{params.get('profile', runner.profile.name)}**; parameters {shown}; "
            f"commit `{git_commit() or 'unknown'}`; runner: {runner.summary()}.")
