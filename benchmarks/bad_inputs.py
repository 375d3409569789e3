"""Bad inputs through the real command line, and what each gives: a table a user can read.

    python benchmarks/bad_inputs.py            # about two minutes on 2 CPU cores

Each case runs `python -m smap.cli ...` in a fresh process on a scratch folder, beside good input
where the command takes a batch, and is reported with its exit code, the line that names the fault
(an `error:` line or the skip recorded in `skips.jsonl`), whether a traceback reached the user, and
whether the good items were still stored. The embedded Whisper tiny.en encodes (no download). The
same faults are asserted in tests/test_hostile_input.py, test_reliability.py and test_audio.py;
this script shows them as a user meets them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from smap.data.store import FeatureStore


def tone(path: Path, seconds: float, sr: int = 16000, value: float | None = None) -> Path:
    """A 220 Hz tone (or a constant `value`, e.g. inf) of `seconds` at `sr`, as 32-bit float WAV."""
    n = int(sr * seconds)
    wav = np.full(n, value, np.float32) if value is not None else 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sr)
    sf.write(path, wav.astype(np.float32), sr, subtype="FLOAT")
    return path


def manifest(folder: Path, rows: list[dict]) -> Path:
    """`folder/m.jsonl` with a good clip `good` first, then `rows`."""
    folder.mkdir(parents=True)
    tone(folder / "good.wav", 1.0)
    rows = [{"id": "good", "audio": "good.wav", "text": "a good clip"}, *rows]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "m.jsonl"


def run(args: list[str], cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "smap.cli", *args], cwd=cwd, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0


def prepare_case(root: Path, name: str, rows: list[dict], make=lambda d: None) -> dict:
    """`smap prepare` of a manifest holding a good clip and the bad `rows` (files made by `make`)."""
    folder = root / name
    m = manifest(folder, rows)
    make(folder)
    code, output, seconds = run(["prepare", "--dataset", str(m), "--out", str(folder / "store"),
                                 "--encoder", "whisper-tiny.en"], root)
    skips_file = folder / "store" / "skips.jsonl"
    skipped = [json.loads(line) for line in skips_file.read_text().splitlines()] if skips_file.is_file() else []
    try:
        stored = [r["id"] for r in FeatureStore(folder / "store").records]
    except Exception:  # no store: nothing stored
        stored = []
    said = "; ".join(f"skip {s['id']!r}: {s['reason']} ({s['detail']})" for s in skipped)
    if not said and code == 0:
        said = f"stored: {', '.join(stored)}"
    good = "good" in stored
    return {"code": code, "said": said or first_error(output), "traceback": "Traceback" in output,
            "good": good, "seconds": seconds}


def first_error(output: str) -> str:
    return next((line.strip() for line in output.splitlines() if line.strip().startswith("error")), "")


def cli_case(root: Path, args: list[str]) -> dict:
    code, output, seconds = run(args, root)
    return {"code": code, "said": first_error(output), "traceback": "Traceback" in output, "good": None,
            "seconds": seconds}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="smap-bad-inputs-"))
    cases: list[tuple[str, str, dict]] = []

    def add(what: str, command: str, result: dict) -> None:
        cases.append((what, command, result))
        print(f"{what}: exit {result['code']} in {result['seconds']:.1f} s", file=sys.stderr)

    add("a missing clip whose id holds rich markup (`x[/INST]`)", "prepare",
        prepare_case(root, "markup", [{"id": "x[/INST]", "audio": "nowhere.wav", "text": "t"}]))
    add("a clip at 44,101 Hz (an odd rate)", "prepare",
        prepare_case(root, "odd-rate", [{"id": "odd", "audio": "odd.wav", "text": "odd rate"}],
                     lambda d: tone(d / "odd.wav", 2.0, sr=44101)))
    add("a header claiming 1 Hz", "prepare",
        prepare_case(root, "one-hz", [{"id": "slow", "audio": "slow.wav", "text": "t"}],
                     lambda d: tone(d / "slow.wav", 4000, sr=1)))
    add("infinite samples", "prepare",
        prepare_case(root, "inf", [{"id": "inf", "audio": "inf.wav", "text": "t"}],
                     lambda d: tone(d / "inf.wav", 1.0, value=np.inf)))
    add("a 61 s clip (over the 60 s default)", "prepare",
        prepare_case(root, "long", [{"id": "long", "audio": "long.wav", "text": "t"}],
                     lambda d: tone(d / "long.wav", 61.0)))
    add("a text file named .wav", "prepare",
        prepare_case(root, "not-audio", [{"id": "text", "audio": "text.wav", "text": "t"}],
                     lambda d: (d / "text.wav").write_text("not audio")))
    add("a 20,000-character transcript", "prepare",
        prepare_case(root, "long-text", [{"id": "essay", "audio": "good.wav", "text": "word " * 4000}]))
    mistyped = root / "data"
    mistyped.mkdir(exist_ok=True)
    add("`--llm data/mymodel` where data/ exists (a mistyped path)", "pretrain",
        cli_case(root, ["pretrain", "--train", str(root / "markup" / "store"), "--llm", "data/mymodel",
                        "--out", str(root / "s1")]))
    add("`--model ../evil=DIR` (a name that is a path)", "evaluate",
        cli_case(root, ["evaluate", "--suite", "tts/test", "--model", f"../evil={root}", "--out", str(root / "ev")]))
    (root / "busy").mkdir(exist_ok=True)
    (root / "busy" / "log.jsonl").write_text("{}\n")
    add("`--out` holding another run, without --resume", "pretrain",
        cli_case(root, ["pretrain", "--train", str(root / "markup" / "store"), "--out", str(root / "busy")]))
    store = root / "markup" / "store" / "store.json"
    index = json.loads(store.read_text())
    index["shards"][0]["file"] = "../../outside.safetensors"
    (root / "evil-store").mkdir(exist_ok=True)
    for f in (root / "markup" / "store").iterdir():
        (root / "evil-store" / f.name).write_bytes(f.read_bytes())
    (root / "evil-store" / "store.json").write_text(json.dumps(index))
    add("a store.json naming a shard outside its folder", "pretrain",
        cli_case(root, ["pretrain", "--train", str(root / "evil-store"), "--out", str(root / "s2")]))

    print("| bad input | command | exit | what the user is told | traceback | good items stored | seconds |")
    print("|---|---|---:|---|---|---|---:|")
    for what, command, r in cases:
        good = "-" if r["good"] is None else ("yes" if r["good"] else "**no**")
        said = r["said"].replace("|", "\\|").replace(str(root) + "/", "").replace(str(root), "DIR")
        print(f"| {what} | {command} | {r['code']} | {said[:160]} | {'**yes**' if r['traceback'] else 'no'} "
              f"| {good} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
