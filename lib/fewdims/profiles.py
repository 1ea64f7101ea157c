"""Profiles: one parameter file (notebooks/params/<profile>.yml) drives every notebook of an edition.

Precedence, highest first: an explicit parameter (`load_profile(..., name=value)`, `papermill -p name value`),
then the environment (`FEWDIMS_GLUE_DIR` for `glue_dir`), then the profile file. For one chapter
(`load_profile(..., chapter="freezing")`), a key of that chapter's own section wins over the top-level key of the
same name, and a parameter with that name sets the section's key: `-p epochs 5` on the freezing notebook changes
the frozen runs' epochs, on the token notebook the profile's. Every other name is an error that lists the known
ones: nothing a user passes is silently ignored.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import RunConfig
from .data import ENV_VAR, DataSource
from .errors import FewdimsError
from .tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = ROOT / "notebooks" / "params"
TINY_GLUE = "fixture:tiny"  # the smoke profile's data: a tiny GLUE-shaped directory written on demand
ALL_ROWS = "all"            # train_size / eval_size: the whole split
PER_TASK_KEYS = ("train_size", "eval_size", "epochs")  # each may be a mapping task -> value, with 'default'

# Top-level keys copied into every RunConfig (the rest are per-chapter sections or profile metadata).
RUN_KEYS = ("model", "train_split", "eval_splits", "train_size", "eval_size", "holdout_size", "epochs", "batch_size",
            "lr", "head_lr", "dropout", "max_length", "precision", "warmup_ratio", "weight_decay", "data_seed",
            "standardize_target")
META_KEYS = ("profile", "description", "glue_dir", "tasks", "seeds")
SECTIONS = ("token", "dimension", "layer", "freezing", "cross_finetune", "cka", "outliers")
BOOK_PAGES = ("summary", "setup", "glance")  # pages without a section of their own: top-level keys only
# Sections whose optional `tasks` narrows the profile's tasks for that chapter (a budget choice: the cpu profile
# runs the dimension and layer chapters on four tasks). cross_finetune's `tasks` names the pairs' tasks.
NARROWING_SECTIONS = ("token", "dimension", "layer", "freezing", "cka", "outliers")


@dataclass
class Profile:
    name: str
    values: dict
    chapter: str | None = None  # the chapter whose section wins over top-level keys (None: the profile as a whole)

    def __getitem__(self, key):
        return self.values[key]

    def section(self, name: str) -> dict:
        return self.values.get(name) or {}

    @property
    def tasks(self) -> list[str]:
        return list(self.values["tasks"])

    def chapter_tasks(self, chapter: str) -> list[str]:
        """The profile's tasks `chapter` runs: every one, or those its section's `tasks` keeps (NARROWING_SECTIONS),
        in the profile's order; none kept is an error naming both lists, never an empty chapter."""
        kept = (self.section(chapter) or {}).get("tasks") if chapter in NARROWING_SECTIONS else None
        if kept is None:
            return self.tasks
        tasks = [t for t in self.tasks if t in kept]
        if not tasks:
            raise FewdimsError(f"the {chapter} chapter runs none of the profile's tasks ({', '.join(self.tasks)}): "
                               f"{chapter}.tasks is {', '.join(kept)}; pass -p tasks {','.join(self.tasks)} to this "
                               "chapter's notebook to run them")
        return tasks

    @property
    def seeds(self) -> list[int]:
        return list(self.values["seeds"])

    @property
    def glue_dir(self) -> str | None:
        """The GLUE directory the runs read (None: the hub), after the precedence rule above."""
        glue_dir = self.values.get("glue_dir")
        if glue_dir == TINY_GLUE:
            from .cache import cache_root
            from .fixtures import write_tiny_glue

            return str(write_tiny_glue(cache_root() / "tiny-glue"))
        if glue_dir is None:
            return None
        return str((ROOT / glue_dir).resolve()) if not os.path.isabs(glue_dir) else glue_dir

    @property
    def source(self) -> DataSource:
        """The data source, resolved once (a missing directory is an error naming it)."""
        if not hasattr(self, "_source"):
            self._source = DataSource.resolve(self.glue_dir)
        return self._source

    def base_config(self, task: str, **changes) -> RunConfig:
        fields = {k: self.values[k] for k in RUN_KEYS if k in self.values}
        for key in PER_TASK_KEYS:
            if isinstance(fields.get(key), dict):  # per task, e.g. {sst2: 8000, default: all}
                mapping = fields[key]
                if task not in mapping and "default" not in mapping:
                    raise FewdimsError(f"{key} gives no value for {task} and no 'default': add '{task}: ...' or "
                                       f"'default: ...' to {mapping!r}")
                fields[key] = mapping.get(task, mapping.get("default"))
            if key != "epochs" and fields.get(key) == ALL_ROWS:
                fields[key] = None
        return RunConfig(task=task, **{**fields, **changes})


