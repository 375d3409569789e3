"""Throughput of the speech encoders on this machine: utterances per second and real-time factor.

    python benchmarks/encoders.py                 # 200 synthetic utterances, table + JSON
    python benchmarks/encoders.py --n 500 --json results.json --end-to-end 3000

Measures, on the same eSpeak utterances (the tts corpus's test split) batched as `smap prepare`
batches them (sorted by length, --batch-seconds of padded audio per batch):
  * eSpeak NG synthesis (with the resampling to 16 kHz) alone;
  * the embedded Whisper tiny.en (CTranslate2) in int8 and float32, padded to the batch's longest
    clip (prepare's default) and, in int8, to Whisper's 30 s window (--window);
  * a transformers backend: a Whisper encoder of tiny.en's shape (random weights: speed does not
    depend on them, and nothing is downloaded), which always pads to the 30 s window.
With --end-to-end N, also `smap prepare` itself on N training sentences (synthesis, encoding,
writing the store), for comparison with the planning figure of 3,130 utterances in 150 s.
Real-time factor: seconds of compute per second of audio (lower is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from smap.data.corpus import CorpusConfig, plan
from smap.encoders import Encoder, cpu_threads, load_encoder
from smap.prepare import PrepareConfig, batches, one_torch_thread, prepare


def _hf_whisper_tiny(folder) -> str:
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(vocab_size=51864, d_model=384, encoder_layers=4, decoder_layers=1, encoder_attention_heads=6,
                           decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80)
    WhisperModel(config).save_pretrained(folder)
    return str(folder)


def measure(encoder: Encoder, waves: list[torch.Tensor], batch_seconds: float, batch_size: int) -> dict:
    groups = batches([w.numel() for w in waves], int(batch_seconds * encoder.sample_rate), batch_size)
    encoder.encode([waves[0]])  # warm-up: first-call allocations are not throughput
    start = time.perf_counter()
    for group in groups:
        encoder.encode([waves[i] for i in group])
    seconds = time.perf_counter() - start
    audio = sum(w.numel() for w in waves) / encoder.sample_rate
    return {"utterances_per_second": round(len(waves) / seconds, 2), "real_time_factor": round(seconds / audio, 5),
            "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="utterances to encode")
    parser.add_argument("--batch-seconds", type=float, default=240.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--end-to-end", type=int, default=0, help="also run smap prepare on this many sentences")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()

    utterances = plan(CorpusConfig(train=10, dev=0, test=args.n))["test"]
    start = time.perf_counter()
    with one_torch_thread():  # as prepare decodes and synthesises
        waves = [u.synthesize() for u in utterances]
    synth = time.perf_counter() - start
    audio = sum(w.numel() for w in waves) / 16000
    rows = {"espeak synthesis": {"utterances_per_second": round(len(waves) / synth, 2),
                                 "real_time_factor": round(synth / audio, 5), "seconds": round(synth, 2)}}
    for label, spec, opts in (("whisper-tiny.en ct2 int8", "whisper-tiny.en", {"compute_type": "int8"}),
                              ("whisper-tiny.en ct2 float32", "whisper-tiny.en", {"compute_type": "float32"}),
                              ("whisper-tiny.en ct2 int8 --window", "whisper-tiny.en", {"compute_type": "int8", "window": True})):
        rows[label] = measure(load_encoder(spec, **opts), waves, args.batch_seconds, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        rows["transformers whisper (tiny shape) float32"] = measure(
            load_encoder(_hf_whisper_tiny(tmp)), waves, args.batch_seconds, min(args.batch_size, 16))
        if args.end_to_end:
            report = prepare(PrepareConfig(source="tts", split="train", out=f"{tmp}/store",
                                           source_options={"tts": CorpusConfig(train=args.end_to_end)}))
            rows[f"smap prepare, {args.end_to_end} tts utterances"] = {
                "utterances_per_second": report["utterances_per_second"],
                "real_time_factor": report["real_time_factor"], "seconds": report["seconds"]}

    result = {"machine": f"{platform.processor() or platform.machine()}, {cpu_threads()} cores, torch {torch.__version__}",
              "utterances": len(waves), "audio_seconds": round(audio, 1), "results": rows}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(waves)} eSpeak utterances, {audio / len(waves):.1f} s each on average ({result['machine']})")
    for col in ("system", "utt/s", "real-time factor", "seconds"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r['utterances_per_second']}", f"{r['real_time_factor']}", f"{r['seconds']}")
    Console().print(table)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
