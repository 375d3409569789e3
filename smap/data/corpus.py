"""The synthetic `tts` corpus: English sentences spoken by eSpeak NG, SVOX Pico and Flite, planned from a seed.

Text (smap/resources/, provenance and licences in README.md there):
  * wordnet_sentences.txt: 33k usage examples from WordNet 3.0, one or more for each sense of
    nouns, verbs, adjectives and adverbs, written by lexicographers to show ordinary use. They
    span the whole vocabulary, not one domain: the training text and the in-domain test.
  * everyday_sentences.txt: 189 everyday sentences (requests, plans, small talk) written for
    smap: a test of another register than the training text.
  * qa.tsv: 236 short factual questions with one-word answers (capitals, opposites, sequences,
    arithmetic, plurals, general facts) for a spoken-question task.
  * qa_vocabulary_sentences.txt: 539 sentences written for smap that use the words of the training
    questions that the WordNet text lacks (countries, months, days, animals...), none a question or
    its answer: with `qa_vocab_voices`, training text, so that a word of a held-out question that
    the training questions also use was heard. A word only the held-out questions (or their answers)
    use is in none of them: `held_out_only_words`; `plan` drops any sentence with one (another seed
    holds out other questions).

Splits (`SPLITS`), disjoint in their sentences (compared after `normalize`) but for test-flite:
  train          WordNet sentences (then, with `qa_vocab_voices`, the question-vocabulary
                 sentences), training voices
  dev            held-out WordNet sentences, training voices (validation while training)
  test           held-out WordNet sentences, held-out voices (in-domain test)
  everyday       everyday sentences, held-out voices
  train-qa       questions, training voices (`voices_per_question` each); records carry ``answer``
  test-qa        held-out questions, held-out voices
  test-flite     the `test` sentences again, spoken by Flite: a synthesiser family that no
                 training utterance uses (the only split that shares its sentences with another)
For the question splits the speech is the question itself: ``text`` is its transcript, ``answer``
the expected reply, and there is no separate ``question`` field.

Voices (see smap.synth): the training splits (train, dev, train-qa) draw from the families of
`CorpusConfig.synthesizers`, by their shares: eSpeak accents and variants ('en-us+m3') and Pico's
two voices ('pico:en-US'), which the drawn rate and pitch vary from utterance to utterance. test,
everyday and test-qa are spoken by eSpeak variants (speakers) never heard in training, as before
Pico joined (the same utterances for the same seed); test-flite by Flite's voices. Planning draws
sentences, voices, rates and pitches from the seed and is cheap; synthesis is a pure function of
(text, voice, rate, pitch), so the same seed and sizes give the same audio, whatever else is
prepared, resumed or skipped. `CorpusConfig.augment` adds signal effects (speed, noise, band-limiting)
to training utterances, drawn per utterance as well; off by default.
"""

from __future__ import annotations

import collections
import csv
import functools
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from smap.audio import EFFECTS
from smap.synth import FLITE_VOICES, PICO_VOICES
from smap.text import normalize

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SPLITS = ("train", "dev", "test", "everyday", "train-qa", "test-qa", "test-flite")
TRAINING_VOICE_SPLITS = ("train", "dev", "train-qa")  # spoken by `CorpusConfig.synthesizers`
TRAINING_FAMILIES = ("espeak", "pico")  # flite is held out: the test-flite split

# Chosen by Whisper tiny.en's word error rate on eSpeak speech (greedy decoding, 30 s window), so
# that the features carry the words. Variants, measured in en-us on ten sentences: those it
# understands best, men's and women's (10-26%); left out are those it mostly fails on (whisper,
# croak, the robot voices: 40-90%). Held-out variants come from families (iven, iven2, ...) absent
# from training. Accents, over four variants: en-us 14%; en-us-nyc 33%, en (British) 31%,
# en-gb-x-rp 35%, en-gb-x-gbclan 34%, en-029 43%, en-gb-scotland 43%: en-us by default, the others
# on request (CorpusConfig.accents, `smap prepare --accents`).
ACCENTS = ("en-us",)
TRAIN_VARIANTS = ("m1", "m2", "m5", "m6", "m7", "Michael", "Mario", "Denis", "iven", "iven3", "Gene", "Nguyen",
                  "robert", "f2", "f3", "anika")
TEST_VARIANTS = ("Henrique", "Mike", "edward", "steph")
# eSpeak keeps most of the training speech: its 16 variants are what the held-out eSpeak voices
# (test, everyday, test-qa) are measured against, and 70% still gives each about 130 of 3,000
# utterances. Pico's 30% gives each of its two voices about 450, over a spread of tempi and pitches:
# a second family with enough of each voice to learn it. Not tuned: measure other shares.
SYNTHESIZERS = (("espeak", 0.7), ("pico", 0.3))
# CorpusConfig.augment's draws: speed factors around 1 as in Kaldi's speed perturbation (in steps
# of 0.01), noise SNR from clearly there (10 dB) to barely audible (30 dB), and one of two
# sampling rates to band-limit to: telephone (8 kHz) and AM-radio-like (11.025 kHz).
AUGMENT_RANGES = {"speed": (0.9, 1.1), "noise": (10.0, 30.0), "band": (8000, 11025)}


