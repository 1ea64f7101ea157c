"""The outliers chapter's analysis, computed on a reference run while its fine-tuned weights are in memory (or
re-analysed from the weight cache): sentence vectors of the held-out train slice, LayerNorm outliers, the
one-dimension threshold classifiers, zeroing LayerNorm dimensions, and the pretrained encoder's STS-B probe. The
numerics it calls are in fewdims.outliers; `outlier_analysis` and `interval_analysis` are the Analysis objects the
chapters ask the runner for.
"""
from __future__ import annotations

import time

import numpy as np

from .analysis import Analysis
from .outliers import (ANALYSIS_VERSION, BOOT_SEED, LN_MOST, LN_SIGMAS, RANDOM_DIM_SEED, RANDOM_ZERO_SEED, TOP_K,
                       _unit_rows, compact, concentration, cosine_contributions, dimension_variance, fallback_dims,
                       fit_one_dim, heldout_rows, layernorm_outliers, mean_difference, predict_one_dim, ranked)
from .stats import bootstrap_metric, paired_difference
from .tasks import get_task

# -- the analysis (the model in memory) -------------------------------------------------------------------------------
def output_layernorms(backbone) -> list:
    """The LayerNorm at the end of every encoder layer (BertOutput.LayerNorm)."""
    return [layer.output.LayerNorm for layer in backbone.encoder.layer]


def layernorm_vectors(backbone) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(ln.weight.detach().float().cpu().numpy(), ln.bias.detach().float().cpu().numpy())
            for ln in output_layernorms(backbone)]


class zeroed_layernorms:
    """Context manager: the scale and bias of `dims` set to zero in the output LayerNorm of every encoder layer of
    `backbone`, restored exactly on exit (the model's cached weights are written after the analyses)."""

    def __init__(self, backbone, dims):
        self.modules, self.dims = output_layernorms(backbone), [int(d) for d in dims]

    def __enter__(self):
        import torch

        self.saved = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in self.modules]
        with torch.no_grad():
            for m in self.modules:
                m.weight[self.dims] = 0.0
                m.bias[self.dims] = 0.0
        return self

    def __exit__(self, *exc):
        import torch

        with torch.no_grad():
            for m, (w, b) in zip(self.modules, self.saved):
                m.weight.copy_(w)
                m.bias.copy_(b)
        return False


def sentence_vectors(model, encoded, accelerator, pad_id: int, head: bool = True) -> dict:
    """One pass over `encoded`: the last layer's [CLS] vector ('cls'), the mean of its token vectors over the
    attention mask ('mean', special tokens included, as sentence-transformers pools), and with `head` the head's
    predictions ('preds', as fewdims.train.predict computes them). Arrays in the original example order."""
    import torch

    from .batching import collate, sorted_batches
    from .heads import pool, predictions_from_logits

    model.eval()
    out = {}
    with torch.inference_mode():
        for index in sorted_batches(encoded.lengths, 128):
            batch = {k: v.to(accelerator.device) for k, v in collate(encoded, index, pad_id).items()}
            ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
            with accelerator.autocast():
                hidden = model.hidden_states(ids, mask, types)
                parts = {"cls": pool(hidden, ids, mask, "cls").float(), "mean": pool(hidden, ids, mask, "mean").float()}
                if head:
                    parts["features"] = model.features(ids, mask, types, hidden=hidden).float()
            rows = batch["index"].cpu().numpy()
            for name, value in parts.items():
                if name not in out:
                    out[name] = np.zeros((len(encoded), value.shape[1]), dtype=np.float32)
                out[name][rows] = value.cpu().numpy()
        if head:
            features = torch.from_numpy(out.pop("features")).to(accelerator.device)
            with accelerator.autocast():
                logits = model.head(features).float()
            out["preds"] = predictions_from_logits(logits).cpu().numpy()
    return out


def _round(values, digits: int = 6) -> list:
    return [float(f"{float(v):.{digits}g}") for v in np.asarray(values, dtype=np.float64)]


def describe(vectors: dict, ln: dict, n_boot: int) -> dict:
    """What the record keeps of one model's sentence vectors on the held-out slice."""
    out = {"layernorm": {k: v for k, v in ln.items() if k != "max_abs_z"}}
    for rep in ("cls", "mean"):
        x = vectors[rep]
        var, cos = dimension_variance(x), cosine_contributions(x)
        conc = concentration(x, TOP_K, n_boot)
        out[rep] = {"variance": _round(var), "cosine": _round(cos), "mean_cosine": float(cos.sum()),
                    "variance_share": [compact(i) for i in conc["variance"]],
                    "cosine_share": [compact(i) for i in conc["cosine"]]}
    return out


def pretrained_classifier(config, accelerator):
    """The pretrained backbone of `config` behind a one-output probe head (its predictions are never used)."""
    from .heads import Classifier, Head
    from .models import load_backbone

    backbone, _ = load_backbone(config.model)
    model = Classifier(backbone, Head(backbone.config.hidden_size, 1), "cls")
    return model.to(accelerator.device).eval()


