"""The speech LLM: a SpeechMapper in front of a frozen causal LLM.

One example is laid out as (see `smap.prompts`)::

    [prefix tokens] [head tokens] [content vectors] [tail tokens]   [response tokens + EOS]
     shared          instruction   speech (mapper)   end of turn,    labels: the only
                     (its layout)  or text tokens    assistant hdr   positions with loss

The prefix is the same for every example, so its keys and values are computed once with the
frozen LLM and reused by every training step and every generation (`PromptedLM.prefix_cache`).
The rest is assembled per example and padded:

* training pads on the right: every row starts right after the prefix, so positions are
  contiguous and causal attention alone keeps pads (which come last) out of every real token's
  view, so no padding mask is passed;
* generation pads between the prefix and the content, so that all rows end together and new
  tokens are appended in one column; the 2-D attention mask hides the pads and positions are
  counted over real tokens only.

With `ModelSettings.token_mix` > 0 (not in the paper) the LLM does not read the mapper's vectors
themselves but each one's mixture of token embeddings (`token_mixture`): input the LLM has seen in
pre-training, whatever the mapper's error.

Only the hidden states just before a label go through the LM head (the vocabulary projection is
the largest matrix of a small LLM), unless `logits_at_labels=False`.

`SpeechLLM` (an nn.Module) holds the trainable mapper; its `PromptedLM` holds the frozen LLM as a
plain attribute, so the LLM is neither in the optimiser nor in checkpoints nor wrapped by DDP.

Model folder (`SpeechLLM.save_pretrained`)::

    smap_model.json   format, LLM spec (and a hub LLM's revision), encoder spec, prompt settings, provenance
    mapper/           SpeechMapper config.json + model.safetensors

A model folder travels: moved or copied elsewhere it loads the same. What it names is a bundled
name (``smollm2-135m``, ``whisper-tiny.en``), a hub id (``hf:org/name``, the LLM's commit in
``llm_revision``, so that a later load reads the same weights), a path inside the folder, written
relative to it (``./llm``), or a local path outside it, written absolute: if that one is gone
(another machine), loading stops with one line naming it and ``--llm``, which gives its new place.
`SpeechLLM.from_pretrained` also takes a hub id of a model folder (`model_folder`).
"""

from __future__ import annotations

import json
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList

from smap.fileio import atomic_write_text
from smap.llm import (HUB_PREFIX, LLMSpecError, bundled, hub_id, hub_snapshot, load_causal_lm, local_source,
                      pad_id_of, resolve, snapshot_commit, tokenizer_fingerprint)
from smap.losses import content_length, pad_targets, response_ce, weighted_mse
from smap.mapper import CONFIG_FILE, WEIGHTS_FILE, MapperOutput, SpeechMapper
from smap.prompts import DEFAULT_LAYOUT, PromptFormat, Request, check_layout

MODEL_FILE = "smap_model.json"
MAPPER_DIR = "mapper"
FORMAT_VERSION = 2  # 2: paths inside the folder relative to it, hub ids as hf:org/name (`_portable_llm`)
IGNORE = -100


class ModelMismatchError(ValueError):
    """A mapper that does not fit the LLM it is attached to; the message names both values."""


def check_compatible(mapper: SpeechMapper, llm, tokenizer, llm_spec: str) -> None:
    """Refuse a mapper trained for another embedding size or another tokenizer."""
    extra = mapper.config.extra
    dim = llm.get_input_embeddings().embedding_dim
    if mapper.config.output_dim != dim:
        raise ModelMismatchError(
            f"the mapper outputs {mapper.config.output_dim}-d vectors but {llm_spec} takes {dim}-d embeddings "
            f"(mapper trained for {extra.get('llm', 'an unrecorded LLM')})"
        )
    if "tokenizer" in extra:
        ours = tokenizer_fingerprint(tokenizer)
        if extra["tokenizer"] != ours:
            raise ModelMismatchError(
                f"the mapper was trained on the tokenizer of {extra.get('llm', '?')} "
                f"({extra.get('vocab_size', '?')} tokens, fingerprint {extra['tokenizer']}) but {llm_spec} has "
                f"{len(tokenizer)} tokens, fingerprint {ours}"
            )


