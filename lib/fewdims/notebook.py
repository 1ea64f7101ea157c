"""Open a chapter from a notebook's parameters in one call.

    profile = "cpu"    # the parameters cell: papermill injects every -p NAME VALUE after it
    compute = True
    ...
    page = open_chapter("dimension", globals())

Every name the notebook's namespace holds at that point (the parameters cell and papermill's injected cell) is a
parameter: `profile` and `compute` choose the edition and whether missing runs are trained; a notebook's own
display options (e.g. cka's `representation`) are read here; every other name goes to `load_profile(...,
chapter=name)`, which routes it to the chapter's section or the profile's top level and rejects an unknown name
with the list of known ones. Nothing passed is silently ignored.
"""
from __future__ import annotations

import functools
import types
import warnings
from dataclasses import dataclass, field

from .errors import FewdimsError
from .profiles import BOOK_PAGES, Profile, load_profile
from .runner import Runner

# Options of a page that are not profile keys: how the page draws what is stored.
DISPLAY_OPTIONS = {"cka": {"representation": "cls"}, "summary": {"representation": "cls"},
                   "glance": {"representation": "cls"}}
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_parameters(namespace: dict) -> dict:
    """The parameters in a notebook's namespace: its plain values (not modules, functions, classes, IPython's own
    names or names starting with an underscore)."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in _IPYTHON_NAMES
            and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
            and not callable(v)}


@dataclass
class Page:
    """One chapter page: its profile, runner, the parameters it was executed with, and its results."""

    chapter: str
    profile: Profile
    runner: Runner
    parameters: dict                  # as passed (profile and compute included), for the provenance line
    options: dict = field(default_factory=dict)

    @functools.cached_property
    def results(self):
        """The chapter's results (summary / setup: every chapter's, as `chapters.summary.collect`)."""
        if self.chapter in BOOK_PAGES:  # pages that read every chapter's results
            return self.records[0]
        from .chapters import open_chapter as build

        return build(self.chapter, self.profile, self.runner).results()

    @functools.cached_property
    def records(self) -> tuple[dict, dict]:
        """(every chapter's results, every record the runner handed out for them)."""
        from .provenance import grid_records

        return grid_records(self.profile, self.runner)

    def provenance(self) -> str:
        from .provenance import provenance

        return provenance(self.parameters, self.runner) + self.tasks_left_out()

    def incomplete_note(self) -> str:
        """A warning for the top of a verdict page whose grid is not all stored (compute=False before the grid is
        complete), else ''."""
        _ = self.results  # asks the runner for every record the page reads
        missing = self.runner.missing
        if not missing:
            return ""
        return (f"**This page reads an incomplete grid**: {self.runner.reused} runs are stored and at least "
                f"{len(missing)} are not computed yet (runs chosen from other runs' results are counted once those "
                "exist). A claim whose runs are missing says *not tested*; a verdict that rests on fewer seeds or "
                "tasks than the profile asks for may change as the rest lands. The provenance line at the end lists "
                "the first missing runs.")

    def warn_if_incomplete(self) -> None:
        note = self.incomplete_note()
        if note:
            from IPython.display import Markdown, display

            display(Markdown(note))

    def tasks_left_out(self) -> str:
        """' This chapter leaves out RTE ...' where the chapter's section narrows the profile's tasks, else ''."""
        if self.chapter in BOOK_PAGES:
            return ""
        from .tasks import get_task

        kept = self.profile.chapter_tasks(self.chapter)
        left_out = [t for t in self.profile.tasks if t not in kept]
        if not left_out:
            return ""
        names = ", ".join(get_task(t).display for t in left_out)
        return (f" This chapter leaves out the profile's {names} (`{self.chapter}.tasks` in notebooks/params/"
                f"{self.profile.name}.yml says why; `-p tasks ...` runs it).")


def open_chapter(chapter: str, namespace: dict) -> Page:
    """Read the parameters from `namespace` (a notebook's `globals()`), check them, set up plotting and return the
    chapter's Page (results are computed on first access)."""
    params = notebook_parameters(namespace)
    options = dict(DISPLAY_OPTIONS.get(chapter, {}))
    for key in options:
        if key in params and params[key] is not None:
            options[key] = params.pop(key)
    profile_name = params.pop("profile", "cpu")
    compute = params.pop("compute", True)
    if not isinstance(compute, bool):
        raise FewdimsError(f"compute must be True or False, got {compute!r}")
    profile = load_profile(profile_name, chapter=chapter, **params)
    _set_up_display()
    shown = {"profile": profile_name, "compute": compute, **{k: v for k, v in params.items() if v is not None},
             **options}
    return Page(chapter, profile, Runner(profile, allow_compute=compute), shown, options)


def _set_up_display() -> None:
    import pandas as pd

    from .figures import use_style

    warnings.filterwarnings("ignore")
    use_style()
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 1000)  # a book table shows every row (pandas elides beyond 60 by default)
