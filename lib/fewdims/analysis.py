"""Analyses computed while a fine-tuned model's weights are in memory (or reloaded from the local cache).

Each `*_analysis(...)` returns an `Analysis`, callable as `(model, context) -> dict` for `train(analyses=...)`;
the dicts land in the result record's `extra`, so notebooks read small arrays and scores, never weights:
- `layer_analysis`: CKA between every pair of layers (pretrained and fine-tuned) and layer dropping (the
  fine-tuned head on the bottom i layers, no re-tuning) — Phang, Liu & Bowman (2021).
- `masking_analysis`: only k dims reach the head at inference, on the normally fine-tuned model.
- `pair_scan_analysis`: every pair of CLS dimensions scored by a two-feature classifier.
- `retention_analysis`: after B, task A's old head put back on the backbone (forgetting).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .batching import collate, encode, sorted_batches
from .cache import has_weights, load_representations, load_weights, representations_path, save_representations
from .cka import cka_between, cka_matrix, cka_noise_floor, noise_floor_draws
from .data import DataSource, load_split
from .heads import Head, pool, predictions_from_logits
from .metrics import compute_metrics, main_metric
from .predictions import pack, pack_split
from .tasks import get_task


@dataclass(frozen=True, eq=False)
class Analysis:
    """One analysis of a fine-tuned model. Calling it, `analysis(model, context)`, runs `compute` on the model in
    memory (context: config, accelerator, eval encodings, pad_id, task, tokenizer) and returns the dict that goes
    into the record's `extra`. `satisfied_by(extra)`: whether a stored record's extra already holds its result.
    `from_cache(config, source)`: its result from cached representations without the weights, or None (absent
    when the analysis always needs the model)."""

    name: str
    compute: Callable[..., dict]
    satisfied_by: Callable[[dict], bool]
    from_cache: Callable[..., dict | None] | None = None

    def __call__(self, model, context) -> dict:
        return self.compute(model, context)


def analysed_split(config, task) -> str:
    """The evaluation split the representation analyses read: the run's first."""
    return (config.eval_splits or task.eval_splits)[0]


def representation_split(config, task) -> str:
    """Where layer_analysis takes the representations it compares: the held-out slice of the train split when the
    run has one ('<train split>-heldout<rows>', never trained on, never the dev set the verdicts score), else the
    first evaluation split (records made before runs had a held-out slice)."""
    if getattr(config, "holdout_size", 0):
        return f"{config.train_split}-heldout{config.holdout_size}"
    return analysed_split(config, task)


def _examples(n_rows: int, n: int) -> np.ndarray:
    """A fixed subset of the analysed examples (the same for every model of a task) for representation analyses."""
    return np.sort(np.random.default_rng(0).permutation(n_rows)[:min(n, n_rows)])


TOKEN_SEED = 0


def token_positions(lengths, n: int, seed: int = TOKEN_SEED) -> np.ndarray:
    """(row, position) pairs, shape (m, 2), of m = min(n, available) token positions drawn without replacement,
    uniformly over every non-padding position of the examples with these `lengths` except position 0 ([CLS]:
    it has its own 'cls' rows, and at the embedding layer it is one constant vector). [SEP] positions are kept:
    Phang et al.'s public code draws (with replacement) from every non-padding position. Sorted by row, then
    position; it depends on the lengths and the seed only, so every model of a task (pretrained or fine-tuned)
    and every layer is compared on the same positions."""
    per_row = np.maximum(np.asarray(lengths, dtype=np.int64) - 1, 0)
    ends = np.cumsum(per_row)
    total = int(ends[-1]) if len(ends) else 0
    picked = np.sort(np.random.default_rng(seed).choice(total, size=min(int(n), total), replace=False))
    rows = np.searchsorted(ends, picked, side="right")
    return np.stack([rows, picked - (ends[rows] - per_row[rows]) + 1], axis=1).astype(np.int64)