def _zeroing(task: str, predict, outliers: list[int], hidden: int, draws: int, reference, labels, n_boot: int,
             rule: bool) -> dict:
    """Zero `outliers` and `draws` random sets of as many other dimensions; `predict(dims)` gives the predictions
    with those dims zeroed (None: intact). Drops are intact minus zeroed, in points, with paired intervals."""
    zeroed = predict(outliers)
    others = np.setdiff1d(np.arange(hidden), outliers)
    random_sets = [sorted(int(d) for d in np.random.default_rng(RANDOM_ZERO_SEED + i).choice(
        others, size=len(outliers), replace=False)) for i in range(draws)]
    random_preds = [predict(dims) for dims in random_sets]
    return {
        "dims": [int(d) for d in outliers], "rule": rule, "weights_zeroed": None,
        "intact": compact(bootstrap_metric(task, reference, labels, n_boot, BOOT_SEED)),
        "zeroed": compact(bootstrap_metric(task, zeroed, labels, n_boot, BOOT_SEED)),
        "drop": compact(paired_difference(task, reference, zeroed, labels, n_boot, BOOT_SEED)),
        "random": [{"dims": dims, "zeroed": compact(bootstrap_metric(task, p, labels, n_boot, BOOT_SEED)),
                    "drop": compact(paired_difference(task, reference, p, labels, n_boot, BOOT_SEED))}
                   for dims, p in zip(random_sets, random_preds)],
        # zeroing random dims minus zeroing the outliers (> 0: the outliers hurt more)
        "random_minus_outliers": compact(mean_difference(task, random_preds, [zeroed], labels, n_boot)),
    }


def sts_probe(model, config, accelerator, tokenizer, source, ln: dict, params: dict) -> dict:
    """Kovaleva's test on the pretrained sentence encoder's natural use: STS-B dev Pearson r of the cosine
    similarity of the two sentences' mean-pooled vectors (no training), intact and with the LayerNorm outliers
    (or as many random dimensions) zeroed."""
    from .batching import encode
    from .data import SplitData, load_split

    task = get_task("stsb")
    split = task.eval_splits[0]
    dev = load_split(task.name, split, source).subset(config.eval_size, config.data_seed)
    sides = [encode(SplitData(task.name, split, (column,), dev.labels, dev.source), tokenizer, config.max_length,
                    config.model) for column in dev.texts]
    pad_id = tokenizer.pad_token_id or 0

    def cosine(dims):
        import contextlib

        with zeroed_layernorms(model.backbone, dims) if dims else contextlib.nullcontext():
            a, b = (sentence_vectors(model, enc, accelerator, pad_id, head=False)["mean"] for enc in sides)
        a, b = _unit_rows(a.astype(np.float64)), _unit_rows(b.astype(np.float64))
        return (a * b).sum(axis=1)

    dims, rule = (ln["outliers"], True) if ln["outliers"] else (fallback_dims(ln), False)
    out = _zeroing(task.name, cosine, dims, len(ln["max_abs_z"]), params["random_draws"], cosine(None),
                   dev.labels, params["n_boot"], rule)
    out.update(split=split, examples=len(dev.labels), metric="pearson",
               weights_zeroed=2 * len(dims) * ln["layers"])
    return out


