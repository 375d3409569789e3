"""Inference: run a speech LLM, or the same frozen LLM given text, on a task.

Loading:
  * ``load_model(model="DIR")``: a model folder from `smap attach`;
  * ``load_model(mapper="DIR", llm="SPEC")``: a Stage-1 mapper used zero-shot with a frozen LLM
    (the LLM defaults to the one the mapper was pretrained for);
  * ``load_text_lm("SPEC", system=...)``: the frozen LLM alone, for text input.

Generating (each returns rows ``{"id", "task", "prompt", "output"}`` in input order):
  * ``generate_features(model, ids, features, requests)``: encoder features already in memory;
  * ``generate_store(model, store, requests)``: utterances of a prepared feature store;
  * ``generate_audio(model, paths, requests)``: audio files, encoded on the fly with the model's
    encoder (`smap.encoders.load_encoder`) and kept as a store keeps features (float16), so a
    clip gives what it gives once prepared; every file is read before any is processed, so an
    unreadable one, or one over `max_seconds` (`smap prepare`'s limit by default, found from its
    header before it is decoded), fails the call before work is done;
  * ``nearest_store(model, store)``: no LLM at all: each speech vector the LLM would read (the
    mapper's, or its token mixture) as its nearest token embedding, the transcript Stage 1 alone gives;
  * ``generate_text(lm, ids, texts, requests)``: the text-only path. The text's token embeddings
    take the place of the speech vectors in exactly the same prompt (same template, system
    message, instruction and placement), so the only difference from the speech LLM is the
    input modality. This is the ``transcript`` topline (reference transcripts) and the
    ``cascade`` baseline (an ASR system's output). With ``lm = model.lm`` it uses the speech
    model's own prompt settings.

`advance`, if given, is called after each batch with the number of inputs it finished (a progress
bar: `smap.progress`). `requests` is one `smap.prompts.Request` per input (task, tgt_lang,
question, prompt), or None to derive them with `request_for` from each record and the defaults
given. `decoding`
(`smap.speech_llm.Decoding`) is batched greedy search (``num_beams=1``) or beam search, with the
prompt prefix's keys and values computed once (`smap.speech_llm.PromptedLM`). Each ASR output is
capped at its own input's number of content vectors plus `Decoding.asr_slack` tokens: a CTC
mapper gives about one vector per token, a fixed-ratio one more, and the text path the transcript
itself, so the cap ends an output that runs on past the speech.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from smap.data.batching import BucketBatchSampler
from smap.data.store import FeatureStore
from smap.fileio import atomic_write_text
from smap.llm import load_causal_lm
from smap.losses import nearest_tokens
from smap.progress import Advance, silent
from smap.prompts import DEFAULT_LAYOUT, Request, question_text
from smap.speech_llm import Decoding, PromptedLM, SpeechLLM


def load_model(model: str | Path | None = None, mapper: str | Path | None = None, llm: str | None = None,
               system: str = "default", device: str | None = None, layout: str = DEFAULT_LAYOUT,
               token_mix: float = 0.0, dtype: torch.dtype = torch.float32) -> SpeechLLM:
    """A speech LLM from a model folder (its own prompt settings; `llm`: where its LLM is now, if
    not where the folder says), or from a Stage-1 mapper and an LLM spec (`system`, `layout` and
    `token_mix`); the frozen LLM in `dtype`, the mapper in fp32."""
    if (model is None) == (mapper is None):
        raise ValueError("give either a model folder (--model) or a Stage-1 mapper (--mapper, with --llm)")
    speech_llm = (SpeechLLM.from_pretrained(model, dtype, llm=llm) if model is not None
                  else SpeechLLM.from_mapper(mapper, llm, system, dtype, layout=layout, token_mix=token_mix))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    speech_llm.to(device).eval()
    speech_llm.lm.to(device)
    return speech_llm


def load_text_lm(llm: str, system: str = "default", device: str | None = None,
                 layout: str = DEFAULT_LAYOUT, dtype: torch.dtype = torch.float32) -> PromptedLM:
    """The frozen LLM (in `dtype`) with the speech LLM's prompt format, for text input (`generate_text`)."""
    model, tokenizer = load_causal_lm(llm, dtype)
    lm = PromptedLM(model, tokenizer, system, layout=layout)
    return lm.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def request_for(record: dict, task: str, tgt_lang: str | None = None, question: str | None = None,
                prompt: str | None = None) -> Request:
    """The request for one record: options given win, else the record's tgt_lang / question. An SQA
    record with no question is a spoken question, asked `prompt` or `SPOKEN_QUESTION`."""
    if task == "sqa" and question is None and record.get("question"):
        question = question_text(record)
    return Request(task, tgt_lang or record.get("tgt_lang"), question, prompt)


