"""Stage 1: pretrain a SpeechMapper on the LLM's input embeddings, without the LLM.

For each utterance the mapper turns SFM features (frames, input_dim) into (frames // 4, llm_dim)
vectors (with `compress="ctc"`, one per run of its CTC head's labels; with `ctc_align`, in training, one
per transcript token, cut by the forced CTC alignment of the transcript); the target is the LLM's
input embedding of each normalised transcript token, then the pad-token embedding up to the output
length (`smap.losses.pad_targets`), and the loss is the pad-weighted MSE
(`smap.losses.weighted_mse`), plus the CTC head's loss at `ctc_weight` for a CTC-compressed
mapper. Only the tokenizer and the embedding matrix of the LLM are loaded.

An utterance whose transcript has more tokens than the mapper outputs vectors has its target cut;
more than `max_cut_share` of the training utterances so cut (features too slow for the mapper's
downsampling, as SeamlessM4T's adaptor output) refuses the run before it starts (`check_cut`).
Which token pads the targets, and why (Llama-3.1 has no pad token: EOS), goes into the summary, the
report and the mapper's config (`smap.llm.pad_record`).

Validation reports the loss and an LLM-free intrinsic metric: each output vector is decoded to
its nearest token embedding by cosine similarity (the L2 neighbours of an uncertain, averaged
prediction collapse onto a few frequent tokens), decoding stops at the first pad, and the text is
scored by WER against the normalised transcript. Beside it, the share of the transcript's tokens
that the decoded output holds at their position and anywhere (`token_hits`) tells a mapper that
misplaces the words from one that lacks them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from smap.data.batching import Batch, BucketBatchSampler, UtteranceDataset, evaluation_batches, training_loader
from smap.data.store import open_stores
from smap.fileio import atomic_write_text
from smap.llm import LLMEmbeddings, load_embeddings, pad_record, tokenizer_fingerprint
from smap.losses import cosine_token_ce, nearest_tokens, pad_targets, weighted_mse
from smap.mapper import COMPRESSIONS, MapperConfig, SpeechMapper, preset
from smap.progress import literal
from smap.text import normalize, wer
from smap.training import LoopConfig, TrainingError, console, fit, make_accelerator

MAPPER_DIR = "mapper"


@dataclass
class PretrainConfig(LoopConfig):
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    llm: str = "smollm2-135m"
    preset: str = "small"
    layers: int | None = None
    dropout: float | None = None  # None: the preset's
    normalize: bool = False  # MapperConfig.normalize: per-utterance feature normalisation
    mask_time: float = 0.0  # MapperConfig.mask_time: SpecAugment on the features while training
    mask_channels: float = 0.0  # MapperConfig.mask_channels
    pool: int = 1  # input frames averaged before the mapper (MapperConfig.pool)
    compress: str = "none"  # "ctc": merge block 1's frames by CTC labels (MapperConfig.compress)
    ctc_weight: float = 0.05  # compress="ctc": weight of the CTC loss (MapperConfig.ctc_weight)
    ctc_align: bool = False  # compress="ctc": cut by the transcript's forced CTC alignment while training
    max_frames: int = 12000
    alpha: float = 5.0
    ce_weight: float = 0.0  # + ce_weight x `cosine_token_ce` (not in the paper)
    max_valid: int = 200  # validation utterances decoded for the intrinsic WER
    max_cut_share: float = 0.05  # most training utterances whose targets may be cut before the run is refused


def token_hits(hyp: list[int], ref: list[int]) -> tuple[int, int]:
    """Reference tokens found (in place, anywhere): `in place` counts positions j where hyp[j] ==
    ref[j], `anywhere` the reference tokens that the hypothesis holds, as a multiset. Far more
    tokens anywhere than in place means the mapper has the words and misplaces them; both low
    means the words themselves are missing."""
    return sum(h == r for h, r in zip(hyp, ref)), sum((Counter(hyp) & Counter(ref)).values())


def count_cut(mapper_cfg: MapperConfig, dataset: UtteranceDataset) -> int:
    """Utterances whose transcript has more tokens than the mapper will output vectors (for
    compress="ctc": than it can, one per block-1 frame)."""
    out = mapper_cfg.output_lengths(torch.tensor(dataset.lengths))
    return sum(int(len(t) > int(n)) for t, n in zip(dataset.tokens, out))


def check_cut(n_cut: int, n: int, cfg: PretrainConfig, mapper_cfg: MapperConfig, frame_rate: float) -> None:
    """Refuse a run in which more than `cfg.max_cut_share` of the `n` training utterances would have
    their targets cut: the mapper could not learn where their transcripts end."""
    if n_cut <= cfg.max_cut_share * n:
        return
    fixes = ["features at 50 frames/s (SeamlessM4T: `smap prepare --layer N`, a conformer layer, not its adaptor)"]
    if mapper_cfg.pool > 1:
        fixes.append("--pool 1")
    if mapper_cfg.compress != "ctc":
        fixes.append("a mapper that downsamples less (--compress ctc: 2x)")
    raise TrainingError(
        f"--train {' '.join(cfg.train)}: {n_cut} of {n} utterances ({100 * n_cut / n:.1f}%, more than --max-cut-share "
        f"{cfg.max_cut_share:g}) have more transcript tokens than the mapper outputs vectors ({frame_rate:g} frames/s, "
        f"{mapper_cfg.downsampling}x downsampling), so their Stage-1 targets would be cut; use "
        + ", or ".join(fixes) + " (prepare_report.json's frames_per_token measures it)"
    )


class Stage1:
    """The Stage-1 objective and its validation, over a fixed embedding table.

    ce_vocab: (n,) the token ids that the token cross-entropy's softmax spans, by default all.
    `pretrain` passes the tokens of the training transcripts: the others are never a target, and
    the softmax over 49K rows would cost more than the rest of a step on a CPU.
    """

    def __init__(self, emb: LLMEmbeddings, alpha: float, device: torch.device, ce_weight: float = 0.0,
                 ce_vocab: torch.Tensor | None = None, ctc_weight: float = 0.0, ctc_align: bool = False):
        self.emb, self.alpha, self.ce_weight, self.ctc_weight = emb, alpha, ce_weight, ctc_weight
        self.ctc_align = ctc_align
        self.weight = emb.weight.to(device)
        self.unit = F.normalize(self.weight, dim=-1)  # cosine decoding and the token CE, once
        self.ce_vocab = None if ce_vocab is None else ce_vocab.sort().values.to(device)
        self.ce_unit = self.unit if ce_vocab is None else self.unit[self.ce_vocab]

    def loss(self, model: SpeechMapper, batch: Batch) -> tuple[torch.Tensor, dict]:
        pred, out_len, ctc = model(batch.features, batch.lengths, batch.tokens, align=self.ctc_align)
        tg = pad_targets(batch.tokens, out_len, self.weight, self.emb.pad_id, self.alpha)
        mse = weighted_mse(pred, tg.target.to(pred.dtype), tg.weight)
        loss, logs = mse, {"cut": tg.n_cut}
        if self.ce_weight:
            ce = cosine_token_ce(pred, tg, self.ce_unit, self.ce_vocab)
            loss, logs = loss + self.ce_weight * ce, logs | {"mse": float(mse.detach()), "token_ce": float(ce.detach())}
        if ctc is not None:
            loss, logs = loss + self.ctc_weight * ctc, logs | {"mse": float(mse.detach()), "ctc": float(ctc.detach())}
        return loss, logs

    @torch.no_grad()
    def validate(self, model: SpeechMapper, data: UtteranceDataset, max_frames: int, limit: int) -> dict:
        loss_sum, weight_sum, refs, hyps = 0.0, 0.0, [], []
        in_place, anywhere, n_ref = 0, 0, 0
        for batch in evaluation_batches(data, max_frames, limit, self.weight.device):
            pred, out_len, _ = model(batch.features, batch.lengths)
            tg = pad_targets(batch.tokens, out_len, self.weight, self.emb.pad_id, self.alpha)
            loss_sum += float(weighted_mse(pred, tg.target, tg.weight)) * float(tg.weight.sum())
            weight_sum += float(tg.weight.sum())
            for b, rec in enumerate(batch.records):
                ids = nearest_tokens(pred[b], int(out_len[b]), self.unit, self.emb.pad_id)
                hyps.append(normalize(self.emb.tokenizer.decode(ids)))
                refs.append(normalize(rec.get("text", "")))
                hits = token_hits(ids, batch.tokens[b].tolist())
                in_place, anywhere, n_ref = in_place + hits[0], anywhere + hits[1], n_ref + len(batch.tokens[b])
        return {"loss": loss_sum / max(weight_sum, 1e-8), "wer": wer(refs, hyps),
                "tokens_in_place": 100 * in_place / max(n_ref, 1), "tokens_anywhere": 100 * anywhere / max(n_ref, 1)}


def build_mapper(cfg: PretrainConfig, input_dim: int, emb: LLMEmbeddings, encoder: str,
                 ctc_tokens: torch.Tensor | None = None) -> SpeechMapper:
    """The mapper `cfg` describes; ctc_tokens (n,): the token ids its CTC head tells apart
    (compress="ctc": the training transcripts' token types)."""
    overrides = {k: v for k, v in (("n_layers", cfg.layers), ("dropout", cfg.dropout), ("pool", cfg.pool)) if v is not None}
    overrides |= {"compress": cfg.compress, "normalize": cfg.normalize, "mask_time": cfg.mask_time,
                  "mask_channels": cfg.mask_channels}
    if cfg.compress == "ctc":
        overrides |= {"ctc_labels": len(ctc_tokens), "ctc_weight": cfg.ctc_weight}
    mcfg = preset(cfg.preset, input_dim, emb.dim, **overrides)
    mcfg.extra = {
        "encoder": encoder,
        "llm": emb.source.spec,
        "vocab_size": int(emb.weight.shape[0]),
        "tokenizer": tokenizer_fingerprint(emb.tokenizer),
        **pad_record(emb),
        "preset": cfg.preset,
    }
    model = SpeechMapper(mcfg)
    if cfg.compress == "ctc":
        model.set_ctc_tokens(ctc_tokens)
    return model


def _started_with(saved: Path, mapper_json: dict) -> dict:
    """The mapper config a run in --out was started with; one saved before the pad token was
    recorded is read with today's record of it (the pad id, recorded then, still decides)."""
    started = json.loads(saved.read_text())
    for name in ("normalize", "mask_time", "mask_channels"):  # options newer than the run: it had them off
        started.setdefault(name, getattr(MapperConfig, name))
    extra = started.get("extra", {})
    if "pad_rule" not in extra:
        started["extra"] = {**extra, **{k: mapper_json["extra"][k] for k in ("pad_token", "pad_rule")}}
    return started


def pretrain(cfg: PretrainConfig) -> Path:
    """Run Stage 1; returns the folder of the final mapper (`out/mapper`)."""
    if cfg.compress not in COMPRESSIONS:
        raise ValueError(f"--compress must be {' or '.join(COMPRESSIONS)}, not {cfg.compress!r}")
    if not 0.0 <= cfg.max_cut_share <= 1.0:
        raise ValueError(f"--max-cut-share must be a share in [0, 1], not {cfg.max_cut_share}")
    if cfg.ctc_align and cfg.compress != "ctc":
        raise ValueError(f"--ctc-align cuts by a CTC head's alignment: it needs --compress ctc, not {cfg.compress!r}")
    acc, chosen = make_accelerator(cfg)
    emb = load_embeddings(cfg.llm)
    stores = open_stores(cfg.train)
    train = UtteranceDataset(stores, emb.tokenizer)
    if len(train) == 0:
        raise ValueError(f"--train {' '.join(cfg.train)}: the stores hold no utterance")
    valid = UtteranceDataset(open_stores(cfg.valid), emb.tokenizer) if cfg.valid else None
    for store in stores + (valid.stores if valid is not None else []):
        store.verify()  # a corrupt shard is refused by name before training, never trained on
    if valid is not None and valid.stores[0].dim != stores[0].dim:
        raise ValueError(f"--valid features have dim {valid.stores[0].dim}, --train features {stores[0].dim}")

    # The token types of the training transcripts: the token CE's softmax and the CTC head's labels.
    train_types = torch.cat(train.tokens).unique() if cfg.ce_weight or cfg.compress == "ctc" else None
    model = build_mapper(cfg, stores[0].dim, emb, stores[0].encoder, train_types)
    n_cut = count_cut(model.config, train)
    check_cut(n_cut, len(train), cfg, model.config, stores[0].info.frame_rate)
    out = Path(cfg.out)
    saved = out / "mapper_config.json"
    mapper_json = asdict(model.config) | {"dims": list(model.config.dims)}  # as JSON reads it back
    if cfg.resume and saved.is_file() and _started_with(saved, mapper_json) != mapper_json:
        raise ValueError(f"{saved}: the run in --out was started with another mapper, LLM or encoder; "
                         "use a new --out or the same options")
    out.mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        atomic_write_text(saved, json.dumps(mapper_json, indent=2))

    pad = pad_record(emb)
    console.print(
        f"Stage 1: {len(train)} utterances ({sum(r.get('duration', 0) for r in train.records) / 3600:.2f} h), "
        f"mapper {model.num_parameters() / 1e6:.2f}M parameters, LLM embeddings {tuple(emb.weight.shape)} "
        f"from {literal(cfg.llm)}, targets padded with {literal(pad['pad_token'])} "
        f"(id {pad['pad_id']}, the {pad['pad_rule']}); "
        f"targets cut for {n_cut} utterances ({100 * n_cut / len(train):.1f}%)",
        highlight=False,
    )
    if n_cut:
        console.print("[yellow]warning:[/] some transcripts have more tokens than the mapper outputs frames; "
                      "their tails are not learned (see prepare_report.json's frames per token)")

    sampler = BucketBatchSampler(train.lengths, cfg.max_frames, seed=cfg.seed)
    loader = training_loader(train, sampler, cfg.workers)
    ce_vocab = train_types if cfg.ce_weight else None
    objective = Stage1(emb, cfg.alpha, acc.device, cfg.ce_weight, ce_vocab, model.config.ctc_weight, cfg.ctc_align)
    if cfg.compress == "ctc":
        console.print(f"CTC compression: block 1's frames merged by the labels of a CTC head (weight {cfg.ctc_weight}) "
                      f"over the {len(train_types)} token types of the training transcripts; in training, "
                      + ("cut by the transcript's forced alignment" if cfg.ctc_align else "cut by its greedy labels"))
    if ce_vocab is not None:
        console.print(f"token cross-entropy (weight {cfg.ce_weight}) over the {len(ce_vocab)} token types "
                      "of the training transcripts")
    evaluate = (lambda m: objective.validate(m, valid, cfg.max_frames, cfg.max_valid)) if valid else None
    result = fit(acc, cfg, model, sampler, loader, objective.loss, evaluate, run_name="pretrain",
                 hparams={"preset": cfg.preset, "alpha": cfg.alpha, "ce_weight": cfg.ce_weight, "llm": cfg.llm,
                          "compress": cfg.compress, "ctc_align": cfg.ctc_align, "precision": chosen.mixed_precision})

    target = out / MAPPER_DIR
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained(target)
        report = {**result, "utterances": len(train), "cut_utterances": n_cut, **pad, "precision": chosen.record(),
                  "parameters": model.num_parameters(), "config": {k: v for k, v in asdict(cfg).items()}}
        atomic_write_text(out / "pretrain_report.json", json.dumps(report, indent=2))
        console.print(f"mapper saved to {literal(target)}")
    return target
