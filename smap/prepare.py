"""`smap prepare`: a speech source -> waveforms -> frozen encoder -> feature store, resumable.

The source's utterances are cut, in the source's order, into chunks of `shard_size`. A chunk is
decoded (or synthesised), sorted by length, encoded in batches under a padded-audio budget and
written as one shard, atomically (smap.data.store). Chunks and batches depend only on the source,
so an utterance is encoded in the same batch whether the run was interrupted or not: a resumed run
ends with the same store as an uninterrupted one. Shards already written are not encoded again.

An item that cannot be used is skipped, named with its reason on screen and in ``skips.jsonl``
(one line per item: id, reason, detail), and the rest goes through:
  invalid        a malformed manifest row (the detail names the line)
  untranscribed  no transcript after normalisation (and no translation or answer to learn instead)
  long text      a text field over MAX_TEXT_CHARS, or a record too large to store
  missing        no such audio file
  unreadable     the audio cannot be decoded
  empty          no audio, shorter than 20 ms, or silent
  too long       longer than --max-seconds (default: smap.audio.MAX_SECONDS, 60 s, for every
                 encoder; found from the audio's header, before it is decoded)
  encoder        the encoder fails on the clip alone, or gives non-finite features
Skipped items are tried again on a re-run, so a fixed file is picked up; ``skips.jsonl`` lists a
run's skips (a re-run starts it anew).

An encoder batch that fails is encoded again clip by clip, so that one clip that the encoder
cannot take is skipped and the others stored; a re-run does not stop on it either.

The report (rewritten after every shard, so an interrupted run leaves one) holds counts (`items` in
the source, `stored`, `skipped` and, by reason, `skip_reasons`), the length limit (`max_seconds`),
hours, throughput, and with an LLM, frames per token: whether the mapper's output
(the encoder frames shortened by its 4x downsampling) has room for the transcript's tokens, which
the Stage-1 loss needs.

The output folder is locked for the run (`smap.fileio.FolderLock`): a second `prepare` on it stops
at once. Under ``accelerate launch`` process k takes chunks k, k + n, k + 2n, ... and writes its
own shards and skips; after all are done, process 0 indexes them all (the only writer of
``store.json``), gathers the skips and writes the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from smap.audio import MAX_SECONDS, AudioError
from smap.data.sources import Item, open_source
from smap.data.store import STORE_FILE, FeatureStore, RecordTooLargeError, StoreError, StoreInfo, StoreWriter
from smap.encoders import EMBEDDED_ENCODER, Encoder, load_encoder
from smap.fileio import FolderLock, append_lines, atomic_write, atomic_write_text
from smap.progress import literal, one_line, progress
from smap.text import normalize

REPORT_FILE = "prepare_report.json"
SKIPS_FILE = "skips.jsonl"
MIN_SECONDS = 0.02
# Longest text field kept: about 1,700 words, ten minutes of speech, far past what one encoder
# batch or one training example is sized for; a longer one is a wrong column or a whole document,
# which would run `smap attach` out of memory on every resume.
MAX_TEXT_CHARS = 10_000
TEXT_FIELDS = ("text", "translation", "question", "answer")


@dataclass
class PrepareConfig:
    """What `prepare` reads, how it encodes, and where it writes.

    source_options: passed to `open_source` (data_dir, audio_dir, audio_field, text_field, pair,
    lang, part, tts). encoder_options: passed to `load_encoder` (layer, window, device, ...).
    """

    source: str
    out: str
    split: str | None = None
    encoder: str = EMBEDDED_ENCODER
    encoder_options: dict = field(default_factory=dict)
    source_options: dict = field(default_factory=dict)
    limit: int | None = None  # only the first N utterances (a quick try)
    max_seconds: float | None = None  # longer clips are skipped; None: MAX_SECONDS
    batch_seconds: float = 240.0  # padded audio per encoder batch
    batch_size: int = 64
    shard_size: int = 256  # utterances per chunk and shard
    llm: str | None = None  # a tokenizer for the frames-per-token figures


class _Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def batches(lengths: list[int], max_total: int, max_size: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (count x longest) within `max_total`.

    A clip longer than `max_total` forms a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        # Sorted longest first, so a batch's first clip is its longest.
        if out and len(out[-1]) < max_size and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_total:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _check_text(item: Item) -> None:
    rec = item.record
    if item.error:
        raise _Skip("invalid", item.error)
    for key in TEXT_FIELDS:
        if len(str(rec.get(key) or "")) > MAX_TEXT_CHARS:
            raise _Skip("long text", f"{key}: {len(str(rec[key]))} characters, more than {MAX_TEXT_CHARS}")
    if not normalize(str(rec.get("text") or "")) and not (rec.get("translation") or rec.get("answer")):
        raise _Skip("untranscribed", "empty transcript")


def _load(item: Item, encoder: Encoder, max_seconds: float | None) -> torch.Tensor:
    try:
        wav = item.load(encoder.sample_rate, max_seconds)  # too long: refused from the header, before decoding
    except AudioError as e:
        raise _Skip(e.reason, str(e)) from None
    except (RuntimeError, ValueError, OSError) as e:  # a decoder's own failure on a damaged file
        raise _Skip("unreadable", f"{type(e).__name__}: {e}") from None
    seconds = wav.numel() / encoder.sample_rate
    if seconds < MIN_SECONDS or not bool(wav.abs().max() > 0):
        raise _Skip("empty", f"{seconds:.3f} s of audio" + ("" if seconds < MIN_SECONDS else ", all silent"))
    return wav


class _Run:
    """Counters of one process, and its skips on their way to its skip file (`flush_skips`)."""

    def __init__(self, skips: Path | None = None):
        self.skips_file = skips
        self.pending: list[str] = []  # skip lines not yet in the file
        self.skip_reasons: Counter[str] = Counter()
        self.encoded = 0
        self.audio_seconds = 0.0
        self.encode_seconds = 0.0

    @classmethod
    def merge(cls, runs: list[_Run]) -> _Run:
        """All processes' counts; encoding time is the slowest process's (they ran side by side)."""
        total = cls()
        for r in runs:
            total.skip_reasons += r.skip_reasons
            total.encoded += r.encoded
            total.audio_seconds += r.audio_seconds
            total.encode_seconds = max(total.encode_seconds, r.encode_seconds)
        return total

    def skip(self, item: Item, skip: _Skip, console) -> None:
        self.skip_reasons[skip.reason] += 1
        self.pending.append(json.dumps({"id": item.id, "reason": skip.reason, "detail": skip.detail},
                                       ensure_ascii=False))
        if console is not None:
            console.print(f"[yellow]skip[/] {literal(item.id)}: {skip.reason} ({literal(skip.detail)})",
                          highlight=False, soft_wrap=True)

    def flush_skips(self) -> None:
        """Append the skips so far to the skip file: once per chunk, so a million bad rows cost a
        million lines, written once each."""
        append_lines(self.skips_file, self.pending)
        self.pending = []


@contextlib.contextmanager
def one_torch_thread():
    """Decoding and resampling one clip is too small a job to share: on a busy 2-core machine,
    waiting for torch's second thread made it three times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _encode(encoder: Encoder, waves: list[torch.Tensor], console) -> list[torch.Tensor | _Skip]:
    """The encoder's features for each wave, or the skip of a wave it fails on: a failed batch (a
    clip it cannot take, memory) is encoded again one clip at a time."""
    try:
        return encoder.encode(waves)
    except Exception as e:  # any failure of the encoder's own code; interrupts go through
        if len(waves) == 1:
            return [_Skip("encoder", one_line(e))]
        if console is not None:
            console.print(f"[yellow]encoder failed[/] on a batch of {len(waves)} clips ({literal(one_line(e))}); "
                          "encoding them one by one", highlight=False, soft_wrap=True)
        return [_encode(encoder, [w], None)[0] for w in waves]


