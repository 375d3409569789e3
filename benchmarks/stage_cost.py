"""The paper's economics on our code: a Stage-1 step against an attach step, and data loading.

    python benchmarks/stage_cost.py [--store DIR] [--steps 5] [--max-frames 2000]

Both steps train the same `small` mapper on the same batches of real Whisper tiny.en features
(a store from `smap prepare`; without --store, 64 synthetic utterances are prepared first):
Stage 1 against SmolLM2-135M's embedding matrix (the LLM is never loaded), attach through the
frozen SmolLM2-135M (CE, prompt prefix cached, logits at labels, as `smap attach` runs). Each
runs in a fresh process, so each peak resident memory is its own. The data-loading share is the
time a Stage-1 step waits for its batch (read from the memory-mapped store, collate) over the
whole step. Prints JSON and a table.
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


def child(kind: str, store: str, steps: int, max_frames: int) -> dict:
    """Run in a fresh process: time `steps` optimiser steps of one stage."""
    import torch
    from torch.utils.data import DataLoader

    from smap.data.batching import BucketBatchSampler, UtteranceDataset, collate
    from smap.data.store import open_stores
    from smap.llm import EMBEDDED_LLM, load_embeddings
    from smap.mapper import SpeechMapper, preset
    from smap.pretrain import Stage1

    torch.manual_seed(0)
    emb = load_embeddings(EMBEDDED_LLM)
    data = UtteranceDataset(open_stores([store]), emb.tokenizer)
    mapper = SpeechMapper(preset("small", data.stores[0].dim, emb.dim))
    sampler = BucketBatchSampler(data.lengths, max_frames, seed=0)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    if kind == "stage1":
        objective = Stage1(emb, 5.0, torch.device("cpu"))
        model, loss_fn = mapper, objective.loss
    else:
        from smap.attach import AttachConfig, Stage2
        from smap.speech_llm import ModelSettings, SpeechLLM

        del emb
        model = SpeechLLM.build(mapper, ModelSettings(llm=EMBEDDED_LLM, system="short"))
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
    return {"step_s": round(total / n, 3), "data_wait_share_pct": round(100 * wait / total, 2),
            "utterances_per_step": round(sum(len(b) for b in sampler.batches(0)[1:n + 1]) / n, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def synthetic_store(folder: Path) -> str:
    from smap.prepare import PrepareConfig, prepare

    prepare(PrepareConfig(source="tts", split="train", out=str(folder), limit=64))
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="a feature store of Whisper tiny.en features (default: 64 synthetic utterances)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--max-frames", type=int, default=2000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.store, args.steps, args.max_frames)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or synthetic_store(Path(tmp) / "store")
        rows = {}
        for kind in ("stage1", "attach"):
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--store", store, "--steps", str(args.steps),
                                  "--max-frames", str(args.max_frames)], check=True, capture_output=True, text=True)
            rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = rows["attach"]["step_s"] / rows["stage1"]["step_s"]
    print(json.dumps({"benchmark": "stage_cost", "max_frames": args.max_frames, "rows": rows,
                      "attach_over_stage1_time": round(ratio, 1)}, indent=2))
    print(f"\n{'stage':<8} {'s/step':>7} {'utt/step':>8} {'peak RSS MB':>12} {'data wait %':>12}")
    for kind, r in rows.items():
        print(f"{kind:<8} {r['step_s']:>7.3f} {r['utterances_per_step']:>8} {r['peak_rss_mb']:>12} {r['data_wait_share_pct']:>12}")
    print(f"an attach step costs {ratio:.1f}x a Stage-1 step (target: at least 10x)")


if __name__ == "__main__":
    main()
