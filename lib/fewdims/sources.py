"""Where each claim comes from: the sentence of the text we hold (../shared/papers), and which kind of text it is.

Neither paper's tables are available to us. For Fukuhata & Kano (2025) we hold the abstract (the authors' words)
and a third-party summary (not the authors' words: whatever the book takes only from it is labelled so); for
Phang, Liu & Bowman (2021) the abstract. A claim the book tests with a choice of its own (a margin, which tasks are
"harder", subset sizes) names that choice beside the verdict, never here.
"""
from __future__ import annotations

from dataclasses import dataclass

ABSTRACT_FK = "Fukuhata & Kano (2025), abstract (arXiv 2504.04966)"
SUMMARY_FK = "Fukuhata & Kano (2025), per a third-party summary (not the authors' text)"
ABSTRACT_PHANG = "Phang, Liu & Bowman (2021), abstract (arXiv 2109.08406)"


@dataclass(frozen=True)
class Source:
    quote: str      # the sentence as the text we hold has it
    where: str      # which text: the authors' abstract or a third-party summary
    authors: bool   # True when the sentence is the authors' own words


# Keyed by the chapter and claim the book tests (the claim constants of fewdims.chapters.*).
SOURCES: dict[str, Source] = {
    "token": Source("Max-pooling token selection matches CLS performance on 7/8 GLUE tasks", SUMMARY_FK, False),
    "token-abstract": Source("outputs other than the CLS vector in the final layer contain equivalent information",
                             ABSTRACT_FK, True),
    "few_dims": Source("most tasks require only 2-3 dimensions", ABSTRACT_FK, True),
    "selected_vs_random": Source("Searching for \"Effective Dimensions\" is computationally expensive but yields "
                                 "minimal footprint; random selection is cheap but ineffective", SUMMARY_FK, False),
    "layer": Source("while the contribution of lower layers decreases, there is little difference among higher "
                    "layers", ABSTRACT_FK, True),
    "freezing": Source("Freezing pretrained layers causes performance collapse on complex tasks", SUMMARY_FK, False),
    "cross": Source("Sequential fine-tuning shows no degradation compared to direct training", SUMMARY_FK, False),
    "forgetting": Source("\"forgetting\" is mitigated by the model having enough redundant dimensions to overwrite "
                         "old tasks without erasing capacity needed for new ones", SUMMARY_FK, False),
    "cka_block": Source("we discover a consistent block diagonal structure in the similarity of representations "
                        "within fine-tuned RoBERTa and ALBERT models, with strong similarity within clusters of "
                        "earlier and later layers, but not between them", ABSTRACT_PHANG, True),
    "layer_drop": Source("the top few layers of fine-tuned Transformers can be discarded without hurting "
                         "performance, even with no further tuning", ABSTRACT_PHANG, True),
}


def source_of(claim: dict) -> Source | None:
    """The source of a claim dict from a chapter (matched by its `source` key, else by its claim text)."""
    key = claim.get("source")
    if key in SOURCES:
        return SOURCES[key]
    from .chapters import cka, cross_finetune, dimension, freezing, layer, token

    by_text = {token.TOKEN_CLAIM: "token", dimension.FEW_DIMS_CLAIM: "few_dims",
               dimension.SELECTED_CLAIM: "selected_vs_random", layer.LAYER_CLAIM: "layer",
               freezing.FREEZING_CLAIM: "freezing", cross_finetune.CROSS_CLAIM: "cross",
               cka.BLOCK_CLAIM: "cka_block", cka.DROP_CLAIM: "layer_drop"}
    forgetting = getattr(cross_finetune, "FORGETTING_CLAIM", None)
    if forgetting:
        by_text[forgetting] = "forgetting"
    return SOURCES.get(by_text.get(claim.get("claim")))
