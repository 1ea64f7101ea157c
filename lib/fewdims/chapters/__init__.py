"""The book's chapters: each room holds its grid (which records it asks the runner for), its variants, its claims
and its tables. `open(name, profile, runner)` builds one; `EXPERIMENTS` lists the chapters that run experiments,
in the book's order (the summary and setup chapters read all of them)."""
from __future__ import annotations

from ..errors import FewdimsError
from .base import Chapter
from .cka import CkaChapter
from .cross_finetune import CrossFinetuneChapter
from .dimension import DimensionChapter
from .freezing import FreezingChapter
from .layer import LayerChapter
from .outliers import OutliersChapter
from .token import TokenChapter

CHAPTER_CLASSES: dict[str, type[Chapter]] = {c.name: c for c in (
    TokenChapter, DimensionChapter, LayerChapter, FreezingChapter, CrossFinetuneChapter, CkaChapter, OutliersChapter)}
EXPERIMENTS = tuple(CHAPTER_CLASSES)


def open_chapter(name: str, profile, runner=None) -> Chapter:
    if name not in CHAPTER_CLASSES:
        raise FewdimsError(f"unknown chapter {name!r}; chapters with experiments: {', '.join(EXPERIMENTS)}")
    return CHAPTER_CLASSES[name](profile, runner)
