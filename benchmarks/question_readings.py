"""What caps the spoken questions: the frozen LLM answering readings of them given as text.

    smap evaluate --suite data/tts/train-qa --systems smap,nearest,transcript ... --out work/replicate/eval-train-qa
    python benchmarks/question_readings.py --outputs work/replicate/eval-train-qa/outputs/tts/train-qa

Instructions and layouts are chosen here, so the questions are the training questions (tts/train-qa,
evaluated as a store folder), never the held-out tts/test-qa, which reports the result. They are given
to the LLM as text where the speech goes, with the
instruction and decoding of `smap evaluate` (`smap.prompts.SPOKEN_QUESTION`, the short system
message, `--no-repeat-ngram 3`, `--num-beams`), in several readings:
  * transcript: the question as written ("What is the capital of Portugal?"), the topline;
  * normalised: as the Stage-1 and attach targets spell it (`smap.text.normalize`: "what is the
    capital of portugal"), the best a mapper trained on those targets can read out;
  * each `*-nearest` system of that evaluation: a mapper's vectors read as their nearest tokens,
    about what the LLM reads from token mixtures.
Each reading's accuracy is counted, as in the evaluation, on the questions the topline answers
(the answer in the output), beside the reading's WER. Inputs are the JSONL files of `smap
evaluate`, so no speech is encoded here. Prints a table, and each reading's misses with --misses.
`--prompt` (repeatable) asks with other instructions instead, a table each, and `--layout` puts the
question elsewhere: which a reading without case or question mark is answered under (the topline is
then the transcript under it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prompt_layouts import read_jsonl  # benchmarks/ is on sys.path when this runs as a script
from smap.evaluate.metrics import answers_found, wer
from smap.generate import generate_text, load_text_lm
from smap.prompts import DEFAULT_LAYOUT, LAYOUTS, SPOKEN_QUESTION, Request
from smap.speech_llm import Decoding
from smap.text import normalize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", type=Path, required=True, help="an evaluation's outputs/tts/train-qa folder "
                    "(choose on training questions, not on test-qa)")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--num-beams", type=int, default=4, help="as the evaluation decoded (--replicate: 4)")
    ap.add_argument("--misses", action="store_true", help="also print each reading's unanswered questions")
    ap.add_argument("--prompt", action="append", help="an instruction to ask with (repeatable; default: "
                    "smap.prompts.SPOKEN_QUESTION, as evaluated)")
    ap.add_argument("--layout", default=DEFAULT_LAYOUT, choices=LAYOUTS, help="where the question goes (smap.prompts)")
    ap.add_argument("--no-nearest", action="store_true", help="only the transcript and its normalised reading")
    args = ap.parse_args()

    gold = read_jsonl(args.outputs / "transcript.jsonl", None)
    ids, questions, answers = [r["id"] for r in gold], [r["text"] for r in gold], [str(r["answer"]) for r in gold]
    readings = {"transcript": questions, "normalised": [normalize(q) for q in questions]}
    for path in [] if args.no_nearest else sorted(args.outputs.glob("*-nearest.jsonl")):
        said = {r["id"]: r["output"] for r in read_jsonl(path, None)}
        readings[path.stem] = [said[i] for i in ids]

    lm = load_text_lm(args.llm, system="short", layout=args.layout)
    decoding = Decoding(num_beams=args.num_beams, no_repeat_ngram=3)
    for prompt in args.prompt or [SPOKEN_QUESTION]:
        print(f"\n{prompt!r}")
        report(lm, decoding, prompt, ids, answers, readings, args.misses)


def report(lm, decoding: Decoding, prompt: str, ids: list[str], answers: list[str], readings: dict[str, list[str]],
           misses: bool) -> None:
    """One instruction's table: each reading answered, on the questions the transcript is answered under it."""
    requests = [Request("sqa", prompt=prompt)] * len(ids)
    replies = {name: [r["output"] for r in generate_text(lm, ids, texts, requests, decoding=decoding)]
               for name, texts in readings.items()}
    kept = [i for i, ok in enumerate(answers_found(answers, replies["transcript"])) if ok]
    if not kept:
        print(f"the topline answers none of the {len(ids)} questions")
        return
    questions = readings["transcript"]
    print(f"{len(kept)} of {len(ids)} questions answered by the topline")
    print("| reading | WER of the reading | answered, of the topline's |")
    print("|---|---:|---:|")
    found = {name: answers_found([answers[i] for i in kept], [said[i] for i in kept]) for name, said in replies.items()}
    for name, texts in readings.items():  # wer() normalises both sides
        hits = sum(found[name])
        print(f"| {name} | {wer(questions, texts):.1f} | {hits} of {len(kept)} ({100 * hits / len(kept):.1f}%) |")
    if misses:
        for name, texts in readings.items():
            print(f"\n{name}: missed")
            for i, ok in zip(kept, found[name]):
                if not ok:
                    print(f"  {questions[i]!r} [{answers[i]}]: read {texts[i]!r}, answered {replies[name][i]!r}")


if __name__ == "__main__":
    main()
