"""The evaluation loop: for each split x system, get the outputs, score them, collect.

A system is anything with a `name`, a `describe()` for the report and an `outputs(split, store, limit,
advance)` that returns one string per record evaluated (see `System`); each split x system shows
its progress on the console given (`smap.progress`). A split whose store is missing
or unusable, or a system that fails on a split, becomes a one-line `Problem` and the loop goes
on; `Results.failed` tells the caller to exit non-zero. Reports are written at the end.
"""

from __future__ import annotations

import json
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
        own ST: "st")."""


@dataclass
class Scoring:
    """The optional scorers: without a COMET model or judges, those metrics are left out."""

    comet_model: object | None = None  # anything with COMET's `predict`
    comet_spec: str | None = None  # where it came from, for the report
    comet_missing: str = "no COMET model (--comet-model)"  # why there is none, for the notes
    judges: dict[str, metrics.Judge] = field(default_factory=dict)
    identify: Callable[[Sequence[str]], list[str | None]] = field(default_factory=metrics.LanguageIdentifier)

    def lacks(self, metric: str) -> str | None:
        """Why `metric` cannot be computed, or None if it can."""
        if metric == "comet" and self.comet_model is None:
            return f"COMET not computed: {self.comet_missing}"
        if metric == "judged" and not self.judges:
            return "judged accuracy not computed: no judge LLM (--judge SPEC)"
        return None


def make_scoring(splits: Sequence[Split], comet_spec: str | None, judges: dict[str, metrics.Judge]) -> Scoring:
    """COMET as asked: a spec is loaded (the hub allowed) or refused at once; None tries
    Unbabel/wmt22-comet-da from the local cache only, and leaves COMET out if it is not there;
    "none" leaves it out."""
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


def score(split: Split, records: list[dict], hyps: list[str], scoring: Scoring) -> tuple[dict[str, float], list[str]]:
    """The split's metrics on these outputs; metrics left out for want of a scorer are noted."""
    scores: dict[str, float] = {}
    notes: list[str] = []
    refs = [r["translation"] if split.task == "st" else r["answer"] if split.task == "sqa" else r["text"]
            for r in records]
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
            judged = metrics.judged_accuracy([question_text(r) for r in records], [str(x) for x in refs],
                                             hyps, scoring.judges)
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
             log: Callable[[str], None] = print, console: Console | None = None) -> Results:
    """Run every system on every split (its first `limit` utterances if given), score, write the
    reports under `out`, and return the results; progress on `console` if given."""
    from smap.evaluate.systems import SavedSystem, check_name

    scoring = scoring or Scoring()
    data_root, out = Path(data_root), Path(out)
    for system in systems:  # a name becomes a file name; --rescore reads them from another run's report
        check_name(system.name, str(system.folder / "results.json") if isinstance(system, SavedSystem) else "a system")
    encoder = next((s.describe().get("encoder") for s in systems if s.describe().get("encoder")), None)
    entries: list[Entry] = []
    problems: list[Problem] = []
    data: dict[str, dict] = {}
    started = datetime.now(timezone.utc)

    for split in splits:
        missing = split.missing(data_root, encoder)
        if missing:
            problems.append(Problem(split.key, None, missing + (" (optional)" if split.optional else ""),
                                    failed=not split.optional))
            log(f"skipped {missing}")
            continue
        if all(scoring.lacks(m) for m in split.metrics):  # nothing to score: do not generate
            problems.append(Problem(split.key, None, f"{split.key}: " + "; ".join(scoring.lacks(m) for m in split.metrics)))
            log(f"skipped {problems[-1].message}")
            continue
        try:
            store, records = _open(split, data_root, limit)
        except Exception as e:  # a damaged store: this split is skipped, the others go on
            problems.append(Problem(split.key, None, one_line(e), detail=traceback.format_exc()))
            log(f"skipped {split.key}: {one_line(e)}")
            continue
        data[split.key] = {"store": str(store.root), "encoder": store.encoder, "utterances": len(records),
                           "of": len(store), "store_sha256": sha256_file(store.root / STORE_FILE)}
        said: dict[str, list[str]] = {}
        for system in systems:
            if split.task not in getattr(system, "tasks", (split.task,)):
                continue
            t0 = time.perf_counter()
            try:
                work = len(records) * getattr(system, "passes", 1)
                with progress(console, f"{split.key} x {system.name}", work, "utterances") as update:
                    hyps = system.outputs(split, store, limit, update)
                seconds = getattr(system, "seconds", {}).get(split.key, time.perf_counter() - t0)
                if len(hyps) != len(records) or not all(isinstance(h, str) for h in hyps):
                    raise ValueError(f"{len(hyps)} outputs for {len(records)} records (strings expected)")
                report.write_outputs(out, split, system.name, records, hyps)
                scores, notes = score(split, records, hyps, scoring)
            except Exception as e:  # one system failing on one split must not stop the others
                problems.append(Problem(split.key, system.name, one_line(e), detail=traceback.format_exc()))
                log(f"failed {split.key} x {system.name}: {one_line(e)}")
                continue
            entries.append(Entry(split, system.name, len(records), scores, notes, seconds))
            said[system.name] = hyps
            log(f"scored {split.key} x {system.name}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
        if TOPLINE_ANSWERED in split.metrics:
            score_on_topline_answered(split, records, said, [e for e in entries if e.split == split])

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_root": str(data_root),
        "limit": limit,
        "systems": {s.name: s.describe() for s in systems},
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
