"""The paper's economics on our code: a Stage-1 step against an attach step, and data loading.

    python benchmarks/stage_cost.py [--store DIR] [--steps 5] [--max-frames 2000]
    python benchmarks/stage_cost.py --llm-sizes 135m,360m,1b   # the ratio as the LLM grows
    python benchmarks/stage_cost.py --pool 2                   # the mapper as the quickstart runs it
    python benchmarks/stage_cost.py --steps 1 --llm-sizes tiny  # seconds: checks this script
    # on a GPU, at the paper's sizes (random 1024-d features, as SeamlessM4T-v2's):
    python benchmarks/stage_cost.py --preset paper --feature-dim 1024 --llm-sizes 1b,8b \
        --mixed-precision bf16 --max-frames 16000 --steps 10

Both steps train the same mapper (`--preset`) on the same batches of real Whisper tiny.en features
(a store from `smap prepare`; without --store, --utterances synthetic utterances are prepared first, or,
with --feature-dim, random features of that width for as many transcripts of LibriSpeech-like length):
Stage 1 against the LLM's embedding matrix (the LLM is never loaded), attach through the frozen
LLM (CE, prompt prefix cached, logits at labels, as `smap attach` runs). Both run through
Accelerate as `fit` does, on its device (a GPU when there is one) and with --mixed-precision
(bf16: the frozen LLM's weights in bf16, as `smap attach` loads them). Each runs in a fresh
process, so each peak memory (resident, and on a GPU allocated) is its own. The data-loading
share is the time a Stage-1 step waits for its batch (read from the memory-mapped store, collate,
copy to the device; with --workers, only what the workers have not done ahead) over the whole step.

--llm-sizes (default 135m) picks the LLMs, one row each: `135m` is the embedded SmolLM2-135M;
`360m` (SmolLM2-360M's shape), `1b` (about Llama-3.2-1B's shape, untied head), `8b`
(Llama-3.1-8B's shape and vocabulary size) and `tiny` (a toy, to check this script) are Llama
checkpoints with random weights and SmolLM2's tokenizer (or --tokenizer's), built once in a
temporary folder (on the GPU when there is one): a step's cost depends on the shapes only. The
mapper's output width follows the LLM's; nothing else changes between rows. Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Shapes of the synthetic LLMs; `135m` (None) is the embedded SmolLM2-135M itself.
LLM_SIZES = {
    "135m": None,
    # a toy (6M, mostly its two 49152-row tables): checks the synthetic path in seconds
    "tiny": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=2),
    # SmolLM2-360M's shape
    "360m": dict(hidden_size=960, num_hidden_layers=32, intermediate_size=2560, num_attention_heads=15,
                 num_key_value_heads=5),
    # about Llama-3.2-1B's shape, on SmolLM2's vocabulary
    "1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32,
               num_key_value_heads=8),
    # Llama-3.1-8B's shape and vocabulary size (the tokenizer's ids use the first rows only)
    "8b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
}


def child(kind: str, store: str, llm: str, args: argparse.Namespace) -> dict:
    """Run in a fresh process: time `args.steps` optimiser steps of one stage against the LLM `llm`."""
    import torch
    from smap.precision import DTYPES
    from smap.data.batching import BucketBatchSampler, UtteranceDataset, training_loader
    from smap.data.store import open_stores
    from smap.llm import load_embeddings
    from smap.mapper import SpeechMapper, preset
    from smap.pretrain import Stage1
    from smap.training import LoopConfig, make_accelerator

    with tempfile.TemporaryDirectory() as out:
        acc, _ = make_accelerator(LoopConfig(out=out, mixed_precision=args.mixed_precision))
    emb = load_embeddings(llm)
    data = UtteranceDataset(open_stores([store]), emb.tokenizer)
    mapper = SpeechMapper(preset(args.preset, data.stores[0].dim, emb.dim, pool=args.pool))
    sampler = BucketBatchSampler(data.lengths, args.max_frames, seed=0)
    loader = training_loader(data, sampler, args.workers)
    if kind == "stage1":
        objective = Stage1(emb, 5.0, acc.device)
        model, loss_fn = mapper, objective.loss
    else:
        from smap.attach import AttachConfig, Stage2
        from smap.speech_llm import ModelSettings, SpeechLLM

        del emb
        model = SpeechLLM.build(mapper, ModelSettings(llm=llm, system="short"), DTYPES[args.mixed_precision])
        model.lm.to(acc.device)
        stage = Stage2(model, AttachConfig(out="", system="short"), data, len(data), sampler)
        loss_fn = stage.loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    cuda = acc.device.type == "cuda"

    def now() -> float:
        if cuda:  # kernels run asynchronously: a step is done when the device is
            torch.cuda.synchronize()
        return time.perf_counter()

    wait, total, n, utterances = 0.0, 0.0, 0, 0
    batches = iter(loader)
    for i in range(args.warmup + args.steps):  # warm-up steps are not counted
        t0 = now()
        batch = next(batches, None)
        if batch is None:  # fewer batches than steps: round again
            batches = iter(loader)
            batch = next(batches)
        t1 = now()
        loss, _ = loss_fn(model, batch)
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        t2 = now()
        if i >= args.warmup:
            wait, total, n, utterances = wait + (t1 - t0), total + (t2 - t0), n + 1, utterances + len(batch.records)
    # Attach counts the LLM (parameters() lists a tied head once), Stage 1 the mapper.
    unwrapped = acc.unwrap_model(model)
    name, counted = ("llm_params", unwrapped.lm.llm) if kind == "attach" else ("mapper_params", unwrapped)
    row = {name: sum(p.numel() for p in counted.parameters()), "device": str(acc.device),
           "step_s": round(total / n, 3), "data_wait_share_pct": round(100 * wait / total, 2),
           "utterances_per_step": round(utterances / n, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if cuda:
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return row


def synthetic_store(folder: Path, feature_dim: int | None, utterances: int) -> str:
    """`utterances` utterances: eSpeak speech encoded by Whisper tiny.en, or, with `feature_dim`, random
    features of that width at 50 frames/s for transcripts of about 30 words (LibriSpeech's mean)."""
    if feature_dim is None:
        from smap.prepare import PrepareConfig, prepare

        prepare(PrepareConfig(source="tts", split="train", out=str(folder), limit=utterances))
        return str(folder)
    import torch

    from smap.data.corpus import read_lines
    from smap.data.store import StoreWriter

    sentences = iter(read_lines("wordnet_sentences.txt"))
    g = torch.Generator().manual_seed(0)
    with StoreWriter(folder, encoder="random", dim=feature_dim, frame_rate=50.0) as w:
        for i in range(utterances):
            words: list[str] = []
            while len(words) < 30:
                words += next(sentences).split()
            frames = 50 * len(words) * 60 // 160  # spoken at 160 words per minute
            w.add({"id": f"rand{i:03d}", "text": " ".join(words), "duration": frames / 50},
                  torch.randn(frames, feature_dim, generator=g))
    return str(folder)


def synthetic_llm(shape: dict, folder: Path, tokenizer_spec: str, dtype: str) -> str:
    """A random-weight Llama checkpoint of `shape` with the vocabulary, tokenizer and chat template
    of `tokenizer_spec` (attach prompts through the template), saved in `dtype`, as a folder spec."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from smap.precision import DTYPES
    from smap.llm import load_tokenizer, pad_id_of, resolve

    # A saved tokenizer folder has no config.json, so it is no LLM spec; the embedded LLM's
    # tokenizer needs no de-quantised model.
    tokenizer = (AutoTokenizer.from_pretrained(tokenizer_spec) if Path(tokenizer_spec).is_dir()
                 else load_tokenizer(resolve(tokenizer_spec)))
    config = LlamaConfig(**{"vocab_size": len(tokenizer), "tie_word_embeddings": False, "max_position_embeddings": 8192,
                            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                            "pad_token_id": pad_id_of(tokenizer), **shape})
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # meta-device weights cannot be saved: initialise for real, reproducibly
    # An 8B model initialises in seconds on a GPU, in minutes on a CPU.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.to(DTYPES[dtype]).save_pretrained(folder)  # safetensors, as `load_embeddings` reads
    tokenizer.save_pretrained(folder)  # carries chat_template.jinja
    return str(folder)


def passed_on(args: argparse.Namespace) -> list[str]:
    """The options a child process needs, as given to this one."""
    return ["--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", str(args.workers), "--max-frames", str(args.max_frames), "--pool", str(args.pool),
            "--preset", args.preset, "--mixed-precision", args.mixed_precision, "--tokenizer", args.tokenizer]


def run_child(kind: str, store: str, llm: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--store", store, "--llm", llm, *passed_on(args)],
                         capture_output=True, text=True)
    if out.returncode:  # the child's traceback, not only its exit status
        sys.exit(f"{kind} against {llm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="a feature store of Whisper tiny.en features (default: --utterances synthetic ones)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--utterances", type=int, default=64, help="without --store: the synthetic store's size "
                    "(default 64). Make it hold more batches than warm-up + steps: a new epoch's first batch "
                    "waits for loader workers that a long run keeps busy ahead")
    ap.add_argument("--max-frames", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes, as `--workers` of "
                    "pretrain and attach (default 0)")
    ap.add_argument("--warmup", type=int, default=1, help="steps run first and not counted (default 1; on a GPU, "
                    "at least one per distinct batch shape: each new shape pays for kernel selection once)")
    ap.add_argument("--pool", type=int, default=1, help="the mapper's input pooling (the quickstart uses 2)")
    ap.add_argument("--preset", default="small", help="the mapper preset: small (default), paper, tiny")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                    help="as `smap pretrain/attach --mixed-precision` (bf16 on a GPU for the paper's sizes)")
    ap.add_argument("--feature-dim", type=int,
                    help="without --store: random features of this width instead of synthesised speech")
    ap.add_argument("--tokenizer", default=None, help="the synthetic LLMs' tokenizer: an LLM spec or a "
                    "saved tokenizer folder (default: the embedded SmolLM2's)")
    ap.add_argument("--llm-sizes", default="135m", help=f"comma list of {', '.join(LLM_SIZES)} (default: 135m)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--llm", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from smap.llm import EMBEDDED_LLM

    args.tokenizer = args.tokenizer or EMBEDDED_LLM
    if args.build:
        synthetic_llm(LLM_SIZES[args.build], Path(args.llm), args.tokenizer, args.mixed_precision)
        return
    if args.child:
        print(json.dumps(child(args.child, args.store, args.llm, args)))
        return
    sizes = [s.strip() for s in args.llm_sizes.split(",") if s.strip()]
    if unknown := [s for s in sizes if s not in LLM_SIZES]:
        ap.error(f"unknown --llm-sizes {', '.join(unknown)} (choose from {', '.join(LLM_SIZES)})")

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or synthetic_store(Path(tmp) / "store", args.feature_dim, args.utterances)
        for size in sizes:
            shape = LLM_SIZES[size]
            llm = EMBEDDED_LLM
            if shape is not None:
                # Built in its own process: a child's peak RSS (ru_maxrss) starts from what it
                # inherits at fork, and a parent that had held a 1B model would inflate it.
                llm = str(Path(tmp) / f"llm-{size}")
                subprocess.run([sys.executable, __file__, "--build", size, "--llm", llm, *passed_on(args)], check=True)
            row = {kind: run_child(kind, store, llm, args) for kind in ("stage1", "attach")}
            row["llm_params"] = row["attach"].pop("llm_params")
            row["mapper_params"] = row["stage1"].pop("mapper_params")
            row["attach_over_stage1_time"] = round(row["attach"]["step_s"] / row["stage1"]["step_s"], 1)
            rows[size] = row
    settings = {k: getattr(args, k) for k in ("preset", "mixed_precision", "max_frames", "pool", "workers", "warmup", "steps", "feature_dim", "utterances")}
    print(json.dumps({"benchmark": "stage_cost", **settings, "rows": rows}, indent=2))
    # On a GPU the peaks that matter are the device's; on a CPU, resident memory.
    peak = "peak_gpu_mb" if "peak_gpu_mb" in next(iter(rows.values()))["stage1"] else "peak_rss_mb"
    what = "GPU MB" if peak == "peak_gpu_mb" else "RSS MB"
    print(f"\n{'LLM':<5} {'params M':>8} {'mapper M':>8} {'stage1 s':>8} {'attach s':>8} {'ratio':>6} "
          f"{'stage1 ' + what:>13} {'attach ' + what:>13} {'utt/step':>8} {'data wait %':>11}")
    for size, r in rows.items():
        s1, at = r["stage1"], r["attach"]
        print(f"{size:<5} {r['llm_params'] / 1e6:>8.1f} {r['mapper_params'] / 1e6:>8.1f} {s1['step_s']:>8.3f} "
              f"{at['step_s']:>8.3f} {r['attach_over_stage1_time']:>6.1f} {s1[peak]:>13} "
              f"{at[peak]:>13} {s1['utterances_per_step']:>8} {s1['data_wait_share_pct']:>11}")
    print(f"device: {next(iter(rows.values()))['stage1']['device']}, mixed precision: {args.mixed_precision}")
    print("ratio: an attach step's time over a Stage-1 step's (target: at least 10x, growing with the LLM)")


if __name__ == "__main__":
    main()