def _encode_chunk(chunk: list[Item], encoder: Encoder, writer: StoreWriter, cfg: PrepareConfig,
                  max_seconds: float | None, run: _Run, console) -> None:
    ready: list[tuple[Item, torch.Tensor]] = []
    with one_torch_thread():
        for item in chunk:
            try:
                _check_text(item)
                ready.append((item, _load(item, encoder, max_seconds)))
            except _Skip as skip:
                run.skip(item, skip, console)
    lengths = [w.numel() for _, w in ready]
    for group in batches(lengths, int(cfg.batch_seconds * encoder.sample_rate), cfg.batch_size):
        start = time.perf_counter()
        feats = _encode(encoder, [ready[i][1] for i in group], console)
        run.encode_seconds += time.perf_counter() - start
        for i, f in zip(group, feats):
            item, wav = ready[i]
            try:
                if isinstance(f, _Skip):
                    raise f
                if f.shape[0] == 0:
                    raise _Skip("empty", "no encoder frames")
                if not torch.isfinite(f.to(torch.float16)).all():  # as stored: beyond float16's range is inf
                    raise _Skip("encoder", "non-finite features (NaN, or beyond float16's range)")
                duration = wav.numel() / encoder.sample_rate
                writer.add({**item.record, "duration": round(duration, 3)}, f)
            except RecordTooLargeError as e:
                run.skip(item, _Skip("long text", str(e)), console)
            except _Skip as skip:
                run.skip(item, skip, console)
            else:
                run.encoded += 1
                run.audio_seconds += duration
    writer.flush()
    run.flush_skips()


