"""Profiles: one parameter file (notebooks/params/<profile>.yml) drives every notebook of an edition.

A notebook's parameters cell names a profile and may override any top-level or per-experiment value, e.g.
`papermill notebooks/dimension.ipynb out.ipynb -p task rte -p k 3`. `load_profile` merges the overrides, checks
every value's type and returns a `Profile` whose `base_config(task)` is the RunConfig every experiment varies.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import RunConfig
from .errors import FewdimsError
from .tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = ROOT / "notebooks" / "params"
TINY_GLUE = "fixture:tiny"  # the smoke profile's data: a tiny GLUE-shaped directory written on demand

# Top-level keys copied into every RunConfig (the rest are per-experiment sections or profile metadata).
RUN_KEYS = ("model", "train_size", "eval_size", "epochs", "batch_size", "lr", "head_lr", "dropout", "max_length",
            "precision", "warmup_ratio", "weight_decay", "data_seed")
META_KEYS = ("profile", "description", "glue_dir", "tasks", "seeds", "runs_budget_hours")
SECTIONS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka")


@dataclass
class Profile:
    name: str
    values: dict

    def __getitem__(self, key):
        return self.values[key]

    def section(self, name: str) -> dict:
        return self.values.get(name, {})

    @property
    def tasks(self) -> list[str]:
        return list(self.values["tasks"])

    @property
    def seeds(self) -> list[int]:
        return list(self.values["seeds"])

    @property
    def glue_dir(self) -> str | None:
        glue_dir = self.values.get("glue_dir")
        if glue_dir == TINY_GLUE:
            from .fixtures import write_tiny_glue
            from .models import cache_root

            return str(write_tiny_glue(cache_root() / "tiny-glue"))
        if glue_dir is None:
            return os.environ.get("FEWDIMS_GLUE_DIR") or None
        return str((ROOT / glue_dir).resolve()) if not os.path.isabs(glue_dir) else glue_dir

    def base_config(self, task: str, **changes) -> RunConfig:
        fields = {k: self.values[k] for k in RUN_KEYS if k in self.values}
        return RunConfig(task=task, **{**fields, **changes})


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yml"))


def load_profile(profile: str = "cpu", **overrides) -> Profile:
    """Read notebooks/params/<profile>.yml and apply overrides (None means 'keep the profile's value').

    Shortcuts: task='rte' means tasks=['rte']; seeds may be an int (that many seeds, 0..n-1); an override whose
    name is a per-experiment key (k, random_subsets, n_examples, ...) replaces that key in its section."""
    if not isinstance(profile, str):
        raise FewdimsError(f"profile must be a name such as 'cpu', got {type(profile).__name__}")
    path = PARAMS_DIR / f"{profile}.yml"
    if not path.exists():
        raise FewdimsError(f"unknown profile {profile!r}; available: {', '.join(available_profiles())} "
                           f"(files in {PARAMS_DIR})")
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise FewdimsError(f"{path} must be a YAML mapping of parameters")
    values = copy.deepcopy(values)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "task" in overrides:
        overrides["tasks"] = [overrides.pop("task")]
    if isinstance(overrides.get("tasks"), str):
        overrides["tasks"] = [t.strip() for t in overrides["tasks"].split(",")]
    if isinstance(overrides.get("seeds"), int) and not isinstance(overrides.get("seeds"), bool):
        if overrides["seeds"] < 1:
            raise FewdimsError(f"seeds must be at least 1 (or a list of seeds), got {overrides['seeds']}")
        overrides["seeds"] = list(range(overrides["seeds"]))
    for key, value in overrides.items():
        if key in META_KEYS or key in RUN_KEYS:
            values[key] = value
            continue
        owners = [s for s in SECTIONS if key in values.get(s, {})]
        if not owners:
            known = sorted(set(META_KEYS + RUN_KEYS) | {k for s in SECTIONS for k in values.get(s, {})})
            raise FewdimsError(f"unknown parameter {key!r} for profile {profile!r}; known parameters: {known}")
        for section in owners:
            expected = type(values[section][key])
            if values[section][key] is not None and not _same_kind(value, expected):
                raise FewdimsError(f"parameter {key!r} must be {expected.__name__} "
                                   f"(like {values[section][key]!r}), got {type(value).__name__} {value!r}")
            values[section][key] = value
    values["tasks"] = [get_task(t).name for t in values.get("tasks", [])]
    if not values["tasks"]:
        raise FewdimsError(f"profile {profile!r} names no tasks")
    seeds = values.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise FewdimsError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    result = Profile(profile, values)
    result.base_config(values["tasks"][0])  # validates every run parameter now, before any work starts
    return result


def _same_kind(value, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
