"""Time one attach (Stage-2) training step on the embedded default, lever by lever.

    python benchmarks/attach_step.py [--batch 8] [--speech 40] [--target 14] [--steps 3]

A step is what `smap attach` does per batch: mapper forward, prompt assembly, the frozen
SmolLM2-135M forward, CE on the response, backward into the mapper, AdamW. The inputs are random
(the cost does not depend on the values): `batch` utterances of `speech` mapper outputs
(4x as many Whisper tiny.en frames) and `target` response tokens. Levers:

  prefix_cache      the prompt prefix's keys/values computed once and reused
  short_system      a one-line system message instead of SmolLM2's default one
  logits_at_labels  the LM head applied only where there are labels
  bf16              the LLM in bfloat16 under autocast: native on CPUs with AVX512-BF16 or AMX, emulated
                    (far slower) elsewhere; the last line gives the bf16 / fp32 ratio and the
                    precision `--mixed-precision auto` picks on this CPU (smap.precision)

Configurations run round-robin, one step each per round, so that load from other processes
falls on all of them alike; the table gives the fastest round (wall and process CPU seconds)
and the median. Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from smap.llm import EMBEDDED_LLM, load_causal_lm
from smap.mapper import SpeechMapper, preset
from smap.precision import cpu_bf16, resolve
from smap.prompts import Request
from smap.speech_llm import ModelSettings, PromptedLM, SpeechLLM

CONFIGS = {
    "baseline (no lever)": dict(prefix_cache=False, system="default", logits_at_labels=False),
    "+ prefix_cache": dict(prefix_cache=True, system="default", logits_at_labels=False),
    "+ short_system": dict(prefix_cache=False, system="short", logits_at_labels=False),
    "+ logits_at_labels": dict(prefix_cache=False, system="default", logits_at_labels=True),
    "all three": dict(prefix_cache=True, system="short", logits_at_labels=True),
    "prefix_cache + logits": dict(prefix_cache=True, system="default", logits_at_labels=True),
    "all three + bf16": dict(prefix_cache=True, system="short", logits_at_labels=True, bf16=True),
}


def cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8") if platform.system() == "Linux" else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_step(model: SpeechLLM, batch: int, speech: int, target: int, bf16: bool):
    """A closure running one optimiser step on fixed random inputs."""
    g = torch.Generator().manual_seed(0)
    frames = 4 * speech
    features = torch.randn(batch, frames, model.mapper.config.input_dim, generator=g)
    lengths = torch.full((batch,), frames)
    vocab = len(model.lm.tokenizer)
    prompts = [model.lm.prompt_ids(Request("asr"))] * batch
    responses = [torch.randint(100, vocab, (target - 1,), generator=g).tolist() + [model.lm.format.eos_id]
                 for _ in range(batch)]
    optimizer = torch.optim.AdamW(model.mapper.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(features, lengths, prompts, responses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--speech", type=int, default=40, help="mapper output vectors per utterance")
    ap.add_argument("--target", type=int, default=14, help="response tokens per utterance (EOS included)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--only-precision", action="store_true", help="only 'all three' in fp32 and in bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    llms = {dtype: load_causal_lm(EMBEDDED_LLM, dtype) for dtype in (torch.float32, torch.bfloat16)}
    dim = llms[torch.float32][0].get_input_embeddings().embedding_dim
    torch.manual_seed(0)
    mapper = SpeechMapper(preset("small", 384, dim))
    steps, info = {}, {}
    configs = {n: c for n, c in CONFIGS.items() if not args.only_precision or n.startswith("all three")}
    for name, c in configs.items():
        llm, tokenizer = llms[torch.bfloat16 if c.get("bf16") else torch.float32]
        lm = PromptedLM(llm, tokenizer, c["system"], c["prefix_cache"], c["logits_at_labels"])
        model = SpeechLLM(mapper, lm, ModelSettings(llm=EMBEDDED_LLM, system=c["system"]))
        steps[name] = make_step(model, args.batch, args.speech, args.target, bool(c.get("bf16")))
        steps[name]()  # warm-up: builds the prefix cache, first-call kernel set-up
        info[name] = {"prefix_tokens": len(lm.format.prefix_ids), **c}
    # Round-robin, so that load from other processes drifts over all configurations alike.
    wall, cpu = {n: [] for n in steps}, {n: [] for n in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            w, c = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    results = {n: {"wall_s_min": round(min(wall[n]), 3), "wall_s_median": round(sorted(wall[n])[len(wall[n]) // 2], 3),
                   "cpu_s_min": round(min(cpu[n]), 3), **info[n]} for n in steps}
    native, capability = cpu_bf16()
    report = {"machine": cpu_name(), "cpu_capability": capability, "native_bf16": native,
              "auto_precision": resolve("auto", "cpu").record(), "threads": args.threads,
              "batch": args.batch, "speech_vectors": args.speech, "target_tokens": args.target,
              "llm": EMBEDDED_LLM, "mapper_parameters": mapper.num_parameters(), "results": results}
    print(json.dumps(report, indent=2))
    base = results[next(iter(results))]["wall_s_min"]
    print(f"\n{'configuration':<28} {'wall s':>7} {'median':>7} {'cpu s':>7} {'speed-up':>8} {'prefix':>6}")
    for name, r in results.items():
        print(f"{name:<28} {r['wall_s_min']:>7.3f} {r['wall_s_median']:>7.3f} {r['cpu_s_min']:>7.3f} "
              f"{base / r['wall_s_min']:>7.2f}x {r['prefix_tokens']:>6}")
    ratio = results["all three + bf16"]["wall_s_min"] / results["all three"]["wall_s_min"]
    print(f"\nbf16 / fp32 attach step: {ratio:.2f}x on {report['machine']} ({capability}); "
          f"--mixed-precision auto picks {resolve('auto', 'cpu')}")


if __name__ == "__main__":
    main()
