"""Learning curves of an embedded run against CPU minutes, as a PNG and a JSON of the points.

    python benchmarks/learning_curves.py work/replicate        # after recipes/quickstart.sh --replicate

Reads the `log.jsonl` that `smap pretrain` and `smap attach` write beside their checkpoints:
Stage 1's held-out nearest-embedding WER (cosine decoding) and validation loss, and each attach
run's held-out cross-entropy of the transcript (its first point is the Stage-1 mapper itself,
`--eval-at-start`). Minutes are wall-clock minutes of the run on its machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def points(log: Path, key: str) -> list[tuple[float, float]]:
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [(r["seconds"] / 60, r[key]) for r in rows if key in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="the quickstart's work folder (holds pretrain/ and attach-*/)")
    ap.add_argument("--out", type=Path, help="PNG path (default: WORK/learning_curves.png)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"stage1_wer": points(args.work / "pretrain" / "log.jsonl", "valid_wer")}
    for run in sorted(args.work.glob("attach-*")):
        curves[f"{run.name}_ce"] = points(run / "log.jsonl", "valid_ce")
    if not any(curves.values()):
        raise SystemExit(f"{args.work}: no pretrain/ or attach-*/ log.jsonl with validation points")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if curves["stage1_wer"]:
        a.plot(*zip(*curves["stage1_wer"]), marker="o")
    a.set(title="Stage 1: held-out nearest-embedding WER", xlabel="CPU minutes", ylabel="WER %")
    for name, pts in curves.items():
        if name.startswith("attach") and pts:
            b.plot(*zip(*pts), marker="o", label=name.removesuffix("_ce"))
    b.set(title="Attach: held-out CE of the transcript", xlabel="CPU minutes", ylabel="CE (nats/token)")
    b.legend()
    fig.tight_layout()
    out = args.out or args.work / "learning_curves.png"
    fig.savefig(out, dpi=110)
    (out.with_suffix(".json")).write_text(json.dumps(curves, indent=1))
    print(json.dumps({k: v[-1] if v else None for k, v in curves.items()}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