def _limits(requests: Sequence[Request], contents: Sequence[torch.Tensor], decoding: Decoding) -> list[int]:
    """Each example's most new tokens: an ASR output its content vectors + `decoding.asr_slack`
    (never more than max_new_tokens), unless the cap is off."""
    capped = decoding.asr_slack is not None
    return [min(len(c) + decoding.asr_slack, decoding.max_new_tokens) if capped and r.task == "asr"
            else decoding.max_new_tokens for r, c in zip(requests, contents)]


def _rows(ids, requests, instructions, outputs, decoding: Decoding) -> list[dict]:
    # A transcript is one line: what a chat model adds after a line break is commentary.
    def cut(r: Request, o: str) -> str:
        return o.strip().split("\n")[0] if decoding.first_line and r.task == "asr" else o
    return [{"id": i, "task": r.task, "prompt": p, "output": cut(r, o)}
            for i, r, p, o in zip(ids, requests, instructions, outputs)]


def _readable(model: SpeechLLM, store: FeatureStore | str | Path) -> FeatureStore:
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if store.dim != model.mapper.config.input_dim:
        raise ValueError(f"{store.root}: features of dim {store.dim}, the mapper takes {model.mapper.config.input_dim}")
    return store


def _speech_batches(model: SpeechLLM, features: Sequence[torch.Tensor], max_frames: int):
    """(indices, speech vectors) per batch of features of similar length under a frames budget;
    features each (frames, dim), vectors each (n, llm_dim)."""
    device = model.lm.device
    for chunk in BucketBatchSampler([len(f) for f in features], max_frames, shuffle=False):
        lengths = torch.tensor([len(features[i]) for i in chunk], device=device)
        padded = torch.zeros(len(chunk), int(lengths.max()), features[chunk[0]].shape[1], device=device)
        for b, i in enumerate(chunk):
            padded[b, : lengths[b]] = features[i].to(device, torch.float32)
        yield chunk, model.speech_contents(padded, lengths)[0]


@torch.no_grad()
def generate_features(model: SpeechLLM, ids: Sequence[str], features: Sequence[torch.Tensor],
                      requests: Sequence[Request], max_frames: int = 4000, decoding: Decoding = Decoding(),
                      advance: Advance = silent) -> list[dict]:
    """Outputs for encoder features, each (frames, dim): batches of similar length under a
    frames budget; rows back in input order."""
    instructions = [r.instruction() for r in requests]  # fails on a bad request before any work
    outputs: list[str | None] = [None] * len(ids)
    for chunk, contents in _speech_batches(model, features, max_frames):
        prompts = [model.lm.prompt_ids(requests[i]) for i in chunk]
        limits = _limits([requests[i] for i in chunk], contents, decoding)
        for i, text in zip(chunk, model.lm.generate(contents, prompts, decoding, limits)):
            outputs[i] = text
        advance(len(chunk))
    return _rows(list(ids), requests, instructions, outputs, decoding)


@torch.no_grad()
def nearest_store(model: SpeechLLM, store: FeatureStore | str | Path, limit: int | None = None, max_frames: int = 4000,
                  advance: Advance = silent) -> list[str]:
    """The speech vectors read without the LLM: each decoded to its cosine-nearest token embedding,
    up to the first pad (Stage 1's intrinsic transcript, `smap.losses.nearest_tokens`), for the
    first `limit` utterances of a store, in store order."""
    store = _readable(model, store)
    table = model.lm.llm.get_input_embeddings().weight.float()
    unit, pad = torch.nn.functional.normalize(table, dim=-1), model.target_pad_id
    features = [store.features(i) for i in range(len(store.records[:limit]))]
    outputs: list[str | None] = [None] * len(features)
    for chunk, contents in _speech_batches(model, features, max_frames):
        for i, c in zip(chunk, contents):
            outputs[i] = model.lm.tokenizer.decode(nearest_tokens(c, len(c), unit, pad), skip_special_tokens=True)
        advance(len(chunk))
    return outputs


