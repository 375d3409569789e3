"""The evaluation loop: for each split x system, get the outputs, score them, collect.

A system is anything with a `name`, a `describe()` for the report and an `outputs(split, store, limit,
advance)` that returns one string per record evaluated (see `System`); each split x system shows
its progress on the console given (`smap.progress`). A split whose store is missing
or unusable, or a system that fails on a split, becomes a one-line `Problem` and the loop goes
on; `Results.failed` tells the caller to exit non-zero. Reports are written at the end; each
system's outputs on a split as soon as they are made, with what made them, so that a stopped
evaluation resumes (`evaluate(resume=True)`).

Every system generates on every split first; then the judges (`Scoring.judges`, loaders) are
loaded one at a time, each judging every output that needs it and freed before the next, so that
no judge shares the GPU with the systems or with another judge; then everything is scored.

Under `accelerate launch` or torchrun with N processes, each split's records are cut into N
consecutive shares, each process generates its own, and the main process gathers them in record
order, then alone judges, scores and writes the reports (the others return None). A system with
`whole = True` (saved outputs) gives them all on the main process.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from rich.console import Console

from smap.data.store import STORE_FILE, FeatureStore, sha256_file
from smap.evaluate import metrics, report
from smap.evaluate.suites import Split
from smap.progress import Advance, one_line, progress
from smap.prompts import question_text


class System(Protocol):
    name: str  # "smap", "transcript", "cascade", or any label for the report

    def describe(self) -> dict:
        """What the report records about this system: model folders, specs, versions."""

    def outputs(self, split: Split, store: FeatureStore, limit: int | None,
                advance: Advance) -> list[str]:
        """One output text for each of the first `limit` records of `store` (all if None), in
        order, for `split.task` (and its `tgt_lang`; SQA questions: `smap.prompts.question_text`).
        `advance(n)`: n more records worked on; a system with a `passes` attribute (a cascade: 2)
        works on each record that many times. A system with a `seconds` mapping (split key ->
        seconds) reports those for a split instead of the time this call took (saved outputs:
        their decoding's); one with a `tasks` tuple runs only on splits of those tasks (the SFM's
        own ST: "st"). Under several processes `store` holds one process's share of the records
        and `limit` is None. One with a `release()` drops its models when asked, once every
        system has generated and before the judges load; it is not asked for outputs again."""


@dataclass
class Scoring:
    """The optional scorers: without a COMET model or judges, those metrics are left out."""

    comet_model: object | None = None  # anything with COMET's `predict`
    comet_spec: str | None = None  # where it came from, for the report
    comet_missing: str = "no COMET model (--comet-model)"  # why there is none, for the notes
    # judge name -> a loader, called once after every system has generated, returning the judge
    judges: dict[str, Callable[[], metrics.Judge]] = field(default_factory=dict)
    identify: Callable[[Sequence[str]], list[str | None]] = field(default_factory=metrics.LanguageIdentifier)

    def lacks(self, metric: str) -> str | None:
        """Why `metric` cannot be computed, or None if it can."""
        if metric == "comet" and self.comet_model is None:
            return f"COMET not computed: {self.comet_missing}"
        if metric == "judged" and not self.judges:
            return "judged accuracy not computed: no judge LLM (--judge SPEC)"
        return None


def make_scoring(splits: Sequence[Split], comet_spec: str | None,
                 judges: dict[str, Callable[[], metrics.Judge]]) -> Scoring:
    """The judges' loaders, and COMET as asked: a spec is loaded (the hub allowed) or refused at
    once; None tries Unbabel/wmt22-comet-da from the local cache only, and leaves COMET out if it
    is not there; "none" leaves it out."""
    scoring = Scoring(judges=judges)
    if not any("comet" in s.metrics for s in splits) or (comet_spec or "").lower() == "none":
        scoring.comet_missing = "switched off (--comet-model none)"
        return scoring
    if comet_spec:
        scoring.comet_model, scoring.comet_spec = metrics.load_comet(comet_spec), comet_spec
        return scoring
    try:
        scoring.comet_model = metrics.load_comet(metrics.COMET_DEFAULT, local_only=True)
        scoring.comet_spec = metrics.COMET_DEFAULT
    except metrics.MetricError as e:
        scoring.comet_missing = str(e)
    return scoring


@dataclass
class Entry:
    """The scores of one system on one split."""

    split: Split
    system: str
    n: int
    scores: dict[str, float]
    notes: list[str]
    seconds: float  # producing the outputs


@dataclass
class Problem:
    """A split or a split x system that could not be scored; `failed` unless the split is optional."""

    key: str
    system: str | None
    message: str  # one line
    failed: bool = True
    detail: str = ""  # a traceback, for results.json


@dataclass
class Results:
    entries: list[Entry]
    problems: list[Problem]
    meta: dict
    files: dict[str, Path] = field(default_factory=dict)  # the report files written

    @property
    def failed(self) -> bool:
        return any(p.failed for p in self.problems)


def references(split: Split, records: list[dict]) -> list:
    """What the split's outputs are scored against: translations (ST), answers (SQA) or transcripts."""
    return [r["translation"] if split.task == "st" else r["answer"] if split.task == "sqa" else r["text"]
            for r in records]


