"""Stage 2: attach a pretrained SpeechMapper to a frozen LLM (about 1K steps).

Modes:
  * ``asr`` (task-agnostic): ASR examples only; loss CE on the transcript, or CE + sigma x the
    Stage-1 MSE (`mse_weight`), which keeps the mapper's output close to the transcript's token
    embeddings (the paper: better target-language adherence in zero-shot ST).
  * ``task``: the target task's examples (ST stores: records with ``translation`` and
    ``tgt_lang``; SQA stores: records with ``answer`` and a text ``question``, or with ``answer``
    alone when the speech is the question, like tts/train-qa), with whole ASR batches
    mixed in with probability `asr_mix` (the paper: 0.5 for SQA). The ASR batches come from
    `asr_train` stores, by default the task stores' own transcripts.

Only the mapper is trained: the LLM is held outside the module tree (see `smap.speech_llm`), so
the optimiser, checkpoints and DDP see the mapper alone. The loop itself is `smap.training.fit`.

Run folder: the training files of `smap.training` (checkpoints/, log.jsonl, tb/), plus
``samples.jsonl`` (decoded validation examples; validation logs the held-out CE and, from greedy
decoding, the held-out WER), ``attach_report.json`` and the model itself
(``smap_model.json`` + ``mapper/``), so that `smap infer --model OUT` needs nothing else.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from smap.data.batching import Batch, BucketBatchSampler, UtteranceDataset, evaluation_batches, training_loader
from smap.data.store import open_stores
from smap.fileio import append_lines, atomic_write_text
from smap.generate import generate_features, request_for
from smap.mapper import SpeechMapper, mapper_folder
from smap.progress import literal, printable
from smap.prompts import DEFAULT_LAYOUT, Request, check_layout
from smap.speech_llm import Decoding, ModelMismatchError, ModelSettings, SpeechLLM, stable_spec
from smap.text import normalize, wer
from smap.training import LoopConfig, console, fit, make_accelerator

MODES = ("asr", "task")


@dataclass
class AttachConfig(LoopConfig):
    mapper: str = ""  # a Stage-1 mapper folder, or a pretrain run folder holding mapper/
    llm: str | None = None  # default: the LLM the mapper was pretrained for
    mode: str = "asr"
    train: list[str] = field(default_factory=list)
    asr_train: list[str] = field(default_factory=list)  # task mode; default: `train`
    valid: list[str] = field(default_factory=list)
    asr_mix: float = 0.5
    mse_weight: float = 0.0
    alpha: float = 5.0
    system: str = "default"
    layout: str = DEFAULT_LAYOUT  # the user turn: instruction and speech (`smap.prompts.LAYOUTS`)
    phrasings: int = 0  # train with the first N phrasings of each instruction (0: all)
    asr_target: str = "normalized"
    token_mix: float = 0.0  # > 0: the LLM reads token mixtures of the mapper's vectors (`smap.speech_llm.token_mixture`)
    max_frames: int = 4000
    max_valid: int = 64  # validation utterances for the held-out CE
    valid_decode: int = 32  # validation utterances decoded greedily for the held-out WER (ASR ones)
    show: int = 3  # decoded validation examples printed and logged
    lr: float = 1e-4
    warmup: int = 50
    save_every: int = 250
    eval_every: int = 250


def task_of(record: dict) -> str:
    """The task a record trains: ST if it has a translation, SQA if an answer (to its text question,
    or to the question it speaks: `smap.prompts.SPOKEN_QUESTION`), else ASR."""
    if record.get("translation"):
        return "st"
    if record.get("answer"):
        return "sqa"
    return "asr"


def example(record: dict, task: str, asr_target: str) -> tuple[Request, str]:
    """(request, response) of one record trained as `task`; requests as `smap infer` builds them."""
    request = request_for(record, task)
    if task == "asr":
        text = record.get("text", "")
        return request, normalize(text) if asr_target == "normalized" else text
    return request, record["translation"] if task == "st" else str(record["answer"])


class MixedBatchSampler:
    """Task batches with ASR batches interleaved, so that a batch is ASR with probability `p`.

    Indices of ASR batches are shifted by `offset` (where the ASR utterances start in the
    dataset). Like `BucketBatchSampler`, the order depends only on (seed, epoch)."""

    def __init__(self, task: BucketBatchSampler, asr: BucketBatchSampler, p: float, offset: int, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"--asr-mix must be in [0, 1), not {p}")
        self.task, self.asr, self.p, self.offset, self.seed = task, asr, p, offset, seed
        self.epoch = 0

    def start_epoch(self, epoch: int) -> None:  # see BucketBatchSampler.start_epoch
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        task = self.task.batches(epoch)
        pool = self.asr.batches(epoch)
        n_asr = round(len(task) * self.p / (1 - self.p)) if pool else 0
        asr = [[i + self.offset for i in pool[k % len(pool)]] for k in range(n_asr)]
        out = task + asr
        random.Random(self.seed * 1_000_003 + epoch).shuffle(out)
        return out

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


class Stage2:
    """Prompts and loss of the attach stage over one dataset."""

    def __init__(self, model: SpeechLLM, cfg: AttachConfig, data: UtteranceDataset, n_task: int, sampler):
        self.model, self.cfg, self.data, self.n_task, self.sampler = model, cfg, data, n_task, sampler

    def task(self, index: int) -> str:
        # In task mode, indices past the task stores are the ASR mix-in.
        return task_of(self.data.records[index]) if self.cfg.mode == "task" and index < self.n_task else "asr"

    def prompts(self, batch: Batch, phrasing: int | None = None) -> tuple[list[tuple[list[int], list[int]]], list[list[int]]]:
        """Prompt (head, tail) and response ids per example; phrasing drawn per (seed, epoch, utterance) unless given."""
        lm, prompts, responses = self.model.lm, [], []
        for index, record in zip(batch.indices, batch.records):
            choice = phrasing if phrasing is not None else random.Random(
                f"{self.cfg.seed}:{self.sampler.epoch}:{index}")
            request, response = example(record, self.task(index), self.cfg.asr_target)
            prompts.append(lm.prompt_ids(request, choice, self.cfg.phrasings))
            responses.append(lm.format.response_ids(response))
        return prompts, responses

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        prompts, responses = self.prompts(batch)
        return model(batch.features, batch.lengths, prompts, responses, batch.tokens, self.cfg.mse_weight,
                     self.cfg.alpha)


def heldout_ce(model: SpeechLLM, data: UtteranceDataset, max_frames: int, limit: int | None = None,
               task_for=lambda index, record: task_of(record), asr_target: str = "normalized") -> float:
    """Mean cross-entropy per response token over the first `limit` utterances of `data`, with the
    first phrasing of each instruction: the number to compare between Stage 1 and Stage 2."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in evaluation_batches(data, max_frames, limit, model.lm.device):
            pairs = [example(r, task_for(i, r), asr_target) for i, r in zip(batch.indices, batch.records)]
            contents, _ = model.speech_contents(batch.features, batch.lengths)
            ce, n = model.lm.response_loss(contents, [model.lm.prompt_ids(p[0]) for p in pairs],
                                           [model.lm.format.response_ids(p[1]) for p in pairs])
            total, count = total + float(ce) * n, count + n
    return total / max(count, 1)


