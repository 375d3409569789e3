"""Text normalisation shared by Stage-1 targets and by WER (both sides get the same one), and WER
itself: training's validation scores with it too, so it lives below `smap.evaluate`."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, strip punctuation and symbols, collapse whitespace (MMS-style).

    Apostrophes inside words are kept ("don't"), since they change the word; all other
    punctuation becomes a space so that "well-known" gives two words, as a speaker says them.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch == "'" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(ch)
        elif cat[0] in "PS":
            out.append(" ")
        else:
            out.append(ch)
    return _SPACES.sub(" ", "".join(out)).strip()


class MetricError(ValueError):
    """Inputs a metric cannot score, or a metric model that cannot be loaded."""


def check_parallel(*lists: Sequence) -> int:
    """The common length of lists scored together; MetricError if they differ or are empty."""
    n = len(lists[0])
    if any(len(x) != n for x in lists):
        raise MetricError(f"lists of different lengths: {[len(x) for x in lists]}")
    if n == 0:
        raise MetricError("nothing to score")
    return n


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER in percent: (substitutions + deletions + insertions) / reference words, after
    `normalize` on both sides."""
    check_parallel(refs, hyps)
    import jiwer

    refs_n, hyps_n = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    if not any(refs_n):
        raise MetricError("every reference is empty after normalisation; WER is undefined")
    return 100.0 * jiwer.process_words(refs_n, hyps_n).wer
