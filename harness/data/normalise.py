"""When two texts are the same text: one normalisation for every place that asks.

Two questions that differ only in case, spacing or Unicode form ("How do I X?", "how do  I x?", a
full-width "Ｘ") are one question: a model trained on one has seen the other. The BeaverTails loader keys
its de-duplication and its splits on this form, the split check (`harness.pipeline.split_evidence`) and the
leakage audit (`harness.data.audit`) count overlaps on it, so what the loader keeps apart the checks see
apart, and an overlap one of them counts the other counts too: they share this one function.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def normalise_text(text: str) -> str:
    """NFKC (compatibility forms: full-width letters, ligatures, non-breaking spaces), case folded, every run
    of whitespace one space, no leading or trailing space. NFKC first: it can produce characters that case
    folding and whitespace splitting then see."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def distinct(texts: Iterable[str]) -> set[str]:
    """The normalised forms of `texts`: the set two splits are compared on."""
    return {normalise_text(t) for t in texts}
