"""Stage-1 peak memory against LLM size: flat, because only the embedding matrix is read.

Builds synthetic Llama checkpoints that share vocabulary and width and differ only in depth
(sharded safetensors, like hub checkpoints), runs `smap pretrain` against each in a fresh
process, and prints the peak resident memory of that process beside the size of the layer
weights. For contrast it also measures loading each full model with transformers.

    python benchmarks/stage1_memory.py                 # 0.2 GB and 2 GB of layer weights
    python benchmarks/stage1_memory.py --sizes 0.2,2,8 # up to 8 GB (needs the disk space)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, FFN, VOCAB = 1024, 4096, 2048
LAYER_BYTES = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN + 2 * HIDDEN) * 4  # fp32 weights of one decoder layer


def write_checkpoint(folder: Path, n_layers: int, shard_bytes: int = 1 << 30) -> float:
    """A Llama checkpoint with `n_layers` layers of (meaningless) weights; returns layer GB."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=n_layers,
                         num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    folder.mkdir(parents=True)
    weight_map, shard, size, n = {}, {}, 0, 0

    def flush():
        nonlocal shard, size, n
        name = f"model-{n:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        shard, size, n = {}, 0, n + 1

    gen = torch.Generator().manual_seed(0)
    for key, shape in shapes.items():
        shard[key] = torch.randn(shape, generator=gen) * 0.02 if "embed" in key else torch.zeros(shape)
        size += shard[key].numel() * 4
        if size >= shard_bytes:
            flush()
    if shard:
        flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config.save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(VOCAB - 2)} | {"<pad>": VOCAB - 2, "<unk>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(folder)
    return n_layers * LAYER_BYTES / 1e9


def write_store(folder: Path) -> None:
    from smap.data.store import StoreWriter

    gen = torch.Generator().manual_seed(0)
    with StoreWriter(folder, "bench", 64, 50.0) as w:
        for i in range(64):
            w.add({"id": f"u{i}", "text": " ".join(f"w{(i * 7 + j) % 500}" for j in range(8)), "duration": 2.0},
                  torch.randn(100, 64, generator=gen))


def measure(code: str) -> float:
    # RUSAGE_CHILDREN is a running maximum, so each figure runs in its own measuring process.
    wrapper = f"import resource,subprocess,sys; subprocess.run([sys.executable,'-c',{code!r}],check=True,stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)"
    out = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.2,2", help="layer-weight sizes in GB, comma-separated")
    ap.add_argument("--skip-full", action="store_true", help="skip loading the full models (the contrast)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_store(tmp / "store")
        for gb in (float(s) for s in args.sizes.split(",")):
            layers = max(1, round(gb * 1e9 / LAYER_BYTES))
            ckpt = tmp / f"llm-{layers}"
            layer_gb = write_checkpoint(ckpt, layers)
            run = tmp / f"run-{layers}"
            stage1 = (f"from smap.cli import app; app(['pretrain','--train','{tmp / 'store'}','--llm','{ckpt}',"
                      f"'--out','{run}','--preset','tiny','--steps','20','--max-frames','1600'], standalone_mode=False)")
            row = {"layers": layers, "layer_weights_gb": round(layer_gb, 2), "stage1_peak_rss_mb": round(measure(stage1))}
            if not args.skip_full:
                # Reading every weight once, as any forward pass does: transformers maps the files
                # lazily, so loading alone would not show the cost.
                full = (f"from transformers import AutoModelForCausalLM; m = AutoModelForCausalLM.from_pretrained('{ckpt}'); "
                        f"print(sum(float(p.sum()) for p in m.parameters()))")
                row["full_model_peak_rss_mb"] = round(measure(full))
            rows.append(row)
            print(json.dumps(row), flush=True)
    spread = max(r["stage1_peak_rss_mb"] for r in rows) - min(r["stage1_peak_rss_mb"] for r in rows)
    print(f"\n{'layers':>7} {'layer GB':>9} {'Stage-1 peak MB':>16} {'full-model peak MB':>19}")
    for r in rows:
        print(f"{r['layers']:>7} {r['layer_weights_gb']:>9} {r['stage1_peak_rss_mb']:>16} {r.get('full_model_peak_rss_mb', '-'):>19}")
    print(f"Stage-1 peak spread: {spread:.0f} MB (target: under 100 MB)")
    print(json.dumps({"benchmark": "stage1_memory", "rows": rows, "stage1_spread_mb": round(spread)}))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
