"""The systems `smap evaluate` compares, as adapters over `smap.generate`:

- ``smap``: the speech LLM (a model folder from `smap attach`, or a Stage-1 mapper with a frozen
  LLM) on the store's features;
- ``transcript``: the same frozen LLM with the gold transcript's token embeddings where the
  speech would be, in the same prompt (the paper's topline);
- ``nearest``: each speech model's vectors read without the LLM, every vector decoded to its
  cosine-nearest token embedding (`smap.generate.nearest_store`): what Stage 1 alone transcribes,
  whatever the split asks, so the table shows how much of it the LLM then reads;
- ``cascade``: the same, with an ASR system's transcript instead. The ASR (``--asr``) is a smap
  model folder doing ASR on the same features, a CTranslate2 Whisper (the embedded
  ``whisper-tiny.en``, ``ct2:DIR``) or a SeamlessM4T-v2 checkpoint (the paper's SFM, its own
  ASR), each of the last two decoding its own encoder's features: the same split under
  ``--asr-data-root`` if given, else the split's store (`WhisperTranscriber`, `SeamlessTranscriber`);
- ``sfm-st``: the SeamlessM4T-v2 of ``--asr`` translating the speech itself into the split's
  target language (the paper's SFM ST baseline), on ST splits only.

`--rescore` replaces them all by what they said in an earlier evaluation (`SavedSystem`), and
judges for SQA are text LLMs answering `metrics.judge_prompt` in one chat turn.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from smap.data.store import STORE_FILE, FeatureStore, sha256_file
from smap.evaluate.report import outputs_path, read_outputs
from smap.evaluate.suites import Split
from smap.llm import LLMSpecError, hub_id
from smap.progress import Advance, silent
from smap.speech_llm import Decoding

SYSTEMS = ("smap", "nearest", "transcript", "cascade", "sfm-st")


class SystemSpecError(ValueError):
    """Options that do not make a system; the message names the option."""


@dataclass(frozen=True)
class Inference:
    """How every system decodes (the n-gram ban and beams apply to the cascade's Whisper too), and
    how inputs are batched."""

    decoding: Decoding = Decoding()
    max_frames: int = 4000  # speech batches: feature frames per batch
    batch_size: int = 16  # text batches: prompts per batch
    precision: str = "no"  # the LLMs' weights: a resolved `smap.precision` choice ('no': fp32, 'fp16', 'bf16')

    @property
    def dtype(self):
        from smap.precision import DTYPES

        return DTYPES[self.precision]


def weights_sha256(module) -> str:
    """sha256 of a module's parameters and buffers, by name, in any dtype or device."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _requests(split: Split, records: list[dict]):
    from smap.generate import request_for
    from smap.prompts import Request

    if split.prompt:  # a spoken question: the speech (or its transcript) is the question
        return [Request("sqa", prompt=split.prompt)] * len(records)
    return [request_for(r, split.task, split.tgt_lang) for r in records]


class SpeechSystem:
    """A speech LLM on a store's features."""

    passes = 1  # each utterance worked on once (see `run.System`)

    def __init__(self, model, source: dict, inference: Inference, name: str = "smap"):
        # the weights' digest: a folder trained again under the same name is another system
        self.source = {**source, "mapper_sha256": weights_sha256(model.mapper)}
        self.model, self.inference, self.name = model, inference, name

    def describe(self) -> dict:
        s = self.model.settings
        return {**self.source, "llm": s.llm, "encoder": s.encoder, "system_prompt": s.system, "layout": s.layout,
                "token_mix": s.token_mix, "provenance": s.provenance, "inference": asdict(self.inference)}

    def check(self, store: FeatureStore) -> None:
        wanted = self.model.settings.encoder
        if wanted and store.encoder != wanted:
            raise ValueError(f"{store.root} holds {store.encoder} features but the model reads {wanted}; "
                             f"prepare this split with --encoder {wanted}")

    def outputs(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        from smap.generate import generate_store

        self.check(store)
        rows = generate_store(self.model, store, _requests(split, store.records[:limit]), limit=limit,
                              max_frames=self.inference.max_frames, decoding=self.inference.decoding, advance=advance)
        return [r["output"] for r in rows]

    def release(self) -> None:
        """Drop the model: every output is made, and the judges need the memory (`run.System`)."""
        self.model = None


class NearestSystem:
    """A speech model's vectors with no LLM: each read as its nearest token embedding."""

    passes = 1

    def __init__(self, speech: SpeechSystem):
        self.speech, self.name = speech, f"{speech.name}-nearest"

    def describe(self) -> dict:
        # the speech system's record, less what only decoding through the LLM uses
        d = {k: v for k, v in self.speech.describe().items() if k not in ("system_prompt", "layout", "inference")}
        return {**d, "input": "the nearest token embedding of each speech vector, no LLM"}

    def outputs(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        from smap.generate import nearest_store

        self.speech.check(store)
        return nearest_store(self.speech.model, store, limit, self.speech.inference.max_frames, advance)

    def release(self) -> None:
        self.speech.release()


class SavedSystem:
    """What a system said in an earlier evaluation, read back from that report folder's outputs/
    (`report.write_outputs`) to be scored again without loading a model: after a scorer is
    fixed, or with a COMET model or a judge added. Its rows must be the store's first records, in
    order, and the store the one they were decoded from."""

    passes = 1
    whole = True  # read whole on the main process, under several processes too (`run.System`)

    def __init__(self, name: str, folder: str | Path, described: dict, seconds: dict[str, float],
                 stores: dict[str, str]):
        self.name, self.folder, self.described = name, Path(folder), described
        self.seconds = seconds  # split key -> the decoding's seconds in the earlier run (see `run.System`)
        self.stores = stores  # split key -> the sha256 of the store's index then

    def describe(self) -> dict:
        return {**self.described, "rescored_from": str(self.folder)}

    def outputs(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        path = outputs_path(self.folder, split, self.name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {self.name} has no saved outputs on {split.key}")
        then = self.stores.get(split.key)
        if then and sha256_file(store.root / STORE_FILE) != then:
            raise ValueError(f"{store.root}: the store changed since {path} was written (its {STORE_FILE} differs)")
        rows, ids = read_outputs(path), [r["id"] for r in store.records[:limit]]
        for n, (row, want) in enumerate(zip(rows, ids), 1):
            if row["id"] != want:
                raise ValueError(f"{path}:{n}: id {row['id']!r} where the store's record {n} is {want!r} "
                                 "(outputs of another store)")
        if len(rows) != len(ids):
            raise ValueError(f"{path}: {len(rows)} outputs for {len(ids)} records "
                             "(evaluate with the --limit of the run that wrote them)")
        advance(len(rows))
        return [r["output"] for r in rows]


def saved(folder: str | Path, names: list[str] = ()) -> list[SavedSystem]:
    """The systems of the evaluation whose report is in `folder` (its results.json), in its order,
    or those of them named."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise SystemSpecError(f"--rescore {folder}: no results.json there (give the --out of an earlier `smap evaluate`)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        described, entries, data = report["systems"], report["results"], report["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemSpecError(f"{path}: not a report of `smap evaluate` ({type(e).__name__}: {e})") from None
    names = list(dict.fromkeys(names)) or list(described)
    unknown = [n for n in names if n not in described]
    if unknown:
        raise SystemSpecError(f"--systems: {', '.join(unknown)} not in {path} (it has {', '.join(described)})")
    stores = {key: d.get("store_sha256") for key, d in data.items()}
    return [SavedSystem(n, folder, described[n],
                        {f"{e['suite']}/{e['split']}": e["seconds"] for e in entries if e["system"] == n}, stores)
            for n in names]


# split, store, limit, advance -> transcripts
Transcriber = Callable[[Split, FeatureStore, "int | None", Advance], list[str]]


class TextSystem:
    """The frozen LLM given text where the speech would be: gold transcripts, or an ASR's."""

    def __init__(self, name: str, lm, llm_spec: str, inference: Inference,
                 transcribe: Transcriber | None = None, asr: str | None = None):
        self.name, self.lm, self.llm_spec, self.inference = name, lm, llm_spec, inference
        self.transcribe, self.asr = transcribe, asr
        self.passes = 2 if transcribe else 1  # a cascade: the ASR, then the LLM

    def describe(self) -> dict:
        return {"llm": self.llm_spec, "input": f"ASR transcript ({self.asr})" if self.asr else "gold transcript",
                "layout": self.lm.layout,
                "inference": asdict(self.inference)}

    def outputs(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        from smap.generate import generate_text

        records = store.records[:limit]
        texts = self.transcribe(split, store, limit, advance) if self.transcribe else [r["text"] for r in records]
        rows = generate_text(self.lm, [r["id"] for r in records], texts, _requests(split, records),
                             batch_size=self.inference.batch_size, decoding=self.inference.decoding, advance=advance)
        return [r["output"] for r in rows]

    def release(self) -> None:
        self.lm = self.transcribe = None


class WhisperTranscriber:
    """A CTranslate2 Whisper decoding stored features of its own encoder.

    Whisper was trained on 30 s windows. Features encoded in the window (``?window=1``) are
    zero-padded back to its 1500 frames and decode cleanly. Features cut to the clip, as stores
    for the mapper usually are, make it loop; they are decoded with the output capped at 6 tokens
    per second of speech plus 8, and still lose words (80% WER on eSpeak speech, against about
    20% windowed). So the features come from the same split under `data_root` if given (e.g.
    prepared with ``--encoder whisper-tiny.en?window=1``), matched by utterance id, else from the
    split's own store, which must then hold this Whisper's features.
    """

    TOKENS_PER_SECOND, SLACK = 6, 8

    def __init__(self, spec: str, data_root: str | Path | None = None, decoding: Decoding = Decoding()):
        from tokenizers import Tokenizer

        from smap.encoders import EMBEDDED_ENCODER, embedded_whisper_dir, load_encoder, parse_spec
        from smap.encoders.whisper import CT2WhisperEncoder

        self.encoder = load_encoder(spec)
        if not isinstance(self.encoder, CT2WhisperEncoder):
            raise SystemSpecError(f"--asr {spec}: not a CTranslate2 Whisper model (nor a smap model folder)")
        self.base = parse_spec(spec)[0]
        folder = embedded_whisper_dir() if self.base == EMBEDDED_ENCODER else Path(self.base.removeprefix("ct2:")).expanduser()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # English-only models start with <|startoftranscript|><|notimestamps|>; multilingual
        # ones name the language and task in between.
        self.prompt = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if self.encoder.model.is_multilingual
                                                   else []) + ["<|notimestamps|>"]
        self.data_root = Path(data_root) if data_root else None
        self.decoding = decoding  # its beams and n-gram ban; the length cap is Whisper's own

    def __call__(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        import ctranslate2
        import torch

        from smap.encoders import parse_spec
        from smap.encoders.whisper import FRAME_RATE, WINDOW_SECONDS

        source, where, ids = _own_features(self.base, split, store, limit, self.data_root, f"{self.base} --window")
        frames = int(WINDOW_SECONDS * FRAME_RATE)
        window = frames if parse_spec(source.encoder)[1].get("window") in ("1", "true") else 0
        texts = []
        # One utterance at a time: CTranslate2 takes no mask over padded encoder frames. A clip over
        # 30 s (its features joined from 30 s windows) is read window by window, as Whisper reads
        # long audio, and the texts joined.
        for uid in ids:
            parts = []
            for feats in source.features(where[uid]).float().split(frames):
                cap = int(len(feats) / FRAME_RATE * self.TOKENS_PER_SECOND) + self.SLACK + len(self.prompt)
                if len(feats) < window:
                    feats = torch.cat([feats, feats.new_zeros(window - len(feats), feats.shape[1])])
                view = ctranslate2.StorageView.from_array(feats[None].contiguous().numpy())
                result = self.encoder.model.generate(view, [self.prompt], beam_size=self.decoding.num_beams,
                                                     max_length=min(448, cap),
                                                     no_repeat_ngram_size=self.decoding.no_repeat_ngram)[0]
                parts.append(self.tokenizer.decode(result.sequences_ids[0]).strip())
            texts.append(" ".join(p for p in parts if p))
            advance(1)
        return texts


def _own_features(base: str, split: Split, store: FeatureStore, limit: int | None, data_root: Path | None,
                  encoder: str) -> tuple[FeatureStore, dict[str, int], list[str]]:
    """For an ASR model that decodes its own encoder's features (`base`): the store holding them
    for the split (under `data_root` if given, else the split's own), where each utterance is in
    it, and the ids of the split's first `limit` records. `encoder`: the `smap prepare --encoder`
    that makes such a store."""
    from smap.encoders import parse_spec

    if data_root is None:
        if parse_spec(store.encoder)[0] != base:
            raise ValueError(f"{store.root} holds {store.encoder} features, not {base}'s; give --asr-data-root "
                             f"with this split prepared by --encoder {encoder}")
        source = store
    else:
        laid_out = replace(split, path=None)  # a store given by its path has its copy at SUITE/SPLIT under data_root too
        missing = laid_out.missing(data_root, encoder)
        if missing:
            raise ValueError(f"--asr-data-root: {missing}")
        source = FeatureStore(laid_out.store_dir(data_root))
        if parse_spec(source.encoder)[0] != base:
            raise ValueError(f"{source.root} holds {source.encoder} features; --asr {base} decodes only its own")
    where = {r["id"]: i for i, r in enumerate(source.records)}
    ids = [r["id"] for r in store.records[:limit]]
    lacking = [i for i in ids if i not in where]
    if lacking:
        raise ValueError(f"{source.root} lacks utterance {lacking[0]!r} (and {len(lacking) - 1} more) of {store.root}")
    return source, where, ids


# SeamlessM4T-v2's text languages are ISO 639-3 codes; the suites' targets are ISO 639-1.
SFM_LANGUAGES = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "zh": "cmn"}


def seamless_spec(spec: str) -> bool:
    """Whether `--asr SPEC` names a transformers SeamlessM4T-v2 checkpoint (its config read, the
    weights not loaded). A hub id not in the cache is fetched."""
    from transformers import AutoConfig

    from smap.encoders import EMBEDDED_ENCODER, _guess_kind, _local_folder, parse_spec
    from smap.encoders.hf import model_folder

    base = parse_spec(spec)[0]
    if base == EMBEDDED_ENCODER or base.startswith("ct2:"):
        return False
    target = base.removeprefix("hf:")
    if not base.startswith("hf:"):
        folder = _local_folder(spec, target, hub=True)  # None: a hub id, read by transformers
        if folder is not None and _guess_kind(base, folder) != "hf":
            return False
    return AutoConfig.from_pretrained(model_folder(target)).model_type == "seamless_m4t_v2"


class SeamlessTranscriber:
    """SeamlessM4T-v2's own text decoder (`SeamlessM4Tv2ForSpeechToText`) on stored features of
    its speech encoder: ASR (``tgt_lang="eng"``) for the paper's cascade, or speech translation
    into a split's target (`SfmSystem`).

    Stores for the paper's mapper hold exactly what this decoder reads, the speech encoder's
    output after its length adaptor, so nothing is encoded again: the features come from the
    split's own store when its encoder is this checkpoint's (at the default layer), else from
    the same split under `data_root`, matched by utterance id. One utterance at a time: the model
    takes its encoder mask at the filterbank rate, which stored features no longer have.
    """

    def __init__(self, spec: str, data_root: str | Path | None = None, decoding: Decoding = Decoding(),
                 device: str | None = None):
        from transformers import AutoTokenizer, SeamlessM4Tv2ForSpeechToText

        from smap.encoders import parse_spec, resolve_device
        from smap.encoders.hf import model_folder

        base, options = parse_spec(spec)
        if options:
            raise SystemSpecError(f"--asr {spec}: a SeamlessM4T-v2 decodes its final encoder output; drop ?"
                                  + "&".join(f"{k}={v}" for k, v in options.items()))
        target = base.removeprefix("hf:")
        folder = model_folder(target)
        self.base = f"hf:{target}"  # the encoder name `smap prepare --encoder` gives its stores
        self.device = resolve_device(device)
        self.model = SeamlessM4Tv2ForSpeechToText.from_pretrained(folder).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.data_root = Path(data_root) if data_root else None
        self.decoding = decoding  # its beams, length and n-gram ban; no ASR cap or first-line cut

    def __call__(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent,
                 tgt_lang: str = "en") -> list[str]:
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        from smap.encoders import parse_spec

        if tgt_lang not in SFM_LANGUAGES:
            raise ValueError(f"{split.key}: target language {tgt_lang!r} is none the SFM is asked here "
                             f"({', '.join(SFM_LANGUAGES)})")
        source, where, ids = _own_features(self.base, split, store, limit, self.data_root, self.base)
        if parse_spec(source.encoder)[1]:
            raise ValueError(f"{source.root} holds {source.encoder} features, not the final encoder output that "
                             f"{self.base}'s text decoder reads; prepare the split with --encoder {self.base}")
        texts = []
        for uid in ids:
            feats = source.features(where[uid]).to(self.device, self.model.dtype)[None]  # (1, frames, dim)
            with torch.inference_mode():
                # inputs=None: transformers' SeamlessM4T-v2 generate asks for its input features by name
                tokens = self.model.generate(inputs=None, encoder_outputs=BaseModelOutput(last_hidden_state=feats),
                                             tgt_lang=SFM_LANGUAGES[tgt_lang], num_beams=self.decoding.num_beams,
                                             max_new_tokens=self.decoding.max_new_tokens,
                                             no_repeat_ngram_size=self.decoding.no_repeat_ngram)
            texts.append(self.tokenizer.decode(tokens[0], skip_special_tokens=True).strip())
            advance(1)
        return texts


class SfmSystem:
    """The SFM's own speech translation into the split's target language: the paper's ST baseline."""

    passes = 1
    tasks = ("st",)  # the loop runs it on ST splits only (`run.System`)

    def __init__(self, sfm: SeamlessTranscriber, spec: str, name: str = "sfm-st"):
        self.sfm, self.spec, self.name = sfm, spec, name

    def describe(self) -> dict:
        d = self.sfm.decoding
        return {"sfm": self.spec, "input": "the speech features, translated by the SFM's own text decoder",
                "decoding": {"num_beams": d.num_beams, "max_new_tokens": d.max_new_tokens,
                             "no_repeat_ngram": d.no_repeat_ngram}}

    def outputs(self, split: Split, store: FeatureStore, limit: int | None, advance: Advance = silent) -> list[str]:
        return self.sfm(split, store, limit, advance, tgt_lang=split.tgt_lang)

    def release(self) -> None:
        self.sfm = None


ASR_PASS = Split("asr", "asr", "asr", ("wer",))  # what a cascade's first stage is asked, whatever the split


def transcriber(spec: str, inference: Inference, data_root: str | Path | None = None) -> Transcriber:
    """`--asr SPEC`: a smap model folder doing ASR on the split's features, or a SeamlessM4T-v2
    or CTranslate2 Whisper on its own features (the split's, or those under `data_root`)."""
    from smap.speech_llm import MODEL_FILE

    if (Path(spec).expanduser() / MODEL_FILE).is_file():
        from smap.generate import load_model

        asr = SpeechSystem(load_model(model=spec, dtype=inference.dtype), {"model": spec}, inference, name="asr")
        return lambda split, store, limit, advance=silent: asr.outputs(ASR_PASS, store, limit, advance)
    if seamless_spec(spec):
        return SeamlessTranscriber(spec, data_root, inference.decoding)
    return WhisperTranscriber(spec, data_root, inference.decoding)


# A system's name becomes a file name (outputs/SUITE/SPLIT/NAME.jsonl): no separators, no '..',
# nothing hidden.
SYSTEM_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_name(name: str, where: str) -> str:
    """`name` if it can name a system's files; else one line naming `where` (an option, a file)."""
    if not SYSTEM_NAME.fullmatch(name):
        raise SystemSpecError(f"{where}: the system name {name!r} may hold only letters, digits, '.', '_' and '-' "
                              "(not '..', not a leading '.'): it names files")
    return name


def speech_specs(models: list[str], mappers: list[str]) -> list[tuple[str, str, str]]:
    """`--model [NAME=]DIR` and `--mapper [NAME=]DIR`, each repeatable -> (name, kind, dir).

    One speech model is the row 'smap'; several are named by their NAME, else their folder."""
    specs = [(kind, v) for kind, values in (("model", models), ("mapper", mappers)) for v in values]
    out = []
    for kind, value in specs:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = ("smap" if len(specs) == 1 else Path(value).name), value
        if not name or not path:
            raise SystemSpecError(f"--{kind} {value}: expected DIR or NAME=DIR")
        out.append((check_name(name, f"--{kind} {value}" + ("" if sep else " (give NAME=DIR)")), kind, path))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise SystemSpecError(f"--model/--mapper: two speech models named {sorted(n for n in names if names.count(n) > 1)[0]!r}; "
                              "give each a NAME=DIR")
    return out


def build(names: list[str], models: list[str] = (), mappers: list[str] = (), llm: str | None = None,
          token_mix: float = 0.0, mapper_system: str = "default", asr: str | None = None,
          asr_data_root: str | Path | None = None, inference: Inference = Inference()) -> list:
    """The systems named, sharing one LLM: the first speech model's when there is one, else `llm`.
    `smap` gives one system per speech model (see `speech_specs`); `llm`, `token_mix` and
    `mapper_system` apply to the Stage-1 mappers. Options are checked before anything is loaded."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise SystemSpecError(f"--systems: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(SYSTEMS)}")
    specs = speech_specs(list(models), list(mappers))
    for name in ("smap", "nearest"):
        if name in names and not specs:
            raise SystemSpecError(f"--systems {name} needs --model DIR (from `smap attach`) or --mapper DIR (Stage 1)")
    if "cascade" in names and not asr:
        raise SystemSpecError("--systems cascade needs --asr SPEC (a smap model folder, a SeamlessM4T-v2 checkpoint, "
                              "whisper-tiny.en or ct2:DIR)")
    if "sfm-st" in names and not (asr and seamless_spec(asr)):
        raise SystemSpecError(f"--systems sfm-st needs --asr a SeamlessM4T-v2 checkpoint (the SFM), not {asr or 'none'}")
    from smap.generate import load_model, load_text_lm

    zero_shot = {"llm": llm, "token_mix": token_mix, "system": mapper_system}
    speech = [SpeechSystem(load_model(**{kind: path}, **(zero_shot if kind == "mapper" else {}), dtype=inference.dtype),
                           {kind: path}, inference, name)
              for name, kind, path in specs]
    # one ASR model for the cascade and the SFM's own ST
    transcribe = transcriber(asr, inference, asr_data_root) if {"cascade", "sfm-st"} & set(names) else None
    systems: list = []
    for name in names:
        if name in ("smap", "nearest"):
            systems += speech if name == "smap" else [NearestSystem(s) for s in speech]
            continue
        if name == "sfm-st":
            systems.append(SfmSystem(transcribe, asr))
            continue
        if speech:
            lm, llm_spec = speech[0].model.lm, speech[0].model.settings.llm
        elif llm:
            lm, llm_spec = load_text_lm(llm, dtype=inference.dtype), llm
        else:
            raise SystemSpecError(f"--systems {name} needs an LLM: --llm SPEC, or --model / --mapper")
        cascade = name == "cascade"
        systems.append(TextSystem(name, lm, llm_spec, inference, transcribe if cascade else None, asr if cascade else None))
    return systems


JUDGE_INSTRUCTION = "Your verdict, yes or no:"


def llm_judge(spec: str, batch_size: int = 16, dtype=None):
    """A judge from a text LLM spec (weights in `dtype`, default fp32): each prompt is one user turn,
    the reply a few tokens."""
    import torch

    from smap.generate import generate_text, load_text_lm
    from smap.prompts import Request

    # the answer to judge, then the verdict's instruction
    lm = load_text_lm(spec, layout="speech-first", dtype=dtype or torch.float32)

    def judge(prompts: list[str]) -> list[str]:
        requests = [Request("free", prompt=JUDGE_INSTRUCTION)] * len(prompts)
        rows = generate_text(lm, [str(i) for i in range(len(prompts))], prompts, requests,
                             batch_size=batch_size, decoding=Decoding(max_new_tokens=4))
        return [r["output"] for r in rows]

    return judge


def _same_model(a: str, b: str) -> bool:
    """Whether two LLM specs name the same model: equal, paths to the same file or folder, or the
    same hub repository (``org/name`` and ``hf:org/name@rev`` alike: any revision is the same model)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if a == b or (pa.exists() and pb.exists() and pa.resolve() == pb.resolve()):
        return True
    try:
        ha, hb = (None if p.exists() else hub_id(s) for p, s in ((pa, a), (pb, b)))
    except LLMSpecError:
        return False
    return ha is not None and hb is not None and ha.repo == hb.repo


def tested_llms(names: list[str], models: list[str] = (), mappers: list[str] = (),
                llm: str | None = None) -> dict[str, str]:
    """System name -> the LLM spec it would run, for the systems `build` would make from these
    options, read from the model and mapper folders' records without loading anything (a hub
    model's snapshot is fetched, as `build` would next); a folder that cannot be read is left out
    here (`build` names it)."""
    from smap.mapper import CONFIG_FILE, mapper_folder
    from smap.speech_llm import model_folder, read_settings

    speech: dict[str, str] = {}
    for name, kind, path in speech_specs(list(models), list(mappers)):
        try:
            speech[name] = (read_settings(model_folder(path)).llm if kind == "model" else
                            llm or json.loads((mapper_folder(path) / CONFIG_FILE).read_text(encoding="utf-8"))["extra"]["llm"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    found = dict(speech) if {"smap", "nearest"} & set(names) else {}
    shared = next(iter(speech.values()), None) or llm  # as in `build`: the first speech model's LLM, else --llm
    found.update({name: shared for name in ("transcript", "cascade") if name in names and shared})
    return found


def judges(specs: list[str], batch_size: int = 16, tested: dict[str, str | None] | None = None,
           dtype=None) -> dict:
    """Judges by spec, as loaders (the paper averaged four): each loads its LLM when called, which
    `run.evaluate` does after every system has generated, one judge at a time. A judge must not be
    the LLM of a system under test (`tested`: system name -> its LLM spec), which would grade its
    own answers; that and each spec are checked here, before any model is loaded."""
    from smap.llm import resolve

    for spec in specs:
        mine = next((name for name, llm in (tested or {}).items() if llm and _same_model(spec, llm)), None)
        if mine:
            raise SystemSpecError(f"--judge {spec}: the LLM of system {mine!r}, which is under test; "
                                  "judge with other LLMs")
    for spec in specs:
        resolve(spec)  # a mistyped spec is named now, not after the generation
    return {spec: functools.partial(llm_judge, spec, batch_size, dtype) for spec in dict.fromkeys(specs)}