@dataclass(frozen=True)
class Decoding:
    """How outputs are decoded: greedy (num_beams=1) or beam search, at most max_new_tokens;
    no_repeat_ngram > 0 bans any n-gram of that size from appearing twice in an output. Two of
    smap's additions to the paper's decoding (`smap.generate`): an ASR output has at most its own
    input's content vectors + asr_slack tokens (None: no cap), and first_line keeps only an ASR
    output's first line."""

    max_new_tokens: int = 128
    num_beams: int = 1
    no_repeat_ngram: int = 0
    asr_slack: int | None = 1
    first_line: bool = True


@dataclass
class Assembled:
    """A padded batch after the prefix. Shapes: (batch, seq, dim) and (batch, seq)."""

    embeds: torch.Tensor
    labels: torch.Tensor  # token id at response positions, IGNORE elsewhere
    mask: torch.Tensor  # 1 at real positions, 0 at pads
    content_start: torch.Tensor  # (batch,) where each row's content vectors begin


class PromptedLM:
    """A frozen causal LM, its tokenizer and prompt format, and the cached prompt prefix.

    `contents` below are per-example (n_b, dim) tensors that take the placeholder's place:
    mapper outputs for speech, or token embeddings of a text (`embed_text`); `prompts` are
    per-example (head, tail) token ids around them (`prompt_ids`).
    """

    def __init__(self, llm, tokenizer, system: str = "default", prefix_cache: bool = True,
                 logits_at_labels: bool = True, layout: str = DEFAULT_LAYOUT):
        check_layout(layout)
        self.llm, self.tokenizer, self.layout = llm, tokenizer, layout
        self.format = PromptFormat(tokenizer, system)
        self.use_prefix_cache = prefix_cache
        # Models that rescale or soft-cap logits after the head need the stock forward.
        cfg = llm.config.get_text_config()
        self.logits_at_labels = logits_at_labels and getattr(cfg, "final_logit_softcapping", None) is None
        self.pad_id = pad_id_of(tokenizer)
        self._prefix: tuple[tuple[torch.device, torch.dtype], list] | None = None
        self._prompts: dict[str, tuple[list[int], list[int]]] = {}

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def to(self, device) -> PromptedLM:
        self.llm.to(device)
        return self

    def embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """(n,) token ids -> (n, dim) input embeddings."""
        return self.llm.get_input_embeddings()(torch.as_tensor(ids, dtype=torch.long, device=self.device))

    def embed_text(self, text: str) -> torch.Tensor:
        """(n, dim) embeddings of a text's tokens: the text-only stand-in for speech vectors."""
        return self.embed(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, request: Request, phrasing: int | random.Random = 0, among: int = 0) -> tuple[list[int], list[int]]:
        """(head, tail) ids around the content for one request, in this LM's layout (phrasing as
        `Request.instruction`; see `PromptFormat.around`)."""
        turn = request.turn(self.layout, phrasing, among)
        if turn not in self._prompts:
            self._prompts[turn] = self.format.around(turn)
        return self._prompts[turn]

    # -- the shared prefix ---------------------------------------------------------------------

    def prefix_cache(self, batch: int) -> DynamicCache:
        """The prefix's keys/values, computed once per device and dtype, viewed `batch` times.

        Views cost nothing: the first `update` of each layer concatenates them into new tensors,
        so the stored copy is never written to."""
        key = (self.device, self.dtype)
        if self._prefix is None or self._prefix[0] != key:
            ids = torch.tensor([self.format.prefix_ids], device=self.device)
            with torch.no_grad():
                out = self.llm(input_ids=ids, use_cache=True)
            self._prefix = (key, [(layer.keys, layer.values) for layer in out.cache.layers])
        return DynamicCache(
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prefix[1]],
            config=self.llm.config,
        )

    # -- assembling a batch --------------------------------------------------------------------

    def assemble(self, contents: list[torch.Tensor], prompts: list[tuple[list[int], list[int]]],
                 responses: list[list[int]] | None = None, pad_left: bool = False) -> Assembled:
        """Rows of [head, content, tail, response], padded to one length with zero vectors."""
        rows, labels = [], []
        for b, content in enumerate(contents):
            head, tail = prompts[b]
            tail = tail + (responses[b] if responses is not None else [])
            rows.append(torch.cat([self.embed(head), content.to(self.dtype), self.embed(tail)]))
            lab = torch.full((len(rows[-1]),), IGNORE, dtype=torch.long)
            if responses is not None:
                lab[len(rows[-1]) - len(responses[b]):] = torch.tensor(responses[b])
            labels.append(lab)
        batch, seq, dim = len(rows), max(len(r) for r in rows), rows[0].shape[1]
        embeds = rows[0].new_zeros(batch, seq, dim)
        out_labels = torch.full((batch, seq), IGNORE, dtype=torch.long)
        mask = torch.zeros(batch, seq, dtype=torch.long)
        start = torch.zeros(batch, dtype=torch.long)
        for b, row in enumerate(rows):
            s = seq - len(row) if pad_left else 0
            embeds[b, s : s + len(row)] = row
            out_labels[b, s : s + len(row)] = labels[b]
            mask[b, s : s + len(row)] = 1
            start[b] = s + len(prompts[b][0])
        return Assembled(embeds, out_labels.to(self.device), mask.to(self.device), start)

    def _prefix_embeds(self, batch: int) -> torch.Tensor:
        return self.embed(self.format.prefix_ids).unsqueeze(0).expand(batch, -1, -1)

    # -- training ------------------------------------------------------------------------------

    def response_loss(self, contents: list[torch.Tensor], prompts: list[tuple[list[int], list[int]]],
                      responses: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over response tokens (EOS included) and their count."""
        a = self.assemble(contents, prompts, responses)
        inputs, targets = a.embeds[:, :-1], a.labels[:, 1:]  # position t predicts token t+1
        n_prefix = len(self.format.prefix_ids)
        if self.use_prefix_cache:
            cache = self.prefix_cache(len(contents))
        else:
            inputs, cache = torch.cat([self._prefix_embeds(len(contents)), inputs], 1), None
            targets = torch.cat([targets.new_full((len(contents), n_prefix), IGNORE), targets], 1)
        positions = torch.arange(n_prefix if cache is not None else 0, n_prefix + a.embeds.shape[1] - 1,
                                 device=self.device).unsqueeze(0)
        if not self.logits_at_labels:
            logits = self.llm(inputs_embeds=inputs, cache=cache, position_ids=positions, use_cache=False).logits
            return response_ce(logits, targets), int((targets != IGNORE).sum())
        hidden = self.llm.base_model(inputs_embeds=inputs, cache=cache, position_ids=positions,
                                     use_cache=False).last_hidden_state
        where = targets != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[where])  # (n_labels, vocab)
        return response_ce(logits, targets[where]), int(where.sum())

    # -- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, contents: list[torch.Tensor], prompts: list[tuple[list[int], list[int]]],
                 decoding: Decoding = Decoding(), limits: list[int] | None = None) -> list[str]:
        """The continuation of each prompt, decoded to text; `limits`: each example's own
        maximum of new tokens (capped at `decoding.max_new_tokens`)."""
        batch = len(contents)
        limits = [min(n, decoding.max_new_tokens) for n in limits or [decoding.max_new_tokens] * batch]
        most = max(limits)
        a = self.assemble(contents, prompts, pad_left=True)
        # generate() takes the whole sequence and skips the part already in the cache.
        embeds = torch.cat([self._prefix_embeds(batch), a.embeds], 1)
        mask = torch.cat([a.mask.new_ones(batch, len(self.format.prefix_ids)), a.mask], 1)
        config = GenerationConfig(
            max_new_tokens=most, num_beams=decoding.num_beams, do_sample=False,
            no_repeat_ngram_size=decoding.no_repeat_ngram, eos_token_id=self.format.eos_id, pad_token_id=self.pad_id,
        )
        cache = self.prefix_cache(batch * decoding.num_beams) if self.use_prefix_cache else None
        with warnings.catch_warnings():  # the n-gram ban covers the output only, as wanted: not a warning here
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            # only when some row ends before the batch does
            ends = [RowLimits(limits, self.format.eos_id, decoding.num_beams)] if min(limits) < most else []
            processors = LogitsProcessorList(ends)
            out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, cache=cache, generation_config=config,
                                    logits_processor=processors)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


class RowLimits(LogitsProcessor):
    """Ends each row at its own length: EOS is the only choice once a row has `limits[b]` new
    tokens. Batched generation shares one max_new_tokens, whereas a transcript's length is bounded
    per utterance by its speech vectors. Rows are examples, each repeated `num_beams` times."""

    def __init__(self, limits: list[int], eos_id: int, num_beams: int = 1):
        self.limits = torch.tensor(limits).repeat_interleave(num_beams)
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # With inputs_embeds, input_ids holds the generated tokens only.
        done = self.limits.to(scores.device) <= input_ids.shape[1]
        scores[done] = float("-inf")
        scores[done, self.eos_id] = 0.0
        return scores


def token_mixture(vectors: list[torch.Tensor], table: torch.Tensor, vocab: torch.Tensor, pad_id: int,
                  sharpness: float) -> list[torch.Tensor]:
    """Each example's vectors (n_b, dim) -> (m_b, dim): softmax(sharpness x cosine to the embeddings
    of the `vocab` ids) @ those embeddings, up to the first vector whose nearest token is `pad_id`.

    Stage 1 trains the mapper towards token embeddings, but where it is unsure its output is an
    average, shorter than any embedding and read by a frozen LLM as noise; a sharp mixture is almost
    the nearest token (the LLM reads text) and still passes gradients to the mapper. table
    (vocab_size, dim): the LLM's input embeddings; vocab (k,) ids, `pad_id` among them."""
    if not vectors:
        return []
    emb = table[vocab].detach().float()
    sims = F.normalize(torch.cat(vectors).float(), dim=-1) @ F.normalize(emb, dim=-1).T
    mixed = (torch.softmax(sharpness * sims, -1) @ emb).to(table.dtype)
    is_pad = vocab[sims.argmax(-1)] == pad_id
    out, start = [], 0
    for v in vectors:
        out.append(mixed[start : start + content_length(is_pad[start : start + len(v)])])
        start += len(v)
    return out


