"""Instructions and chat-template rendering for the speech LLM.

Every prompt is the LLM's own chat template around one user turn whose content starts with the
speech and ends with the instruction::

    <template up to the user content> [speech vectors] \\n<instruction><end of turn, assistant header>
    '------------- prefix --------------'                '--------------- suffix ------------------'

Putting the speech first makes the prefix (system message, user header) the same token sequence
for every task and phrasing, so its keys and values are computed once and reused
(`smap.speech_llm.PromptedLM`). The response is the target text followed by the tokenizer's EOS,
which ends an assistant turn in the chat models we target (SmolLM2, Qwen2, EuroLLM: <|im_end|>;
Llama-3.1-Instruct: <|eot_id|>).

Tasks: ``asr`` (transcribe), ``st`` (translate into ``tgt_lang``), ``sqa`` (answer ``question``,
given as text beside the spoken passage) and ``free`` (the user's own ``prompt``). Each task has
several phrasings; training draws one at random so that no single wording is memorised, and
inference uses the first unless told otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("asr", "st", "sqa", "free")

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        # Inference uses the first: of these, it is the one SmolLM2-135M follows best when given
        # the transcript as text (the topline): 35% WER against 120% for "Transcribe the audio."
        "Repeat exactly what is said.",
        "Transcribe the audio.",
        "Write down exactly what the speaker says.",
        "Repeat the words spoken in this recording.",
        "What is said in the audio? Give the exact words.",
        "Transcribe this speech verbatim.",
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


@dataclass(frozen=True)
class Request:
    """What to do with one utterance."""

    task: str = "asr"
    tgt_lang: str | None = None
    question: str | None = None
    prompt: str | None = None  # the instruction itself, for task "free"

    def instruction(self, phrasing: int | random.Random = 0) -> str:
        """The instruction text: phrasing `i` of the task, or a random one given an RNG."""
        if self.task == "free":
            if not self.prompt:
                raise PromptError("task 'free' needs a prompt (--prompt)")
            return self.prompt
        if self.task not in INSTRUCTIONS:
            raise PromptError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "st" and not self.tgt_lang:
            raise PromptError("task 'st' needs a target language (--tgt-lang, or tgt_lang in the store)")
        if self.task == "sqa" and not self.question:
            raise PromptError("task 'sqa' needs a question (--question, or question in the store)")
        options = INSTRUCTIONS[self.task]
        template = phrasing.choice(options) if isinstance(phrasing, random.Random) else options[phrasing % len(options)]
        return template.format(tgt_lang=language_name(self.tgt_lang or ""), question=(self.question or "").strip())


def resolve_system(system: str) -> str | None:
    """'default' -> None (the template's own), 'short' -> a one-line message, anything else as given."""
    return SYSTEM_PRESETS.get(system, system)


class PromptFormat:
    """The chat template of one tokenizer, split at the speech placeholder.

    `prefix_ids` is shared by every prompt; `suffix_ids(instruction)` follows the speech and ends
    with the assistant header; `response_ids(text)` is the target followed by EOS.
    """

    def __init__(self, tokenizer, system: str = "default"):
        self.tokenizer, self.system = tokenizer, system
        if tokenizer.eos_token_id is None:
            raise PromptError("the tokenizer has no EOS token; cannot end a response")
        self.eos_id = int(tokenizer.eos_token_id)
        prefix, _ = self._split("x")
        self.prefix_ids = self._encode(prefix)

    def _split(self, instruction: str) -> tuple[str, str]:
        messages = [{"role": "user", "content": f"{PLACEHOLDER}\n{instruction}"}]
        sys_text = resolve_system(self.system)
        if sys_text is not None:
            messages.insert(0, {"role": "system", "content": sys_text})
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        prefix, sep, suffix = text.partition(PLACEHOLDER)
        if not sep:
            raise PromptError("the chat template dropped the user message; cannot place the speech")
        return prefix, suffix

    def _encode(self, text: str) -> list[int]:
        # Templates spell out their special tokens (BOS included), so none are added here.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def suffix_ids(self, instruction: str) -> list[int]:
        return self._encode(self._split(instruction)[1])

    def response_ids(self, text: str) -> list[int]:
        return self._encode(text) + [self.eos_id]

    def render(self, instruction: str, speech: str = PLACEHOLDER) -> str:
        """The prompt as text, with `speech` where the speech vectors go (for logs and JSONL)."""
        prefix, suffix = self._split(instruction)
        return prefix + speech + suffix
