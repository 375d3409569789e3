"""The evaluation suites: which splits, task, target language and metrics each has, where its
prepared feature store must be, and what to run when it is not there.

Layout under ``--data-root`` (one feature store per split, as `smap prepare` writes it)::

    DATA_ROOT/<suite>/<split>/store.json      e.g. DATA_ROOT/europarl/en-fr/store.json
                                                   DATA_ROOT/librispeech/test-clean/store.json

A store folder may be a symlink to a store prepared elsewhere. Its features must come from the
encoder the evaluated model was trained on.

Your own data: ``--suite`` also takes the path of a store folder (``smap prepare --dataset
my.jsonl --out data/mine/test``), read where it is, whatever ``--data-root``. It is keyed by its
last two path parts (``mine/test``) and its task follows its records' fields (`own_split`).

Fields each task reads from a store's records: ``text`` (transcript: the ASR reference, the ST
source for COMET, the passage the `transcript` system reads); ``translation`` (ST reference);
``question`` and ``answer`` (SQA; a multiple-choice set's options in ``choices`` or written into
the question as "(A) ... (B) ..."). A spoken-question split (`Split.prompt`) has no ``question``:
the speech is the question and ``text`` its transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from smap.data.store import STORE_FILE, FeatureStore, StoreError
from smap.prompts import SPOKEN_QUESTION

# Metric names, in the order a split prefers them for its headline figure. `comet` and
# `judged` are computed only when a COMET model or judges are given.
METRICS = ("wer", "comet", "bleu", "chrf", "adherence", "judged", "exact_choice", "exact_match", "answer_in_output",
           "topline_answered")


@dataclass(frozen=True)
class Split:
    suite: str
    name: str
    task: str
    metrics: tuple[str, ...]
    tgt_lang: str | None = None  # ST only
    prompt: str | None = None  # SQA on a spoken question: the instruction (the question is the speech)
    optional: bool = False  # absent data is noted, not counted as a failure
    paper: dict[str, float] = field(default_factory=dict)  # SpeechMapper's figures in the paper
    get: str = ""  # what to fetch by hand, if anything, before `smap prepare`
    prepare: str = ""  # `smap prepare --dataset` and its arguments, before --encoder and --out
    path: str | None = None  # a store given by its folder (your own data): read there, not under --data-root

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def needs(self) -> tuple[str, ...]:
        """Record fields this split's task and metrics read."""
        if self.task == "st":
            return ("text", "translation")
        if self.task == "sqa":
            return ("text", "answer") if self.prompt else ("text", "question", "answer")
        return ("text",)

    def store_dir(self, data_root: str | Path) -> Path:
        return Path(self.path) if self.path else Path(data_root) / self.suite / self.name

    def missing(self, data_root: str | Path, encoder: str | None = None) -> str | None:
        """None if the store is there, else one line: what is missing and how to make it."""
        store = self.store_dir(data_root)
        if (store / STORE_FILE).is_file():
            return None
        cmd = f"smap prepare --dataset {self.prepare} --encoder {encoder or 'ENCODER_OF_YOUR_MODEL'} --out {store}"
        get = f"get {self.get}, then " if self.get else ""
        return f"{self.key}: no feature store at {store / STORE_FILE}; {get}run: {cmd}"


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    splits: tuple[Split, ...]


_ST = ("comet", "bleu", "chrf", "adherence")
_EUROPARL = "the EuroParl-ST v1.1 release (https://www.mllp.upv.es/europarl-st/) unpacked into DIR"
_COVOST = ("Common Voice English v4 clips/ (https://commonvoice.mozilla.org/datasets) and "
           "covost_v2.en_{tgt}.tsv (https://dl.fbaipublicfiles.com/covost/covost_v2.en_{tgt}.tsv.tar.gz) into DIR")
_LIBRISPEECH = "LibriSpeech test-clean (https://www.openslr.org/12) unpacked into DIR"
_SPOKEN_SQUAD = ("Spoken-SQuAD (https://github.com/chiahsuan156/Spoken-SQuAD): spoken_test-v1.1.json and "
                 "dev_wav/ into DIR")

SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("europarl", "EuroParl-ST", tuple(
        Split("europarl", f"en-{tgt}", "st", _ST, tgt_lang=tgt, paper={"comet": paper}, get=_EUROPARL,
              prepare=f"europarl-st --data-dir DIR --pair en-{tgt} --split test")
        for tgt, paper in (("fr", 84.5), ("de", 82.2), ("es", 85.4), ("it", 85.5))
    )),
    Suite("covost2", "CoVoST 2", tuple(
        Split("covost2", f"en-{tgt}", "st", _ST, tgt_lang=tgt, paper=paper, get=_COVOST.format(tgt=tgt),
              prepare=f"covost2 --data-dir DIR --pair en-{tgt} --split test")
        for tgt, paper in (("de", {"comet": 77.0}), ("zh", {"comet": 79.9}))
    )),
    Suite("librisqa", "LibriSQA", (
        Split("librisqa", "part1", "sqa", ("judged",), paper={"judged": 83.2}, get=_LIBRISPEECH,
              prepare="librisqa --data-dir DIR --part 1 --split test"),
        # Multiple choice: options in `choices`, or written into the question ("(A) ...").
        Split("librisqa", "part2", "sqa", ("exact_choice",), optional=True, get=_LIBRISPEECH,
              prepare="librisqa --data-dir DIR --part 2 --split test"),
    )),
    Suite("librispeech", "LibriSpeech", tuple(
        Split("librispeech", name, "asr", ("wer",), paper={"wer": paper}, prepare=f"librispeech --split {name}")
        for name, paper in (("test-clean", 2.9), ("test-other", 5.8))
    )),
    Suite("fleurs", "FLEURS", (
        Split("fleurs", "en", "asr", ("wer",), paper={"wer": 10.7}, prepare="fleurs --lang en_us --split test"),
    )),
    Suite("spokensquad", "Spoken-SQuAD", (
        Split("spokensquad", "test", "sqa", ("judged", "exact_match"), get=_SPOKEN_SQUAD,
              prepare="spoken-squad --data-dir DIR --split test"),
    )),
    Suite("tts", "synthetic speech (embedded default)", (
        # Held-out sentences in held-out voices, and the same sentences from a synthesiser family no
        # training utterance uses (Flite); everyday English beside the in-domain text; and spoken
        # factual questions with one-word answers.
        Split("tts", "test", "asr", ("wer",), prepare="tts --split test"),
        Split("tts", "test-flite", "asr", ("wer",), optional=True, prepare="tts --split test-flite"),
        Split("tts", "everyday", "asr", ("wer",), optional=True, prepare="tts --split everyday"),
        Split("tts", "test-qa", "sqa", ("topline_answered", "answer_in_output", "exact_match", "judged"), optional=True,
              prompt=SPOKEN_QUESTION, prepare="tts --split test-qa"),
    )),
)}


