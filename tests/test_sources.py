"""Every sentence the book attributes to a paper is in the text we hold (../shared/papers), word for word."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from fewdims.sources import ABSTRACT_FK, ABSTRACT_PHANG, SOURCES, SUMMARY_FK, source_of

PAPERS = Path(__file__).resolve().parents[1].parent / "shared" / "papers"
FILES = {ABSTRACT_FK: "000_78e020b6de0bf080.txt", SUMMARY_FK: "001_64d7b0765cc84d1f.txt",
         ABSTRACT_PHANG: "002_4b66dc276cbca7d3.txt"}


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize("key", sorted(SOURCES))
def test_quote_is_in_the_text_we_hold(key):
    source = SOURCES[key]
    path = PAPERS / FILES[source.where]
    if not path.exists():
        pytest.skip(f"{path} not found: the paper texts live in ../shared/papers")
    assert normalised(source.quote) in normalised(path.read_text()), f"{key}: not found in {path.name}"
    assert source.authors == (source.where != SUMMARY_FK)


def test_every_claim_of_the_book_has_a_source():
    from fewdims.chapters.summary import all_claims

    for claim in all_claims({}):
        if claim["paper"].startswith(("Fukuhata", "Phang")):
            assert source_of(claim) is not None, claim["claim"]
