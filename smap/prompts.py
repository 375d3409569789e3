"""Instructions and chat-template rendering for the speech LLM.

Every prompt is the LLM's own chat template around one user turn that holds the instruction and
the speech, placed by the request's task in the order of the layout (``quoted`` by default;
`Request.turn`)::

    quoted: as instruction-first, the speech of an ASR request in double quotes, and a spoken
    question (task ``sqa`` with no text question) as speech-first:
    <template up to the user content> <instruction>\n" [speech vectors] "<end of turn, assistant header>

    instruction-first:
    <template up to the user content> <instruction>\n [speech vectors] <end of turn, assistant header>
    '----------- prefix ------------' '--- head ----'                  '----------- tail ------------'

    speech-first (no head):
    <template up to the user content> [speech vectors] \n<instruction><end of turn, assistant header>
    '----------- prefix ------------'                  '------------------- tail -------------------'

The prefix (system message, user header) is the same token sequence for every task, phrasing and
layout, so its keys and values are computed once and reused (`smap.speech_llm.PromptedLM`). The
response is the target text followed by the tokenizer's EOS, which ends an assistant turn in the
chat models we target (SmolLM2, Qwen2, EuroLLM: <|im_end|>; Llama-3.1-Instruct: <|eot_id|>).

Why instruction first: a small chat LLM reads what follows an instruction to repeat as text to
repeat, and a message before the instruction as something to answer. Given 100 held-out sentences
as text, SmolLM2-135M-Instruct repeats them at 13.5% WER instruction first against 38.8% speech
first (each with its best phrasing), and an attached mapper inherits the habit (README).

Why quoted: quotes mark text to repeat, not a message to answer ("Can you help me carry this
table" -> "I'm here to help you carry this"). Given 300 held-out sentences as text, SmolLM2-135M
repeats them at 3.9% WER quoted against 7.6% bare, and Stage 1's nearest-token reading of them at
27.1% against 31.7% (everyday sentences: 5.2 against 11.1, 26.7 against 29.4;
benchmarks/prompt_layouts.py). A spoken question is a message to answer: quoted, the LLM answered
23 of 58 held-out questions given as text against 28, so only ASR requests quote the speech.

Why a spoken question goes first: its reading comes lower-case and without a question mark, as the
Stage-1 targets spell it, and after an instruction the LLM echoes it ("What is three times
eight?"). Given the 58 held-out questions as text (4 beams, benchmarks/question_readings.py), the
old instruction-first "Answer the question in the audio with one word." answered 28 as written and
18 of those 28 lower-cased without "?"; the question first, then "Answer with one word.", answers
32 as written and 28 of those 32 lower-cased.

Tasks: ``asr`` (transcribe), ``st`` (translate into ``tgt_lang``), ``sqa`` (answer ``question``,
given as text beside the spoken passage) and ``free`` (the user's own ``prompt``). A spoken question
(SQA with no text question: the speech is the question) is asked ``prompt`` or `SPOKEN_QUESTION`. Each task has
several phrasings; training draws one at random so that no single wording is memorised, and
inference uses the first unless told otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

TASKS = ("asr", "st", "sqa", "free")

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        # Ordered by how well SmolLM2-135M follows them given the transcript as text (the topline),
        # instruction first, WER on 100 held-out sentences (README); inference uses the first, and
        # `smap attach --phrasings N` trains with the first N.
        "Repeat the words spoken in this recording.",  # 13.5
        "Transcribe this speech verbatim.",  # 26.2
        "Transcribe the audio.",  # 26.8
        "Repeat exactly what is said.",  # 27.3
        "Write down exactly what the speaker says.",  # 56.3
        "What is said in the audio? Give the exact words.",  # 77.7
    ),
    "st": (
        "Translate the audio into {tgt_lang}.",
        "Translate what the speaker says into {tgt_lang}.",
        "Give a {tgt_lang} translation of this recording.",
        "Listen to the speech and translate it into {tgt_lang}.",
    ),
    "sqa": (
        "Answer the question about the audio: {question}",
        "{question} Answer from what is said in the recording.",
        "Listen to the passage and answer this question: {question}",
        "Question about the recording: {question}",
    ),
}

# The instruction of a spoken question, in training (`smap attach --mode task`) and evaluation alike.
SPOKEN_QUESTION = "Answer with one word."  # after the question (see the layouts)

# The chat template's own default system message is kept unless told otherwise; "short" trades
# SmolLM2's 16-token default for 7 tokens, which matters when the prefix is not cached.
SYSTEM_PRESETS = {"default": None, "short": "You are a helpful assistant."}

LANGUAGES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "zh": "Chinese", "ja": "Japanese", "ru": "Russian", "ar": "Arabic", "ca": "Catalan",
    "tr": "Turkish", "fa": "Persian", "sv": "Swedish", "et": "Estonian", "mn": "Mongolian", "cy": "Welsh",
    "lv": "Latvian", "sl": "Slovenian", "ta": "Tamil", "id": "Indonesian", "pl": "Polish", "ro": "Romanian",
}

# Stands where the speech goes; never tokenised (the rendered text is split at it).
PLACEHOLDER = "<|speech|>"

LAYOUTS = ("quoted", "instruction-first", "speech-first")
DEFAULT_LAYOUT = LAYOUTS[0]


def check_layout(layout: str) -> None:
    """Refuse an unknown `--layout` before anything heavy is loaded."""
    if layout not in LAYOUTS:
        raise PromptError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")

# For tokenizers without a chat template (base models): plain role lines.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


class PromptError(ValueError):
    """A request that cannot become a prompt (unknown task, missing question or language)."""


def language_name(code_or_name: str) -> str:
    """'de' -> 'German'; a name or an unknown code is returned as given."""
    return LANGUAGES.get(code_or_name.lower().split("-")[0].split("_")[0], code_or_name) if code_or_name else code_or_name


def choice_label(i: int) -> str:
    return chr(ord("A") + i)


def labels_only(choices: Sequence[str]) -> bool:
    """Choices given as bare labels ("A", "B", ...), their texts being in the question."""
    return bool(choices) and all(len(c.strip()) == 1 and c.strip().isalpha() for c in choices)


def question_text(record: dict) -> str:
    """The question as a system is asked it: multiple-choice options listed with their labels.
    A spoken question (no ``question`` field) is its transcript."""
    choices = record.get("choices")
    if not choices or labels_only(choices):  # no options, or their texts are in the question
        return record.get("question") or record["text"]
    options = "\n".join(f"{choice_label(i)}. {c}" for i, c in enumerate(choices))
    return f"{record['question']}\n{options}\nAnswer with the letter of the right option."


@dataclass(frozen=True)
class Request:
    """What to do with one utterance.

    Task ``sqa`` with no ``question`` is a spoken question: the speech is the question, and the
    instruction is ``prompt`` or `SPOKEN_QUESTION`."""

    task: str = "asr"
    tgt_lang: str | None = None
    question: str | None = None
    prompt: str | None = None  # the instruction itself, for task "free" or a spoken question

    @property
    def spoken_question(self) -> bool:
        return self.task == "sqa" and not self.question

    def instruction(self, phrasing: int | random.Random = 0, among: int = 0) -> str:
        """The instruction text: phrasing `i` of the task, or, given an RNG, a random one of the
        first `among` (0: of all)."""
        if self.task == "free":
            if not self.prompt:
                raise PromptError("task 'free' needs a prompt (--prompt)")
            return self.prompt
        if self.task not in INSTRUCTIONS:
            raise PromptError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "st" and not self.tgt_lang:
            raise PromptError("task 'st' needs a target language (--tgt-lang, or tgt_lang in the store)")
        if self.spoken_question:
            return self.prompt or SPOKEN_QUESTION
        options = INSTRUCTIONS[self.task]
        template = phrasing.choice(options[: among or None]) if isinstance(phrasing, random.Random) else options[phrasing % len(options)]
        return template.format(tgt_lang=language_name(self.tgt_lang or ""), question=(self.question or "").strip())

    def turn(self, layout: str = DEFAULT_LAYOUT, phrasing: int | random.Random = 0, among: int = 0) -> str:
        """The user turn: the instruction and `PLACEHOLDER`, placed as `layout` places this task."""
        check_layout(layout)
        instruction = self.instruction(phrasing, among)
        if layout == "speech-first" or (layout == "quoted" and self.spoken_question):
            return f"{PLACEHOLDER}\n{instruction}"
        if layout == "quoted" and self.task == "asr":
            return f'{instruction}\n"{PLACEHOLDER}"'
        return f"{instruction}\n{PLACEHOLDER}"


def resolve_system(system: str) -> str | None:
    """'default' -> None (the template's own), 'short' -> a one-line message, anything else as given."""
    return SYSTEM_PRESETS.get(system, system)


class PromptFormat:
    """The chat template of one tokenizer, split around the speech placeholder.

    `prefix_ids` is shared by every prompt; `around(turn)` gives, for a user turn
    (`Request.turn`), the ids between the prefix and the speech (the head) and after the speech
    (the tail, ending with the assistant header); `response_ids(text)` is the target followed by EOS.
    """

    def __init__(self, tokenizer, system: str = "default"):
        self.tokenizer, self.system = tokenizer, system
        if tokenizer.eos_token_id is None:
            raise PromptError("the tokenizer has no EOS token; cannot end a response")
        self.eos_id = int(tokenizer.eos_token_id)
        self._prefix = self._template(PLACEHOLDER)[0]
        self.prefix_ids = self._encode(self._prefix)

    def _template(self, content: str) -> tuple[str, str]:
        """The rendered prompt for one user turn, split at the placeholder in `content`."""
        messages = [{"role": "user", "content": content}]
        sys_text = resolve_system(self.system)
        if sys_text is not None:
            messages.insert(0, {"role": "system", "content": sys_text})
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        before, sep, after = text.partition(PLACEHOLDER)
        if not sep:
            raise PromptError("the chat template dropped the user message; cannot place the speech")
        return before, after

    def _split(self, turn: str) -> tuple[str, str]:
        if turn.count(PLACEHOLDER) != 1:
            raise PromptError(f"a user turn needs the speech placeholder {PLACEHOLDER} once: {turn!r}")
        before, after = self._template(turn)
        if not before.startswith(self._prefix):
            raise PromptError("the chat template renders the text before the user message differently for "
                              "different messages; cannot share a prompt prefix")
        return before[len(self._prefix):], after

    def _encode(self, text: str) -> list[int]:
        # Templates spell out their special tokens (BOS included), so none are added here.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def around(self, turn: str) -> tuple[list[int], list[int]]:
        """(head, tail): the ids before and after the speech, for one user turn."""
        head, tail = self._split(turn)
        return self._encode(head), self._encode(tail)

    def response_ids(self, text: str) -> list[int]:
        return self._encode(text) + [self.eos_id]

    def render(self, turn: str, speech: str = PLACEHOLDER) -> str:
        """The prompt as text, with `speech` where the speech vectors go (for logs and JSONL)."""
        head, tail = self._split(turn)
        return self._prefix + head + speech + tail