def score(split: Split, records: list[dict], hyps: list[str], scoring: Scoring,
          replies: dict[str, list[str]] | None = None) -> tuple[dict[str, float], list[str]]:
    """The split's metrics on these outputs; metrics left out for want of a scorer are noted.
    `replies`: each judge's replies to `judge_prompts` of these outputs, for judged accuracy."""
    scores: dict[str, float] = {}
    notes: list[str] = []
    refs = references(split, records)
    for name in split.metrics:
        if scoring.lacks(name):
            notes.append(scoring.lacks(name))
        elif name == "wer":
            scores["wer"] = metrics.wer(refs, hyps)
        elif name == "bleu":
            scores["bleu"] = metrics.bleu(refs, hyps, split.tgt_lang)
        elif name == "chrf":
            scores["chrf"] = metrics.chrf(refs, hyps)
        elif name == "comet":
            scores["comet"] = metrics.comet([r["text"] for r in records], refs, hyps, scoring.comet_model)
        elif name == "adherence":
            share = metrics.adherence(hyps, split.tgt_lang, scoring.identify)
            scores["lang_target"], scores["lang_en"] = share["target"], share["english"]
        elif name == "judged":
            judged = metrics.judged_tally(replies or {}, len(hyps))
            scores["judged"] = judged.mean
            scores.update({f"judged[{k}]": v for k, v in judged.per_judge.items()})
            notes += [f"judge {k}: {c} of {len(hyps)} replies neither yes nor no (scored wrong)"
                      for k, c in judged.unparsed.items() if c]
        elif name == "exact_choice":
            choices = [metrics.options_of(r["question"], r.get("choices")) for r in records]
            scores["exact_choice"] = metrics.exact_choice(hyps, refs, choices)
        elif name == "exact_match":
            scores["exact_match"] = metrics.exact_match([str(x) for x in refs], hyps)
        elif name == "answer_in_output":
            scores["answer_in_output"] = metrics.answer_in_output([str(x) for x in refs], hyps)
    return scores, notes


TOPLINE = "transcript"  # the system given the gold transcript
TOPLINE_ANSWERED = "topline_answered"


def score_on_topline_answered(split: Split, records: list[dict], said: dict[str, list[str]],
                              entries: list[Entry]) -> None:
    """Accuracy (answer in output) on the questions the text topline answers right, for every
    system: how much of what the LLM knows survives the speech input (the tables show it beside
    the accuracy on all questions, `answer_in_output`). Needs the topline's outputs on this
    split; without them the metric is left out, with a note."""
    answers = [str(r["answer"]) for r in records]
    if TOPLINE not in said:
        for e in entries:
            e.notes.append(f"{TOPLINE_ANSWERED}: not computed without the '{TOPLINE}' system")
        return
    kept = [i for i, ok in enumerate(metrics.answers_found(answers, said[TOPLINE])) if ok]
    for e in entries:
        if not kept:
            e.notes.append(f"{TOPLINE_ANSWERED}: the topline answers none of the {len(records)} questions")
            continue
        found = metrics.answers_found([answers[i] for i in kept], [said[e.system][i] for i in kept])
        e.scores[TOPLINE_ANSWERED] = 100.0 * sum(found) / len(kept)
        e.notes.append(f"{TOPLINE_ANSWERED}: on the {len(kept)} of {len(records)} questions the topline answers")