def analyse(model, context, source, params: dict) -> dict:
    """The outliers chapter's analysis of one fine-tuned reference model (see the module docstring): returns
    {'outliers': {...}} for the record's `extra`. `params`: n_heldout, random_dims, random_draws, n_boot."""
    from .batching import encode
    from .data import DataSource, load_split

    t0 = time.perf_counter()
    config, task, acc = context["config"], context["task"], context["accelerator"]
    tokenizer, pad_id = context["tokenizer"], context["pad_id"]
    source = DataSource.resolve(source)
    split = (config.eval_splits or task.eval_splits)[0]
    dev_enc, n_boot = context["eval"][split], params["n_boot"]
    labels = np.asarray(dev_enc.labels)

    full = load_split(task.name, config.train_split, source)
    rows, overlaps = heldout_rows(len(full), config.train_size, config.data_seed, params["n_heldout"],
                                  config.holdout_size)
    held = full._take(rows)
    held_enc = encode(held, tokenizer, config.max_length, config.model)

    tuned = sentence_vectors(model, held_enc, acc, pad_id, head=False)
    dev = sentence_vectors(model, dev_enc, acc, pad_id)
    pre_model = pretrained_classifier(config, acc)
    pre = sentence_vectors(pre_model, held_enc, acc, pad_id, head=False)
    ln_tuned, ln_pre = layernorm_outliers(layernorm_vectors(model.backbone)), \
        layernorm_outliers(layernorm_vectors(pre_model.backbone))
    hidden = tuned["cls"].shape[1]

    # Rudman et al.: the highest-variance dimension of the fine-tuned sentence vector, one threshold
    reference = dev["preds"]
    rudman = {"split": split, "metric": task.main_metric,
              "full": compact(bootstrap_metric(task.name, reference, labels, n_boot, BOOT_SEED))}
    for rep in ("cls", "mean"):
        var = dimension_variance(tuned[rep])
        d = ranked(var, 1)[0]
        rule = fit_one_dim(tuned[rep][:, d], held.labels, task.name)
        preds = predict_one_dim(rule, dev[rep][:, d])
        entry = {"dim": d, "variance_ratio": float(var[d] / var.mean()), "rule": rule,
                 "score": compact(bootstrap_metric(task.name, preds, labels, n_boot, BOOT_SEED)),
                 "full_minus_dim": compact(paired_difference(task.name, reference, preds, labels, n_boot, BOOT_SEED))}
        if rep == "cls":
            others = [int(r) for r in np.random.default_rng(RANDOM_DIM_SEED).permutation(hidden) if r != d]
            random_preds, entry["random"] = [], []
            for r in others[:params["random_dims"]]:
                rule_r = fit_one_dim(tuned[rep][:, r], held.labels, task.name)
                p = predict_one_dim(rule_r, dev[rep][:, r])
                random_preds.append(p)
                entry["random"].append({"dim": r, "variance_ratio": float(var[r] / var.mean()),
                                        "train_score": rule_r["train_score"],
                                        "score": compact(bootstrap_metric(task.name, p, labels, n_boot, BOOT_SEED))})
            if random_preds:
                entry["dim_minus_random"] = compact(mean_difference(task.name, [preds], random_preds, labels, n_boot))
        rudman[rep] = entry

    # Kovaleva et al.: zero the LayerNorm outlier dimensions of the fine-tuned model in every layer
    def head_preds(dims):
        if not dims:
            return reference
        with zeroed_layernorms(model.backbone, dims):
            return sentence_vectors(model, dev_enc, acc, pad_id)["preds"]

    dims, rule = (ln_tuned["outliers"], True) if ln_tuned["outliers"] else (fallback_dims(ln_tuned), False)
    kovaleva = _zeroing(task.name, head_preds, dims, hidden, params["random_draws"], reference, labels, n_boot, rule)
    kovaleva.update(split=split, metric=task.main_metric, weights_zeroed=2 * len(dims) * ln_tuned["layers"])

    out = {"params": outlier_params(params), "split": split,
           "heldout": {"split": config.train_split, "rows": int(len(rows)), "overlaps_training": overlaps,
                       "of": int(len(full))},
           "finetuned": describe(tuned, ln_tuned, n_boot), "pretrained": describe(pre, ln_pre, n_boot),
           "rudman": rudman, "kovaleva": kovaleva}
    if task.name == "stsb":
        out["sts_probe"] = sts_probe(pre_model, config, acc, tokenizer, source, ln_pre, params)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return {"outliers": out}


def outlier_params(params: dict) -> dict:
    """What decides whether a stored analysis is current: the parameters, the rules and the version."""
    return {"n_heldout": int(params["n_heldout"]), "random_dims": int(params["random_dims"]),
            "random_draws": int(params["random_draws"]), "n_boot": int(params["n_boot"]),
            "ln_sigmas": LN_SIGMAS, "ln_most": LN_MOST, "version": ANALYSIS_VERSION}


def outlier_analysis(source=None, n_heldout: int = 1000, random_dims: int = 10, random_draws: int = 10,
                     n_boot: int = 1000):
    """The outliers chapter (Rudman et al. 2023, Kovaleva et al. 2021, Timkey & van Schijndel 2021): per-dimension
    variance and cosine contributions of the last-layer [CLS] and mean-pooled vectors of the fine-tuned and the
    pretrained model on a held-out slice of the train split, LayerNorm outlier dimensions, the one-dimension
    threshold classifier on the highest-variance dimension against random ones, and zeroing the LayerNorm outliers
    against zeroing random dimensions, every score with a bootstrap interval (see fewdims.outliers). `source`: a
    DataSource or a glue_dir, resolved when the analysis runs."""
    params = {"n_heldout": n_heldout, "random_dims": random_dims, "random_draws": random_draws, "n_boot": n_boot}
    wanted = outlier_params(params)

    def run(model, context):
        return analyse(model, context, source, params)

    return Analysis("outlier_analysis", run, lambda extra: extra.get("outliers", {}).get("params") == wanted)


def interval_analysis(n_boot: int = 1000):
    """The run's dev score on every evaluation split with a 95 % percentile-bootstrap interval over the dev
    examples (fewdims.stats.bootstrap_metric on the predictions in memory), kept compact in the record."""
    def run(model, context):
        from .train import predict

        task, out = context["task"], {}
        for split, encoded in context["eval"].items():
            preds = predict(model, encoded, context["accelerator"], context["pad_id"])
            out[split] = compact(bootstrap_metric(task.name, preds, encoded.labels, n_boot, BOOT_SEED))
        return {"dev_interval": {"n_boot": n_boot, "metric": task.main_metric, "splits": out}}

    return Analysis("interval_analysis", run,
                    lambda extra: extra.get("dev_interval", {}).get("n_boot") == n_boot)