@dataclass
class ModelSettings:
    """What a model folder records besides the mapper's weights."""

    llm: str
    llm_revision: str | None = None  # a hub LLM's commit, read again at the next load
    encoder: str | None = None
    system: str = "default"
    layout: str = DEFAULT_LAYOUT  # the user turn: instruction and speech (`smap.prompts.LAYOUTS`)
    asr_target: str = "normalized"  # ASR responses: "normalized" (as Stage 1's targets) or "raw"
    token_mix: float = 0.0  # > 0: the LLM reads `token_mixture`s of this sharpness; 0: the vectors (paper)
    provenance: dict = field(default_factory=dict)


class SpeechLLM(nn.Module):
    """Mapper (trainable) + PromptedLM (frozen). `forward` is the Stage-2 loss."""

    def __init__(self, mapper: SpeechMapper, lm: PromptedLM, settings: ModelSettings):
        super().__init__()
        check_compatible(mapper, lm.llm, lm.tokenizer, settings.llm)
        self.mapper, self.lm, self.settings = mapper, lm, settings
        self._mix_vocab: torch.Tensor | None = None

    @property
    def target_pad_id(self) -> int:
        """The token whose embedding pads Stage 1's targets: the one the mapper was pretrained with."""
        return self.mapper.config.extra.get("pad_id", self.lm.pad_id)

    def speech_contents(self, features: torch.Tensor, lengths: torch.Tensor,
                        tokens: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], MapperOutput]:
        """features (batch, frames, dim) -> what the LLM reads for each example, (n_b, llm_dim): the
        mapper's vectors, or their token mixtures; and the mapper's output (`SpeechMapper.forward`;
        `tokens` given, with its CTC loss if it has one)."""
        out = self.mapper(features, lengths, tokens)
        vectors = [out.embeddings[b, : int(out.lengths[b])] for b in range(len(out.lengths))]
        if not self.settings.token_mix:
            return vectors, out
        return token_mixture(vectors, self.lm.llm.get_input_embeddings().weight, self.mix_vocab,
                             self.target_pad_id, self.settings.token_mix), out

    @property
    def mix_vocab(self) -> torch.Tensor:
        """The token ids a mixture is over: the pad and the CTC head's token types (the training
        transcripts'), else the whole vocabulary. Built once per device: every forward reads it."""
        table = self.lm.llm.get_input_embeddings().weight
        if self._mix_vocab is None or self._mix_vocab.device != table.device:
            if self.mapper.config.compress != "ctc":
                self._mix_vocab = torch.arange(len(table), device=table.device)
            else:
                pad = torch.tensor([self.target_pad_id], device=self.mapper.ctc_tokens.device)
                self._mix_vocab = torch.cat([self.mapper.ctc_tokens, pad]).unique().to(table.device)
        return self._mix_vocab

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, prompts: list[tuple[list[int], list[int]]],
                responses: list[list[int]], mse_tokens: list[torch.Tensor] | None = None,
                mse_weight: float = 0.0, alpha: float = 5.0) -> tuple[torch.Tensor, dict]:
        """CE on the responses, plus `mse_weight` x the Stage-1 MSE towards `mse_tokens`' embeddings.

        features (batch, frames, dim), lengths (batch,); prompts: (head, tail) ids per example
        (`PromptedLM.prompt_ids`); responses: token ids per example;
        mse_tokens: per example the normalised transcript's ids (empty: no MSE for that row).
        A CTC-compressed mapper's CTC loss on `mse_tokens` is added at its own weight whatever
        `mse_weight` is: its labels decide where the LLM's input vectors are cut."""
        contents, out = self.speech_contents(features, lengths, mse_tokens)
        emb, out_len = out.embeddings, out.lengths
        ce, n = self.lm.response_loss(contents, prompts, responses)
        logs = {"ce": float(ce.detach()), "tokens": n}
        loss = ce
        if out.ctc_loss is not None:
            loss = loss + self.mapper.config.ctc_weight * out.ctc_loss
            logs["ctc"] = float(out.ctc_loss.detach())
        if mse_weight > 0 and mse_tokens is not None:
            rows = [b for b, t in enumerate(mse_tokens) if len(t)]
            if rows:
                table = self.lm.llm.get_input_embeddings().weight
                tg = pad_targets([mse_tokens[b] for b in rows], out_len[rows], table, self.target_pad_id, alpha)
                mse = weighted_mse(emb[rows], tg.target, tg.weight)
                loss = loss + mse_weight * mse
                logs["mse"] = float(mse.detach())
        return loss, logs

    # -- model folders -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """mapper/ first, then smap_model.json (atomically): a folder with the manifest is whole.
        The specs are written so that the folder travels (module docstring)."""
        directory = Path(directory)
        self.mapper.save_pretrained(directory / MAPPER_DIR)
        s = self.settings
        llm, revision = _portable_llm(s.llm, directory)
        atomic_write_text(directory / MODEL_FILE, json.dumps({
            "format": FORMAT_VERSION, "llm": llm, "llm_revision": s.llm_revision or revision,
            "encoder": _portable_encoder(s.encoder, directory), "system": s.system, "layout": s.layout,
            "asr_target": s.asr_target, "token_mix": s.token_mix, "mapper": MAPPER_DIR, "provenance": s.provenance,
        }, indent=2))

    @classmethod
    def build(cls, mapper: SpeechMapper, settings: ModelSettings, dtype: torch.dtype = torch.float32,
              prefix_cache: bool = True, logits_at_labels: bool = True) -> SpeechLLM:
        """Load the frozen LLM named in `settings` and attach `mapper` to it (checked first). A hub
        LLM is read at `settings.llm_revision`, which is set to the commit read."""
        source = local_source(resolve(settings.llm, settings.llm_revision))
        settings.llm_revision = source.revision
        llm, tokenizer = load_causal_lm(source, dtype)
        lm = PromptedLM(llm, tokenizer, settings.system, prefix_cache, logits_at_labels, settings.layout)
        return cls(mapper, lm, settings)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32, llm: str | None = None,
                        **kwargs) -> SpeechLLM:
        """A model folder written by `save_pretrained`, or its hub id (`model_folder`); the LLM is
        loaded from the folder's spec, or from `llm` (`--llm`: the same LLM, found elsewhere)."""
        folder = model_folder(directory)
        settings = read_settings(folder)
        if folder != Path(directory).expanduser():  # a hub id: which snapshot was read
            settings.provenance["fetched"] = {"model": str(directory), "revision": snapshot_commit(folder)}
        if llm:
            settings.llm, settings.llm_revision = stable_spec(llm), None
        elif Path(settings.llm).is_absolute() and not Path(settings.llm).exists():
            raise LLMSpecError(f"{folder / MODEL_FILE} names the LLM {settings.llm}, which is not there: give its "
                               f"place with --llm, or write it as \"llm\" in {MODEL_FILE}")
        mapper = SpeechMapper.from_pretrained(folder / MAPPER_DIR)
        return cls.build(mapper, settings, dtype, **kwargs)

    @classmethod
    def from_mapper(cls, mapper_dir: str | Path, llm: str | None = None, system: str = "default",
                    dtype: torch.dtype = torch.float32, layout: str = DEFAULT_LAYOUT, token_mix: float = 0.0,
                    **kwargs) -> SpeechLLM:
        """A Stage-1 mapper used straight away with a frozen LLM (default: the one it was trained for)."""
        mapper = SpeechMapper.from_pretrained(mapper_dir)
        extra = mapper.config.extra
        llm = llm or extra.get("llm")
        if not llm:
            raise ModelMismatchError(f"{mapper_dir}: the mapper does not record its LLM; give --llm")
        settings = ModelSettings(llm=stable_spec(llm), encoder=extra.get("encoder"), system=system, layout=layout,
                                 token_mix=token_mix, provenance={"stage": 1, "mapper": str(mapper_dir)})
        return cls.build(mapper, settings, dtype, **kwargs)