def _open(split: Split, data_root: Path, limit: int | None) -> tuple[FeatureStore, list[dict]]:
    """The split's store and the records to evaluate, checked for the fields the split reads."""
    store = FeatureStore(split.store_dir(data_root))
    records = store.records[:limit]
    if not records:
        raise ValueError(f"{store.root}: the store holds no utterances")
    for rec in records:
        lacking = [f for f in split.needs if rec.get(f) in (None, "", [])]
        if lacking:
            raise ValueError(f"{store.root}: record {rec['id']!r} has no {', '.join(lacking)}, "
                             f"which {split.task} on {split.key} needs")
    return store, records


def prepare_skips(store: FeatureStore) -> dict | None:
    """What `smap prepare` left out of the store, from its report: {"skipped": N, "items": M (the
    utterances it was given), "reasons": {reason: count}, "list": its skips.jsonl}; None for a
    store written without that report."""
    from smap.prepare import REPORT_FILE, SKIPS_FILE

    path = store.root / REPORT_FILE
    if not path.is_file():
        return None
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
        return {"skipped": int(made["skipped"]), "items": int(made["items"]),
                "reasons": {str(k): int(v) for k, v in (made.get("skip_reasons") or {}).items()},
                "list": str(store.root / SKIPS_FILE)}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a report of `smap prepare` ({type(e).__name__}: {e}); "
                         "re-run `smap prepare` on the store to rewrite it") from None


def processes():
    """This process's place among those `accelerate launch` or torchrun started (alone if neither):
    made before any model loads, so that each process puts its models on its own GPU. On a
    machine without a GPU, or with ACCELERATE_USE_CPU, the processes meet over gloo."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
                        or not torch.cuda.is_available())


class _Share(FeatureStore):
    """Records [start, stop) of a store, read from its files: one process's share of a split."""

    def __init__(self, store: FeatureStore, start: int, stop: int):
        self.root, self.info, self.whole, self.start = store.root, store.info, store, start
        self.records = store.records[start:stop]

    def features(self, i: int):
        return self.whole.features(self.start + i)


@dataclass
class _Said:
    """What one system said on one split, waiting to be judged and scored."""

    split: Split
    records: list[dict]
    system: str
    hyps: list[str]
    seconds: float