@torch.inference_mode()
def layer_outputs(model, encoded, accelerator, pad_id: int, keep: np.ndarray, representations=("cls", "mean"),
                  tokens: np.ndarray | None = None):
    """One pass over `encoded` with every hidden state: head predictions per layer (layer dropping) and, for
    the examples in `keep`, each layer's representations. Returns (preds[layer] array, reps[rep][layer] array).
    'token' in `representations`: the vectors at the (row, position) pairs `tokens` (token_positions)."""
    model.eval()
    pooled = [r for r in representations if r != "token"]
    preds, reps, tok = None, {r: None for r in pooled}, None
    local = np.full(len(encoded), -1, dtype=np.int64)
    for index in sorted_batches(encoded.lengths, 128):
        batch = {k: v.to(accelerator.device) for k, v in collate(encoded, index, pad_id).items()}
        with accelerator.autocast():
            hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                         all_layers=True)
            outs = [model.head(model.features(batch["input_ids"], batch["attention_mask"], hidden=h)).float()
                    for h in hidden]
        if preds is None:
            preds = [np.zeros(len(encoded), dtype=np.float32) for _ in hidden]
            for r in reps:
                reps[r] = [np.zeros((len(encoded), hidden[0].shape[-1]), dtype=np.float32) for _ in hidden]
        rows = batch["index"].cpu().numpy()
        for layer, out in enumerate(outs):
            preds[layer][rows] = predictions_from_logits(out).cpu().numpy()
            for r in reps:
                vec = pool(hidden[layer], batch["input_ids"], batch["attention_mask"], r, (), True).float()
                reps[r][layer][rows] = vec.cpu().numpy()
        if "token" in representations:
            if tok is None:
                tok = [np.zeros((len(tokens), hidden[0].shape[-1]), dtype=np.float32) for _ in hidden]
            local[rows] = np.arange(len(rows))
            sel = np.nonzero(local[tokens[:, 0]] >= 0)[0]
            if sel.size:
                at = (torch.as_tensor(local[tokens[sel, 0]], device=hidden[0].device),
                      torch.as_tensor(tokens[sel, 1], device=hidden[0].device))
                for layer, h in enumerate(hidden):
                    tok[layer][sel] = h[at].float().cpu().numpy()
            local[rows] = -1
    out = {r: [x[keep] for x in v] for r, v in reps.items()}
    if "token" in representations:
        out["token"] = tok
    return preds, out


def _varying(reps) -> list[int]:
    """Layers whose representation varies across examples: the embedding layer's [CLS] vector is the same for
    every input (same token, position and segment), and CKA is undefined (0/0) for a constant matrix."""
    # the same test as fewdims.cka (exact, float64): a float32 variance can be a rounding-noise 1e-12 instead of 0
    return [i for i, r in enumerate(reps) if np.any((x := np.asarray(r, np.float64)) - x.mean(axis=0))]


def safe_cka_matrix(reps, debiased=False) -> np.ndarray:
    """cka_matrix with NaN rows/columns for constant layers."""
    ok = _varying(reps)
    out = np.full((len(reps), len(reps)), np.nan)
    out[np.ix_(ok, ok)] = cka_matrix([reps[i] for i in ok], debiased)
    return out


def safe_cka_pairs(reps_a, reps_b, debiased=False) -> np.ndarray:
    """CKA between layer l of model a and layer l of model b; NaN where either is constant."""
    ok = sorted(set(_varying(reps_a)) & set(_varying(reps_b)))
    out = np.full(len(reps_a), np.nan)
    if ok:
        out[ok] = cka_between([reps_a[i] for i in ok], [reps_b[i] for i in ok], debiased)
    return out


def _pretrained_reps(config, encoded, accelerator, pad_id, keep, representations, tokens=None):
    from .heads import Classifier
    from .models import load_backbone

    backbone, _ = load_backbone(config.model)
    backbone.to(accelerator.device)
    probe = Classifier(backbone, Head(backbone.config.hidden_size, 1), "cls")
    _, reps = layer_outputs(probe, encoded, accelerator, pad_id, keep, representations, tokens)
    return reps


def _nan_to_none(a: np.ndarray) -> list:
    """JSON has no NaN: undefined entries are stored as null."""
    return [_nan_to_none(x) if isinstance(x, np.ndarray) else (None if np.isnan(x) else float(x)) for x in a]