def stable_spec(spec: str) -> str:
    """An LLM spec that still resolves from another working directory (folders made absolute)."""
    source = resolve(spec)
    return str(Path(source.path).resolve()) if source.kind == "folder" or spec.endswith(".gguf") else spec


def _complete_model(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (MODEL_FILE, f"{MAPPER_DIR}/{CONFIG_FILE}", f"{MAPPER_DIR}/{WEIGHTS_FILE}"))


def model_folder(spec: str | Path) -> Path:
    """The folder of a model: a local folder (a `Path` is always one), or, for a hub id (the rule of
    `smap.llm.hub_id`: ``org/name[@REV]`` or ``hf:org/name[@REV]``), its snapshot, fetched once
    into the Hugging Face cache and read from there afterwards."""
    path = Path(spec).expanduser()
    if isinstance(spec, Path) or path.is_dir():
        return path
    hub = hub_id(spec, FileNotFoundError)
    if hub is None:
        raise FileNotFoundError(f"{spec}: no such model folder (nor a hub id org/name)")
    return hub_snapshot(hub, _complete_model, FileNotFoundError)


def _inside(path: Path, folder: Path) -> str | None:
    """`path` as './REL' if it lies inside `folder`, else None."""
    try:
        rel = path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None
    return f"./{rel.as_posix()}".removesuffix("/.")


