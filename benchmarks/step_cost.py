"""Seconds per optimiser step of the quickstart's own training commands, by precision and CPU kernel set.

    python benchmarks/step_cost.py                  # pretrain and attach; fp32 and bf16; default and AVX2 kernels
    python benchmarks/step_cost.py --capabilities default,avx2-full --json step_cost.json  # an AVX2-only CPU's view
    python benchmarks/step_cost.py --steps 4 --precisions no --capabilities avx2  # checks this script (minutes)

Each row is one real command, run in a fresh process with its quickstart config and a fresh
temporary --out, as `bash recipes/quickstart.sh` runs it:

  pretrain  smap pretrain --config recipes/configs/quickstart/pretrain.yaml --train TRAIN --valid VALID
  attach    smap attach --config recipes/configs/quickstart/attach-asr-ce-mse.yaml --mapper MAPPER
            --train TRAIN --valid VALID

The shapes, on the quickstart's store (Whisper tiny.en, 384-d, 50 frames/s): a Stage-1 batch is up to
4,000 padded frames, e.g. 28 utterances x 142 frames with ~250 transcript tokens; the small mapper
(14.3M parameters with its CTC head) pools them by 2, block 1 (2 Transformer layers, 384-d) runs on
~1,000 frames and its CTC head scores each against 5,897 labels (the training transcripts' token
types), the forced alignment cuts them to one vector per token, block 2 (512-d) maps those to
SmolLM2's 576-d embeddings: MSE + 0.02 token CE over 5,895 types + 0.05 CTC, no LLM. An attach
batch is up to 2,000 frames through the same mapper, then the frozen SmolLM2-135M reads the vectors
as token mixtures in the short prompt: CE on the transcript + 0.5 x the Stage-1 MSE.

with --mixed-precision PRECISION, --steps N (default 20 for pretrain, 8 for attach), --log-every 1,
and checkpoints and validation pushed past the last step (attach also skips its validation at the
start), so that no step waits on either. --capabilities picks the CPU kernels, set in the child's
environment:

  default    nothing set: what torch, MKL and oneDNN pick on this CPU
  avx2       ATEN_CPU_CAPABILITY=avx2: torch's own kernels (elementwise, softmax, norms) in AVX2; its
             matrix products and convolutions stay with MKL and oneDNN, which pick their own ISA
  avx2-full  also MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2: every kernel in AVX2, the
             stand-in on an AVX-512 CPU for an AVX2-only one such as the 2-core EPYC of the README's
             table (on a 2.8 GHz AVX-512 Xeon, a (1024x576) @ (576x1536) product: fp32 1.6x and
             bf16 17x as long as with `avx2`, bf16 44x fp32, where `avx2` leaves bf16 at 4x fp32)
  any other  set as ATEN_CPU_CAPABILITY (e.g. avx512, or default)

With --log-every 1 the command writes a log.jsonl row after every step, holding the run's seconds so
far to the millisecond: step k's time is seconds(k) - seconds(k-1). The first 2 steps are dropped
(warm-up, and step 1's row also counts the run's setup), and the table gives the median of the rest
(and their mean). Each row also records what a probe process in the same environment sees: torch's
CPU capability (torch.backends.cpu.get_cpu_capability()), smap.precision's reading of the CPU (bf16
native or not) and torch's thread count; the precision the command chose (its report), and the CPU
model.

Load from other processes lengthens every step: compare rows of one run, and rerun when the
machine is shared. Prints a Markdown table; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QS = os.environ.get("SMAP_WORK", str(REPO / "work/quickstart"))  # where `bash recipes/quickstart.sh` wrote its stores
CONFIGS = {"pretrain": "pretrain.yaml", "attach": "attach-asr-ce-mse.yaml"}
DEFAULT_STEPS = {"pretrain": 20, "attach": 8}
WARMUP = 2  # steps dropped from the timing
NEVER = "1000000"  # --save-every / --eval-every past any run here
# The variables that pick CPU kernels: torch's own, MKL's (fp32 matrix products) and oneDNN's
# (convolutions, bf16 matrix products).
ISA_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
FULL = {"avx2-full": dict(zip(ISA_VARS, ("avx2", "AVX2", "AVX2")))}

# The `smap` command line, in this interpreter (the console script runs smap.cli's app, as this does).
SMAP = [sys.executable, "-m", "smap.cli"]
# Run beside each command, in its environment: what torch and smap.precision make of this CPU.
PROBE = """
import json, torch
from smap.precision import cpu_bf16
native, what = cpu_bf16()
print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "smap_precision_cpu": what,
                  "native_bf16": native, "threads": torch.get_num_threads(), "torch": torch.__version__}))
