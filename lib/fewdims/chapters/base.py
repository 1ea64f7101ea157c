"""What every chapter shares: the profile and runner it asks for records, and the book's reference run.

The reference (baseline) of every experiment: the raw last-layer CLS vector -> dropout -> linear head, all
dimensions, backbone fully fine-tuned. Its first-seed run keeps its weights in the local cache and carries the
analyses (CKA, layer dropping, inference-time masking, the pair scan), so no other chapter trains it again.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..analysis import layer_analysis, masking_analysis, pair_scan_analysis
from ..outlier_analysis import outlier_analysis
from ..config import RunConfig
from ..models import model_shape
from ..profiles import Profile
from ..runner import Runner
from ..tables import row
from ..tasks import get_task

ALL_DIMS = "CLS, all dims"  # the reference's label in the chapters' frames


def random_dim_sets(k: int, n: int, hidden: int) -> list[tuple[int, ...]]:
    """n random k-dimension sets, the same for every task and run (seeded by k and the set's index)."""
    return [tuple(sorted(np.random.default_rng(1000 * k + i).choice(hidden, size=k, replace=False).tolist()))
            for i in range(n)]


def random_sets_by_k(section: dict, hidden: int) -> dict[int, list[tuple[int, ...]]]:
    """The dimension chapter's random sets: `headline_random_subsets` for its headline k, `random_subsets` else."""
    return {k: random_dim_sets(k, section["headline_random_subsets"] if k == section["k"] else
                               section["random_subsets"], hidden) for k in section["ks"]}


class Chapter:
    """A chapter of the book: `results()` asks the runner for every record it needs and returns frames."""

    name: str = ""

    def __init__(self, profile: Profile, runner: Runner | None = None):
        self.profile = profile
        self.runner = runner or Runner(profile)
        self.hidden, self.n_layers = model_shape(profile["model"])

    @property
    def section(self) -> dict:
        return self.profile.section(self.name)

    @property
    def tasks(self) -> list[str]:
        """The profile's tasks this chapter runs (Profile.chapter_tasks: its section's `tasks` may narrow them)."""
        return self.profile.chapter_tasks(self.name)

    def left_out_tasks(self) -> list[str]:
        """The profile's tasks this chapter leaves out by its section's `tasks` (said on the chapter's page)."""
        return [t for t in self.profile.tasks if t not in self.tasks]

    def setting(self, key: str):
        """The chapter's own value of `key` if its section has one, else the profile's top-level value."""
        return self.section[key] if key in self.section else self.profile[key]

    @contextlib.contextmanager
    def asking(self):
        """Records handed out inside are attributed to this chapter (provenance)."""
        before, self.runner.chapter = self.runner.chapter, self.name
        try:
            yield
        finally:
            self.runner.chapter = before

    def results(self):
        with self.asking():
            return self.compute()

    def compute(self):  # pragma: no cover - every chapter defines it
        raise NotImplementedError

    # -- the shared reference ---------------------------------------------------------------------------------
    def base(self, task: str, **changes) -> RunConfig:
        return self.profile.base_config(task, **changes)

    def baseline_analyses(self) -> list:
        dim, cka = self.profile.section("dimension"), self.profile.section("cka")
        analyses = [layer_analysis(cka["n_examples"], tuple(cka["representations"]), cka["debiased"],
                                   self.runner.source, cka.get("n_tokens", 10_000))]
        if dim["inference_masking"]:
            sets = [d for sets in random_sets_by_k(dim, self.hidden).values() for d in sets]
            analyses.append(masking_analysis([list(d) for d in sets]))
        if dim["scan"]:
            analyses.append(pair_scan_analysis(self.runner.source))
        outliers = self.profile.section("outliers")
        if outliers:  # the outliers chapter reads it (fewdims.outliers); a profile without the section skips it
            analyses.append(outlier_analysis(self.runner.source, outliers["n_heldout"], outliers["random_dims"],
                                             outliers["random_draws"], outliers["n_boot"]))
        return analyses

    def baseline(self, task: str, seed: int | None = None) -> dict:
        seed = self.profile.seeds[0] if seed is None else seed
        if seed == self.profile.seeds[0]:
            return self.runner.run(self.base(task, seed=seed, save_weights=True), self.baseline_analyses())
        # Cross-fine-tuning starts stage B from these weights on its first n_seeds seeds: keep them (local cache)
        cross = self.profile.section("cross_finetune")
        keep = (task in {get_task(t).name for t in cross.get("tasks", ())}
                and seed in self.profile.seeds[:cross.get("n_seeds", 1)])
        return self.runner.run(self.base(task, seed=seed, save_weights=keep))

    def baseline_rows(self, task: str, **fields) -> list[dict]:
        return [row(self.baseline(task, s), variant=ALL_DIMS, **fields) for s in self.profile.seeds]