def _portable_llm(spec: str, folder: Path) -> tuple[str, str | None]:
    """(spec, revision) as a model folder records them: a bundled name as it is, a hub id as
    hf:org/name (and its revision), a path inside `folder` relative to it, any other path absolute."""
    if bundled(spec):
        return spec, None
    source = resolve(spec)
    if source.kind == "hub":
        return HUB_PREFIX + source.path, source.revision
    path = Path(source.path).resolve()
    return _inside(path, folder) or str(path), None


def _split_encoder(spec: str) -> tuple[str, str, str]:
    """'ct2:DIR?opts' -> ('ct2:', 'DIR', '?opts'); a spec without a backend prefix -> ('', spec, '')."""
    base, q, query = spec.partition("?")
    kind, sep, target = base.partition(":")
    return (f"{kind}:", target, q + query) if sep and kind in ("ct2", "hf") else ("", spec, "")


def _portable_encoder(spec: str | None, folder: Path) -> str | None:
    """An encoder spec as a model folder records it: a local folder inside `folder` as './REL';
    anything else as the stores name it, which `smap prepare` makes absolute for local folders."""
    if spec is None:
        return None
    prefix, target, query = _split_encoder(spec)
    inside = _inside(Path(target), folder) if prefix and Path(target).is_absolute() else None
    return f"{prefix}{inside}{query}" if inside else spec


