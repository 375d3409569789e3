"""A stand-in for your own recordings: short wav files spoken by eSpeak NG, and the manifest that
`smap prepare --dataset` reads.

    python recipes/example_manifest.py OUT_DIR [--train N] [--test M]

Writes OUT_DIR/wavs/{train,test}-NNNN.wav (16 kHz mono) and OUT_DIR/manifest.jsonl, one row per
clip: {"audio": "wavs/train-0000.wav", "text": ..., "split": "train" | "test"}. The sentences are
smap's everyday English (smap/resources/everyday_sentences.txt), train and test disjoint; train is
spoken in smap's training voices, test in its held-out ones, as other people's speech would be.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf

from smap.audio import SAMPLE_RATE, synthesize
from smap.data.corpus import TEST_VARIANTS, TRAIN_VARIANTS, read_lines
from smap.fileio import atomic_write, atomic_write_text


def write_manifest(out_dir: str | Path, train: int = 100, test: int = 20) -> Path:
    """Synthesise `train` + `test` clips under `out_dir`; returns the manifest's path."""
    sentences = read_lines("everyday_sentences.txt")
    if train + test > len(sentences):
        raise ValueError(f"--train {train} --test {test}: only {len(sentences)} everyday sentences to speak")
    out = Path(out_dir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, texts, variants in (("train", sentences[:train], TRAIN_VARIANTS),
                                   ("test", sentences[train:train + test], TEST_VARIANTS)):
        for i, text in enumerate(texts):
            audio = f"wavs/{split}-{i:04d}.wav"
            wav = synthesize(text, voice=f"en-us+{variants[i % len(variants)]}")
            atomic_write(out / audio, lambda tmp: sf.write(tmp, wav.numpy(), SAMPLE_RATE, format="WAV"))
            rows.append({"audio": audio, "text": text, "split": split})
    manifest = out / "manifest.jsonl"
    atomic_write_text(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--train", type=int, default=100, help="training clips (default 100)")
    parser.add_argument("--test", type=int, default=20, help="test clips (default 20)")
    args = parser.parse_args(argv)
    if args.train < 0 or args.test < 0:
        parser.error("--train and --test must not be negative")
    try:
        manifest = write_manifest(args.out_dir, args.train, args.test)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    print(f"{args.train + args.test} clips and {manifest}")


if __name__ == "__main__":
    main()