class SuiteError(ValueError):
    """An unknown suite or split name."""


# What your own store is scored on, by task: the metrics of the built-in splits of that task.
_SQA = ("judged", "exact_match")  # as spokensquad/test
_SQA_CHOICE = ("exact_choice",)  # as librisqa/part2
_SPOKEN_QUESTION = next(s.metrics for s in SUITES["tts"].splits if s.prompt)  # as tts/test-qa


def own_split(folder: str | Path) -> Split:
    """A split for the store in `folder`, its task chosen by the fields every record has:
    ``translation`` (and one ``tgt_lang``) -> ST; ``question`` and ``answer`` -> SQA (exact
    choice when records have ``choices``); ``answer`` alone -> a spoken question, as tts/test-qa;
    else ASR. Keyed by the folder's last two path parts; a built-in split of that key (a store
    of the standard layout given by its path) keeps its own task, metrics and paper figures."""
    folder = Path(folder).expanduser()
    try:
        store = FeatureStore(folder)
    except (StoreError, OSError, ValueError) as e:  # a damaged store: named, in one line
        raise SuiteError(f"--suite {folder}: {str(e).splitlines()[0]}") from None
    if not store.records:
        raise SuiteError(f"--suite {folder}: the store holds no utterances")
    full = folder.resolve()
    suite, name = full.parent.name or "own", full.name
    builtin = next((s for s in SUITES[suite].splits if s.name == name), None) if suite in SUITES else None
    if builtin:
        return replace(builtin, path=str(folder))
    common = set.intersection(*({k for k, v in r.items() if v not in (None, "", [])} for r in store.records))
    meta = store.info.meta
    prepare = meta.get("source", "YOUR_MANIFEST") + (f" --split {meta['split']}" if meta.get("split") not in (None, "all") else "")
    own = dict(suite=suite, name=name, prepare=prepare, path=str(folder))
    if "translation" in common:
        langs = sorted({r.get("tgt_lang") for r in store.records} - {None, ""})
        if len(langs) != 1:
            raise SuiteError(f"--suite {folder}: an ST store needs one tgt_lang in its records, found "
                             f"{', '.join(langs) or 'none'}; prepare one store per target language, each row with tgt_lang")
        return Split(task="st", metrics=_ST, tgt_lang=langs[0], **own)
    if {"question", "answer"} <= common:
        return Split(task="sqa", metrics=_SQA_CHOICE if "choices" in common else _SQA, **own)
    if "answer" in common:
        return Split(task="sqa", metrics=_SPOKEN_QUESTION, prompt=SPOKEN_QUESTION, **own)
    return Split(task="asr", metrics=("wer",), **own)


def select(spec: str) -> list[Split]:
    """Splits named by a comma list of suites ("europarl,covost2"), splits ("europarl/en-fr") or
    store folders ("data/mine/test", see `own_split`)."""
    chosen: list[Split] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, split = item.partition("/")
        splits = SUITES[name].splits if name in SUITES else ()
        if split:
            splits = tuple(s for s in splits if s.name == split)
        if not splits:
            if (Path(item).expanduser() / STORE_FILE).is_file():
                splits = (own_split(item),)
            elif name in SUITES:
                names = ", ".join(s.name for s in SUITES[name].splits)
                raise SuiteError(f"--suite: {name} has no split {split!r}; it has {names}")
            elif Path(item).expanduser().exists() or item.count("/") > 1 or item.startswith((".", "/", "~")):
                raise SuiteError(f"--suite {item}: no {STORE_FILE} there, so not a feature store (make one with "
                                 f"`smap prepare --out {item}`), and not a suite ({', '.join(SUITES)})")
            else:
                raise SuiteError(f"--suite: unknown suite {name!r}; choose from {', '.join(SUITES)}, or give a "
                                 f"feature store folder (one with {STORE_FILE}, from `smap prepare`)")
        for s in splits:
            twin = next((c for c in chosen if c.key == s.key), None)
            if twin is None:
                chosen.append(s)
            elif twin != s:
                raise SuiteError(f"--suite: {twin.path or twin.key} and {s.path or s.key} would both be reported as "
                                 f"{s.key}; give one of them another folder name")
    if not chosen:
        raise SuiteError("--suite: no suite given")
    return chosen