def _located(spec: str, folder: Path, encoder: bool) -> str:
    """A spec read from a model folder (format 2): one relative to the folder made absolute."""
    prefix, target, query = _split_encoder(spec) if encoder else ("", spec, "")
    relative = target.startswith("./") if encoder else not (bundled(spec) or spec.startswith(HUB_PREFIX)
                                                            or Path(spec).is_absolute())
    # not resolve(): in a hub snapshot the files are links into the cache's blobs, named by their hash
    return f"{prefix}{os.path.normpath(folder.absolute() / target)}{query}" if relative else spec


def read_settings(directory: str | Path) -> ModelSettings:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a smap model folder (no {MODEL_FILE}); "
                                "train one with `smap attach`, or use --mapper DIR --llm SPEC")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        # Format 1 recorded the specs as the user gave them (folders made absolute).
        llm, encoder = d["llm"], d.get("encoder")
        if d.get("format", 1) >= 2:
            llm, encoder = _located(llm, Path(directory), False), encoder and _located(encoder, Path(directory), True)
        # Folders written before the layout was recorded were trained speech-first.
        return ModelSettings(llm=llm, llm_revision=d.get("llm_revision"), encoder=encoder,
                             system=d.get("system", "default"), layout=d.get("layout", "speech-first"),
                             asr_target=d.get("asr_target", "normalized"), token_mix=float(d.get("token_mix", 0.0)),
                             provenance=d.get("provenance", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable model manifest ({e})") from None
