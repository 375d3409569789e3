"""Learning curves of an embedded run against optimiser steps, as a PNG and a JSON of the points.

    python benchmarks/learning_curves.py work/replicate        # after recipes/quickstart.sh --replicate

Reads the `log.jsonl` that `smap pretrain` and `smap attach` write beside their checkpoints:
Stage 1's held-out nearest-embedding WER (cosine decoding), and each attach run's held-out WER of
its greedy transcripts through the LLM and cross-entropy of the transcript (the first point of an
attach run is the Stage-1 mapper itself, `--eval-at-start`). The budgets are steps, so the curves
are drawn against steps, the same on any machine; each attach run continues from the Stage-1
mapper, so its steps start where Stage 1 ended (the attach runs are alternatives, drawn over the
same steps). The minutes each stage took on its machine are in each run's log (`seconds`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def points(log: Path, key: str) -> list[tuple[float, float]]:
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [(r["step"], r[key]) for r in rows if key in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="the quickstart's work folder (holds pretrain/ and attach-*/)")
    ap.add_argument("--out", type=Path, help="PNG path (default: WORK/learning_curves.png)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage1 = points(args.work / "pretrain" / "log.jsonl", "valid_wer")
    offset = stage1[-1][0] if stage1 else 0.0
    curves = {"stage1_wer": stage1}
    for run in sorted(args.work.glob("attach-*")):
        for key in ("wer", "ce"):
            curves[f"{run.name}_{key}"] = [(offset + m, v) for m, v in points(run / "log.jsonl", f"valid_{key}")]
    if not any(curves.values()):
        raise SystemExit(f"{args.work}: no pretrain/ or attach-*/ log.jsonl with validation points")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    runs = sorted({name.rsplit("_", 1)[0] for name in curves})
    color = {run: f"C{k}" for k, run in enumerate(runs)}  # one colour per run in both panels
    for name, pts in curves.items():
        run = name.rsplit("_", 1)[0]
        if pts and name.endswith("_wer"):
            label = "Stage 1 (nearest embedding)" if run == "stage1" else f"{run} (greedy, through the LLM)"
            a.plot(*zip(*pts), marker="o", color=color[run], label=label)
        elif pts:
            b.plot(*zip(*pts), marker="o", color=color[run], label=run)
    a.set(title="Held-out WER", xlabel="optimiser steps since Stage 1 began", ylabel="WER %")
    b.set(title="Attach: held-out CE of the transcript", xlabel="optimiser steps since Stage 1 began",
          ylabel="CE (nats/token)")
    for ax in (a, b):
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    out = args.out or args.work / "learning_curves.png"
    fig.savefig(out, dpi=110)
    (out.with_suffix(".json")).write_text(json.dumps(curves, indent=1))
    print(json.dumps({k: v[-1] if v else None for k, v in curves.items()}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
