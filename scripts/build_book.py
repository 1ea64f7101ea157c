#!/usr/bin/env python
"""Build the fewdims book: execute the notebooks with papermill, stamp their provenance, build strict HTML.

    python scripts/build_book.py --profile cpu              # what `make book` runs
    python scripts/build_book.py --profile smoke            # the tiny test edition, in minutes
    python scripts/build_book.py --no-compute               # never train: missing runs are listed, not computed
    python scripts/build_book.py --notebooks setup,cka      # re-execute only these (the rest must be current)
    python scripts/build_book.py --skip-execute             # only rebuild the HTML from book/executed/

Steps:
1. Executed notebooks of another profile are deleted from book/executed/ first, so that a smoke build never
   ships cpu pages or the other way round.
2. Each notebook of notebooks/ (in the order of _toc.yml) is executed by papermill (kernel python3,
   parameters profile and compute, cwd = the notebooks directory) into a temporary file that replaces
   book/executed/<name>.ipynb only when the whole notebook ran. A failing notebook stops the build with its
   name and failing cell; its old page is deleted (no stale page is ever published) and the partly executed
   notebook is kept in <out>/failed/<name>.ipynb for inspection.
3. A provenance note (notebook, profile, git commit, date, and a table of the parameters the page was executed
   with) is added below each page's title; the `parameters` cell and papermill's `injected-parameters` cell are
   tagged `remove-cell` (kept in the .ipynb, not shown) and every other code cell `hide-input` (its code one
   click away, its outputs shown). book/executed/build_info.md (shown in the introduction) and the page footer
   say which profile built the book; the footer's copyright runs to the build year.
   The kernels run with CurveZMQ transport encryption where pyzmq and the kernelspec support it (no "Kernel is
   running over TCP without encryption" warning per notebook).
4. `jupyter-book build <root> --builder html -W -n --keep-going --all`: warnings and broken references fail it.
5. Prints the build time, the number of pages and the number of figures (<img> elements) in <out>/html.

Exit status: 0 on success, 1 when a notebook or the HTML build fails, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK_FILES = ("_config.yml", "_toc.yml")    # with book/ (less book/executed/): the sources of the book
EXECUTED = Path("book") / "executed"
PROVENANCE_TAG = "fewdims-provenance"
PARAMETER_TAGS = ("parameters", "injected-parameters")   # shown once, as the provenance note's table
HIDDEN_TAGS = ("remove-cell", "remove-input", "hide-input", "hide-cell")   # a cell that already says how to show
NON_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NON_PAGE_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}


class BuildError(Exception):
    """A failure that ends the build with exit status 1 and a message naming what failed."""


def log(message: str) -> None:
    print(f"[build_book] {message}", flush=True)


# -- stale records -----------------------------------------------------------------------------------------------

def report_stale_records(profile: str) -> None:
    """List the stored records whose training code differs from this checkout's (or came from a dirty tree, or
    predate code fingerprints): the book renders them, and says here that they are not this code's numbers."""
    from fewdims.store import ResultStore, code_fingerprint, stale_records

    try:
        records = ResultStore(profile).records()
    except Exception as err:  # a corrupt record is reported by the notebook that needs it
        log(f"stale records: not checked ({err})")
        return
    stale = stale_records(records)
    if not stale:
        log(f"stale records: none of {len(records)} (training code {code_fingerprint()['code_fingerprint']})")
        return
    by_reason: dict[str, int] = {}
    for record in stale:
        env = record.get("environment") or {}
        reason = ("computed before code fingerprints" if "code_fingerprint" not in env else
                  "computed from a dirty tree" if env.get("dirty") else f"training code {env['code_fingerprint']}")
        by_reason[reason] = by_reason.get(reason, 0) + 1
    log(f"stale records: {len(stale)} of {len(records)} were not computed by this checkout's training code "
        f"({code_fingerprint()['code_fingerprint']}): " + "; ".join(f"{n} {r}" for r, n in by_reason.items())
        + " (python -m fewdims stale --profile " + profile + " lists them; verify-code links them when the new "
        "code computes the same)")


# -- the table of contents -------------------------------------------------------------------------------------

