"""Frames per transcript token of prepared feature stores: which encoder output has room for the
Stage-1 targets after the mapper's downsampling.

    python benchmarks/frames_per_token.py data/adaptor/train-clean-100 data/layer18/train-clean-100 \
        --llm meta-llama/Llama-3.1-8B-Instruct

Give the same utterances prepared from different encoder outputs, e.g. SeamlessM4T-v2's adaptor
(`smap prepare --encoder hf:facebook/seamless-m4t-v2-large`, ~6.25 frames/s) beside one of its
conformer layers (`--layer 18`, 50 frames/s). For each store it prints its encoder and frame rate,
frames per token (mean, 5th percentile, min), the mapper's output vectors per token, and the share
of utterances whose targets `smap pretrain` would cut, with --pool 1 (the paper's mapper, 4x) and
--pool 2 (8x); `smap pretrain` refuses a run above --max-cut-share (5% by default). Only store
records (their frame counts and transcripts) and the LLM's tokenizer are read, never features.
The figures are `smap prepare --llm`'s `frames_per_token` (`smap.prepare.frames_per_token`).
"""

from __future__ import annotations

import argparse
import json

from smap.data.store import FeatureStore
from smap.fileio import atomic_write_text
from smap.llm import load_tokenizer, resolve
from smap.prepare import frames_per_token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", help="feature store folders (from `smap prepare`)")
    ap.add_argument("--llm", default="smollm2-135m", help="the LLM spec whose tokenizer counts the tokens")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    tokenizer = load_tokenizer(resolve(args.llm))
    rows = []
    for folder in args.stores:
        store = FeatureStore(folder)
        rows.append({"store": folder, "encoder": store.encoder, "frame_rate": store.info.frame_rate,
                     **frames_per_token(store.records, tokenizer, args.llm)})
    print(f"frames per token of {args.llm}'s tokens\n")
    print("| store | encoder | frames/s | utterances | frames/token mean | p05 | min | mapper vectors/token "
          "| cut, --pool 1 | cut, --pool 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["utterances"]:
            print(f"| {r['store']} | {r['encoder']} | {r['frame_rate']:g} | 0 (no transcripts) | | | | | | |")
            continue
        print(f"| {r['store']} | {r['encoder']} | {r['frame_rate']:g} | {r['utterances']} | {r['mean']} | {r['p05']} "
              f"| {r['min']} | {r['mapper_output_per_token_mean']} | {100 * r['too_short_share']:.1f}% "
              f"| {100 * r['too_short_with_pool2'] / r['utterances']:.1f}% |")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
