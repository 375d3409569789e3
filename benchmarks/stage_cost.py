"""The paper's economics on our code: a Stage-1 step against an attach step, and data loading.

    python benchmarks/stage_cost.py [--store DIR] [--steps 5] [--max-frames 2000]
    python benchmarks/stage_cost.py --llm-sizes 135m,360m,1b   # the ratio as the LLM grows
    python benchmarks/stage_cost.py --pool 2                   # the mapper as the quickstart runs it
    python benchmarks/stage_cost.py --steps 1 --llm-sizes tiny  # seconds: checks this script

Both steps train the same `small` mapper on the same batches of real Whisper tiny.en features
(a store from `smap prepare`; without --store, 64 synthetic utterances are prepared first):
Stage 1 against the LLM's embedding matrix (the LLM is never loaded), attach through the frozen
LLM (CE, prompt prefix cached, logits at labels, as `smap attach` runs). Each runs in a fresh
process, so each peak resident memory is its own. The data-loading share is the time a Stage-1
step waits for its batch (read from the memory-mapped store, collate) over the whole step.

--llm-sizes (default 135m) picks the LLMs, one row each: `135m` is the embedded SmolLM2-135M;
`360m` (SmolLM2-360M's shape), `1b` (about Llama-3.2-1B's shape, untied head) and `tiny` (a toy,
to check this script) are Llama checkpoints with random weights and SmolLM2's tokenizer, built
once in a temporary folder: a step's cost depends on the shapes only. The mapper's output width
follows the LLM's; nothing else changes between rows. Prints JSON and a table.
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
}


def child(kind: str, store: str, steps: int, max_frames: int, llm: str, pool: int) -> dict:
    """Run in a fresh process: time `steps` optimiser steps of one stage against the LLM `llm`."""
    import torch
    from torch.utils.data import DataLoader

    from smap.data.batching import BucketBatchSampler, UtteranceDataset, collate
    from smap.data.store import open_stores
    from smap.llm import load_embeddings
    from smap.mapper import SpeechMapper, preset
    from smap.pretrain import Stage1

    torch.manual_seed(0)
    emb = load_embeddings(llm)
    data = UtteranceDataset(open_stores([store]), emb.tokenizer)
    mapper = SpeechMapper(preset("small", data.stores[0].dim, emb.dim, pool=pool))
    sampler = BucketBatchSampler(data.lengths, max_frames, seed=0)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    if kind == "stage1":
        objective = Stage1(emb, 5.0, torch.device("cpu"))
        model, loss_fn = mapper, objective.loss
    else:
        from smap.attach import AttachConfig, Stage2
        from smap.speech_llm import ModelSettings, SpeechLLM

        del emb
        model = SpeechLLM.build(mapper, ModelSettings(llm=llm, system="short"))
        stage = Stage2(model, AttachConfig(out="", system="short"), data, len(data), sampler)
        loss_fn = stage.loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    wait, total, n = 0.0, 0.0, 0
    batches = iter(loader)
    for i in range(steps + 1):  # the first step warms up and is not counted
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss, _ = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        t2 = time.perf_counter()
        if i:
            wait, total, n = wait + (t1 - t0), total + (t2 - t0), n + 1
    # Attach counts the LLM (parameters() lists a tied head once), Stage 1 the mapper.
    name, counted = ("llm_params", model.lm.llm) if kind == "attach" else ("mapper_params", mapper)
    return {name: sum(p.numel() for p in counted.parameters()),
            "step_s": round(total / n, 3), "data_wait_share_pct": round(100 * wait / total, 2),
            "utterances_per_step": round(sum(len(b) for b in sampler.batches(0)[1:n + 1]) / n, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def synthetic_store(folder: Path) -> str:
    from smap.prepare import PrepareConfig, prepare

    prepare(PrepareConfig(source="tts", split="train", out=str(folder), limit=64))
    return str(folder)


def synthetic_llm(shape: dict, folder: Path) -> str:
    """A random-weight Llama checkpoint of `shape` with SmolLM2's vocabulary, tokenizer and chat
    template (attach prompts through the template), as a folder spec."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from smap.llm import EMBEDDED_LLM, load_tokenizer, pad_id_of, resolve

    tokenizer = load_tokenizer(resolve(EMBEDDED_LLM))  # no need to de-quantise its embeddings
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=False, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=pad_id_of(tokenizer), **shape)
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # meta-device weights cannot be saved: initialise for real, reproducibly
    LlamaForCausalLM(config).save_pretrained(folder)  # safetensors, as `load_embeddings` reads
    tokenizer.save_pretrained(folder)  # carries chat_template.jinja
    return str(folder)