def prepare(cfg: PrepareConfig, console=None) -> dict:
    """Encode a source into the store `cfg.out`; returns the report (also written there).

    console: a rich Console for skip lines and the progress bar (None: silent). Under several
    processes, only the main one returns the report; the others return {}.
    """
    from accelerate import PartialState

    # On a machine without a GPU, processes started by torchrun (or `accelerate launch`, which uses
    # it) only find each other if told to use the CPU (gloo).
    state = PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
                         or not torch.cuda.is_available())
    started = time.perf_counter()
    source = open_source(cfg.source, cfg.split, **cfg.source_options)  # a wrong source leaves nothing behind
    # Before the encoder loads, so that a second `prepare` on the folder stops at once.
    with FolderLock(cfg.out) if state.is_main_process else contextlib.nullcontext():
        state.wait_for_everyone()  # no process writes before the main one holds the lock
        return _prepare(cfg, state, source, started, console if state.is_main_process else None)


def _prepare(cfg: PrepareConfig, state, source, started: float, show) -> dict:
    """`prepare` once the folder is locked: encode what is not stored yet, report."""
    rank, world = state.process_index, state.num_processes
    items = source.items[: cfg.limit] if cfg.limit is not None else source.items
    tokenizer = _tokenizer(cfg.llm) if cfg.llm and state.is_main_process else None  # a bad spec fails now, not after hours
    options = dict(cfg.encoder_options)
    if world > 1 and "device" not in options:
        options["device"] = str(state.device)
    encoder = load_encoder(cfg.encoder, **options)
    max_seconds = MAX_SECONDS if cfg.max_seconds is None else cfg.max_seconds

    out = Path(cfg.out)
    meta = {"source": source.name, "split": source.split, "sample_rate": encoder.sample_rate,
            "corpus": json.loads(json.dumps(source.info.get("corpus")))}  # as store.json will hold it
    if encoder.revision:  # a hub encoder's weights move with its branch: a resume must not mix two
        meta["encoder_revision"] = encoder.revision
    _check_same_source(out, meta)
    # The main process alone writes the index; the others' shards are adopted at the end.
    writer = StoreWriter(out, encoder=encoder.name, dim=encoder.dim, frame_rate=encoder.frame_rate, meta=meta,
                         shard_size=cfg.shard_size, prefix="shard" if world == 1 else f"shard-r{rank}",
                         index=state.is_main_process)
    state.wait_for_everyone()  # the index exists
    chunks = [items[i: i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    mine = chunks[rank::world]
    run = _Run(out / (SKIPS_FILE if world == 1 else f"skips-r{rank}.jsonl"))
    atomic_write_text(run.skips_file, "")  # this run's skips: every skipped item is tried again
    before = FeatureStore(out).records
    hours_before = sum(float(r["duration"]) for r in before) / 3600
    report_base = {"source": source.name, "split": source.split, "store": str(out), "encoder": encoder.name,
                   "dim": encoder.dim, "frame_rate": encoder.frame_rate, "items": len(items),
                   "stored_before": len(before), "max_seconds": max_seconds}

    with progress(show, f"prepare {source.split} -> {out.name}", sum(len(c) for c in mine), "utterances") as update:
        for chunk in mine:
            todo = [it for it in chunk if it.error or it.id not in writer.done]
            if todo:
                _encode_chunk(todo, encoder, writer, cfg, max_seconds, run, show)
                if world == 1:
                    partial = {**report_base, "stored": len(writer.done),
                               "hours_stored": round(hours_before + run.audio_seconds / 3600, 4)}
                    _write_report(out, partial, run, started, source.info)
            update(advance=len(chunk), info=f"{run.encoded / run.encode_seconds:.1f} utt/s" if run.encoded else "")

    if world > 1:
        from accelerate.utils import gather_object

        state.wait_for_everyone()
        runs = gather_object([run])
        if not state.is_main_process:
            return {}
        run = _Run.merge(runs)
        _gather_skips(out, world)
        # Reopening adopts every process's shards into one index.
        StoreWriter(out, encoder=encoder.name, dim=encoder.dim, frame_rate=encoder.frame_rate, meta=meta)
    records = FeatureStore(out).records
    final = {**report_base, "stored": len(records),
             "hours_stored": round(sum(float(r["duration"]) for r in records) / 3600, 4)}
    if tokenizer is not None and records:
        final["frames_per_token"] = frames_per_token(records, tokenizer, cfg.llm)
    return _write_report(out, final, run, started, source.info, finished=True)


def _gather_skips(out: Path, world: int) -> None:
    """The processes' skip files, in process order, become the store's one `skips.jsonl`."""
    parts = [out / f"skips-r{rank}.jsonl" for rank in range(world)]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for part in parts:
                with open(part, "rb") as lines:
                    shutil.copyfileobj(lines, f)

    atomic_write(out / SKIPS_FILE, write)
    for part in parts:
        part.unlink()


def _check_same_source(out: Path, meta: dict) -> None:
    """Refuse to add one source's utterances to a store of another: ids could clash silently
    (tts-train-00000 of another seed is another sentence); nor features of another commit of a hub encoder."""
    if not (out / STORE_FILE).is_file():
        return
    old = StoreInfo.read(out).meta
    for key in ("source", "split", "corpus", "encoder_revision"):
        if key in old and old[key] != meta.get(key):
            raise StoreError(f"{out}: holds features of {old.get('source')} ({old.get('split')}) prepared with other "
                             f"settings ({key} differs); choose another --out, or delete it to start over")


def _write_report(out: Path, base: dict, run: _Run, started: float, source_info: dict,
                  finished: bool = False) -> dict:
    wall = time.perf_counter() - started
    report = {
        **base,
        "finished": finished,
        "encoded_now": run.encoded,
        "skipped": sum(run.skip_reasons.values()),
        "skip_reasons": dict(run.skip_reasons),
        "skips": str(out / SKIPS_FILE),  # one line per skipped item
        "seconds": round(wall, 2),
        "encode_seconds": round(run.encode_seconds, 2),
        "utterances_per_second": round(run.encoded / wall, 2) if run.encoded else None,
        "real_time_factor": round(wall / run.audio_seconds, 5) if run.audio_seconds else None,
        "source_info": source_info,
    }
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2, ensure_ascii=False))
    return report