def layer_analysis(n_examples: int, representations=("cls", "mean"), debiased: bool = False, source=None,
                   n_tokens: int = 10_000):
    """CKA between all layer pairs (pretrained and fine-tuned) and layer dropping. Representations are computed
    once per model and cached locally, so another CKA variant (debiased, fewer representations) of a finished run
    needs neither its weights nor a forward pass (`Analysis.from_cache`).

    The representations come from the held-out slice of the train split when the run has one
    (`representation_split`), else from the first evaluation split; layer dropping is always scored on the first
    evaluation split. Representations: 'cls' and 'mean' for `n_examples` examples, 'token' for `n_tokens` sampled
    token positions of every example of that split (`token_positions`; Phang et al.'s code samples 10,000).
    params records for each representation its n, its width and the CKA noise floor at that size
    (`cka_noise_floor`, with the same estimator). `source`: a DataSource or a glue_dir (for the held-out slice)."""
    wants_tokens = "token" in representations
    cached_keys = list(representations) + (["token_index", "token_request"] if wants_tokens else [])

    def sizes(reps) -> dict:
        out = {}
        for r in representations:
            n, width = (int(x) for x in np.shape(reps[r][0]))
            floor = None
            if n >= (4 if debiased else 2):
                f = cka_noise_floor(n, width, debiased, draws=noise_floor_draws(n, width))
                floor = {"mean": f.mean, "p95": f.p95, "draws": f.draws}
            out[r] = {"n": n, "width": width, "noise_floor": floor}
        return out

    def summarise(task, rep_split, drop_split, keep, labels, preds, reps, pre) -> dict:
        params = {"n_examples": int(len(keep)), "requested": n_examples, "representations": list(representations),
                  "debiased": debiased, "split": rep_split, "drop_split": drop_split, "sizes": sizes(reps)}
        if wants_tokens:
            params["tokens_requested"] = n_tokens
        out = {"params": params, "layer_drop": [compute_metrics(task.name, p, labels) for p in preds],
               # per depth, for the paired interval of each truncated model against the full one
               "layer_drop_predictions": [pack(np.asarray(p)) for p in preds]}
        for r in representations:
            out[r] = {"finetuned": _nan_to_none(safe_cka_matrix(reps[r], debiased)),
                      "pretrained": _nan_to_none(safe_cka_matrix(pre[r], debiased)),
                      "pretrained_vs_finetuned": _nan_to_none(safe_cka_pairs(pre[r], reps[r], debiased))}
        return {"layers": out}

    def with_tokens(reps, tokens) -> dict:
        """reps plus what the cache needs to check the token rows: the (row, position) pairs and the request."""
        if not wants_tokens:
            return reps
        return {**reps, "token_index": [tokens], "token_request": [np.array([n_tokens, TOKEN_SEED])]}

    def same_tokens(cached, tokens=None) -> bool:
        """Whether cached reps hold the token rows asked for (those of `tokens`, when given)."""
        if not wants_tokens:
            return True
        index, request = cached["token_index"][0], cached["token_request"][0]
        return list(request) == [n_tokens, TOKEN_SEED] and (tokens is None or np.array_equal(index, tokens))

    def run(model, context):
        config, task = context["config"], context["task"]
        drop_split, rep_split = analysed_split(config, task), representation_split(config, task)
        encoded, acc, pad_id = context["eval"][drop_split], context["accelerator"], context["pad_id"]
        if rep_split == drop_split:
            rep_enc = encoded
        else:
            full = load_split(task.name, config.train_split, source)
            heldout = full.split_off(config.holdout_size, config.train_size, config.data_seed)[1]
            rep_enc = encode(heldout, context["tokenizer"], config.max_length, config.model)
        keep = _examples(len(rep_enc), n_examples)
        tokens = token_positions(rep_enc.lengths, n_tokens) if wants_tokens else None
        path = representations_path(config, rep_split, len(keep))
        # the record being written is new: its model's representations are recomputed, never read from a cache
        if rep_enc is encoded:
            preds, reps = layer_outputs(model, encoded, acc, pad_id, keep, representations, tokens)
        else:
            preds, _ = layer_outputs(model, encoded, acc, pad_id, keep[:0], ())
            _, reps = layer_outputs(model, rep_enc, acc, pad_id, keep, representations, tokens)
        save_representations(path, keep, preds, with_tokens(reps, tokens))
        pre_path = representations_path(config, rep_split, len(keep), pretrained=True)
        cached = load_representations(pre_path, keep, cached_keys, need_preds=False)
        if cached is None or not same_tokens(cached[1], tokens):
            pre = _pretrained_reps(config, rep_enc, acc, pad_id, keep, representations, tokens)
            save_representations(pre_path, keep, None, with_tokens(pre, tokens))
        else:
            pre = cached[1]
        return summarise(task, rep_split, drop_split, keep, encoded.labels, preds, reps, pre)

    def from_cache(config, source) -> dict | None:
        task = get_task(config.task)
        drop_split, rep_split = analysed_split(config, task), representation_split(config, task)
        labels = load_split(task.name, drop_split, source).subset(config.eval_size, config.data_seed).labels
        keep = _examples(config.holdout_size if rep_split != drop_split else len(labels), n_examples)
        tuned = load_representations(representations_path(config, rep_split, len(keep)), keep, cached_keys, True)
        pre = load_representations(representations_path(config, rep_split, len(keep), True), keep, cached_keys,
                                   False)
        if tuned is None or pre is None or not same_tokens(tuned[1]) or \
                not same_tokens(pre[1], tuned[1]["token_index"][0] if wants_tokens else None):
            return None
        return summarise(task, rep_split, drop_split, keep, labels, tuned[0], tuned[1], pre[1])

    def satisfied_by(extra) -> bool:
        params = extra.get("layers", {}).get("params", {})
        return params.get("n_examples") is not None and params["representations"] == list(representations) and \
            params["debiased"] == debiased and params["requested"] == n_examples and \
            (not wants_tokens or params.get("tokens_requested") == n_tokens)

    return Analysis("layer_analysis", run, satisfied_by, from_cache)