@dataclass(frozen=True)
class Utterance:
    """One planned utterance; `synthesize` makes its audio."""

    id: str
    text: str
    voice: str
    rate: int
    pitch: int
    split: str
    answer: str | None = None
    effects: tuple[tuple[str, float], ...] = ()  # signal effects after synthesis (smap.audio.apply_effects)

    def record(self) -> dict:
        """The store record without duration and frames, which prepare adds."""
        rec = {"id": self.id, "text": self.text, "speaker": self.voice, "split": self.split, "src_lang": "en"}
        if self.answer is not None:
            rec["answer"] = self.answer
        return rec

    def synthesize(self, sr: int = 16000) -> torch.Tensor:
        """(samples,) float32 at `sr`; the effects, if any, are applied at 16 kHz, their noise
        drawn from a seed that the utterance's own fields give."""
        from smap.audio import apply_effects, resample
        from smap.synth import synthesize

        if not self.effects:
            return synthesize(self.text, self.voice, self.rate, self.pitch, sr)
        wav = synthesize(self.text, self.voice, self.rate, self.pitch, 16000)
        seed = zlib.crc32(repr((self.id, self.text, self.voice, self.rate, self.pitch)).encode())
        return resample(apply_effects(wav, 16000, self.effects, seed), 16000, sr)


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes are numbers of sentences; a training sentence is spoken `voices_per_sentence` times.

    vocab: held-out sentences (dev, test) use only the `vocab` most frequent words of the WordNet
    text (None: no limit), and so do training sentences while there are any (about 9.8k at 5000):
    fewer rare words to learn, and test sentences whose words the training text covers. A larger
    `train` goes on with the other sentences, those whose rarest word is commonest first, so that
    asking for more training text never moves the test sentences.
    qa_vocab_voices: training voices speaking each question-vocabulary sentence, appended to train
    (0: none). The train utterances before them do not change.
    synthesizers: (family, share) of the training voices (train, dev, train-qa), families from
    TRAINING_FAMILIES; shares are normalised. With one family the plan is the one from before
    families existed: eSpeak alone gives that corpus again.
    augment: signal effects for the training utterances (train, train-qa), from smap.audio.EFFECTS:
    each utterance gets each one with probability 1/2, its value drawn from AUGMENT_RANGES (speed
    factor, noise SNR in dB, band-limiting rate in Hz). Off by default: not yet measured. The
    draws have their own random stream, so the voices, rates and pitches stay those without it.
    """

    seed: int = 0
    train: int = 3000
    dev: int = 200
    test: int = 300
    everyday: int = 189
    qa_test_fraction: float = 0.25
    voices_per_sentence: int = 1
    voices_per_question: int = 8  # train-qa: a few hundred questions, so each is heard in several voices
    vocab: int | None = 5000
    qa_vocab_voices: int = 0
    rate: tuple[int, int] = (140, 200)  # words per minute, uniform
    pitch: tuple[int, int] = (35, 65)  # eSpeak's 0-100 scale, uniform
    accents: tuple[str, ...] = ACCENTS
    train_variants: tuple[str, ...] = TRAIN_VARIANTS
    test_variants: tuple[str, ...] = TEST_VARIANTS
    synthesizers: tuple[tuple[str, float], ...] = SYNTHESIZERS
    augment: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("train", "dev", "test", "everyday", "voices_per_sentence", "voices_per_question",
                     "qa_vocab_voices"):
            if getattr(self, name) < 0:
                raise ValueError(f"tts corpus: {name}={getattr(self, name)} must not be negative")
        if not self.accents or not self.train_variants or not self.test_variants:
            raise ValueError("tts corpus: needs at least one accent, one training and one held-out variant")
        families = [f for f, _ in self.synthesizers]
        if not families or len(set(families)) < len(families) or set(families) - set(TRAINING_FAMILIES):
            raise ValueError(f"tts corpus: synthesizers {self.synthesizers}: name each of "
                             f"{', '.join(TRAINING_FAMILIES)} at most once (flite is held out for test-flite)")
        if set(self.augment) - set(EFFECTS) or len(set(self.augment)) < len(self.augment):
            raise ValueError(f"tts corpus: augment {self.augment}: name each of {', '.join(EFFECTS)} at most once")
        if not all(share > 0 for _, share in self.synthesizers):
            raise ValueError(f"tts corpus: synthesizers {self.synthesizers}: every share must be positive")
        voices = len(training_voices(self)[0])
        for name in ("voices_per_sentence", "voices_per_question", "qa_vocab_voices"):
            if getattr(self, name) > voices:
                raise ValueError(f"tts corpus: {name}={getattr(self, name)} exceeds the {voices} training voices")
        if set(self.train_variants) & set(self.test_variants):
            raise ValueError("tts corpus: a variant is both a training and a held-out test voice")


def training_voices(config: CorpusConfig) -> tuple[list[str], list[float] | None]:
    """The training voices and each one's weight in a draw: its family's share over the family's
    voices (None with one family, whose voices are drawn uniformly, as before families existed)."""
    pools = {"espeak": [f"{a}+{v}" for a in config.accents for v in config.train_variants],
             "pico": [f"pico:{v}" for v in PICO_VOICES]}
    total = sum(share for _, share in config.synthesizers)
    voices = [v for family, _ in config.synthesizers for v in pools[family]]
    weights = [share / total / len(pools[family]) for family, share in config.synthesizers for _ in pools[family]]
    return voices, (weights if len(config.synthesizers) > 1 else None)


def _draw(r: random.Random, voices: list[str], weights: list[float] | None, n: int) -> list[str]:
    """n distinct voices: uniformly without weights, else by weight without replacement
    (Efraimidis and Spirakis: the n voices with the largest u^(1/weight), u uniform in [0, 1))."""
    if weights is None:
        return r.sample(voices, n)
    keys = [r.random() ** (1 / w) for w in weights]
    return [voices[i] for i in sorted(range(len(voices)), key=keys.__getitem__, reverse=True)[:n]]


def _effects(r: random.Random, kinds: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """Each of `kinds` with probability 1/2, with a value from AUGMENT_RANGES, in EFFECTS' order."""
    out = []
    for kind in (k for k in EFFECTS if k in kinds):
        low, high = AUGMENT_RANGES[kind]
        value = r.choice((low, high)) if kind == "band" else round(r.uniform(low, high), 2 if kind == "speed" else 1)
        if r.random() < 0.5:
            out.append((kind, value))
    return tuple(out)