def attach(cfg: AttachConfig) -> Path:
    """Run Stage 2; returns the model folder (`cfg.out`)."""
    if cfg.mode not in MODES:
        raise ValueError(f"--mode must be asr or task, not {cfg.mode!r}")
    check_layout(cfg.layout)
    if cfg.asr_target not in ("normalized", "raw"):
        raise ValueError(f"--asr-target must be normalized or raw, not {cfg.asr_target!r}")
    acc, chosen = make_accelerator(cfg)
    mapper_dir = mapper_folder(cfg.mapper)
    mapper = SpeechMapper.from_pretrained(mapper_dir)
    stores = open_stores(cfg.train)
    asr_stores = open_stores(cfg.asr_train or cfg.train) if cfg.mode == "task" else []
    for s in stores + asr_stores:
        if s.dim != mapper.config.input_dim:
            raise ModelMismatchError(f"{s.root}: features of dim {s.dim}, the mapper takes {mapper.config.input_dim}")
        trained_on = mapper.config.extra.get("encoder")
        if trained_on and s.encoder != trained_on:
            raise ModelMismatchError(f"{s.root}: {s.encoder} features, the mapper was pretrained on {trained_on}")
        s.verify()  # a corrupt shard is refused by name before training, never trained on
    if not (cfg.llm or mapper.config.extra.get("llm")):
        raise ModelMismatchError(f"{mapper_dir}: the mapper does not record its LLM; give --llm")
    llm = stable_spec(cfg.llm or mapper.config.extra["llm"])
    settings = ModelSettings(llm=llm, encoder=stores[0].encoder, system=cfg.system, layout=cfg.layout,
                             asr_target=cfg.asr_target, token_mix=cfg.token_mix,
                             provenance={"stage": 2, "mode": cfg.mode, "mapper": str(mapper_dir.resolve()),
                                         "mse_weight": cfg.mse_weight, "asr_mix": cfg.asr_mix if cfg.mode == "task" else 0.0})
    model = SpeechLLM.build(mapper, settings, chosen.dtype)  # the frozen LLM; the mapper stays fp32
    model.lm.to(acc.device)
    tokenizer = model.lm.tokenizer

    data = UtteranceDataset(stores + asr_stores, tokenizer)
    n_task = sum(len(s) for s in stores)
    task_sampler = BucketBatchSampler(data.lengths[:n_task], cfg.max_frames, seed=cfg.seed)
    sampler = (MixedBatchSampler(task_sampler, BucketBatchSampler(data.lengths[n_task:], cfg.max_frames,
                                                                   seed=cfg.seed + 1), cfg.asr_mix, n_task, cfg.seed)
               if cfg.mode == "task" else task_sampler)
    loader = training_loader(data, sampler, cfg.workers)
    stage = Stage2(model, cfg, data, n_task, sampler)
    tasks = [stage.task(i) for i in range(len(data))]
    if cfg.mode == "task" and all(t == "asr" for t in tasks[:n_task]):
        raise ValueError(f"--mode task: {', '.join(cfg.train)} hold no ST (translation) or SQA (question, answer) "
                         "records; use --mode asr for transcripts")
    untranscribed = sum(1 for t, r in zip(tasks, data.records) if t == "asr" and not normalize(r.get("text", "")))
    if untranscribed:
        raise ValueError(f"{untranscribed} utterances used for ASR have no transcript; give ASR stores with text")

    out = Path(cfg.out)
    identity = {"mapper": str(mapper_dir.resolve()), "llm": llm, "mode": cfg.mode, "system": cfg.system,
                "layout": cfg.layout, "token_mix": cfg.token_mix}
    saved = out / "attach_config.json"
    # runs saved before the token mixture existed read the vectors
    if cfg.resume and saved.is_file() and {"token_mix": 0.0, **json.loads(saved.read_text())["identity"]} != identity:
        raise ValueError(f"{saved}: the run in --out was started with another mapper, LLM, mode, system "
                         "message, prompt layout or --token-mix; use a new --out or the same options")
    out.mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        atomic_write_text(saved, json.dumps({"identity": identity, "config": asdict(cfg),
                                             "precision": chosen.record()}, indent=2))

    valid = UtteranceDataset(open_stores(cfg.valid), tokenizer) if cfg.valid else None
    for store in valid.stores if valid is not None else []:
        store.verify()
    samples = out / "samples.jsonl" if acc.is_main_process else None
    evaluate = (lambda m: validate(m, valid, cfg, samples)) if valid else None
    counts = {t: tasks.count(t) for t in sorted(set(tasks))}
    console.print(
        f"Stage 2 ({cfg.mode}): {len(data)} utterances {counts}, mapper {mapper.num_parameters() / 1e6:.1f}M "
        f"parameters trained, LLM {literal(llm)} frozen "
        f"({sum(p.numel() for p in model.lm.llm.parameters()) / 1e6:.0f}M), "
        f"loss CE" + (f" + {cfg.mse_weight} x MSE" if cfg.mse_weight else "")
        + (f", the LLM reads token mixtures (sharpness {cfg.token_mix:g})" if cfg.token_mix else "")
        + (f", ASR batches mixed in with p={cfg.asr_mix}" if cfg.mode == "task" else "")
    )
    result = fit(acc, cfg, model, sampler, loader, stage.loss, evaluate, run_name=f"attach-{cfg.mode}",
                 hparams={"mode": cfg.mode, "mse_weight": cfg.mse_weight, "asr_mix": cfg.asr_mix, "llm": llm,
                          "precision": chosen.mixed_precision})
    if acc.is_main_process:
        model.settings.provenance["steps"] = result["steps"]
        acc.unwrap_model(model).save_pretrained(out)
        atomic_write_text(out / "attach_report.json", json.dumps({**result, "utterances": counts, "config": asdict(cfg),
                                                                  "precision": chosen.record()}, indent=2))
        console.print(f"model saved to {literal(out)} (use: smap infer --model {literal(out)} ...)")
    return out


