"""The grids of the book's experiments. Each function takes a Profile (and a Runner), asks the runner for every
record it needs, and returns tidy pandas frames for the notebook to draw. Nothing here draws or prints.

Every experiment shares the baseline: the raw last-layer CLS vector -> dropout -> linear head, all dimensions,
backbone fully fine-tuned. Its first-seed run keeps its weights in the local cache and carries the analyses
(CKA, layer dropping, inference-time masking, the pair scan), so no other notebook trains it again.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .analysis import layer_analysis, masking_analysis, pair_scan_analysis, retention_analysis
from .config import RunConfig
from .models import model_shape
from .profiles import Profile
from .runner import Runner, score
from .tasks import get_task


def random_dim_sets(k: int, n: int, hidden: int) -> list[tuple[int, ...]]:
    """n random k-dimension sets, the same for every task and run (seeded by k and the set's index)."""
    return [tuple(sorted(np.random.default_rng(1000 * k + i).choice(hidden, size=k, replace=False).tolist()))
            for i in range(n)]


def row(record: dict, **fields) -> dict:
    """One tidy row: what was run, its main score (points) and every metric of every evaluation split."""
    cfg, task = record["config"], get_task(record["config"]["task"])
    first = next(iter(record["metrics"]))
    out = {"task": task.display, "seed": cfg["seed"], "pooling": cfg["pooling"], "layer": cfg["layer"],
           "dims": tuple(cfg["dims"]) if cfg["dims"] else None, "k": len(cfg["dims"]) if cfg["dims"] else None,
           "head": cfg["head"], "frozen": cfg["freeze_backbone"], "metric": task.main_metric,
           "score": score(record), "key": record["key"], "train_s": record.get("timings", {}).get("total_s")}
    for split, metrics in record["metrics"].items():
        for name, value in metrics.items():
            out[f"{split}/{name}"] = 100.0 * value
    majority = record.get("data", {}).get("majority_baseline", {}).get(first)
    out["majority"] = 100.0 * majority[task.main_metric] if majority else math.nan
    out["at_or_below_majority"] = bool(out["score"] <= out["majority"] + 1e-9) if majority else False
    out["missing"] = bool(record.get("missing", False) or record.get("planned", False))
    out.update(fields)
    return out


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows of runs that exist (a run left out with compute=False or planned in a dry run is dropped)."""
    df = pd.DataFrame(rows)
    return df[~df["missing"]].drop(columns="missing").reset_index(drop=True) if len(df) else df


class Experiments:
    def __init__(self, profile: Profile, runner: Runner | None = None):
        self.profile = profile
        self.runner = runner or Runner(profile)
        self.hidden, self.n_layers = model_shape(profile["model"])

    # -- the shared baseline ---------------------------------------------------------------------------------
    def base(self, task: str, **changes) -> RunConfig:
        return self.profile.base_config(task, **changes)

    def baseline_analyses(self) -> list:
        dim = self.profile.section("dimension")
        cka = self.profile.section("cka")
        analyses = [layer_analysis(cka.get("n_examples", 500), tuple(cka.get("representations", ["cls", "mean"])),
                                   cka.get("debiased", False))]
        if dim.get("inference_masking", True):
            sets = [d for k in dim.get("ks", [1, 2, 3]) for d in random_dim_sets(k, dim["random_subsets"], self.hidden)]
            analyses.append(masking_analysis([list(d) for d in sets]))
        if dim.get("scan", True):
            analyses.append(pair_scan_analysis(self.runner.glue_dir))
        return analyses

    def baseline(self, task: str, seed: int | None = None) -> dict:
        seed = self.profile.seeds[0] if seed is None else seed
        if seed == self.profile.seeds[0]:
            return self.runner.run(self.base(task, seed=seed, save_weights=True), self.baseline_analyses())
        return self.runner.run(self.base(task, seed=seed))

    def baseline_rows(self, task: str, **fields) -> list[dict]:
        return [row(self.baseline(task, s), variant="CLS, all dims", **fields) for s in self.profile.seeds]

    # -- (a) CLS vs the max-norm token ----------------------------------------------------------------------------
    def token(self) -> pd.DataFrame:
        sec = self.profile.section("token")
        rows = []
        for task in self.profile.tasks:
            for pooling in sec.get("poolings", ["cls", "max_norm"]):
                seeds = self.profile.seeds if pooling in sec.get("headline_poolings", []) else self.profile.seeds[:1]
                for seed in seeds:
                    if pooling == "cls":
                        rec = self.baseline(task, seed)
                    else:
                        rec = self.runner.run(self.base(task, seed=seed, pooling=pooling,
                                                        special_tokens_eligible=sec.get("special_tokens_eligible", False)))
                    rows.append(row(rec, variant=pooling))
        return frame(rows)

    # -- (b) k selected dimensions of the CLS vector --------------------------------------------------------------
    def dimension(self) -> dict[str, pd.DataFrame]:
        sec = self.profile.section("dimension")
        runs, masking, scans = [], [], []
        for task in self.profile.tasks:
            base_rec = self.baseline(task)
            runs += self.baseline_rows(task, role="all dims")
            by_k = {}
            for k in sec["ks"]:
                for i, dims in enumerate(random_dim_sets(k, sec["random_subsets"], self.hidden)):
                    rec = self.runner.run(self.base(task, dims=dims))
                    by_k.setdefault(k, []).append(rec)
                    runs.append(row(rec, variant=f"random k={k}", role="random", subset=i))
            # Effective dimensions (the paper): leave one dimension out of the best 3-dimension sets.
            ranked3 = sorted(by_k.get(3, []), key=lambda r: -_nan_low(score(r)))[:sec.get("best_sets", 1)]
            effective = []
            for rank, rec3 in enumerate(ranked3):
                dims3 = tuple(rec3["config"]["dims"])
                cost = {}
                for d in dims3:
                    loo = self.runner.run(self.base(task, dims=tuple(x for x in dims3 if x != d)))
                    cost[d] = score(rec3) - score(loo)
                    runs.append(row(loo, variant="leave one out", role="leave one out", best_set=rank,
                                    left_out=d, removal_cost=cost[d]))
                keep = tuple(sorted(sorted(cost, key=lambda d: -_nan_low(cost[d]))[:2]))
                effective.append(keep)
            for pair in effective:
                rec = self.runner.run(self.base(task, dims=pair))
                runs.append(row(rec, variant="effective pair", role="effective"))
            scan = base_rec.get("extra", {}).get("pair_scan")
            if scan:
                scans.append({"task": get_task(task).display, **{k: v for k, v in scan.items() if k != "top"},
                              "top": scan["top"][:20]})
                for i, j, _ in scan["top"][:sec.get("scan_top", 1)]:
                    rec = self.runner.run(self.base(task, dims=(i, j)))
                    runs.append(row(rec, variant="scan top pair", role="scan"))
            # Headline: the best k-dimension run (chosen on the first seed) against all dims, over every seed.
            k = sec.get("k", 2)
            candidates = [r for r in runs if r["task"] == get_task(task).display and r["k"] == k]
            if candidates:
                best = max(candidates, key=lambda r: _nan_low(r["score"]))
                for seed in self.profile.seeds:
                    rec = self.runner.run(self.base(task, dims=best["dims"], seed=seed))
                    runs.append(row(rec, variant=f"best k={k}", role="headline"))
            for split, rows in base_rec.get("extra", {}).get("inference_masking", {}).items():
                for r in rows:
                    metrics = {m: 100.0 * v for m, v in r.items() if m != "dims"}
                    masking.append({"task": get_task(task).display, "split": split, "dims": tuple(r["dims"]),
                                    "k": len(r["dims"]), "score": metrics[get_task(task).main_metric], **metrics})
        return {"runs": frame(runs), "masking": pd.DataFrame(masking), "scan": pd.DataFrame(scans)}

    # -- (c) k dimensions of each layer's CLS vector ----------------------------------------------------------------
    def layer(self) -> pd.DataFrame:
        k = self.profile.section("layer").get("k", 2)
        dims = random_dim_sets(k, 1, self.hidden)[0]  # the dimension grid's first k-set: top layer is shared
        rows = []
        for task in self.profile.tasks:
            for layer in range(self.n_layers + 1):
                at = None if layer == self.n_layers else layer  # the top layer is the untruncated model
                for variant, d in ((f"k={k}", dims), ("all dims", None)):
                    rec = self.baseline(task) if (at is None and d is None) else \
                        self.runner.run(self.base(task, layer=at, dims=d))
                    rows.append(row(rec, variant=variant, layer_index=layer))
        return frame(rows)

    # -- (d) frozen backbone + 2-layer head vs fine-tuned + 1-layer head ---------------------------------------------
    def freezing(self) -> pd.DataFrame:
        sec = self.profile.section("freezing")
        rows = []
        for task in self.profile.tasks:
            rows += self.baseline_rows(task)
            for head, variant in (("mlp", "frozen, 2-layer head"), ("linear", "frozen, linear probe")):
                for seed in self.profile.seeds:
                    rec = self.runner.run(self.base(task, seed=seed, freeze_backbone=True, head=head,
                                                    head_lr=sec.get("head_lr", 1e-3),
                                                    epochs=sec.get("epochs", self.profile["epochs"])))
                    rows.append(row(rec, variant=variant))
        df = frame(rows)
        if len(df):
            df.loc[df["variant"] == "CLS, all dims", "variant"] = "fine-tuned, linear head"
        return df

    # -- (e) cross-fine-tuning: A then B --------------------------------------------------------------------------
    def cross_finetune(self) -> pd.DataFrame:
        tasks = [get_task(t).name for t in self.profile.section("cross_finetune").get("tasks", self.profile.tasks)]
        seed = self.profile.seeds[0]
        stage_a = {a: (self.base(a, seed=seed, save_weights=True), self.baseline(a)) for a in tasks}
        rows = []
        for a in tasks:
            for b in tasks:
                if a == b:
                    continue
                cfg_a, rec_a = stage_a[a]
                cfg_b = self.base(b, seed=seed, init_from=cfg_a.to_dict())
                if self.runner.allow_compute and not self.runner.dry_run and \
                        (self.runner.force or self.runner.store.load(cfg_b) is None):
                    self._ensure_weights(cfg_a)
                rec = self.runner.run(cfg_b,
                                      [retention_analysis(cfg_a, self.runner.glue_dir)])
                retention = rec.get("extra", {}).get("retention", {})
                ret_metrics = next(iter(retention.get("metrics", {}).values()), {})
                a_main = get_task(a).main_metric
                rows.append({**row(rec, variant=f"{get_task(a).display} -> {get_task(b).display}"),
                             "task_a": get_task(a).display, "task_b": get_task(b).display,
                             "direct_b": score(stage_a[b][1]), "a_before": score(rec_a),
                             "a_after": 100.0 * ret_metrics.get(a_main, math.nan)})
        df = frame(rows)
        if len(df):
            df["relative_b"] = df["score"] / df["direct_b"]
            df["retention_a"] = df["a_after"] / df["a_before"]
        return df

    def _ensure_weights(self, config: RunConfig) -> None:
        """Stage-A weights live in a local cache that is never committed: recompute the run if they are gone."""
        from .train import weights_dir

        if not (weights_dir(config) / "backbone.pt").exists():
            Runner(self.profile, force=True, store_root=self.runner.store.root, verbose=self.runner.verbose).run(
                config, self.baseline_analyses())

    # -- CKA and layer dropping (Phang et al. 2021), from the baseline's analyses ---------------------------------
    def cka(self) -> dict:
        out = {}
        for task in self.profile.tasks:
            rec = self.baseline(task)
            if rec.get("missing"):
                continue
            out[get_task(task).display] = {"layers": rec.get("extra", {}).get("layers"), "score": score(rec),
                                            "metric": get_task(task).main_metric, "key": rec["key"]}
        return out


def _nan_low(x: float) -> float:
    return -math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else x
