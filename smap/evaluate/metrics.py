"""Scores of system outputs against references, each a corpus-level percentage (0-100).

- ASR: `wer` (jiwer, from `smap.text`) after `smap.text.normalize` on both sides, as the paper scores it.
- ST: `bleu` and `chrf` (sacrebleu, corpus level), `comet` (wmt22-comet-da x 100 through the
  optional unbabel-comet), and `adherence`: the share of outputs identified as the requested
  language, and the share identified as English (the zero-shot failure mode).
- SQA: judged accuracy (`judged_tally`) by one or more judge LLMs averaged, `exact_choice` for
  multiple-choice sets, `exact_match` for short answers, `answer_in_output` for short answers
  inside a chattier reply.

Every function takes parallel lists and refuses lists of different lengths or empty ones.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# `wer` and MetricError live in `smap.text`, as training validates with WER; imported for `metrics.wer`.
from smap.text import MetricError, normalize, wer  # noqa: F401
from smap.prompts import choice_label, labels_only
from smap.text import check_parallel as _check


# --- ST -----------------------------------------------------------------------------------

# sacrebleu's default 13a tokeniser leaves Chinese unsegmented; "zh" splits characters.
_BLEU_TOKENIZE = {"zh": "zh"}


def bleu(refs: Sequence[str], hyps: Sequence[str], tgt_lang: str | None = None) -> float:
    """Corpus BLEU (sacrebleu defaults, Chinese tokenised by character)."""
    _check(refs, hyps)
    from sacrebleu.metrics import BLEU

    return float(BLEU(tokenize=_BLEU_TOKENIZE.get(tgt_lang or "", "13a")).corpus_score(list(hyps), [list(refs)]).score)


def chrf(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus chrF (character 6-grams, beta 2: sacrebleu defaults)."""
    _check(refs, hyps)
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(hyps), [list(refs)]).score)


COMET_DEFAULT = "Unbabel/wmt22-comet-da"
# Its pins (numpy<2, transformers<5, huggingface-hub<1, torchmetrics<0.11) would undo our stack;
# without them it runs (see `_pooler_slot`). jsonargparse, pinned too, serves only its own CLI.
COMET_INSTALL = ("pip install --no-deps unbabel-comet==2.2.7 && pip install 'pytorch-lightning>=2,<3' "
                 "torchmetrics entmax 'sentencepiece>=0.2,<0.3' 'scipy<2'")


def load_comet(spec: str = COMET_DEFAULT, local_only: bool = False):
    """A COMET model from a folder (holding checkpoints/model.ckpt), a .ckpt file or a hub id.

    `local_only` never touches the network: a hub id must already be in the Hugging Face cache
    (wmt22-comet-da also needs xlm-roberta-large's tokenizer there).
    """
    try:
        import comet
    except ImportError:
        raise MetricError(f"COMET needs unbabel-comet, an optional extra: {COMET_INSTALL}") from None
    path = Path(spec).expanduser()
    if path.is_dir():
        ckpt = path / "checkpoints" / "model.ckpt"
    elif path.suffix == ".ckpt":
        ckpt = path
    elif spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise MetricError(f"--comet-model {spec}: no such folder or .ckpt file, and not a hub id")
    else:
        try:
            ckpt = Path(comet.download_model(spec, local_files_only=local_only))
        except Exception as e:  # comet turns every hub failure into KeyError
            where = "in the Hugging Face cache" if local_only else "on the hub or in the cache"
            raise MetricError(f"--comet-model {spec}: not found {where} ({type(e).__name__}); where the hub is "
                              f"reachable run `hf download {spec}`, or give the model's folder") from None
    if not ckpt.is_file():
        raise MetricError(f"--comet-model {spec}: no checkpoint at {ckpt}")
    try:
        model = comet.load_from_checkpoint(str(ckpt), local_files_only=local_only)
    except Exception as e:  # a damaged checkpoint or a missing encoder tokenizer: one line either way
        raise MetricError(f"--comet-model {spec}: could not load {ckpt} ({type(e).__name__}: {e})".splitlines()[0]) from None
    _pooler_slot(model.encoder.model)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # its banners on every predict
    return model