def validate(model: SpeechLLM, data: UtteranceDataset, cfg: AttachConfig, samples: Path | None) -> dict:
    """Held-out CE over `max_valid` utterances; held-out WER of the greedy output over the ASR ones
    among the first `valid_decode` (the figure Stage 1's intrinsic WER and `smap evaluate` report);
    the first `show` decodings printed and appended to `samples` (main process)."""
    task_for = (lambda i, r: task_of(r)) if cfg.mode == "task" else (lambda i, r: "asr")
    metrics = {"ce": heldout_ce(model, data, cfg.max_frames, cfg.max_valid, task_for, cfg.asr_target)}
    n = min(max(cfg.valid_decode, cfg.show if samples is not None else 0), len(data))
    if not n:
        return metrics
    records = data.records[:n]
    tasks = [task_for(i, r) for i, r in enumerate(records)]
    rows = generate_features(model, [r["id"] for r in records], [data[i]["features"] for i in range(n)],
                             [request_for(r, t) for r, t in zip(records, tasks)], cfg.max_frames, Decoding(max_new_tokens=64))
    refs = [example(r, t, cfg.asr_target)[1] for r, t in zip(records, tasks)]
    asr = [(ref, row["output"]) for ref, row, t in list(zip(refs, rows, tasks))[: cfg.valid_decode] if t == "asr"]
    if asr:
        metrics["wer"] = wer([a[0] for a in asr], [a[1] for a in asr])
    if samples is not None and cfg.show:
        shown = list(zip(rows, refs))[: cfg.show]
        for row, ref in shown:
            # ids, references and outputs are data: shown as written, never read as markup
            indent = " " * len(printable(row["id"]))
            console.print(f"  [dim]{literal(row['id'])}[/] ref: {literal(ref)}\n"
                          f"  {indent} out: {literal(row['output'])}", highlight=False)
        append_lines(samples, (json.dumps({**row, **metrics, "reference": ref}) for row, ref in shown))
    return metrics
