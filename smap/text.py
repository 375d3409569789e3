"""Text normalisation shared by Stage-1 targets and by WER (both sides get the same one)."""

import re
import unicodedata

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