def chapter_names(root: Path) -> list[str]:
    """Notebook chapters in _toc.yml order: the entries under book/executed/."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc.get("root", "")]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    prefix = EXECUTED.as_posix() + "/"
    return [Path(f).name.removesuffix(".ipynb") for f in files if f.startswith(prefix)]


# -- provenance ------------------------------------------------------------------------------------------------

def git_commit() -> dict:
    def git(*args):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "lib", "notebooks")
    return {"commit": commit, "short": commit[:10] if commit else None, "dirty": bool(dirty)}


def describe_commit(info: dict) -> str:
    if not info.get("commit"):
        return "an unknown commit (not a git checkout)"
    text = f"commit `{info['short']}`"
    return text + (" with uncommitted changes to lib/ or notebooks/" if info["dirty"] else "")


def profile_description(profile: str) -> str:
    import yaml

    path = ROOT / "notebooks" / "params" / f"{profile}.yml"
    try:
        return str(yaml.safe_load(path.read_text()).get("description", "")).strip()
    except (OSError, AttributeError):
        return ""


def format_params(params: dict) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in params.items())


def cell_tags(cell) -> list:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def assignments(source: str) -> dict[str, str]:
    """{name: value as written} of the top-level `name = value` statements of a parameters cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            text = ast.get_source_segment(source, node.value) or ast.unparse(node.value)
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = " ".join(text.split())
    return found