def per_task_text(value, describe) -> str:
    """A run parameter in words, per task where the profile maps tasks to values: 'SST-2: 8,000 examples; other
    tasks: the whole split' (`describe` words one value)."""
    if not isinstance(value, dict):
        return describe(value)
    parts = [f"{get_task(t).display}: {describe(v)}" for t, v in value.items() if t != "default"]
    if "default" in value:
        parts.append(f"{'other tasks' if parts else 'every task'}: {describe(value['default'])}")
    return "; ".join(parts)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yml"))


def known_parameters(values: dict, chapter: str | None) -> list[str]:
    """The names `load_profile` accepts for `chapter` (None: top-level keys only)."""
    names = set(META_KEYS) | set(RUN_KEYS) | {"task"}
    if chapter:
        names |= set(values.get(chapter) or {})
    return sorted(names - {"profile", "description"})


def load_profile(profile: str = "cpu", chapter: str | None = None, **overrides) -> Profile:
    """Read notebooks/params/<profile>.yml and apply overrides (None means 'keep the profile's value').

    Shortcuts: task='rte' means tasks=['rte']; seeds may be an int (that many seeds, 0..n-1); tasks and eval_splits
    may be comma-separated strings; train_size / eval_size may be 'all'. With `chapter`, a name of that chapter's
    section sets the section's key (it wins over the top-level key of the same name for that chapter)."""
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
    if chapter is not None and chapter not in SECTIONS + BOOK_PAGES:
        raise FewdimsError(f"unknown chapter {chapter!r}; chapters: {', '.join(SECTIONS + BOOK_PAGES)}")
    if os.environ.get(ENV_VAR):  # the environment wins over the profile file (an explicit glue_dir over both)
        values["glue_dir"] = os.environ[ENV_VAR]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    section = values.get(chapter) or {} if chapter else {}
    for key in ("task", "tasks"):
        if isinstance(overrides.get(key), str):
            overrides[key] = [t.strip() for t in overrides[key].split(",") if t.strip()]
    if "task" in overrides:  # one task: the profile's task list, and every chapter's that narrows it (not the pairs'
        values["tasks"] = overrides.pop("task")  # tasks of cross_finetune, which keeps its own)
        for name in NARROWING_SECTIONS:
            if "tasks" in (values.get(name) or {}):
                values[name]["tasks"] = list(values["tasks"])
    if isinstance(overrides.get("eval_splits"), str):
        overrides["eval_splits"] = [s.strip() for s in overrides["eval_splits"].split(",") if s.strip()]
    if isinstance(overrides.get("seeds"), int) and not isinstance(overrides.get("seeds"), bool):
        if overrides["seeds"] < 1:
            raise FewdimsError(f"seeds must be at least 1 (or a list of seeds), got {overrides['seeds']}")
        overrides["seeds"] = list(range(overrides["seeds"]))
    for key, value in overrides.items():
        if key in section:
            expected = section[key]
            if isinstance(expected, list) and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if expected is not None and not _same_kind(value, type(expected)):
                raise FewdimsError(f"parameter {key!r} of the {chapter} chapter must be {type(expected).__name__} "
                                   f"(like {expected!r}), got {type(value).__name__} {value!r}")
            values[chapter][key] = value
        elif key in META_KEYS or key in RUN_KEYS:
            values[key] = value
        else:
            raise FewdimsError(f"unknown parameter {key!r} for profile {profile!r}"
                               f"{f' and chapter {chapter!r}' if chapter else ''}; known parameters: "
                               f"{', '.join(known_parameters(values, chapter))}")
    values["tasks"] = [get_task(t).name for t in values.get("tasks", [])]
    if not values["tasks"]:
        raise FewdimsError(f"profile {profile!r} names no tasks")
    for name in NARROWING_SECTIONS:
        section_values = values.get(name) or {}
        if "tasks" in section_values:
            narrowed = section_values["tasks"]
            if not isinstance(narrowed, list) or not narrowed:
                raise FewdimsError(f"{name}.tasks must be a non-empty list of tasks (the profile's tasks this chapter "
                                   f"runs), got {narrowed!r}; remove the key to run every task")
            section_values["tasks"] = [get_task(t).name for t in narrowed]
    seeds = values.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise FewdimsError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for key in ("train_size", "eval_size"):
        sizes = values.get(key)
        for size in (sizes.values() if isinstance(sizes, dict) else [sizes]):
            if isinstance(size, str) and size != ALL_ROWS:
                raise FewdimsError(f"{key} must be a number of rows, {ALL_ROWS!r} (the whole split) or a mapping "
                                   f"task -> either (with 'default'), got {sizes!r}")
    result = Profile(profile, values, chapter)
    for task in values["tasks"]:  # validates every run parameter of every task now, before any work starts
        result.base_config(task)
    return result


def _same_kind(value, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, expected)