def run_child(kind: str, store: str, llm: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--store", store, "--llm", llm,
                          "--steps", str(args.steps), "--max-frames", str(args.max_frames), "--pool", str(args.pool)],
                         capture_output=True, text=True)
    if out.returncode:  # the child's traceback, not only its exit status
        sys.exit(f"{kind} against {llm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="a feature store of Whisper tiny.en features (default: 64 synthetic utterances)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--max-frames", type=int, default=2000)
    ap.add_argument("--pool", type=int, default=1, help="the mapper's input pooling (the quickstart uses 2)")
    ap.add_argument("--llm-sizes", default="135m", help=f"comma list of {', '.join(LLM_SIZES)} (default: 135m)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--llm", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        synthetic_llm(LLM_SIZES[args.build], Path(args.llm))
        return
    if args.child:
        print(json.dumps(child(args.child, args.store, args.steps, args.max_frames, args.llm, args.pool)))
        return
    sizes = [s.strip() for s in args.llm_sizes.split(",") if s.strip()]
    if unknown := [s for s in sizes if s not in LLM_SIZES]:
        ap.error(f"unknown --llm-sizes {', '.join(unknown)} (choose from {', '.join(LLM_SIZES)})")
    from smap.llm import EMBEDDED_LLM

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or synthetic_store(Path(tmp) / "store")
        for size in sizes:
            shape = LLM_SIZES[size]
            llm = EMBEDDED_LLM
            if shape is not None:
                # Built in its own process: a child's peak RSS (ru_maxrss) starts from what it
                # inherits at fork, and a parent that had held a 1B model would inflate it.
                llm = str(Path(tmp) / f"llm-{size}")
                subprocess.run([sys.executable, __file__, "--build", size, "--llm", llm], check=True)
            row = {kind: run_child(kind, store, llm, args) for kind in ("stage1", "attach")}
            row["llm_params"] = row["attach"].pop("llm_params")
            row["mapper_params"] = row["stage1"].pop("mapper_params")
            row["attach_over_stage1_time"] = round(row["attach"]["step_s"] / row["stage1"]["step_s"], 1)
            rows[size] = row
    print(json.dumps({"benchmark": "stage_cost", "max_frames": args.max_frames, "pool": args.pool, "steps": args.steps, "rows": rows},
                     indent=2))
    print(f"\n{'LLM':<5} {'params M':>8} {'mapper M':>8} {'stage1 s':>8} {'attach s':>8} {'ratio':>6} "
          f"{'stage1 RSS MB':>13} {'attach RSS MB':>13} {'utt/step':>8} {'data wait %':>11}")
    for size, r in rows.items():
        s1, at = r["stage1"], r["attach"]
        print(f"{size:<5} {r['llm_params'] / 1e6:>8.1f} {r['mapper_params'] / 1e6:>8.1f} {s1['step_s']:>8.3f} "
              f"{at['step_s']:>8.3f} {r['attach_over_stage1_time']:>6.1f} {s1['peak_rss_mb']:>13} "
              f"{at['peak_rss_mb']:>13} {s1['utterances_per_step']:>8} {s1['data_wait_share_pct']:>11}")
    print("ratio: an attach step's time over a Stage-1 step's (target: at least 10x, growing with the LLM)")


if __name__ == "__main__":
    main()
