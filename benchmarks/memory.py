"""Peak GPU memory per stage and model combination, from parameter counts and batch shapes.

    python benchmarks/memory.py                      # the paper recipes' settings: a markdown table
    python benchmarks/memory.py --dtype fp16 --seconds 20 --attach-max-frames 8000
    python benchmarks/memory.py --batch-size 4 --llm meta-llama/Llama-3.1-8B-Instruct --json

Nothing is downloaded and no GPU is needed: the LLMs' shapes are their published configs (below), the
mapper is `smap.mapper`'s `paper` preset, the SFM (SeamlessM4T-v2's speech-to-text model, which the
cascade and `sfm-st` load) is counted on the meta device from transformers' default config. Defaults
are the paper recipes' (recipes/configs/paper/*.yaml: batch budgets in feature frames, `mixed_precision:
auto`, which is bf16 on an A100 or H100, the judges and `max_new_tokens` of evaluate.yaml) and smap's own
defaults where a recipe gives none (evaluation batches: `smap.evaluate.systems.Inference`).

What is counted, as smap's code holds it (bytes; `a` = bytes of an element in --dtype):
  * Stage 1 (`smap pretrain`): the mapper in fp32 (weights, gradients, AdamW's two moments), the bf16
    copies autocast makes of its weights, the activations it keeps for backward, the feature batch,
    the loss's targets, and the LLM's embedding matrix twice in fp32 (`smap.pretrain.Stage1` holds the
    matrix and its unit-normalised copy on the device; `smap.llm.load_embeddings` reads it in fp32).
  * attach (`smap attach`): the frozen LLM in --dtype, the mapper's training state and activations, and
    what backward through the frozen LLM keeps: per layer the RMSNorm inputs in fp32, attention's queries,
    keys, values, output and (with the cached prompt prefix, smap's default) its mask, the MLP's three
    intermediate tensors; gradient checkpointing is not used (neither smap/attach.py nor
    smap/speech_llm.py enables it). Logits only at the response tokens (`PromptedLM.response_loss`).
  * evaluate (`smap evaluate`): one LLM shared by the speech model, the topline and the cascade, the
    mapper (fp32), the SFM, the KV cache of the larger of a speech batch and a text batch, the last
    position's logits and one layer's prefill work. Judges: before, all loaded at once in fp32 beside
    the system's LLM and the cascade's own copy of it; now, each alone after generation, so the peak is
    the larger of the generation and the largest judge.
A card fits when the peak plus --headroom (allocator fragmentation, workspaces) and the CUDA context
stays within the card's memory. Activations follow the tensors autograd saves (checked against
`torch.autograd.graph.saved_tensors_hooks` in tests/test_memory_estimate.py); the kernels' workspaces
and the allocator's rounding are not counted, hence the headroom.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "configs" / "paper"
GIB = 2**30
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# Common GPU sizes: T4 and V100 16, RTX 4090 24, V100 and RTX 5090 32, A100 40, L40S 48, A100 and H100 80.
CARDS_GB = (16, 24, 32, 40, 48, 80)


@dataclass(frozen=True)
class LLMShape:
    """What memory needs of a Llama-architecture LLM (transformers' LlamaConfig names)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# The published configs (config.json on the hub) of the paper's two LLMs, both LlamaForCausalLM.
LLM_SHAPES = {
    "meta-llama/Llama-3.1-8B-Instruct": LLMShape(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8,
                                                 vocab=128256),
    "utter-project/EuroLLM-9B-Instruct": LLMShape(layers=42, hidden=4096, intermediate=12288, heads=32, kv_heads=8,
                                                  vocab=128000),
}
SHORT = {"meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B", "utter-project/EuroLLM-9B-Instruct": "EuroLLM-9B"}


# -- parameters and states ---------------------------------------------------------------------------

def llm_params(s: LLMShape) -> int:
    """Parameters of a Llama: embedding (vocab, hidden); per layer q, o (hidden, hidden), k, v
    (hidden, kv_heads * head_dim), gate, up (intermediate, hidden), down (hidden, intermediate) and two
    RMSNorm weights (hidden,); the final norm (hidden,); the LM head (vocab, hidden) unless tied."""
    kv = s.kv_heads * s.head_dim
    layer = 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 3 * s.hidden * s.intermediate + 2 * s.hidden
    return s.vocab * s.hidden * (1 if s.tied else 2) + s.layers * layer + s.hidden


def weight_bytes(params: int, a: int) -> int:
    """Weights of `params` parameters held in elements of `a` bytes."""
    return params * a


def adamw_bytes(params: int) -> int:
    """AdamW's state for fp32 parameters: exp_avg and exp_avg_sq, (params,) fp32 each."""
    return 2 * 4 * params


def training_bytes(params: int, a: int) -> dict[str, int]:
    """A trained fp32 module (the mapper): weights, gradients (fp32, as the weights), AdamW's moments,
    and, under autocast to `a` < 4 bytes, the copies of its weights autocast keeps for the step."""
    return {"mapper weights + grads (fp32)": 2 * weight_bytes(params, 4), "AdamW moments (fp32)": adamw_bytes(params),
            "autocast weight copies": weight_bytes(params, a) if a < 4 else 0}


def mapper_params(cfg) -> int:
    """Parameters of a SpeechMapper of MapperConfig `cfg`, counted on the meta device (no memory)."""
    import torch

    from smap.mapper import SpeechMapper

    with torch.device("meta"):
        return SpeechMapper(cfg).num_parameters()


def sfm_params() -> int:
    """SeamlessM4T-v2-large's speech-to-text model (what the cascade and sfm-st load), on the meta device:
    transformers' default SeamlessM4Tv2Config is the large model's."""
    import torch
    from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2ForSpeechToText

    with torch.device("meta"):
        return sum(p.numel() for p in SeamlessM4Tv2ForSpeechToText(SeamlessM4Tv2Config()).parameters())


# -- activations kept for backward ----------------------------------------------------------------

def encoder_layer_bytes(batch: int, frames: int, dim: int, ffn: int, heads: int, a: int, dropout: bool) -> int:
    """One pre-norm nn.TransformerEncoderLayer on (batch, frames, dim): per position the two LayerNorm
    inputs in fp32 (4 dim each) and their mean and rstd (fp32), the inputs of in_proj, out_proj and
    linear1 (a dim each), q, k, v (3 a dim), the GELU's and linear2's inputs (a ffn each), the
    attention's log-sum-exp (fp32, per head) and key-padding mask (a, per head); with dropout, three
    one-byte masks (dim, ffn, dim)."""
    per = 8 * dim + 16 + 6 * a * dim + 2 * a * ffn + (4 + a) * heads + ((2 * dim + ffn) if dropout else 0)
    return batch * frames * per


def block_bytes(block, batch: int, frames_in: int, in_dim: int, dim: int, a: int, input_grad: bool) -> tuple[int, int]:
    """A MapperBlock (MapperConfig `block`) on (batch, frames_in, in_dim) -> (batch, frames, up): the
    convolution's input (a in_dim per input frame; with `input_grad` also the padding mask it was
    multiplied by), the encoder layers, the final LayerNorm's fp32 input and stats, the up-projection's
    input. Returns (bytes, frames)."""
    import torch

    from smap.mapper import _conv_lengths

    frames = int(_conv_lengths(torch.tensor(frames_in), block.kernel_size, block.stride))
    total = batch * frames_in * (a * in_dim + (a if input_grad else 0))
    total += block.n_layers * encoder_layer_bytes(batch, frames, dim, block.ffn_dim, block.n_heads, a, block.dropout > 0)
    total += batch * frames * (4 * dim + 8 + a * dim)
    return total, frames


def mapper_activation_bytes(cfg, batch: int, frames: int, a: int) -> tuple[int, int]:
    """What a SpeechMapper (MapperConfig `cfg`, compress="none") keeps for backward on features
    (batch, frames, input_dim), computing in `a`-byte elements (fp32, or autocast to bf16/fp16, whose
    LayerNorms run in fp32): both blocks and the final projection's input (batch, frames', dims[2]).
    Returns (bytes, frames'), frames' = frames // (4 * pool)."""
    if cfg.compress != "none":
        raise ValueError(f"compress={cfg.compress!r}: only the paper's strided mapper is estimated")
    d = cfg.dims
    one, frames1 = block_bytes(cfg, batch, frames // cfg.pool, cfg.input_dim, d[0], a, False)
    two, frames2 = block_bytes(cfg.block2, batch, frames1, d[1], d[1], a, True)
    return one + two + batch * frames2 * a * d[2], frames2


def llm_layer_bytes(s: LLMShape, batch: int, seq: int, prefix: int, a: int) -> int:
    """One frozen Llama decoder layer, input (batch, seq, hidden) needing grad, keys and values of `prefix`
    cached positions before it: per position two RMSNorm inputs in fp32 (4 hidden) and rstd, the
    queries and attention output (a heads head_dim each), the log-sum-exp (fp32 per head), the MLP's
    gate, up and product (a intermediate each); keys and values over prefix + seq positions, at the
    key/value heads without a prefix (no mask: causal SDPA takes them as they are), else repeated to
    all heads, with the (batch, 1, seq, prefix + seq) mask."""
    keys = prefix + seq
    per_row = seq * (2 * (4 * s.hidden + 4) + 2 * a * s.heads * s.head_dim + 4 * s.heads + 3 * a * s.intermediate)
    per_row += 2 * a * (s.heads if prefix else s.kv_heads) * s.head_dim * keys + (a * seq * keys if prefix else 0)
    return batch * per_row


def llm_activation_bytes(s: LLMShape, batch: int, seq: int, prefix: int, a: int) -> int:
    """Backward through the whole frozen LLM (`llm_layer_bytes` per layer), the final RMSNorm's fp32
    input and the rotary cos and sin (1, seq, head_dim)."""
    return (s.layers * llm_layer_bytes(s, batch, seq, prefix, a) + batch * seq * (4 * s.hidden + 4)
            + 2 * a * seq * s.head_dim)


def logits_bytes(rows: int, vocab: int, a: int) -> int:
    """Logits of `rows` positions (rows, vocab): the LM head's output in `a` bytes, its fp32 copy for
    the cross-entropy and the log-softmax that backward keeps (fp32)."""
    return rows * vocab * (a + 8)


def kv_cache_bytes(s: LLMShape, rows: int, positions: int, a: int) -> int:
    """Keys and values of `rows` sequences of `positions` positions, every layer:
    (rows, kv_heads, positions, head_dim) twice per layer."""
    return 2 * s.layers * rows * s.kv_heads * positions * s.head_dim * a


def prefill_bytes(s: LLMShape, rows: int, positions: int, a: int) -> int:
    """One layer's working set in a forward without grad over (rows, positions): the residual and
    RMSNorm's fp32 copy, queries and keys/values repeated to all heads, the MLP's gate, up and product."""
    return rows * positions * (4 * s.hidden + 2 * a * s.hidden + 3 * a * s.heads * s.head_dim + 3 * a * s.intermediate)


def generation_logits_bytes(rows: int, vocab: int, a: int) -> int:
    """generate() keeps the last position's logits (rows, vocab) and their fp32 copy for the processors."""
    return rows * vocab * (a + 4)


# -- the stages ---------------------------------------------------------------------------------------

@dataclass
class Estimate:
    """One row of the table: a stage with one combination of models, its parts and its peak."""

    stage: str
    combination: str
    batch: str
    parts: dict[str, int]  # bytes
    peak: int  # bytes

    def row(self, cards: str) -> str:
        shown = " + ".join(f"{name} {b / GIB:.1f}" for name, b in self.parts.items() if b >= 0.05 * GIB)
        return f"| {self.stage} | {self.combination} | {self.batch} | {shown} | **{self.peak / GIB:.1f}** | {cards} |"


@dataclass(frozen=True)
class Shapes:
    """Batch and length settings shared by the stages (see --help)."""

    a: int
    seconds: float
    frame_rate: float
    feature_dim: int
    batch_size: int | None
    stage1_max_frames: int
    attach_max_frames: int
    eval_max_frames: int
    text_batch: int
    max_new_tokens: int
    beams: int
    prefix_tokens: int
    prompt_tokens: int
    tokens_per_second: float
    judge_prompt_tokens: int

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.frame_rate))

    @property
    def transcript_tokens(self) -> int:
        return max(1, round(self.seconds * self.tokens_per_second))

    def batch(self, max_frames: int) -> int:
        """Utterances per batch: --batch-size, else as many of `frames` as the budget holds (at least 1)."""
        return self.batch_size or max(1, max_frames // self.frames)


def paper_mapper(feature_dim: int, llm_dim: int):
    """The `paper` preset's MapperConfig: (batch, frames, feature_dim) -> (batch, frames // 4, llm_dim)."""
    from smap.mapper import preset

    return preset("paper", feature_dim, llm_dim)


def stage1(llm: str, sh: Shapes) -> Estimate:
    """`smap pretrain` against `llm`'s embedding matrix."""
    s = LLM_SHAPES[llm]
    cfg = paper_mapper(sh.feature_dim, s.hidden)
    b = sh.batch(sh.stage1_max_frames)
    acts, out_frames = mapper_activation_bytes(cfg, b, sh.frames, sh.a)
    parts = {"embedding x2 (fp32)": 2 * weight_bytes(s.vocab * s.hidden, 4),
             **training_bytes(mapper_params(cfg), sh.a),
             "mapper activations": acts,
             "features + loss": 4 * b * sh.frames * sh.feature_dim + 2 * 4 * b * out_frames * s.hidden}
    return Estimate("Stage 1 (`smap pretrain`)", f"{SHORT[llm]} embedding ({s.vocab:,} x {s.hidden:,})",
                    f"{b} x {sh.frames} frames", parts, sum(parts.values()))


def attach(llm: str, sh: Shapes) -> Estimate:
    """`smap attach` through `llm`, frozen in --dtype: rows of [head, speech, tail, response] after the
    cached prefix, speech = the mapper's output vectors."""
    s = LLM_SHAPES[llm]
    cfg = paper_mapper(sh.feature_dim, s.hidden)
    b = sh.batch(sh.attach_max_frames)
    acts, speech = mapper_activation_bytes(cfg, b, sh.frames, sh.a)
    response = sh.transcript_tokens + 1  # + EOS
    seq = sh.prompt_tokens + speech + response - 1  # inputs: the row less its last token
    parts = {"LLM weights": weight_bytes(llm_params(s), sh.a),
             **training_bytes(mapper_params(cfg), sh.a),
             "mapper activations + features": acts + 4 * b * sh.frames * sh.feature_dim,
             "LLM activations": llm_activation_bytes(s, b, seq, sh.prefix_tokens, sh.a),
             "logits at labels": logits_bytes(b * response, s.vocab, sh.a)}
    return Estimate("attach (`smap attach`)", f"{SHORT[llm]} frozen + paper mapper",
                    f"{b} x ({sh.prefix_tokens} cached + {seq + 1} tokens)", parts, sum(parts.values()))


def generation_bytes(s: LLMShape, sh: Shapes, a: int) -> tuple[int, str]:
    """KV cache, logits and prefill work of the larger of a speech batch (budget --eval-max-frames) and a
    text batch (--text-batch prompts: the topline's transcripts, the cascade's); (bytes, batch shape)."""
    import torch

    speech = int(paper_mapper(sh.feature_dim, s.hidden).output_lengths(torch.tensor([sh.frames]))[0])
    prompt = sh.prefix_tokens + sh.prompt_tokens
    options = []
    for rows, inputs in ((sh.batch(sh.eval_max_frames), prompt + speech), (sh.text_batch, prompt + sh.transcript_tokens)):
        rows *= sh.beams
        work = (kv_cache_bytes(s, rows, inputs + sh.max_new_tokens, a) + generation_logits_bytes(rows, s.vocab, a)
                + prefill_bytes(s, rows, inputs, a))
        options.append((work, f"{rows} x {inputs} + {sh.max_new_tokens} new tokens"))
    return max(options)


def judge_bytes(judge: str, sh: Shapes, a: int) -> int:
    """One judge: its weights, a text batch of judge prompts (the candidate answer included) and 4 new
    tokens (`llm_judge`)."""
    s = LLM_SHAPES[judge]
    rows, inputs = sh.text_batch, sh.prefix_tokens + sh.judge_prompt_tokens
    return (weight_bytes(llm_params(s), a) + kv_cache_bytes(s, rows, inputs + 4, a)
            + generation_logits_bytes(rows, s.vocab, a) + prefill_bytes(s, rows, inputs, a))


def evaluate(llm: str, sh: Shapes, judges: list[str], sfm: int) -> list[Estimate]:
    """`smap evaluate` with the speech model on `llm` and the topline; with the cascade and sfm-st too
    (the SFM in fp32, as the recipe runs them); and with `judges`: all loaded at once in fp32 beside a
    second copy of the LLM for the cascade (before), or one at a time after generation (now)."""
    s = LLM_SHAPES[llm]
    work, shape = generation_bytes(s, sh, sh.a)
    alone = {"LLM weights": weight_bytes(llm_params(s), sh.a),
             "mapper (fp32)": weight_bytes(mapper_params(paper_mapper(sh.feature_dim, s.hidden)), 4),
             "KV cache + logits + prefill": work}
    gen = {**alone, "SFM (fp32)": weight_bytes(sfm, 4)}
    rows = [Estimate("evaluate: speech model, topline", SHORT[llm], shape, alone, sum(alone.values())),
            Estimate("evaluate: + cascade, sfm-st", f"{SHORT[llm]} + SeamlessM4T-v2", shape, gen, sum(gen.values()))]
    if not judges:
        return rows
    names = " + ".join(SHORT[j] for j in judges)
    work32, _ = generation_bytes(s, sh, 4)
    before = {"LLM x2 (system, cascade; fp32)": 2 * weight_bytes(llm_params(s), 4),
              "mapper (fp32)": alone["mapper (fp32)"], "SFM (fp32)": gen["SFM (fp32)"],
              f"judges {names} (fp32)": sum(weight_bytes(llm_params(LLM_SHAPES[j]), 4) for j in judges),
              "KV cache + logits + prefill (fp32)": work32}
    rows.append(Estimate("evaluate + judges, all at once (before)", f"{SHORT[llm]} + SFM + {names}", shape, before,
                         sum(before.values())))
    now = {"generation (row above)": rows[1].peak, **{f"judge {SHORT[j]}": judge_bytes(j, sh, sh.a) for j in judges}}
    rows.append(Estimate("evaluate + judges, one at a time (now)", f"{SHORT[llm]} + SFM, then {names}",
                         f"judges: {sh.text_batch} x {sh.prefix_tokens + sh.judge_prompt_tokens} tokens", now,
                         max(now.values())))
    return rows


def smallest_card(peak: int, headroom: float, context_gib: float) -> str:
    """The smallest of CARDS_GB that holds `peak` bytes plus the headroom share and the CUDA context."""
    need = peak * (1 + headroom) / GIB + context_gib
    fits = [c for c in CARDS_GB if need <= c]
    return f"{fits[0]} GB" if fits else f"none (needs {need:.0f} GB: several GPUs)"


# -- the command line ----------------------------------------------------------------------------------

def recipe(name: str) -> dict:
    from smap.config import read_config

    return read_config(RECIPES / f"{name}.yaml")


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, not {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the option, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    from smap.evaluate.systems import Inference

    pre, att, ev, inf = recipe("pretrain"), recipe("attach-asr-ce"), recipe("evaluate"), Inference()
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16",
                    help="the frozen LLMs' weights and the compute precision (default bf16: the recipes' "
                         "`mixed_precision: auto` on an A100 or H100; fp16 on a V100 weighs the same)")
    ap.add_argument("--llm", action="append", choices=sorted(LLM_SHAPES),
                    help="an LLM of every stage, repeatable (default: Llama-3.1-8B-Instruct and "
                         f"{pre['llm']}, the recipes' LLM)")
    ap.add_argument("--batch-size", type=positive(int), help="utterances per speech batch in every stage (default: "
                    "as many of --seconds as each stage's frame budget holds)")
    ap.add_argument("--seconds", type=positive(float), default=12.3,
                    help="utterance length (default 12.3 s, LibriSpeech 960 h's mean: 960 h / 281,241 utterances)")
    ap.add_argument("--frame-rate", type=positive(float), default=50.0,
                    help="feature frames per second (default 50: a SeamlessM4T-v2 conformer layer, as Stage 1 needs)")
    ap.add_argument("--feature-dim", type=positive(int), default=1024, help="feature width (SeamlessM4T-v2: 1024)")
    ap.add_argument("--stage1-max-frames", type=positive(int), default=pre["max_frames"],
                    help=f"Stage-1 batch budget in frames (pretrain.yaml: {pre['max_frames']})")
    ap.add_argument("--attach-max-frames", type=positive(int), default=att["max_frames"],
                    help=f"attach batch budget in frames (attach-*.yaml: {att['max_frames']})")
    ap.add_argument("--eval-max-frames", type=positive(int), default=inf.max_frames,
                    help=f"evaluation speech batches, frames (smap evaluate's default: {inf.max_frames})")
    ap.add_argument("--text-batch", type=positive(int), default=inf.batch_size,
                    help=f"evaluation text batches: topline, cascade, judges (default {inf.batch_size})")
    ap.add_argument("--max-new-tokens", type=positive(int), default=ev["max_new_tokens"],
                    help=f"longest output (evaluate.yaml: {ev['max_new_tokens']})")
    ap.add_argument("--beams", type=positive(int), default=inf.decoding.num_beams,
                    help=f"beams in evaluation (default {inf.decoding.num_beams})")
    ap.add_argument("--prefix-tokens", type=positive(int), default=30,
                    help="the cached prompt prefix: system message and user header (default 30: Llama-3.1's template)")
    ap.add_argument("--prompt-tokens", type=positive(int), default=20,
                    help="instruction and the assistant header around the speech (default 20)")
    ap.add_argument("--tokens-per-second", type=positive(float), default=3.6,
                    help="transcript tokens per second of speech (default 3.6: read English)")
    ap.add_argument("--judge-prompt-tokens", type=positive(int), default=None,
                    help="a judge's prompt: instruction, question, reference, answer (default 100 + --max-new-tokens)")
    ap.add_argument("--no-judges", action="store_true", help=f"leave out the judges (evaluate.yaml: {', '.join(ev['judge'])})")
    ap.add_argument("--headroom", type=float, default=0.10,
                    help="share added to a peak before choosing a card: fragmentation, kernel workspaces (default 0.10)")
    ap.add_argument("--context-gib", type=float, default=0.75, help="the CUDA context, outside torch's count (default 0.75)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    ev = recipe("evaluate")
    if args.headroom < 0 or args.context_gib < 0:
        ap.error("--headroom and --context-gib must be >= 0")
    judges = [] if args.no_judges else list(ev["judge"])
    if unknown := [j for j in judges if j not in LLM_SHAPES]:
        sys.exit(f"{RECIPES / 'evaluate.yaml'}: judge {unknown[0]} has no shape in benchmarks/memory.py's LLM_SHAPES")
    sh = Shapes(a=DTYPE_BYTES[args.dtype], seconds=args.seconds, frame_rate=args.frame_rate, feature_dim=args.feature_dim,
                batch_size=args.batch_size, stage1_max_frames=args.stage1_max_frames,
                attach_max_frames=args.attach_max_frames, eval_max_frames=args.eval_max_frames,
                text_batch=args.text_batch, max_new_tokens=args.max_new_tokens, beams=args.beams,
                prefix_tokens=args.prefix_tokens, prompt_tokens=args.prompt_tokens,
                tokens_per_second=args.tokens_per_second,
                judge_prompt_tokens=args.judge_prompt_tokens or 100 + args.max_new_tokens)
    llms = args.llm or ["meta-llama/Llama-3.1-8B-Instruct", recipe("pretrain")["llm"]]
    sfm = sfm_params()
    rows = ([stage1(m, sh) for m in llms] + [attach(m, sh) for m in llms]
            + [e for m in llms for e in evaluate(m, sh, judges, sfm)])
    cards = [smallest_card(r.peak, args.headroom, args.context_gib) for r in rows]
    if args.json:
        print(json.dumps({"settings": {**asdict(sh), "dtype": args.dtype, "headroom": args.headroom,
                                       "context_gib": args.context_gib},
                          "rows": [{**asdict(r), "smallest_gpu": c} for r, c in zip(rows, cards)]}, indent=2))
        return
    print(f"Peak GPU memory per stage (GiB), {args.dtype}, utterances of {sh.seconds:g} s "
          f"({sh.frames} frames, {sh.transcript_tokens} transcript tokens); the parameters: "
          + ", ".join(f"{SHORT[m]} {llm_params(LLM_SHAPES[m]) / 1e6:,.0f}M" for m in LLM_SHAPES)
          + f", paper mapper {mapper_params(paper_mapper(sh.feature_dim, 4096)) / 1e6:,.0f}M, "
          f"SeamlessM4T-v2 speech-to-text {sfm / 1e6:,.0f}M.\n")
    print("| stage | combination | batch | parts (GiB) | peak GiB | smallest GPU |")
    print("|---|---|---|---|---:|---|")
    for r, c in zip(rows, cards):
        print(r.row(c))
    print(f"\nSmallest GPU: the peak + {args.headroom:.0%} + {args.context_gib:g} GiB of CUDA context within "
          f"the card ({', '.join(f'{c} GB' for c in CARDS_GB)}).")


if __name__ == "__main__":
    main()
