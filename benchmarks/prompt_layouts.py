"""How the frozen LLM repeats or answers text placed where the speech goes, per prompt layout.

    python benchmarks/prompt_layouts.py --outputs work/replicate/eval/outputs/tts

For each layout (`smap.prompts.LAYOUTS`) and each input, the text path of `smap evaluate`
(`smap.generate.generate_text`, the short system message, greedy, `--no-repeat-ngram 3`):
  * ASR splits (test, everyday): WER against the transcript, given the transcript itself (the
    topline) or what an earlier evaluation's system output (default: `stage1-nearest`, Stage 1's
    vectors read as their nearest tokens: about what the LLM reads from token mixtures);
  * the spoken questions: questions whose answer is in the output, given the question. A layout is
    chosen here, so they are the training questions (`--questions train-qa`, an evaluation of
    `--suite data/tts/train-qa`), not the held-out test-qa that reports the result.
Inputs are the JSONL files of `smap evaluate` (`id`, `text`, `output`, and `answer` for questions),
so no speech is encoded here. Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smap.evaluate.metrics import answers_found, wer
from smap.generate import generate_text, load_text_lm
from smap.prompts import LAYOUTS, Request
from smap.speech_llm import Decoding, PromptedLM


def read_jsonl(path: Path, limit: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f][:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", type=Path, required=True, help="an evaluation's outputs/<suite> folder")
    ap.add_argument("--questions", default="train-qa", help="the split of spoken questions to choose on (not test-qa, "
                    "which reports the result)")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--asr-splits", default="test,everyday")
    ap.add_argument("--read", default="stage1-nearest", help="the system whose outputs are read besides the transcript")
    ap.add_argument("--limit", type=int, default=None, help="first N utterances per split")
    args = ap.parse_args()

    # Per ASR split: ids, references, and the texts to read (the transcript, then --read's outputs).
    splits = {}
    for split in args.asr_splits.split(","):
        gold = read_jsonl(args.outputs / split / "transcript.jsonl", args.limit)
        read = {r["id"]: r["output"] for r in read_jsonl(args.outputs / split / f"{args.read}.jsonl", None)}
        refs = [r["text"] for r in gold]
        splits[split] = ([r["id"] for r in gold], refs, {"transcript": refs, args.read: [read[r["id"]] for r in gold]})
    questions = read_jsonl(args.outputs / args.questions / "transcript.jsonl", args.limit)

    decoding = Decoding(no_repeat_ngram=3)
    loaded = load_text_lm(args.llm, system="short")
    results = []
    for layout in LAYOUTS:
        lm = PromptedLM(loaded.llm, loaded.tokenizer, "short", layout=layout)  # one LLM, each layout's prompts
        row = {"layout": layout}
        for split, (ids, refs, inputs) in splits.items():
            for name, texts in inputs.items():
                out = generate_text(lm, ids, texts, [Request("asr")] * len(ids), decoding=decoding)
                row[f"{split} WER, {name}"] = round(wer(refs, [o["output"] for o in out]), 1)
        out = generate_text(lm, [r["id"] for r in questions], [r["text"] for r in questions],
                            [Request("sqa")] * len(questions), decoding=decoding)
        found = answers_found([r["answer"] for r in questions], [o["output"] for o in out])
        row["questions answered"] = f"{sum(found)} of {len(found)}"
        results.append(row)
        print(json.dumps(row), flush=True)
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c == "layout" else "---:" for c in columns) + "|")
    for row in results:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