"""


def cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8") if platform.system() == "Linux" else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def command(stage: str, precision: str, steps: int, out: Path, args: argparse.Namespace) -> list[str]:
    """The stage's quickstart command (recipes/quickstart.sh), made to time `steps` steps."""
    cmd = [stage, "--config", str(args.configs / CONFIGS[stage]), "--train", args.train, "--valid", args.valid,
           "--out", str(out), "--steps", str(steps), "--mixed-precision", precision,
           "--save-every", NEVER, "--eval-every", NEVER, "--log-every", "1"]
    if stage == "attach":
        # The validation after the last step is not timed; kept small, as it only costs waiting.
        cmd += ["--mapper", args.mapper, "--no-eval-at-start", "--max-valid", "8", "--valid-decode", "0", "--show", "0"]
    return cmd


def step_times(rows: list[dict], steps: int) -> list[float]:
    """Seconds of steps WARMUP+1..steps: differences of the training rows' `seconds` (validation rows
    have no loss)."""
    seconds = {r["step"]: r["seconds"] for r in rows if "loss" in r}
    return [seconds[k] - seconds[k - 1] for k in range(WARMUP + 1, steps + 1)]


def run(stage: str, capability: str, precision: str, steps: int, args: argparse.Namespace) -> dict:
    isa = FULL.get(capability, {} if capability == "default" else {"ATEN_CPU_CAPABILITY": capability})
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARS} | isa
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True)
    if probe.returncode:
        sys.exit(f"probe ({capability}) failed:\n{probe.stderr[-3000:]}")
    with tempfile.TemporaryDirectory(prefix="step_cost.") as tmp:
        out = Path(tmp) / "run"
        t0 = time.monotonic()
        done = subprocess.run([*SMAP, *command(stage, precision, steps, out, args)], env=env, cwd=REPO,
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        if done.returncode:
            sys.exit(f"{stage} ({capability}, {precision}) failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        chosen = json.loads((out / f"{stage}_report.json").read_text())["precision"]  # what the command ran in
    times = step_times(rows, steps)
    return {"stage": stage, "capability": capability, "env": isa, "mixed_precision": precision,
            "s_per_step_median": round(statistics.median(times), 3) if times else None,
            "s_per_step_mean": round(statistics.fmean(times), 3) if times else None,
            "steps_timed": len(times), "step_s": [round(x, 3) for x in times],
            "precision_chosen": f"{chosen['dtype']} ({chosen['reason']})",
            "process_wall_s": round(wall, 1), **json.loads(probe.stdout.splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="pretrain,attach", help="comma list: pretrain, attach")
    ap.add_argument("--precisions", default="no,bf16", help="comma list of --mixed-precision values (no: fp32)")
    ap.add_argument("--capabilities", default="default,avx2",
                    help="comma list: default (nothing set), avx2 (ATEN_CPU_CAPABILITY), avx2-full (MKL and "
                    "oneDNN too), or another ATEN_CPU_CAPABILITY value")
    ap.add_argument("--steps", type=int, help=f"steps per run, {WARMUP} of them untimed (default: "
                    + ", ".join(f"{s} {n}" for s, n in DEFAULT_STEPS.items()) + ")")
    ap.add_argument("--train", default=f"{QS}/data/tts/train", help="training feature store (both stages)")
    ap.add_argument("--valid", default=f"{QS}/data/tts/dev", help="validation store (only used after the last step)")
    ap.add_argument("--mapper", default=f"{QS}/pretrain/mapper", help="attach: the Stage-1 mapper")
    ap.add_argument("--configs", type=Path, default=REPO / "recipes/configs/quickstart")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    stages = args.stages.split(",")
    if unknown := set(stages) - set(CONFIGS):
        ap.error(f"--stages: unknown {', '.join(sorted(unknown))}")
    if args.steps is not None and args.steps <= WARMUP:
        ap.error(f"--steps must be more than the {WARMUP} warm-up steps")

    results = []
    for stage in stages:
        for capability in args.capabilities.split(","):
            for precision in args.precisions.split(","):
                r = run(stage, capability, precision, args.steps or DEFAULT_STEPS[stage], args)
                print(f"{stage} {capability} {precision}: {r['s_per_step_median']} s/step", file=sys.stderr)
                results.append(r)
    report = {"machine": cpu_name(), "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))

    print(f"CPU: {report['machine']}\n")
    print("| stage | capability | precision | s/step (median) | s/step (mean) | steps timed | torch capability "
          "| threads |")
    print("|---|---|---|---:|---:|---:|---|---:|")
    for r in results:
        print(f"| {r['stage']} | {r['capability']} | {r['mixed_precision']} | {r['s_per_step_median']} | "
              f"{r['s_per_step_mean']} | {r['steps_timed']} | {r['cpu_capability']} | {r['threads']} |")
    print()
    for precision in sorted({r["precision_chosen"] for r in results}):
        print(f"ran in: {precision}")
    if results:
        print(f"smap.precision reads this CPU as: {results[0]['smap_precision_cpu']}")


if __name__ == "__main__":
    main()