def _generate_here(system: System, split: Split, store: FeatureStore, limit: int | None, n: int, state,
                   console: Console | None) -> tuple[list[str] | None, float, str, str]:
    """This process's share of `system`'s outputs on the first `n` records of `store`: (outputs,
    seconds, "", ""), or (None, 0, the error in one line, its traceback)."""
    rank, world = state.process_index, state.num_processes
    if world == 1:
        mine, limit = store, limit
    elif getattr(system, "whole", False):
        mine, limit = (store, limit) if state.is_main_process else (_Share(store, 0, 0), None)
    else:
        mine, limit = _Share(store, rank * n // world, (rank + 1) * n // world), None
    count = len(mine.records[:limit])
    if not count:  # fewer records than processes
        return [], 0.0, "", ""
    t0 = time.perf_counter()
    try:
        with progress(console, f"{split.key} x {system.name}", count * getattr(system, "passes", 1),
                      "utterances") as update:
            hyps = system.outputs(split, mine, limit, update)
        if len(hyps) != count or not all(isinstance(h, str) for h in hyps):
            raise ValueError(f"{len(hyps)} outputs for {count} records (strings expected)")
    except Exception as e:  # one system failing on one split must not stop the others
        return None, 0.0, one_line(e), traceback.format_exc()
    return hyps, getattr(system, "seconds", {}).get(split.key, time.perf_counter() - t0), "", ""


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _judge_all(said: list[_Said], scoring: Scoring, systems: Sequence[System],
               log: Callable[[str], None]) -> tuple[dict, dict]:
    """Every judge's replies on every output that judged accuracy scores, the systems' models
    released first and the judges loaded one at a time, each freed before the next: ({index in
    `said`: {judge: replies}}, {index: (judge, error line, traceback)} for outputs a judge failed on)."""
    todo = {k: s for k, s in enumerate(said) if "judged" in s.split.metrics}
    if not todo or scoring.lacks("judged"):
        return {}, {}
    for system in systems:  # a judge has the memory to itself
        if hasattr(system, "release"):
            system.release()
    _free_memory()
    prompts = {k: metrics.judge_prompts([question_text(r) for r in s.records],
                                        [str(x) for x in references(s.split, s.records)], s.hyps)
               for k, s in todo.items()}
    replies: dict[int, dict[str, list[str]]] = {k: {} for k in todo}
    failed: dict[int, tuple[str, str, str]] = {}
    for name, load in scoring.judges.items():
        log(f"judging {sum(map(len, prompts.values()))} outputs with {name}")
        try:
            judge = load()
        except Exception as e:  # every output it would judge is named; the other judges go on
            failed.update({k: failed.get(k) or (name, one_line(e), traceback.format_exc()) for k in todo})
            continue
        for k, asked in prompts.items():
            try:
                replies[k][name] = judge(asked)
            except Exception as e:
                failed[k] = failed.get(k) or (name, one_line(e), traceback.format_exc())
        del judge  # before the next is loaded: never two judges in memory
        _free_memory()
    return replies, failed


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from smap import __version__

    found = {"smap": __version__}  # the code that ran, also from a checkout that is not installed
    for pkg in ("torch", "transformers", "ctranslate2", "jiwer", "sacrebleu", "py3langid", "unbabel-comet"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def evaluate(splits: Sequence[Split], systems: Sequence[System], data_root: str | Path, out: str | Path,
             scoring: Scoring | None = None, limit: int | None = None,
             log: Callable[[str], None] = print, console: Console | None = None,
             resume: bool = True) -> Results | None:
    """Run every system on every split (its first `limit` utterances if given), judge, score, write
    the reports under `out`, and return the results; progress on `console` if given. Under several
    processes, each generates its share; the main process returns the results, the others None.

    With `resume`, a system whose outputs on a split are already under `out`, made by the same
    system (its `describe()`, which for a speech model holds its weights' sha256) from the same
    store, is not run again: a stopped evaluation goes on where it stopped, and a model added to
    an earlier evaluation's command is the only one decoded."""
    from accelerate.utils import broadcast_object_list, gather_object

    from smap.evaluate.systems import SavedSystem, check_name

    state = processes()
    main, world = state.is_main_process, state.num_processes
    scoring = scoring or Scoring()
    data_root, out = Path(data_root), Path(out)
    for system in systems:  # a name becomes a file name; --rescore reads them from another run's report
        check_name(system.name, str(system.folder / "results.json") if isinstance(system, SavedSystem) else "a system")
    described = {s.name: s.describe() for s in systems}  # now: a system released for the judges has no model
    encoder = next((d["encoder"] for d in described.values() if d.get("encoder")), None)
    said: list[_Said] = []
    reused: list[str] = []
    problems: list[Problem] = []
    data: dict[str, dict] = {}
    started = datetime.now(timezone.utc)

    def fail(split: Split, system: str, message: str, detail: str) -> None:
        problems.append(Problem(split.key, system, message, detail=detail))
        log(f"failed {split.key} x {system}: {message}")

    for split in splits:
        store = _usable_store(split, data_root, encoder, limit, scoring, problems, data, log) if main else None
        n = len(store.records[:limit]) if store else None
        if world > 1:  # the main process alone decides, so that every process takes the same splits
            n = broadcast_object_list([n])[0]
        if n is None:
            continue
        store = store or FeatureStore(split.store_dir(data_root))
        records = store.records[:n]
        for system in systems:
            if split.task not in getattr(system, "tasks", (split.task,)):
                continue
            made_by = {"system": described[system.name], "store_sha256": data[split.key]["store_sha256"]} if main else None
            saved = (report.saved_outputs(out, split, system.name, made_by, [r["id"] for r in records])
                     if main and resume else None)
            skip = saved is not None
            if world > 1:  # every process skips it, or none
                skip = broadcast_object_list([skip])[0]
            if skip:
                if main:
                    log(f"reused {split.key} x {system.name}: its outputs under {out} (--fresh decodes again)")
                    said.append(_Said(split, records, system.name, *saved))
                    reused.append(f"{split.key} x {system.name}")
                continue
            mine = _generate_here(system, split, store, limit, n, state, console if main else None)
            parts = gather_object([mine]) if world > 1 else [mine]
            if not main:
                continue
            failure = next((p for p in parts if p[0] is None), None)
            if failure:
                fail(split, system.name, failure[2], failure[3])
                continue
            hyps = [h for p in parts for h in p[0]]  # the shares in process order: the records' order
            seconds = max(p[1] for p in parts)
            report.write_outputs(out, split, system.name, records, hyps, made_by, seconds)
            said.append(_Said(split, records, system.name, hyps, seconds))
    if not main:
        return None

    replies, judge_failed = _judge_all(said, scoring, systems, log)
    entries: list[Entry] = []
    for split in splits:
        here: list[Entry] = []
        answered: dict[str, list[str]] = {}
        for k, s in enumerate(said):
            if s.split != split:
                continue
            if k in judge_failed:
                name, message, detail = judge_failed[k]
                fail(split, s.system, f"judge {name}: {message}", detail)
                continue
            try:
                scores, notes = score(split, s.records, s.hyps, scoring, replies.get(k))
            except Exception as e:
                fail(split, s.system, one_line(e), traceback.format_exc())
                continue
            here.append(Entry(split, s.system, len(s.records), scores, notes, s.seconds))
            answered[s.system], records = s.hyps, s.records
            log(f"scored {split.key} x {s.system}: " + ", ".join(f"{m} {v:.1f}" for m, v in scores.items()))
        if TOPLINE_ANSWERED in split.metrics and here:
            score_on_topline_answered(split, records, answered, here)
        entries += here

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_root": str(data_root),
        "limit": limit,
        "processes": world,
        "systems": described,
        "reused_outputs": reused,  # split x system whose outputs an earlier run under `out` made
        "data": data,
        "scoring": {
            "comet": scoring.comet_spec,
            "judges": list(scoring.judges),
            "language_id": (f"py3langid over {' '.join(scoring.identify.languages)}"
                            if isinstance(scoring.identify, metrics.LanguageIdentifier) else repr(scoring.identify)),
            "wer": "jiwer, smap.text.normalize on both sides",
            "bleu": "sacrebleu corpus BLEU (13a; zh tokeniser for Chinese)",
        },
        "packages": _package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results = Results(entries, problems, json.loads(json.dumps(meta, default=str)))
    results.files = report.write(results, out)
    return results


def _usable_store(split: Split, data_root: Path, encoder: str | None, limit: int | None, scoring: Scoring,
                  problems: list[Problem], data: dict[str, dict], log: Callable[[str], None]) -> FeatureStore | None:
    """The split's store, recorded in `data` with what `smap prepare` skipped of it; None, with a
    `Problem`, for a split that cannot or need not be run."""
    missing = split.missing(data_root, encoder)
    if missing:
        problems.append(Problem(split.key, None, missing + (" (optional)" if split.optional else ""),
                                failed=not split.optional))
        log(f"skipped {missing}")
        return None
    if all(scoring.lacks(m) for m in split.metrics):  # nothing to score: do not generate
        problems.append(Problem(split.key, None, f"{split.key}: " + "; ".join(scoring.lacks(m) for m in split.metrics)))
        log(f"skipped {problems[-1].message}")
        return None
    try:
        store, records = _open(split, data_root, limit)
        skips = prepare_skips(store)
    except Exception as e:  # a damaged store: this split is skipped, the others go on
        problems.append(Problem(split.key, None, one_line(e), detail=traceback.format_exc()))
        log(f"skipped {split.key}: {one_line(e)}")
        return None
    data[split.key] = {"store": str(store.root), "encoder": store.encoder, "utterances": len(records),
                       "of": len(store), "store_sha256": sha256_file(store.root / STORE_FILE)}
    if skips is not None:
        data[split.key]["prepare_skipped"] = skips
        if skips["skipped"]:
            log(f"{split.key}: {report.skipped_line(skips)}")
    return store