def _pooler_slot(hf_model) -> None:
    """Give unbabel-comet 2.2.7 the output tuple it unpacks under transformers 5.

    Its encoders unpack ``(last_hidden, pooler_output, hidden_states)``; transformers 5 drops the
    pooler slot of a model built without a pooler (Unbabel/COMET PR #262, unreleased), so put
    None back. A no-op under transformers 4.
    """
    forward = hf_model.forward

    def with_pooler_slot(*args, **kwargs):
        out = forward(*args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple):
            return out[0], None, out[1]
        return out

    hf_model.forward = with_pooler_slot


def comet(sources: Sequence[str], refs: Sequence[str], hyps: Sequence[str], model, batch_size: int = 16) -> float:
    """System-level COMET x 100 (the paper's scale), from a model with COMET's `predict`."""
    _check(sources, refs, hyps)
    import torch

    samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs)]
    pred = model.predict(samples, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0,
                         progress_bar=False)
    return 100.0 * float(pred.system_score)


# py3langid over a fixed set of widely written languages: on one-line outputs its full set of
# 97 labels picks rare neighbours ("hello world" -> Fulfulde, "yes" -> Walloon), and lingua did
# no better on short sentences here while costing a 96 MB wheel and 7 s to load.
LID_LANGUAGES = tuple(
    "ar bg ca cs da de el en es et eu fi fr ga gl hi hr hu it ja ko lt lv mt nl no pl pt ro ru "
    "sk sl sv tr uk zh".split()
)


class LanguageIdentifier:
    """Offline language identification (py3langid, loaded on first use)."""

    def __init__(self, languages: Sequence[str] = LID_LANGUAGES):
        self.languages = list(languages)
        self._model = None

    def __call__(self, texts: Sequence[str]) -> list[str | None]:
        if self._model is None:
            from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier as _LID

            self._model = _LID.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
            self._model.set_languages(self.languages)
        return [self._model.classify(t)[0] if t.strip() else None for t in texts]


def adherence(hyps: Sequence[str], tgt_lang: str,
              identify: Callable[[Sequence[str]], list[str | None]]) -> dict[str, float]:
    """{"target": % of outputs in `tgt_lang`, "english": % in English}; empty outputs count as neither."""
    n = _check(hyps)
    langs = identify(hyps)
    return {"target": 100.0 * sum(lang == tgt_lang for lang in langs) / n,
            "english": 100.0 * sum(lang == "en" for lang in langs) / n}


# --- SQA ----------------------------------------------------------------------------------

Judge = Callable[[list[str]], list[str]]
"""A judge LLM: prompts in, replies out (batched). Its replies should start with yes or no."""

JUDGE_PROMPT = (
    "You are grading an answer to a question about a spoken passage.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {candidate}\n"
    "Does the candidate answer agree with the reference answer? Reply with one word: yes or no."
)


def judge_prompt(question: str, reference: str, candidate: str) -> str:
    return JUDGE_PROMPT.format(question=question.strip(), reference=reference.strip(), candidate=candidate.strip())


_WORD = re.compile(r"[a-z]+")


def parse_verdict(reply: str) -> bool | None:
    """yes -> True, no -> False, from the reply's first word, else from the only one of the two
    that it contains; None when it says neither or both (scored as wrong, and counted)."""
    words = _WORD.findall(reply.lower())
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    said = {w for w in words if w in ("yes", "no")}
    return (said == {"yes"}) if len(said) == 1 else None


@dataclass
class JudgedAccuracy:
    mean: float  # % judged correct, averaged over judges (the paper averaged four)
    per_judge: dict[str, float]
    unparsed: dict[str, int]  # replies that were neither yes nor no, per judge


