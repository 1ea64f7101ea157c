"""Result store: one JSON record per run under data/results/<profile>/<task>/<config hash>.json.

Records are written atomically (temp file + rename) and only when a run has finished, so an interrupted run
leaves nothing behind and is simply redone. A finished run is reused unless forced. A record that cannot be
read, or whose config does not match its name, is reported with the file's path, never silently reused.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from .cache import atomic_write
from .config import RunConfig, RunResult
from .errors import FewdimsError

ROOT = Path(__file__).resolve().parents[2]
RECORD_FORMAT = 1


class CorruptRecordError(FewdimsError):
    pass


def results_root() -> Path:
    return Path(os.environ.get("FEWDIMS_RESULTS", ROOT / "data" / "results"))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import accelerate
    import torch
    import transformers

    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "commit": git_commit(),
        # the machine's 1-, 5- and 15-minute load when the record is written: the cost model calibrates from runs
        # that had the machine to themselves (a busy 2-core machine slows a run several times over)
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        **code_fingerprint(),
    }


# The modules whose code determines a record's metrics and predictions (training, heads, data, metrics). Analyses
# (CKA, scans: re-computable from the local caches), the book, figures and verdicts are not among them: changing
# those re-analyses or re-renders; it does not invalidate a record.
NUMERIC_MODULES = ("batching", "config", "data", "fastbert", "heads", "metrics", "models", "predictions", "runtime",
                   "tasks", "train")


@functools.cache
def code_fingerprint() -> dict:
    """{'code_fingerprint': sha256 of the numeric modules' source (16 hex digits), 'dirty': whether git sees
    uncommitted changes in them (None outside a git checkout)}."""
    lib = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in NUMERIC_MODULES:
        digest.update(name.encode() + b"\0" + (lib / f"{name}.py").read_bytes())
    dirty = None
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                              *(str(lib / f"{name}.py") for name in NUMERIC_MODULES)],
                             capture_output=True, text=True, timeout=5)
        dirty = bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"code_fingerprint": digest.hexdigest()[:16], "dirty": dirty}


# A change to the numeric modules changes the fingerprint even when it computes exactly what the old code did (a
# refactor, a comment, a new field in the record). `python -m fewdims verify-code` re-runs stored records of the
# old code with the new one; when every re-run is bit-for-bit the same, it writes a link old -> new into this
# file (with the runs it checked), and the old code's records count as this code's. See fewdims.reproduce.
EQUIVALENCE_FILE = "code-equivalence.json"


def _equivalence_path(root: str | os.PathLike | None) -> Path:
    return Path(root if root is not None else results_root()) / EQUIVALENCE_FILE


def equivalence_links(root: str | os.PathLike | None = None) -> list[dict]:
    """The verified links {'from', 'to', 'checked', ...} of the results root (default results_root())."""
    path = _equivalence_path(root)
    if not path.exists():
        return []
    try:
        links = json.loads(path.read_text())["links"]
        if not all(isinstance(x, dict) and {"from", "to"} <= set(x) for x in links):
            raise ValueError("every link needs 'from' and 'to'")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptRecordError(f"{path} is corrupt ({err}); restore it from git or delete it (its old "
                                 "records then count as stale until `python -m fewdims verify-code` links them)")
    return links


def current_fingerprints(root: str | os.PathLike | None = None) -> set[str]:
    """This checkout's fingerprint and every older one linked to it, directly or through others."""
    current = {code_fingerprint()["code_fingerprint"]}
    links = equivalence_links(root)
    grew = True
    while grew:
        before = len(current)
        current |= {x["from"] for x in links if x["to"] in current}
        grew = len(current) > before
    return current


def add_equivalence_link(link: dict, root: str | os.PathLike | None = None) -> Path:
    """Append a verified link (written atomically; the file keeps every earlier link)."""
    path = _equivalence_path(root)
    links = equivalence_links(root) + [link]
    text = json.dumps({"format": 1, "links": links}, indent=1, sort_keys=True) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def stale_records(records: list[dict], root: str | os.PathLike | None = None) -> list[dict]:
    """Records computed by other numeric code than this checkout's and not verified equal to it (see
    current_fingerprints), or by a dirty tree, or before fingerprints."""
    current = current_fingerprints(root)
    return [r for r in records if (r.get("environment") or {}).get("code_fingerprint") not in current
            or (r.get("environment") or {}).get("dirty")]


class ResultStore:
    def __init__(self, profile: str, root: str | os.PathLike | None = None):
        if not isinstance(profile, str) or not profile or "/" in profile or profile.startswith("."):
            raise FewdimsError(f"profile must be a plain name such as 'cpu' or 'smoke', got {profile!r}")
        self.profile = profile
        self.root = Path(root) if root is not None else results_root()
        self.dir = self.root / profile

    def path(self, config: RunConfig) -> Path:
        if not isinstance(config, RunConfig):
            raise FewdimsError(f"the store needs a RunConfig, got {type(config).__name__}; "
                               "build one with RunConfig(...) or RunConfig.from_dict(d)")
        return self.dir / config.task / f"{config.key()}.json"

    def load(self, config: RunConfig) -> dict | None:
        """The finished record of `config`, or None if it was never finished."""
        path = self.path(config)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CorruptRecordError(f"result record {path} is corrupt ({err}); delete it or re-run with "
                                     "force=True to recompute it") from err
        if not isinstance(record, dict) or record.get("key") != config.key() or "metrics" not in record:
            raise CorruptRecordError(f"result record {path} does not belong to this config or is incomplete; "
                                     "delete it or re-run with force=True to recompute it")
        return record

    def save(self, result: RunResult, environment_info: dict | None = None) -> dict:
        """Write the record of a finished run; `environment_info` names the machine that computed it (default:
        this process's, `environment()`; a cluster's driver passes its worker's)."""
        record = {
            "format": RECORD_FORMAT, "key": result.config.key(), "label": result.config.label(),
            "profile": self.profile, "config": result.config.to_dict(), "metrics": result.metrics,
            "history": result.history, "timings": result.timings, "data": result.data, "extra": result.extra,
            "predictions": result.predictions, "selection": result.selection,
            "environment": environment_info or environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._write(self.path(result.config), record)
        return record

    @staticmethod
    def _write(path: Path, record: dict) -> None:
        text = json.dumps(record, indent=1, sort_keys=True, default=_jsonable)
        atomic_write(path, lambda handle: handle.write(text.encode()))  # a reader sees the old or the new record

    def update_extra(self, config: RunConfig, extra: dict, drop=()) -> dict:
        """Merge analyses computed later (from cached weights) into a finished record, atomically; the keys in
        `drop` (e.g. errors the new analyses replace) are removed."""
        record = self.load(config)
        if record is None:
            raise FewdimsError(f"no finished record for {config.label()} to add analyses to")
        record["extra"] = {k: v for k, v in {**record.get("extra", {}), **extra}.items() if k not in drop}
        self._write(self.path(config), record)
        return record

    def records(self, task: str | None = None) -> list[dict]:
        """Every finished record of this profile (optionally one task); corrupt ones raise."""
        pattern = f"{task}/*.json" if task else "*/*.json"
        out = []
        for path in sorted(self.dir.glob(pattern)):
            try:
                out.append(json.loads(path.read_text()))
            except json.JSONDecodeError as err:
                raise CorruptRecordError(f"result record {path} is corrupt ({err}); delete it and re-run") from err
        return out


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a result record")