def read_lines(name: str) -> list[str]:
    """Non-empty lines of a text resource."""
    with open(RESOURCES / name, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_qa() -> list[dict]:
    """Rows of qa.tsv: question, answer, category."""
    with open(RESOURCES / "qa.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@functools.lru_cache(maxsize=1)
def _wordnet() -> tuple[tuple[str, str], ...]:
    """(sentence, normalised sentence) pairs, normalised once per process (about a second)."""
    return tuple((s, normalize(s)) for s in read_lines("wordnet_sentences.txt"))


@functools.lru_cache(maxsize=1)
def _rarest_word_ranks() -> tuple[int, ...]:
    """Per WordNet sentence, the frequency rank in the WordNet text (1: the most frequent word) of
    its rarest word."""
    pairs = _wordnet()
    counts = collections.Counter(w for _, n in pairs for w in n.split())
    rank = {w: i for i, (w, _) in enumerate(counts.most_common(), 1)}
    return tuple(max((rank[w] for w in n.split()), default=0) for _, n in pairs)


def _common_words(vocab: int | None) -> list[tuple[str, str]]:
    """(sentence, normalised) pairs whose words are all among the `vocab` most frequent (None: all)."""
    return [p for p, k in zip(_wordnet(), _rarest_word_ranks()) if vocab is None or k <= vocab]


def _rarer_words(vocab: int, seed: int) -> list[tuple[str, str]]:
    """The pairs `_common_words(vocab)` leaves out, those whose rarest word is commonest first (ties
    in a seeded order)."""
    rest = [(k, p) for p, k in zip(_wordnet(), _rarest_word_ranks()) if k > vocab]
    random.Random(f"smap-tts-{seed}-rarer").shuffle(rest)
    return [p for _, p in sorted(rest, key=lambda kp: kp[0])]


def _words(texts) -> set[str]:
    return {w for t in texts for w in normalize(t).split()}


def held_out_only_words(train: list[str], qa_train: list[dict], qa_test: list[dict]) -> set[str]:
    """Words (normalised) of the held-out questions and answers that neither the training
    questions and answers nor the training sentences `train` hold."""
    seen = _words(train) | _words(r[k] for r in qa_train for k in ("question", "answer"))
    return _words(r[k] for r in qa_test for k in ("question", "answer")) - seen


def plan(config: CorpusConfig = CorpusConfig()) -> dict[str, list[Utterance]]:
    """Every split's utterances, in a fixed order; raises ValueError if the text runs out."""
    rng = random.Random(f"smap-tts-{config.seed}")
    everyday = read_lines("everyday_sentences.txt")
    qa = read_qa()
    qa_vocab = read_lines("qa_vocabulary_sentences.txt")
    reserved = {normalize(s) for s in everyday + qa_vocab} | {normalize(r["question"]) for r in qa}
    pool = [s for s, n in _common_words(config.vocab) if n not in reserved]
    rng.shuffle(pool)
    held_out = config.test + config.dev
    if held_out > len(pool):
        raise ValueError(f"tts corpus: {held_out} held-out WordNet sentences asked (dev {config.dev}, test "
                         f"{config.test}) but only {len(pool)} have all their words in the top {config.vocab} "
                         f"(vocab); ask for fewer or raise vocab")
    # Test first, so that the test sentences stay the same when the training size changes.
    test, dev, train = pool[: config.test], pool[config.test: held_out], pool[held_out: held_out + config.train]
    if len(train) < config.train and config.vocab is not None:
        train += [s for s, n in _rarer_words(config.vocab, config.seed) if n not in reserved][: config.train - len(train)]
    if len(train) < config.train:
        raise ValueError(f"tts corpus: {config.train} training sentences asked but the WordNet text holds "
                         f"{len(train)} besides the held-out ones; ask for fewer")
    rng.shuffle(everyday)
    everyday = everyday[: config.everyday]
    by_category: dict[str, list[dict]] = collections.defaultdict(list)
    for row in qa:
        by_category[row["category"]].append(row)
    qa_train, qa_test = [], []
    for category in sorted(by_category):
        rows = by_category[category]
        rng.shuffle(rows)
        cut = round(len(rows) * config.qa_test_fraction)
        qa_test += rows[:cut]
        qa_train += rows[cut:]

    extra = []
    if config.qa_vocab_voices:  # no sentence may teach a word that only the held-out questions use
        unseen = held_out_only_words(train, qa_train, qa_test)
        extra = [s for s in qa_vocab if not _words([s]) & unseen]
    train_voices = training_voices(config)
    test_voices = [f"{a}+{v}" for a in config.accents for v in config.test_variants], None

    def speak(split: str, texts: list[str], voices: tuple[list[str], list[float] | None],
              per_text: int | list[int] = 1, answers: list[str] | None = None,
              pitch: tuple[int, int] = config.pitch, augment: tuple[str, ...] = ()) -> list[Utterance]:
        """voices: names and weights (`training_voices`); per_text: voices per text, for all or for each."""
        r = random.Random(f"smap-tts-{config.seed}-{split}")  # one stream per split: sizes elsewhere don't matter
        r_effects = random.Random(f"smap-tts-{config.seed}-{split}-augment")  # on or off, the voices stay
        counts = per_text if isinstance(per_text, list) else [per_text] * len(texts)
        out = []
        for j, (text, n) in enumerate(zip(texts, counts, strict=True)):
            for voice in _draw(r, *voices, n):
                out.append(Utterance(f"tts-{split}-{len(out):05d}", text, voice, r.randint(*config.rate),
                                     r.randint(*pitch), split, answers[j] if answers else None,
                                     _effects(r_effects, augment)))
        return out

    return {
        # the question-vocabulary sentences last, so that the draws for the others do not change
        "train": speak("train", train + extra, train_voices,
                       [config.voices_per_sentence] * len(train) + [config.qa_vocab_voices] * len(extra),
                       augment=config.augment),
        "dev": speak("dev", dev, train_voices),
        "test": speak("test", test, test_voices),
        "everyday": speak("everyday", everyday, test_voices),
        "train-qa": speak("train-qa", [r["question"] for r in qa_train], train_voices, config.voices_per_question,
                          answers=[r["answer"] for r in qa_train], augment=config.augment),
        "test-qa": speak("test-qa", [r["question"] for r in qa_test], test_voices,
                         answers=[r["answer"] for r in qa_test]),
        # Flite keeps its voices' own pitch: 50 is the neutral value on eSpeak's scale.
        "test-flite": speak("test-flite", test, ([f"flite:{v}" for v in FLITE_VOICES], None), pitch=(50, 50)),
    }


def describe(utterances: dict[str, list[Utterance]]) -> dict:
    """Per split: utterances, distinct sentences and voices, and the share of its running words
    that occur in the training text (how much of a test the training vocabulary covers)."""
    train_words = {w for u in utterances.get("train", []) for w in normalize(u.text).split()}
    out = {}
    for split, utts in utterances.items():
        words = [w for u in utts for w in normalize(u.text).split()]
        out[split] = {
            "utterances": len(utts),
            "sentences": len({u.text for u in utts}),
            "voices": len({u.voice for u in utts}),
            "train_word_coverage": round(sum(w in train_words for w in words) / max(1, len(words)), 4),
        }
    return out