def _tokenizer(llm: str):
    from smap.llm import load_tokenizer, resolve

    return load_tokenizer(resolve(llm))


def frames_per_token(records: list[dict], tokenizer, llm: str) -> dict:
    """Encoder frames per transcript token, and how many utterances the mapper leaves too short.

    The Stage-1 target is the LLM embedding of each token of the normalised transcript, padded to
    the mapper's output length; an utterance whose mapper output (frames after the 4x
    downsampling) is shorter than its token count has its target cut.
    """
    from smap.data.batching import transcript_tokens
    from smap.mapper import MapperConfig

    rows = [(int(r["frames"]), len(transcript_tokens(tokenizer, r["text"]))) for r in records if normalize(r.get("text") or "")]
    if not rows:
        return {"llm": llm, "utterances": 0}
    frames = torch.tensor([f for f, _ in rows])
    tokens = torch.tensor([t for _, t in rows]).clamp(min=1)
    mapper = MapperConfig()
    mapped = mapper.output_lengths(frames)
    ratio = frames.float() / tokens.float()
    short = int((mapped < tokens).sum())
    short_pool2 = int((MapperConfig(pool=2).output_lengths(frames) < tokens).sum())
    return {
        "llm": llm,
        "utterances": len(rows),
        "mean": round(float(ratio.mean()), 3),
        "min": round(float(ratio.min()), 3),
        "p05": round(float(ratio.quantile(0.05)), 3),
        "median": round(float(ratio.median()), 3),
        "mapper_downsampling": mapper.downsampling,
        "mapper_output_per_token_mean": round(float((mapped.float() / tokens.float()).mean()), 3),
        "too_short_for_mapper": short,
        "too_short_share": round(short / len(rows), 4),
        "too_short_with_pool2": short_pool2,  # with `smap pretrain --pool 2`
    }