@torch.no_grad()
def generate_store(model: SpeechLLM, store: FeatureStore | str | Path, requests: Sequence[Request] | None = None,
                   task: str = "asr", tgt_lang: str | None = None, question: str | None = None,
                   prompt: str | None = None, limit: int | None = None, max_frames: int = 4000,
                   decoding: Decoding = Decoding(), advance: Advance = silent) -> list[dict]:
    """Outputs for the first `limit` utterances of a feature store, in store order."""
    store = _readable(model, store)
    records = store.records[:limit]
    requests = list(requests) if requests is not None else [request_for(r, task, tgt_lang, question, prompt) for r in records]
    features = [store.features(i) for i in range(len(records))]
    return generate_features(model, [r["id"] for r in records], features, requests[: len(records)], max_frames,
                             decoding, advance)


@torch.no_grad()
def generate_audio(model: SpeechLLM, paths: Sequence[str | Path], requests: Sequence[Request] | None = None,
                   task: str = "asr", tgt_lang: str | None = None, question: str | None = None,
                   prompt: str | None = None, encoder: str | None = None, max_frames: int = 4000,
                   decoding: Decoding = Decoding(), advance: Advance = silent,
                   max_seconds: float | None = None) -> list[dict]:
    """Outputs for audio files; `encoder` overrides the model's encoder spec. A file longer than
    `max_seconds` (None: `smap.audio.MAX_SECONDS`) raises AudioError, found from its header."""
    from smap.audio import MAX_SECONDS, SAMPLE_RATE, load_audio, resample
    from smap.encoders import load_encoder

    limit = MAX_SECONDS if max_seconds is None else max_seconds
    waves = [load_audio(p, max_seconds=limit) for p in paths]  # every file read before anything heavy is loaded
    spec = encoder or model.settings.encoder
    if not spec:
        raise ValueError("the model does not record its speech encoder; give --encoder")
    enc = load_encoder(spec)
    if enc.dim != model.mapper.config.input_dim:
        raise ValueError(f"encoder {spec} gives {enc.dim}-d features, the mapper takes {model.mapper.config.input_dim}")
    waves = [resample(w, SAMPLE_RATE, enc.sample_rate) for w in waves]
    # Rounded as a store keeps them: the mapper learnt from stored features.
    features = [f.to(torch.float16) for k in range(0, len(waves), 16) for f in enc.encode(waves[k : k + 16])]
    requests = list(requests) if requests is not None else [Request(task, tgt_lang, question, prompt)] * len(paths)
    return generate_features(model, [str(p) for p in paths], features, requests, max_frames, decoding, advance)


@torch.no_grad()
def generate_text(lm: PromptedLM, ids: Sequence[str], texts: Sequence[str], requests: Sequence[Request],
                  batch_size: int = 16, decoding: Decoding = Decoding(), advance: Advance = silent) -> list[dict]:
    """The text-only path: each text's token embeddings where the speech would be."""
    instructions = [r.instruction() for r in requests]
    contents = [lm.embed_text(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(contents[i]))  # similar lengths pad less
    outputs: list[str | None] = [None] * len(texts)
    for k in range(0, len(order), batch_size):
        chunk = order[k : k + batch_size]
        limits = _limits([requests[i] for i in chunk], [contents[i] for i in chunk], decoding)
        texts_out = lm.generate([contents[i] for i in chunk], [lm.prompt_ids(requests[i]) for i in chunk], decoding,
                                limits)
        for i, text in zip(chunk, texts_out):
            outputs[i] = text
        advance(len(chunk))
    return _rows(list(ids), requests, instructions, outputs, decoding)


def write_jsonl(rows: Sequence[dict], path: str | Path) -> None:
    """All rows at once through a rename: the file is complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
