"""Load GLUE splits from a TSV directory, a parquet directory or the Hugging Face hub, identically.

Whatever the source, a split comes back as a `SplitData`: one list of strings per text column and
one label array with hub label ids (float scores for STS-B), so the rest of the library never sees
where the data came from except in `SplitData.source`, which is recorded for provenance.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FewdimsError, check_type
from .tasks import SPLIT_FILES, TASKS, TSV_LAYOUTS, TaskSpec, check_split, get_task

HUB_DATASET = "nyu-mll/glue"
ENV_VAR = "FEWDIMS_GLUE_DIR"


@dataclass
class SplitData:
    task: str
    split: str
    texts: tuple[list[str], ...]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> dict:
        """Row count and a content hash, so a run can record exactly which data it saw."""
        digest = hashlib.sha256()
        digest.update(f"{self.task}|{self.split}|{len(self.texts)}|{self.labels.dtype.str}".encode())
        for column in self.texts:
            for text in column:
                encoded = text.encode("utf-8", "surrogatepass")
                # A length prefix keeps ('ab', 'c') and ('a', 'bc') apart.
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return {"rows": len(self), "sha256": digest.hexdigest(), "source": self.source}

    def subset(self, size: int | None, seed: int) -> "SplitData":
        """A reproducible random subset of `size` rows; None or size >= len keeps all rows in order."""
        check_type("seed", seed, (int, np.integer), hint="pass an integer random seed")
        if size is not None:
            check_type("size", size, (int, np.integer), hint="pass a positive number of rows, or None for all")
            if size <= 0:
                raise FewdimsError(f"subset size must be a positive number of rows or None for all, got {size}")
        if size is None or size >= len(self):
            return self._take(np.arange(len(self)))
        order = np.random.default_rng(int(seed)).permutation(len(self))[: int(size)]
        return self._take(order)

    def split_off(self, holdout: int, size: int | None, seed: int) -> tuple["SplitData", "SplitData"]:
        """(training rows, held-out rows): `holdout` rows drawn with `seed` are held out and never trained on; the
        training subset of `size` rows (None: all the rest) is drawn from the remaining rows."""
        check_type("holdout", holdout, (int, np.integer))
        if not 0 < holdout < len(self):
            raise FewdimsError(f"holdout_size={holdout} must lie between 1 and {len(self) - 1}: {self.task} "
                               f"{self.split} has {len(self)} rows")
        order = np.random.default_rng([int(seed), 7]).permutation(len(self))
        rest = order[int(holdout):]
        if size is not None:
            rest = rest[: int(size)]
        return self._take(np.sort(rest)), self._take(np.sort(order[: int(holdout)]))

    def _take(self, rows: np.ndarray) -> "SplitData":
        texts = tuple([column[i] for i in rows] for column in self.texts)
        return SplitData(self.task, self.split, texts, self.labels[rows].copy(), self.source)


def _ways_to_provide(task: TaskSpec) -> str:
    return (
        f"no GLUE data for {task.display}: (1) pass glue_dir=... / --glue-dir pointing to a GLUE directory "
        f"in the download script's TSV layout (e.g. <dir>/{task.tsv_dir}/train.tsv), (2) or to a directory "
        f"in the hub's parquet layout (e.g. <dir>/{task.hub_config}/train-00000-of-00001.parquet), "
        f"(3) or set {ENV_VAR}, or go online so that the hub dataset {HUB_DATASET} can be downloaded"
    )


def _detect_layout(root: Path) -> str | None:
    """'tsv' or 'parquet' if `root` holds at least one task folder of that layout, else None."""
    for spec in TASKS.values():
        if glob.glob(str(root / glob.escape(spec.tsv_dir) / "*.tsv")):
            return "tsv"
        if glob.glob(str(root / glob.escape(spec.hub_config) / "*.parquet")):
            return "parquet"
    return None


@dataclass(frozen=True)
class DataSource:
    """Where GLUE data comes from, decided once (`DataSource.resolve`): a directory in the download script's TSV
    layout, one in the hub's parquet layout, or the hub. `str(source)` is 'tsv:<abs dir>', 'parquet:<abs dir>' or
    'hub:nyu-mll/glue', as recorded in SplitData.source."""

    kind: str  # 'tsv', 'parquet' or 'hub'
    location: str  # the absolute directory, or the hub dataset
    origin: str = field(default="glue_dir", compare=False)  # what named it, for messages: glue_dir or ENV_VAR

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"

    @classmethod
    def resolve(cls, glue_dir: "DataSource | str | os.PathLike | None" = None) -> "DataSource":
        """Decide where data comes from. Order: the explicit argument (a directory, 'hub', an already resolved
        'tsv:...'/'parquet:...' string or a DataSource), then the FEWDIMS_GLUE_DIR environment variable, then
        the hub. A directory that does not exist or does not look like GLUE raises FewdimsError."""
        if isinstance(glue_dir, DataSource):
            return glue_dir
        check_type("glue_dir", glue_dir, (str, os.PathLike, type(None)),
                   hint="pass a directory path, 'hub', or None")
        origin = "glue_dir"
        if glue_dir is None:
            glue_dir, origin = os.environ.get(ENV_VAR) or "hub", ENV_VAR
        text = os.fspath(glue_dir)
        if not text.strip():
            raise FewdimsError(f"{origin} is empty; pass a GLUE directory or 'hub'")
        if text == "hub" or text.startswith("hub:"):
            return cls("hub", HUB_DATASET, origin)
        if text.startswith(("tsv:", "parquet:")):  # an already resolved source passes through
            kind, _, location = text.partition(":")
            return cls(kind, location, origin)
        root = Path(text).expanduser().resolve()
        if not root.exists():
            raise FewdimsError(f"GLUE directory {root} (from {origin}) does not exist; fix the path, "
                               f"or pass 'hub' to download {HUB_DATASET}")
        if not root.is_dir():
            raise FewdimsError(f"GLUE directory {root} (from {origin}) is a file, not a directory")
        layout = _detect_layout(root)
        if layout is None:
            if glob.glob(str(root / "*.tsv")) or glob.glob(str(root / "*.parquet")):
                hint = f"; it holds data files itself: pass its parent directory {root.parent} instead"
            else:
                hint = ("; expected task folders such as SST-2/train.tsv (TSV layout) "
                        "or sst2/train-00000-of-00001.parquet (hub parquet layout)")
            raise FewdimsError(f"{root} (from {origin}) does not look like a GLUE directory{hint}")
        return cls(layout, str(root), origin)


def resolve_source(glue_dir: DataSource | str | os.PathLike | None = None) -> str:
    """Decide where data comes from: 'tsv:<abs dir>', 'parquet:<abs dir>' or 'hub:nyu-mll/glue'.

    Order: the explicit argument, then the FEWDIMS_GLUE_DIR environment variable, then the hub.
    """
    return str(DataSource.resolve(glue_dir))


def _split_files(source: DataSource, spec: TaskSpec, split: str) -> list[Path]:
    """The files holding `split` of a local source; FewdimsError naming the directory, the task, the split and
    what the directory holds instead when they are missing."""
    root = Path(source.location)
    if source.kind == "tsv":
        folder, expected = root / spec.tsv_dir, root / spec.tsv_dir / SPLIT_FILES[split]
        paths = [expected] if expected.is_file() else []
        found = [s for s, name in SPLIT_FILES.items() if (folder / name).is_file()]
        task_dirs = [t.tsv_dir for t in TASKS.values() if (root / t.tsv_dir).is_dir()]
    else:
        folder, expected = root / spec.hub_config, root / spec.hub_config / f"{split}-*.parquet"
        paths = sorted(folder.glob(f"{split}-*.parquet"))
        found = sorted({p.name.split("-")[0] for p in folder.glob("*.parquet")})
        task_dirs = [t.hub_config for t in TASKS.values() if (root / t.hub_config).is_dir()]
    if paths:
        return paths
    if not folder.is_dir():
        present = f"it has no {folder.name} folder (task folders found: {', '.join(task_dirs) or 'none'})"
    elif found:
        present = f"{folder} holds the splits {', '.join(map(repr, found))} only"
    else:
        present = f"{folder} holds no split files"
    layout = "TSV layout of the GLUE download script" if source.kind == "tsv" else "hub's parquet layout"
    raise FewdimsError(
        f"missing file {expected}: the GLUE directory {root} (from {source.origin}) has no {spec.display} "
        f"split {split!r}; {present}. Add the file ({layout}), point glue_dir or {ENV_VAR} to a GLUE "
        f"directory that has it (TSV or parquet layout), or pass 'hub' to download {HUB_DATASET}")


# (source, task, split) -> (signature of the files read, SplitData).  The signature (path, size,
# mtime) makes a rewritten file invalidate its entry, so tests that edit data never see stale rows.
_CACHE: dict[tuple[str, str, str], tuple[tuple, SplitData]] = {}


def clear_cache() -> None:
    _CACHE.clear()


def _signature(paths: list[Path]) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def load_split(task: str, split: str, source: DataSource | str | os.PathLike | None = None) -> SplitData:
    """Load one labelled split of a GLUE task (cached per process; callers get their own copy). `source`: a
    DataSource, or a glue_dir as DataSource.resolve takes it."""
    spec = get_task(task)
    check_split(spec, split)
    resolved = DataSource.resolve(source)
    kind, source = resolved.kind, str(resolved)
    paths = _split_files(resolved, spec, split) if kind in ("tsv", "parquet") else []
    key, signature = (source, spec.name, split), _signature(paths)
    cached = _CACHE.get(key)
    if cached is None or cached[0] != signature:
        if kind == "tsv":
            data = _read_tsv(spec, split, paths[0], source)
        elif kind == "parquet":
            data = _read_parquet(spec, split, paths, source)
        else:
            data = _read_hub(spec, split, source)
        _CACHE[key] = (signature, data)
    cached_data = _CACHE[key][1]
    return cached_data._take(np.arange(len(cached_data)))  # a copy: callers may edit what they get


def _read_tsv(spec: TaskSpec, split: str, path: Path, source: str) -> SplitData:
    layout = TSV_LAYOUTS[spec.name]
    texts: tuple[list[str], ...] = tuple([] for _ in layout.text_columns)
    labels: list = []
    # utf-8-sig drops MRPC's byte-order mark; newline='' with the csv module splits rows on line
    # breaks only (never on control characters such as MRPC's stray \x12); QUOTE_NONE because GLUE
    # text contains unbalanced double quotes that are part of the sentence.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        wanted = list(layout.text_columns) + [layout.label_column]  # text columns, then the label
        positions = [int(c) for c in wanted] if not layout.has_header else []
        if layout.has_header:
            header = [name.strip() for name in next(reader, [])]
            for name in wanted:
                if name not in header:
                    raise FewdimsError(f"{path}: header has no column {name!r} (found {header}); "
                                       f"is this really the {spec.display} file of the GLUE download script?")
                # Last match: a duplicated name means a later annotation column (MNLI's gold_label is last).
                positions.append(len(header) - 1 - header[::-1].index(name))
        needed = max(positions) + 1
        for row in reader:
            if not row:  # a blank line carries no example
                continue
            if len(row) < needed:
                raise FewdimsError(f"{path}, line {reader.line_num}: malformed row with {len(row)} "
                                   f"tab-separated columns, {spec.display} needs at least {needed}")
            for column, position in zip(texts, positions[:-1]):
                column.append(row[position])
            labels.append(_parse_label(spec, layout.label_map, row[positions[-1]], path, reader.line_num))
    dtype = np.float32 if spec.is_regression else np.int64
    return SplitData(spec.name, split, texts, np.asarray(labels, dtype=dtype), source)


def _parse_label(spec: TaskSpec, label_map, raw: str, path: Path, line: int):
    value = raw.strip()
    if label_map is None:
        try:
            return float(value)
        except ValueError:
            raise FewdimsError(f"{path}, line {line}: {spec.display} score {raw!r} is not a number") from None
    if value not in label_map:
        raise FewdimsError(f"{path}, line {line}: unknown {spec.display} label {raw!r}; "
                           f"allowed labels: {', '.join(label_map)}")
    return label_map[value]


def _from_columns(spec: TaskSpec, split: str, columns: dict, source: str, where: str) -> SplitData:
    """Build a SplitData from hub-named columns, checking that every label is a real one."""
    missing = [c for c in spec.text_columns + ("label",) if c not in columns]
    if missing:
        raise FewdimsError(f"{where}: missing columns {missing}; {spec.display} needs "
                           f"{list(spec.text_columns) + ['label']}")
    dtype = np.float32 if spec.is_regression else np.int64
    labels = np.asarray(columns["label"], dtype=dtype)
    if not spec.is_regression and len(labels) and (labels.min() < 0 or labels.max() >= spec.num_labels):
        # The hub marks hidden test labels with -1.
        raise FewdimsError(f"{where}: labels outside 0..{spec.num_labels - 1} (-1 means hidden GLUE test labels)")
    texts = tuple([str(t) for t in columns[c]] for c in spec.text_columns)
    return SplitData(spec.name, split, texts, labels, source)


def _read_parquet(spec: TaskSpec, split: str, paths: list[Path], source: str) -> SplitData:
    import pandas as pd

    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    columns = {c: frame[c].to_numpy() if c == "label" else frame[c].tolist() for c in frame.columns}
    return _from_columns(spec, split, columns, source, ", ".join(map(str, paths)))


def _read_hub(spec: TaskSpec, split: str, source: str) -> SplitData:
    try:
        import datasets  # imported lazily: slow to import and unused with local data

        dataset = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=split)
    except Exception as error:  # offline, no cache, hub down: all mean the same to the user
        raise FewdimsError(f"{_ways_to_provide(spec)} (loading from the hub failed: "
                           f"{type(error).__name__}: {error})") from error
    columns = {c: dataset[c] for c in dataset.column_names}
    return _from_columns(spec, split, columns, source, f"hub {HUB_DATASET}/{spec.hub_config}")


def data_report(task: str, glue_dir: DataSource | str | os.PathLike | None = None) -> str:
    """Human-readable summary: the source, then rows and label distribution of each labelled split."""
    spec = get_task(task)
    source = DataSource.resolve(glue_dir)
    lines = [f"{spec.display} ({spec.name}) from {source}"]
    loaded = 0
    first_error: FewdimsError | None = None
    for split in spec.splits:
        try:
            data = load_split(spec, split, source)
        except FewdimsError as error:
            first_error = first_error or error
            lines.append(f"  {split}: not available ({error})")
            continue
        loaded += 1
        if spec.is_regression:
            scores = data.labels
            summary = f"score min {scores.min():.3f} mean {scores.mean():.3f} max {scores.max():.3f}"
        else:
            counts = np.bincount(data.labels, minlength=spec.num_labels)
            summary = ", ".join(f"{name} {count} ({count / len(data):.1%})"
                                for name, count in zip(spec.label_names, counts))
        lines.append(f"  {split}: {len(data)} rows; {summary}")
        lines.append(f"    sha256 {data.fingerprint()['sha256'][:16]}")
    if loaded == 0 and first_error is not None:
        raise first_error
    return "\n".join(lines)
