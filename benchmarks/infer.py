"""Inference cost of `smap infer`: real-time factor and generated tokens per second.

    python benchmarks/infer.py --model work/quickstart/attach-ce-mse --store work/quickstart/data/tts/test

Greedy ASR on the first `--n` utterances of a prepared store (features already encoded, so this
is mapper + frozen LLM), at batch 1 and batch 16, with the prompt prefix's keys and values
computed once and reused (`prefix_cache`, smap's default) and without (the prefix re-run for every
batch). Real-time factor: wall seconds / seconds of speech. Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from smap.data.store import FeatureStore
from smap.generate import generate_store
from smap.speech_llm import Decoding, SpeechLLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model folder from `smap attach`")
    ap.add_argument("--store", required=True, help="a feature store of the model's encoder")
    ap.add_argument("--n", type=int, default=32, help="utterances")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    store = FeatureStore(args.store)
    records = store.records[: args.n]
    audio = sum(float(r["duration"]) for r in records)
    longest = max(int(r["frames"]) for r in records)
    rows = []
    for prefix_cache in (True, False):
        model = SpeechLLM.from_pretrained(args.model, prefix_cache=prefix_cache)
        generate_store(model, store, limit=2, decoding=Decoding(max_new_tokens=4))  # warm-up (and the prefix cache)
        for batch in (1, 16):
            t = time.perf_counter()
            out = generate_store(model, store, limit=args.n, max_frames=batch * longest,
                                 decoding=Decoding(max_new_tokens=args.max_new_tokens))
            wall = time.perf_counter() - t
            tokens = sum(len(model.lm.tokenizer(r["output"], add_special_tokens=False)["input_ids"]) + 1 for r in out)
            rows.append({"batch": batch, "prefix_cache": prefix_cache, "wall_s": round(wall, 2),
                         "real_time_factor": round(wall / audio, 4), "tokens_per_s": round(tokens / wall, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"benchmark": "infer", "utterances": len(records), "audio_s": round(audio, 1),
                      "threads": torch.get_num_threads(), "rows": rows}))
    print(f"\n{'batch':>5} {'prefix cache':>12} {'wall s':>7} {'RTF':>7} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {str(r['prefix_cache']):>12} {r['wall_s']:>7} {r['real_time_factor']:>7} {r['tokens_per_s']:>9}")


if __name__ == "__main__":
    main()