@torch.inference_mode()
def _head_inputs(model, encoded, acc, pad_id):
    from .train import compute_features
    return compute_features(model, encoded, acc, pad_id)


def masking_analysis(dim_sets: list[list[int]]):
    """Scores when only `dims` of the CLS vector reach the (unchanged) fine-tuned linear head."""
    def run(model, context):
        task = context["task"]
        out = {}
        for split, encoded in context["eval"].items():
            feats = _head_inputs(model, encoded, context["accelerator"], context["pad_id"]).to(
                model.head.first.weight.device)
            scores = []
            for dims in dim_sets:
                mask = torch.zeros(feats.shape[1], device=feats.device)
                mask[list(dims)] = 1.0
                with torch.inference_mode():  # eval mode: no dropout; zeroed inputs = masked weights
                    pred = predictions_from_logits(model.head(feats * mask).float())
                scores.append({"dims": list(dims), **compute_metrics(task.name, pred.cpu().numpy(), encoded.labels)})
            out[split] = scores
        return {"inference_masking": out}
    wanted = {tuple(d) for d in dim_sets}

    def satisfied_by(extra) -> bool:
        return all(wanted <= {tuple(row["dims"]) for row in rows}
                   for rows in extra.get("inference_masking", {"": []}).values())

    return Analysis("masking_analysis", run, satisfied_by)


