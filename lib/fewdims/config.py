"""RunConfig: everything that determines one fine-tuning result, as a plain serialisable object.

Its hash names the result record, so two configs that would compute the same thing must compare equal:
fields are normalised (task aliases, sorted dimensions, tuples) in `__post_init__`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .errors import FewdimsError, check_type

POOLINGS = ("cls", "max_norm", "mean", "max", "pooler")
# Fields added after the first records were stored: left out of the key at these values, so older records (which
# computed exactly that) keep their names.
LATER_FIELDS = {"holdout_size": 0, "standardize_target": False}
HEADS = ("linear", "mlp")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class RunConfig:
    task: str = "sst2"
    model: str = "minilm"              # 'minilm' (bundled), 'tiny' (random, tests), a local directory or a hub id
    pooling: str = "cls"               # which vector the head reads, see fewdims.heads.pool
    special_tokens_eligible: bool = False  # max_norm/mean/max: may [CLS]/[SEP] be chosen / averaged?
    layer: int | None = None           # None = last layer; 0 = embeddings; l = output of encoder layer l
    dims: tuple[int, ...] | None = None  # DropConnect: only these dimensions reach the head (None = all)
    head: str = "linear"               # 'linear' (dropout -> linear) or 'mlp' (2 layers, tanh)
    freeze_backbone: bool = False
    lr: float = 5e-5                   # backbone learning rate
    head_lr: float | None = None       # None = lr; frozen runs usually want a larger one
    batch_size: int = 32
    epochs: int = 3
    max_length: int = 128
    seed: int = 0
    precision: str = "auto"            # 'auto' = bf16 autocast where the CPU/GPU supports it, else fp32
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    train_split: str = "train"
    train_size: int | None = 2000      # deterministic subset (size, data_seed); None = the whole split
    data_seed: int = 0                 # which subset: kept apart from `seed` so seeds vary the training, not the data
    eval_splits: tuple[str, ...] | None = None  # None = the task's official evaluation splits
    eval_size: int | None = None       # None = the whole evaluation split
    init_from: dict | None = None      # cross-fine-tuning: the stage-A RunConfig (as a dict) whose backbone to start from
    save_weights: bool = False         # keep the fine-tuned weights in the local cache (never committed)
    holdout_size: int = 0              # rows of the train split held out (never trained on) to choose the epoch; the
                                       # dev splits are then scored once, at that epoch. 0: every epoch, last reported
    standardize_target: bool = False   # regression: train on (y - mean) / std of the training labels (undone after)

    def __post_init__(self):
        from .tasks import get_task

        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        check_type("task", self.task, str, "e.g. task='rte'")
        set_("task", get_task(self.task).name)
        check_type("model", self.model, str)
        for name in ("pooling", "head", "precision"):
            value, allowed = getattr(self, name), {"pooling": POOLINGS, "head": HEADS, "precision": PRECISIONS}[name]
            if value not in allowed:
                raise FewdimsError(f"{name}={value!r} is not known; choose one of {', '.join(allowed)}")
        for name in ("special_tokens_eligible", "freeze_backbone", "save_weights", "standardize_target"):
            check_type(name, getattr(self, name), bool)
        for name in ("batch_size", "epochs", "max_length", "seed", "data_seed", "holdout_size"):
            check_type(name, getattr(self, name), int)
        for name in ("batch_size", "epochs", "max_length"):
            if getattr(self, name) < 1:
                raise FewdimsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.holdout_size < 0:
            raise FewdimsError(f"holdout_size must be >= 0 (0 = no held-out slice), got {self.holdout_size}")
        if self.max_length < 8:
            raise FewdimsError(f"max_length={self.max_length} is too short for [CLS] text [SEP]; use at least 8")
        for name in ("lr", "dropout", "warmup_ratio", "weight_decay"):
            check_type(name, getattr(self, name), (float, int))
        if self.head_lr is not None:
            check_type("head_lr", self.head_lr, (float, int))
            if self.head_lr <= 0:
                raise FewdimsError(f"head_lr must be positive, got {self.head_lr}")
        if self.lr <= 0:
            raise FewdimsError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise FewdimsError("dropout and warmup_ratio must lie in [0, 1)")
        if self.layer is not None:
            check_type("layer", self.layer, int, "0 = embeddings, 1..L = encoder layers, None = last")
            if self.layer < 0:
                raise FewdimsError(f"layer must be >= 0 (0 = embeddings), got {self.layer}")
        if self.dims is not None:
            if isinstance(self.dims, (str, bytes)) or not hasattr(self.dims, "__iter__"):
                raise FewdimsError(f"dims must be a list of dimension indices, got {self.dims!r}")
            dims = tuple(self.dims)
            for d in dims:
                check_type("each entry of dims", d, int)
                if d < 0:
                    raise FewdimsError(f"dims must be non-negative indices, got {d}")
            if not dims:
                raise FewdimsError("dims is empty: select at least one dimension, or None for all")
            if len(set(dims)) != len(dims):
                raise FewdimsError(f"dims contains duplicates: {dims}")
            set_("dims", tuple(sorted(int(d) for d in dims)))
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            if value is not None:
                check_type(name, value, int, "or None for the whole split")
                if value < 1:
                    raise FewdimsError(f"{name} must be at least 1 (or None for the whole split), got {value}")
        if self.eval_splits is not None:
            if isinstance(self.eval_splits, str):
                set_("eval_splits", (self.eval_splits,))
            set_("eval_splits", tuple(self.eval_splits))
            if self.eval_splits == get_task(self.task).eval_splits:
                set_("eval_splits", None)  # the task's default, spelled out: the same run, the same key
        if self.init_from is not None:
            check_type("init_from", self.init_from, dict, "pass the stage-A RunConfig's to_dict()")
            set_("init_from", RunConfig.from_dict(self.init_from).to_dict())
        set_("lr", float(self.lr))
        set_("dropout", float(self.dropout))
        set_("warmup_ratio", float(self.warmup_ratio))
        set_("weight_decay", float(self.weight_decay))
        if self.head_lr is not None:
            set_("head_lr", None if float(self.head_lr) == self.lr else float(self.head_lr))

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dims"] = list(self.dims) if self.dims is not None else None
        d["eval_splits"] = list(self.eval_splits) if self.eval_splits is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise FewdimsError(f"unknown RunConfig field(s) {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def key(self) -> str:
        """Stable short hash of the fields that change the computation (save_weights does not)."""
        d = _without_legacy_defaults(self.to_dict())
        d.pop("save_weights")
        if d["init_from"] is not None:
            d["init_from"] = _without_legacy_defaults(d["init_from"])
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human-readable description for logs and tables."""
        parts = [self.task, self.pooling]
        if self.layer is not None:
            parts.append(f"layer{self.layer}")
        if self.dims is not None:
            parts.append("dims" + "-".join(map(str, self.dims)))
        if self.freeze_backbone:
            parts.append("frozen")
        parts += [self.head, f"seed{self.seed}"]
        if self.init_from is not None:
            parts.insert(0, f"from-{self.init_from['task']}")
        return "/".join(parts)


def _without_legacy_defaults(d: dict) -> dict:
    return {k: v for k, v in d.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


@dataclass
class RunResult:
    """What `train` returns: the record that the store writes (see fewdims.store)."""

    config: RunConfig
    metrics: dict           # {split: {metric: value}} at the chosen epoch (the last one without a held-out slice)
    history: list           # per epoch: {'epoch', 'train_loss', split: {metric: value}}
    timings: dict           # seconds and examples/s
    data: dict              # source and fingerprints
    extra: dict = field(default_factory=dict)  # analyses computed while the weights were in memory
    predictions: dict = field(default_factory=dict)  # {split: {'preds', 'labels'}} per dev example (fewdims.predictions)
    selection: dict = field(default_factory=dict)    # the epoch chosen on the held-out slice, and the curves' verdict