def judge_prompts(questions: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> list[str]:
    """What each judge is asked about each output (`judge_prompt`)."""
    _check(questions, refs, hyps)
    return [judge_prompt(q, r, h) for q, r, h in zip(questions, refs, hyps)]


def judged_tally(replies: dict[str, Sequence[str]], n: int) -> JudgedAccuracy:
    """The accuracy from each judge's replies to the same `n` prompts, in order (judge name -> replies)."""
    if not replies:
        raise MetricError("judged accuracy needs at least one judge")
    per_judge, unparsed = {}, {}
    for name, said in replies.items():
        if len(said) != n:
            raise MetricError(f"judge {name} gave {len(said)} replies to {n} prompts")
        verdicts = [parse_verdict(r) for r in said]
        per_judge[name] = 100.0 * sum(v is True for v in verdicts) / n
        unparsed[name] = sum(v is None for v in verdicts)
    return JudgedAccuracy(sum(per_judge.values()) / len(per_judge), per_judge, unparsed)


# Labels are capitals followed by ".", ")", ":" or nothing, so that the article in "A dog" is no label.
_LABEL_ALONE = re.compile(r"^\W*\(?([A-Z])(?:[.):]|$)")
_LABEL_SAID = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?:?\s*\(?([A-Z])(?:[.):]|$|\s)")


def choice_index(output: str, choices: Sequence[str]) -> int | None:
    """Which choice an output picks: a leading label ("B", "(B)", "B. text"), a stated one
    ("the answer is B"), or the text of exactly one choice; None when it picks none or several."""
    for pattern in (_LABEL_ALONE, _LABEL_SAID):
        m = pattern.search(output.strip())
        if m and (i := ord(m.group(1)) - ord("A")) < len(choices):
            return i
    out = f" {normalize(output)} "
    # A bare label is no text to look for: "a" would match the article.
    hits = [i for i, c in enumerate(choices) if len(normalize(c)) > 1 and f" {normalize(c)} " in out]
    return hits[0] if len(hits) == 1 else None


def gold_choice(answer, choices: Sequence[str]) -> int:
    """The index of the right choice, given as an index, a label ("C", "(C) text") or a choice's text."""
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    i = choice_index(str(answer), choices)
    if i is None:
        raise MetricError(f"answer {answer!r} is none of the choices {list(choices)}")
    return i


_INLINE_OPTION = re.compile(r"\(([A-Z])\)\s*(.*?)(?=\s*\([A-Z]\)|$)", re.S)
_LINE_OPTION = re.compile(r"^\s*([A-Z])[.)]\s+(.*\S)", re.M)


def options_in(question: str) -> list[str]:
    """Options written into a question, "(A) x (B) y" or one "A. x" per line; [] if none.
    The labels must run A, B, C, ... so that a stray "(I)" is no option list."""
    for pattern in (_INLINE_OPTION, _LINE_OPTION):
        found = pattern.findall(question)
        if len(found) >= 2 and [label for label, _ in found] == [choice_label(i) for i in range(len(found))]:
            return [text.strip() for _, text in found]
    return []


def options_of(question: str, choices: Sequence[str] | None) -> list[str]:
    """The options' texts: `choices`, unless absent or bare labels; then those written into the
    question, or the labels when it has none."""
    if choices and not labels_only(choices):
        return list(choices)
    return options_in(question) or list(choices or [])


def exact_choice(hyps: Sequence[str], answers: Sequence, choices: Sequence[Sequence[str]]) -> float:
    """% of outputs that pick the right choice."""
    n = _check(hyps, answers, choices)
    if any(len(c) < 2 for c in choices):
        raise MetricError("a multiple-choice question with fewer than two options")
    return 100.0 * sum(choice_index(h, c) == gold_choice(a, c) for h, a, c in zip(hyps, answers, choices)) / n


_ARTICLES = {"a", "an", "the"}


def _answer_words(text: str) -> list[str]:
    # SQuAD's answer normalisation: our text normalisation, then articles dropped; accents are
    # folded too, since "Bogotá" answers "Bogota" (a chat LLM writes either).
    folded = "".join(c for c in unicodedata.normalize("NFKD", normalize(text)) if not unicodedata.combining(c))
    return [w for w in folded.split() if w not in _ARTICLES]


def exact_match(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """% of outputs equal to the reference answer after normalisation (case, punctuation, articles)."""
    n = _check(refs, hyps)
    return 100.0 * sum(_answer_words(r) == _answer_words(h) for r, h in zip(refs, hyps)) / n


def answers_found(refs: Sequence[str], hyps: Sequence[str]) -> list[bool]:
    """For each output, whether it contains the reference answer as whole words, after the same
    normalisation: a chatty "The capital of Kenya is Nairobi." answers "Nairobi" right."""
    _check(refs, hyps)

    def contains(ref: str, hyp: str) -> bool:
        r, h = _answer_words(ref), _answer_words(hyp)
        return bool(r) and any(h[i : i + len(r)] == r for i in range(len(h) - len(r) + 1))

    return [contains(r, h) for r, h in zip(refs, hyps)]


def answer_in_output(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """% of outputs that contain the reference answer (`answers_found`)."""
    found = answers_found(refs, hyps)
    return 100.0 * sum(found) / len(found)