def executed_parameters(nb, fallback: dict) -> tuple[dict[str, str], set[str]]:
    """The parameters a notebook ran with, {name: value as written}, and the names papermill injected.

    The notebook's `parameters` cell gives the names and defaults, in its order; the `injected-parameters`
    cell (papermill) overrides them. Without either cell: `fallback` (the build's parameters)."""
    defaults, injected = {}, {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            injected.update(assignments(cell.source))
        elif "parameters" in tags:
            defaults.update(assignments(cell.source))
    if not defaults and not injected:
        injected = {k: repr(v) for k, v in fallback.items()}
    return {**defaults, **injected}, set(injected)


def parameter_table(values: dict[str, str], injected: set[str]) -> str:
    def code(text: str) -> str:
        text = text if len(text) <= 120 else text[:117] + "..."
        return "`" + text.replace("`", "'").replace("|", "\\|") + "`"

    rows = ["| parameter | value |", "| --- | --- |"]
    rows += [f"| {code(name)} | {'**' + code(v) + '**' if name in injected else code(v)} |"
             for name, v in values.items()]
    return "\n".join(rows)


def provenance_markdown(name: str, meta: dict, nb=None) -> str:
    values, injected = executed_parameters(nb, meta["parameters"]) if nb is not None else \
        ({k: repr(v) for k, v in meta["parameters"].items()}, set(meta["parameters"]))
    set_by_build = ", ".join(f"`{k}`" for k in values if k in injected)
    return (
        ":::{admonition} How this page was made\n"
        ":class: note\n\n"
        f"This page is the notebook `notebooks/{name}.ipynb`, executed by papermill with the "
        f"**{meta['profile']}** profile at {describe_commit(meta['git'])} "
        f"on {meta['executed']} in {meta['seconds']:.0f} s, with these parameters "
        f"(in bold: set by the build{': ' + set_by_build if set_by_build else ''}; the others are the notebook's "
        f"defaults, where `None` means the value of `notebooks/params/{meta['profile']}.yml`):\n\n"
        f"{parameter_table(values, injected)}\n\n"
        "The code of each cell is folded away: *Show code cell source* above a cell's output unfolds it. "
        "The executed notebook, outputs included, can be downloaded from this page: use the download button "
        "(arrow) at the top of the page and choose `.ipynb`. {doc}`../rerun` says how to run it again.\n"
        ":::"
    )


def tag_for_display(nb) -> None:
    """Jupyter Book display tags (idempotent): the parameter cells are removed from the page (their values are
    the provenance note's table), every other code cell shows its outputs with its code folded (hide-input),
    unless it already carries a display tag of its own. The .ipynb keeps every cell."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell_tags(cell)
        if any(t in tags for t in PARAMETER_TAGS):
            if "remove-cell" not in tags:
                tags.append("remove-cell")
        elif not any(t in tags for t in HIDDEN_TAGS):
            tags.append("hide-input")


def add_provenance(nb, name: str, meta: dict) -> None:
    """A markdown cell below the title (or at the top when the notebook starts with something else)."""
    import nbformat

    nb.cells = [c for c in nb.cells if PROVENANCE_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(provenance_markdown(name, meta, nb))
    cell.metadata["tags"] = [PROVENANCE_TAG]
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and \
        first.source.lstrip().startswith("# ") else 0
    nb.cells.insert(at, cell)
    nb.metadata["fewdims"] = meta


def prepare_page(nb, name: str, meta: dict) -> None:
    """Provenance note with the parameter table, and display tags: what the page shows of the notebook."""
    add_provenance(nb, name, meta)
    tag_for_display(nb)


def refresh_pages(executed_dir: Path, names: list[str]) -> None:
    """Re-apply prepare_page to executed notebooks (e.g. built by an older build_book, then --skip-execute)."""
    import nbformat

    for name in names:
        path = executed_dir / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("fewdims") or {}
        if not all(k in meta for k in ("profile", "parameters", "git", "executed", "seconds")):
            continue
        before = nbformat.writes(nb)
        prepare_page(nb, name, dict(meta))
        if nbformat.writes(nb) != before:
            nbformat.write(nb, path)


def executed_profile(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("fewdims", {}).get("profile")
    except (OSError, ValueError):
        return None


# -- execution -------------------------------------------------------------------------------------------------

def remove_stale(executed_dir: Path, profile: str) -> list[str]:
    """Delete executed notebooks that another profile (or no known build) produced; return their names."""
    removed = []
    for path in sorted(executed_dir.glob("*.ipynb")):
        if executed_profile(path) != profile:
            path.unlink()
            removed.append(path.stem)
    return removed


def failing_cell(err, source_nb) -> str:
    """'cell 5 (In [3]): `raise ValueError(...)`' with the index in the source notebook where it can be found."""
    index = None
    src = (err.source or "").strip()
    for i, cell in enumerate(source_nb.cells):
        if cell.cell_type == "code" and src and cell.source.strip() == src:
            index = i
            break
    first_line = next((line for line in src.splitlines() if line.strip()), "")
    where = f"cell {index}" if index is not None else f"cell {err.cell_index} of the executed notebook"
    return f"{where} (In [{err.exec_count}]): `{first_line[:100]}`"


def kernel_options(kernel: str) -> dict:
    """Extra papermill (nbclient) options for the kernel: CurveZMQ transport encryption when it is available.

    Without it ipykernel logs "Kernel is running over TCP without encryption ..." once per notebook.
    jupyter_client >= 8.10 provisions Curve keys (KernelManager.transport_encryption = "auto") for kernelspecs
    that declare it (ipykernel's do); otherwise the kernel's own log is limited to errors."""
    from traitlets.config import Config

    try:
        import zmq
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(kernel)
        declared = (spec.metadata or {}).get("supported_encryption") or []
        declared = [declared] if isinstance(declared, str) else list(declared)
        if zmq.has("curve") and KernelManager.class_traits().get("transport_encryption") is not None \
                and "curve" in [str(d).lower() for d in declared]:
            return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}
    except Exception:  # noqa: BLE001  (no such kernel yet, an older jupyter_client: the fallback below)
        pass
    return {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}


def execute(name: str, nb_dir: Path, executed_dir: Path, out_dir: Path, params: dict, kernel: str,
            timeout: int | None) -> dict:
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source = nb_dir / f"{name}.ipynb"
    target = executed_dir / f"{name}.ipynb"
    if not source.exists():
        raise BuildError(f"notebook {name}: {source} does not exist (chapters come from _toc.yml)")
    source_nb = nbformat.read(source, as_version=4)
    executed_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=executed_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    log(f"executing notebooks/{name}.ipynb ({format_params(params)}) ...")
    try:
        pm.execute_notebook(str(source), str(tmp), parameters=params, kernel_name=kernel, cwd=str(nb_dir),
                            progress_bar=False, log_output=False, execution_timeout=timeout,
                            **kernel_options(kernel))
    except BaseException as err:  # the notebook failed, or the build was interrupted: publish nothing of it
        failed = out_dir / "failed" / f"{name}.ipynb"
        if tmp.exists() and tmp.stat().st_size:
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp), failed)
        tmp.unlink(missing_ok=True)
        target.unlink(missing_ok=True)  # never leave an old page of a notebook that no longer runs
        if isinstance(err, PapermillExecutionError):
            raise BuildError(
                f"notebook {name} failed at {failing_cell(err, source_nb)}: {err.ename}: {err.evalue}\n"
                f"  the partly executed notebook is in {failed}\n"
                f"  re-run it alone: papermill {source} out.ipynb "
                + " ".join(f"-p {k} {v}" for k, v in params.items())) from None
        if isinstance(err, KeyboardInterrupt):
            raise
        hint = " (out of memory? killed?)" if type(err).__name__ == "DeadKernelError" else ""
        raise BuildError(f"notebook {name} could not be executed: {type(err).__name__}: {err}{hint}\n"
                         f"  the partly executed notebook is in {failed}") from err
    seconds = time.perf_counter() - t0
    meta = {"notebook": f"notebooks/{name}.ipynb", "profile": params["profile"], "parameters": params,
            "git": git_commit(), "executed": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(seconds, 1)}
    nb = nbformat.read(tmp, as_version=4)
    prepare_page(nb, name, meta)
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    log(f"  {name}: done in {seconds:.1f} s")
    return meta


# -- the book --------------------------------------------------------------------------------------------------

def stage_sources(stage: Path) -> None:
    """Copy the book's sources (not book/executed/) to `stage`, for builds that must not touch the repository."""
    stage.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(ROOT / name, stage / name)
    book = stage / "book"
    executed = book / "executed"
    keep = None
    if executed.exists():  # keep executed pages already staged there (e.g. an earlier --notebooks build)
        keep = Path(tempfile.mkdtemp(prefix="executed.", dir=stage))
        shutil.move(str(executed), keep / "executed")
    shutil.rmtree(book, ignore_errors=True)
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("executed", ".ipynb_checkpoints"))
    if keep is not None:
        shutil.move(str(keep / "executed"), executed)
        shutil.rmtree(keep)


def write_build_info(root: Path, profile: str, compute: bool, pages: dict) -> str:
    git = git_commit()
    stamp = f"profile {profile}, {describe_commit(git).replace('`', '')}, " \
            f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d')}"
    lines = [
        ":::{admonition} This edition",
        ":class: tip",
        "",
        f"Built with the **{profile}** profile ({profile_description(profile) or 'see notebooks/params'}) at "
        f"{describe_commit(git)} on {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
        + ("" if compute else "; notebooks executed with `compute=False` (missing runs left out)") + ".",
        "",
        "| chapter | executed | seconds | commit |",
        "| --- | --- | --- | --- |",
    ]
    for name, meta in pages.items():
        lines.append(f"| {{doc}}`executed/{name}` | {meta.get('executed', '?')} | {meta.get('seconds', '?')} | "
                     f"`{(meta.get('git') or {}).get('short') or '?'}`"
                     f"{'+' if (meta.get('git') or {}).get('dirty') else ''} |")
    lines += [":::", ""]
    (root / EXECUTED / "build_info.md").write_text("\n".join(lines))
    return stamp


def build_year() -> int:
    """The year of the build (SOURCE_DATE_EPOCH when set, for reproducible builds, as Sphinx does)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return time.gmtime(int(epoch)).tm_year
    return dt.datetime.now(dt.timezone.utc).year


def copyright_years(first, year: int) -> str:
    """_config.yml's `copyright:` is the first year; the footer says 'first–year' (or the year alone)."""
    match = re.match(r"\s*(\d{4})", str(first or ""))
    start = int(match.group(1)) if match else year
    return str(year) if start >= year else f"{start}\u2013{year}"


def write_config(root: Path, out: Path, stamp: str) -> Path:
    """A copy of _config.yml whose footer says which profile and commit built the book, and whose copyright
    runs to the build year."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    config["copyright"] = copyright_years(config.get("copyright"), build_year())
    html = config.setdefault("html", {})
    footer = html.get("extra_footer") or ""
    html["extra_footer"] = f"{footer} <span class=\"fewdims-build\">Built with {stamp}.</span>".strip()
    # jupyter-book resolves local_extensions paths against the config file's folder, which is now `out`
    local = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, where in local.items():
        local[name] = str((root / where).resolve())
    path = out / "_config.generated.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build_html(root: Path, out: Path, config: Path) -> None:
    for stale in (out / "html", out / ".doctrees", out / "jupyter_execute"):
        shutil.rmtree(stale, ignore_errors=True)
    cmd = jupyter_book_command() + ["build", str(root), "--builder", "html", "-W", "-n", "--keep-going", "--all",
                                    "--path-output", str(out.parent), "--config", str(config)]
    log("$ " + " ".join(cmd))
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    problems = []
    for line in proc.stdout:
        sys.stdout.write(line)
        plain = ANSI.sub("", line)
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Error\b", plain):
            problems.append(plain.rstrip())
    rc = proc.wait()
    if rc != 0 or not (out / "html" / "index.html").exists():
        summary = "\n".join(f"  {p}" for p in problems[:40]) or "  (see the output above)"
        raise BuildError(f"jupyter-book build failed (exit status {rc}); warnings count as errors:\n{summary}")


def count_pages(html: Path) -> tuple[int, int, dict]:
    pages, figures, per_page = 0, 0, {}
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.name in NON_PAGES or (rel.parts and rel.parts[0] in NON_PAGE_DIRS):
            continue
        text = path.read_text(errors="replace")
        if rel.as_posix() == "index.html" and 'http-equiv="Refresh"' in text[:500]:
            continue  # jupyter-book's redirect to the root page
        n = len(re.findall(r"<img\b", text))
        pages += 1
        figures += n
        per_page[rel.as_posix()] = n
    return pages, figures, per_page


# -- the command line ------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    profiles = sorted(p.stem for p in (ROOT / "notebooks" / "params").glob("*.yml")) or ["cpu", "smoke", "paper"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=profiles, help="notebooks/params/<profile>.yml")
    parser.add_argument("--compute", action=argparse.BooleanOptionalAction, default=True,
                        help="train missing runs (default) or, with --no-compute, leave them out and list them")
    parser.add_argument("--notebooks", default=None,
                        help="comma-separated subset to execute (default: every chapter of _toc.yml); the other "
                             "chapters must already be executed with the same profile")
    parser.add_argument("--notebooks-dir", type=Path, default=ROOT / "notebooks",
                        help="where the source notebooks are (default: notebooks/); also papermill's cwd")
    parser.add_argument("--out", type=Path, default=ROOT / "_build",
                        help="build directory, named _build (default: ./_build); the site is <out>/html")
    parser.add_argument("--stage", type=Path, default=None,
                        help="build from a copy of the book's sources in this directory (executed notebooks "
                             "go to <stage>/book/executed/), leaving the repository's book/ untouched")
    parser.add_argument("--skip-execute", action="store_true",
                        help="execute nothing: rebuild the HTML from the executed notebooks already there")
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: none)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.out.name != "_build":
        parser.error(f"--out must be a directory named _build (jupyter-book writes <parent>/_build/html), "
                     f"got {args.out}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("FEWDIMS_PROGRESS", "0")           # no progress bars in the executed notebooks
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    root = ROOT
    if args.stage is not None:
        root = args.stage.resolve()
        stage_sources(root)
    executed_dir = root / EXECUTED
    executed_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "failed", ignore_errors=True)
    if not args.skip_execute:  # the site exists only after a build that succeeded from start to end
        shutil.rmtree(args.out / "html", ignore_errors=True)
    chapters = chapter_names(root)
    nb_dir = args.notebooks_dir.resolve()
    try:
        if args.notebooks:
            chosen = [n.strip().removesuffix(".ipynb") for n in args.notebooks.split(",") if n.strip()]
            unknown = [n for n in chosen if n not in chapters]
            if unknown:
                log(f"error: not a chapter of _toc.yml: {', '.join(unknown)} (chapters: {', '.join(chapters)})")
                return 2
        else:
            chosen = [] if args.skip_execute else chapters
        removed = remove_stale(executed_dir, args.profile)
        if removed:
            log(f"removed executed notebooks of another profile: {', '.join(removed)}")
        report_stale_records(args.profile)
        params = {"profile": args.profile, "compute": args.compute}
        t_exec = time.perf_counter()
        for name in ([] if args.skip_execute else chosen):
            execute(name, nb_dir, executed_dir, args.out, params, args.kernel, args.cell_timeout)
        exec_seconds = time.perf_counter() - t_exec
        missing = [n for n in chapters if not (executed_dir / f"{n}.ipynb").exists()]
        if missing:
            raise BuildError(f"no executed notebook of the {args.profile} profile for: {', '.join(missing)}; "
                             f"run without --notebooks/--skip-execute to execute them")
        refresh_pages(executed_dir, chapters)
        pages = {n: json.loads((executed_dir / f"{n}.ipynb").read_text())["metadata"].get("fewdims", {})
                 for n in chapters}
        computed = all(m.get("parameters", {}).get("compute", True) for m in pages.values())
        stamp = write_build_info(root, args.profile, computed, pages)
        config = write_config(root, args.out, stamp)
        t_html = time.perf_counter()
        build_html(root, args.out, config)
        html_seconds = time.perf_counter() - t_html
    except BuildError as err:
        log(f"FAILED: {err}")
        return 1
    n_pages, n_figures, per_page = count_pages(args.out / "html")
    (args.out / "book_stats.json").write_text(json.dumps(
        {"profile": args.profile, "pages": n_pages, "figures": n_figures, "per_page": per_page,
         "seconds": {"execute": round(exec_seconds, 1), "html": round(html_seconds, 1),
                     "total": round(time.perf_counter() - t_start, 1)}}, indent=1))
    log(f"book built with the {args.profile} profile: {args.out / 'html' / 'index.html'}")
    log(f"  {n_pages} pages, {n_figures} figures; execution {exec_seconds:.0f} s, HTML {html_seconds:.0f} s, "
        f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