def pair_scan_analysis(source=None, top: int = 200):
    """Every pair of CLS dims of the fine-tuned model, scored by a two-feature classifier fit on the train
    subset's features and evaluated on the held-out slice of the train split when the run has one (so that the
    pairs chosen from the scan are never chosen on the dev set they are reported on), else on the first
    evaluation split. `source`: a DataSource or a glue_dir (resolved when the analysis runs, so a stored record
    is reused without the data)."""
    def run(model, context):
        from .scan import scan_pairs

        config, task = context["config"], context["task"]
        full = load_split(task.name, config.train_split, source)
        if config.holdout_size:
            train, heldout = full.split_off(config.holdout_size, config.train_size, config.data_seed)
        else:
            train, heldout = full.subset(config.train_size, config.data_seed), None
        tokenizer = context["tokenizer"]
        train_enc = encode(train, tokenizer, config.max_length, config.model)
        split = "heldout" if heldout is not None else analysed_split(config, task)
        scored = encode(heldout, tokenizer, config.max_length, config.model) if heldout is not None \
            else context["eval"][split]
        acc, pad_id = context["accelerator"], context["pad_id"]
        f_train = _head_inputs(model, train_enc, acc, pad_id)
        f_dev = _head_inputs(model, scored, acc, pad_id)
        result = scan_pairs(f_train, train_enc.labels, f_dev, scored.labels,
                            task_type="regression" if task.is_regression else "classification",
                            num_classes=None if task.is_regression else task.num_labels)
        scores = np.asarray(result.scores)
        return {"pair_scan": {
            "split": split, "pairs": int(len(scores)), "seconds": float(result.seconds),
            "top": [[int(i), int(j), float(s)] for i, j, s in result.top(top)],
            "importance": [float(x) for x in result.dimension_importance()],
            "quantiles": {str(q): float(np.quantile(scores, q)) for q in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)},
            "score": "pearson" if task.is_regression else "accuracy",
        }}
    return Analysis("pair_scan_analysis", run, lambda extra: "pair_scan" in extra)


def retention_analysis(stage_a_config, source=None):
    """Put task A's fine-tuned head back on the backbone after fine-tuning on B, and score A's dev set.
    `source`: a DataSource or a glue_dir."""
    def run(model, context):
        task_a = get_task(stage_a_config.task)
        head = Head(model.head.first.in_features, task_a.num_labels, stage_a_config.head, 0.0, stage_a_config.dims)
        load_weights(stage_a_config, head=head)
        head.to(model.head.first.weight.device).eval()
        out, kept = {}, {}
        data_source = DataSource.resolve(source)
        for split in task_a.eval_splits:
            data = load_split(task_a.name, split, data_source)
            enc = encode(data, context["tokenizer"], stage_a_config.max_length, stage_a_config.model)
            feats = _head_inputs(model, enc, context["accelerator"], context["pad_id"])
            with torch.inference_mode():
                pred = predictions_from_logits(head(feats.to(head.first.weight.device)).float().cpu())
            out[split] = compute_metrics(task_a.name, pred.numpy(), enc.labels)
            kept[split] = pack_split(pred.numpy(), enc.labels)  # A after B, paired with A before per example
        return {"retention": {"task": task_a.name, "main_metric": main_metric(task_a.name), "metrics": out,
                              "predictions": kept}}

    return Analysis("retention_analysis", run,
                    lambda extra: extra.get("retention", {}).get("task") == stage_a_config.task)


def analyse_cached(config, analyses, source=None) -> dict | None:
    """Run `analyses` on a finished run from its cached representations where an analysis can, else from its
    weights in the local cache; None if what is needed is not there. `source`: a DataSource or a glue_dir."""
    from .runtime import make_accelerator
    from .train import build_classifier

    source = DataSource.resolve(source)
    extra, analyses_left = {}, []
    for analysis in analyses:
        from_cache = getattr(analysis, "from_cache", None)
        got = from_cache(config, source) if from_cache is not None else None
        if got is None:
            analyses_left.append(analysis)
        else:
            extra.update(got)
    if not analyses_left:
        return extra
    if not has_weights(config):
        return None
    model, tokenizer = build_classifier(config.replace(init_from=None))
    load_weights(config, backbone=model.backbone, head=model.head)
    accelerator = make_accelerator(config.precision)
    model.to(accelerator.device).eval()
    task = get_task(config.task)
    splits = config.eval_splits or task.eval_splits
    eval_enc = {s: encode(load_split(task.name, s, source).subset(config.eval_size, config.data_seed), tokenizer,
                          config.max_length, config.model) for s in splits}
    context = {"config": config, "accelerator": accelerator, "eval": eval_enc, "pad_id": tokenizer.pad_token_id or 0,
               "task": task, "tokenizer": tokenizer}
    for analysis in analyses_left:
        extra.update(analysis(model, context))
    return extra
