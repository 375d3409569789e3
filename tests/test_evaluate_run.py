"""The evaluation loop with fake systems, then `smap evaluate` end to end with tiny real models."""

import json
import re
import shutil
import weakref
from types import SimpleNamespace

import jiwer
import pytest
import torch
from typer.testing import CliRunner

from smap.cli import app
from smap.data.store import FeatureStore, StoreWriter
from smap.evaluate import metrics, run, suites
from smap.evaluate.suites import select
from smap.text import normalize

from conftest import write_store

TEXTS = ["the cat sat on the mat", "one two three four", "we see them now", "it was"]  # 16 words


def store_with(folder, records, dim=16, encoder="test-encoder"):
    """A store whose records carry the given fields (translation, question, choices, ...)."""
    with StoreWriter(folder, encoder=encoder, dim=dim, frame_rate=50.0) as w:
        for i, rec in enumerate(records):
            w.add({"id": f"u{i}", "duration": 1.0, **rec}, torch.zeros(20, dim))
    return folder


class Fake:
    """A system that answers from each record; records the calls it got."""

    def __init__(self, name, answer):
        self.name, self.answer, self.calls = name, answer, []

    def describe(self):
        return {"fake": self.name}

    def outputs(self, split, store, limit, advance):
        self.calls.append((split.key, limit))
        records = store.records[:limit]
        advance(len(records))
        return [self.answer(r) for r in records]


oracle = Fake("oracle", lambda r: r["text"])
lossy = Fake("lossy", lambda r: r["text"].rsplit(" ", 1)[0])  # drops each last word


def quiet(_line):
    pass


@pytest.fixture
def root(tmp_path):
    write_store(tmp_path / "data" / "tts" / "test", TEXTS)
    write_store(tmp_path / "data" / "librispeech" / "test-clean", TEXTS[:2])
    return tmp_path


def test_scores_each_system_on_each_split_and_writes_the_report(root):
    lines = []
    res = run.evaluate(select("tts/test,librispeech/test-clean"), [oracle, lossy], root / "data", root / "out",
                       log=lines.append)
    got = {(e.split.key, e.system): e.scores["wer"] for e in res.entries}
    # lossy: one deletion per utterance, 4 of 16 words on tts/test, 2 of 10 on test-clean.
    assert got == {("tts/test", "oracle"): 0.0, ("tts/test", "lossy"): pytest.approx(25.0),
                   ("librispeech/test-clean", "oracle"): 0.0, ("librispeech/test-clean", "lossy"): pytest.approx(20.0)}
    assert not res.failed and res.problems == []
    assert {p.name for p in (root / "out").iterdir()} == {"results.json", "results.md", "results.png", "outputs"}
    saved = (root / "out" / "outputs" / "tts" / "test" / "lossy.jsonl").read_text().splitlines()
    assert json.loads(saved[0]) == {"id": "utt0000", "text": TEXTS[0], "output": "the cat sat on the"}
    data = json.loads((root / "out" / "results.json").read_text())
    assert data["systems"] == {"oracle": {"fake": "oracle"}, "lossy": {"fake": "lossy"}}
    assert data["data"]["tts/test"]["encoder"] == "test-encoder" and data["data"]["tts/test"]["utterances"] == 4
    assert {"smap", "jiwer", "sacrebleu", "torch"} <= set(data["packages"])
    assert any(line.startswith("scored tts/test x lossy: wer 25.0") for line in lines)


def test_a_missing_split_is_named_in_one_line_and_the_others_still_run(root):
    lines = []
    res = run.evaluate(select("librispeech,tts/test"), [oracle], root / "data", root / "out", log=lines.append)
    assert [e.split.key for e in res.entries] == ["librispeech/test-clean", "tts/test"]
    (problem,) = res.problems
    assert problem.key == "librispeech/test-other" and problem.failed and res.failed
    assert "\n" not in problem.message
    assert f"no feature store at {root / 'data' / 'librispeech' / 'test-other' / 'store.json'}" in problem.message
    assert "run: smap prepare --dataset librispeech --split test-other --encoder" in problem.message
    assert f"skipped {problem.message}" in lines
    assert "librispeech/test-other" in json.loads((root / "out" / "results.json").read_text())["problems"][0]["split"]


def test_an_optional_split_missing_does_not_fail_the_run(root):
    res = run.evaluate(select("tts"), [oracle], root / "data", root / "out", log=quiet)
    assert [p.key for p in res.problems] == ["tts/test-flite", "tts/everyday", "tts/test-qa"] and not res.failed
    assert res.problems[0].message.endswith("(optional)")


def test_a_failing_system_is_reported_and_the_others_are_scored(root):
    def boom(_record):
        raise RuntimeError("out of memory\nlong traceback text")

    short = Fake("short", None)
    short.outputs = lambda split, store, limit, advance: ["just one"]
    res = run.evaluate(select("tts/test"), [Fake("boom", boom), short, oracle], root / "data", root / "out", log=quiet)
    assert [e.system for e in res.entries] == ["oracle"]
    messages = {p.system: p.message for p in res.problems}
    assert messages == {"boom": "RuntimeError: out of memory", "short": "ValueError: 1 outputs for 4 records (strings expected)"}
    assert all(p.failed for p in res.problems) and "Traceback" in res.problems[0].detail


def test_limit_scores_only_the_first_utterances(root):
    sys_ = Fake("oracle", lambda r: r["text"])
    res = run.evaluate(select("tts/test"), [sys_], root / "data", root / "out", limit=2, log=quiet)
    assert res.entries[0].n == 2 and sys_.calls == [("tts/test", 2)]
    assert json.loads((root / "out" / "results.json").read_text())["data"]["tts/test"]["of"] == 4


from test_prepare import tiny_encoder  # noqa: E402,F401  (a fixture: a tiny HuBERT folder)


def test_utterances_that_prepare_skipped_are_counted_in_the_report_and_the_table(tmp_path, tiny_encoder):  # noqa: F811
    """A clip missing when the split was prepared: "1 of 4 utterances skipped" in results.json,
    results.md and the printed table, never a silently smaller test set."""
    import numpy as np
    import soundfile as sf
    from rich.console import Console

    from smap.evaluate import report
    from smap.prepare import PrepareConfig, prepare

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        if i != 2:  # the third clip is missing
            sf.write(audio / f"{i}.wav", 0.1 * rng.standard_normal(16000).astype("float32"), 16000)
        rows.append({"id": f"c{i}", "audio": f"{i}.wav", "text": text})
    (audio / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "data" / "tts" / "test"
    prepare(PrepareConfig(source=str(audio / "m.jsonl"), out=str(store), encoder=tiny_encoder))
    write_store(tmp_path / "data" / "librispeech" / "test-clean", TEXTS[:2])  # not from `smap prepare`: nothing to say

    res = run.evaluate(select("tts/test,librispeech/test-clean"), [oracle], tmp_path / "data", tmp_path / "out",
                       log=quiet)
    assert res.entries[0].n == 3 and not res.failed
    data = json.loads((tmp_path / "out" / "results.json").read_text())["data"]
    assert data["tts/test"]["prepare_skipped"] == {"skipped": 1, "items": 4, "reasons": {"missing": 1},
                                                   "list": str(store / "skips.jsonl")}
    assert "prepare_skipped" not in data["librispeech/test-clean"]
    said = "1 of 4 utterances skipped"
    md = (tmp_path / "out" / "results.md").read_text()
    assert f"| system | tts/test WER↓ ({said}) | librispeech/test-clean WER↓ |" in md
    assert f"- tts/test: {said} by smap prepare (missing 1); not evaluated, listed in {store / 'skips.jsonl'}" in md
    console = Console(record=True, width=300)
    console.print(report.rich_table(res))
    shown = console.export_text()
    assert f"tts/test WER↓ ({said})" in shown and f"tts/test: {said} by smap prepare (missing 1)" in shown


def test_a_store_lacking_a_field_the_task_needs_is_named(tmp_path):
    store_with(tmp_path / "covost2" / "en-de", [{"text": "hello"}, {"text": "hi", "translation": ""}])
    res = run.evaluate(select("covost2/en-de"), [oracle], tmp_path, tmp_path / "out",
                       run.Scoring(identify=lambda t: ["de"] * len(t)), log=quiet)
    assert res.entries == [] and res.failed
    assert res.problems[0].message == (f"ValueError: {tmp_path / 'covost2' / 'en-de'}: record 'u0' has no translation, "
                                       "which st on covost2/en-de needs")


def test_st_gets_comet_bleu_chrf_and_adherence(tmp_path):
    pairs = [("Thank you.", "Danke schön."), ("I agree.", "Ich stimme zu."), ("Good morning.", "Guten Morgen.")]
    store_with(tmp_path / "europarl" / "en-de", [{"text": src, "translation": ref} for src, ref in pairs])
    said = {"Danke schön.": "Danke schön.", "Ich stimme zu.": "Ich bin einverstanden.", "Guten Morgen.": "Good morning."}
    seen = []

    def predict(samples, **kw):  # the share of outputs equal to their reference: a score that reads every field
        seen.append(samples)
        return SimpleNamespace(system_score=sum(s["mt"] == s["ref"] for s in samples) / len(samples))

    langs = {"Danke schön.": "de", "Ich bin einverstanden.": "de", "Good morning.": "en"}
    scoring = run.Scoring(comet_model=SimpleNamespace(predict=predict), comet_spec="fake",
                          identify=lambda t: [langs[x] for x in t])
    system = Fake("imperfect", lambda r: said[r["translation"]])
    res = run.evaluate(select("europarl/en-de"), [system], tmp_path, tmp_path / "out", scoring, log=quiet)
    # COMET got each source, output and reference, in the store's order
    assert seen == [[{"src": src, "mt": said[ref], "ref": ref} for src, ref in pairs]]
    hyps, refs = [said[ref] for _, ref in pairs], [ref for _, ref in pairs]
    from sacrebleu.metrics import BLEU, CHRF

    assert res.entries[0].scores == {
        "comet": pytest.approx(100 / 3), "bleu": pytest.approx(BLEU().corpus_score(hyps, [refs]).score),
        "chrf": pytest.approx(CHRF().corpus_score(hyps, [refs]).score),
        "lang_target": pytest.approx(200 / 3), "lang_en": pytest.approx(100 / 3)}
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scoring"]["comet"] == "fake"


def test_st_without_comet_scores_the_rest_and_notes_why(tmp_path):
    store_with(tmp_path / "europarl" / "en-fr", [{"text": "Thanks.", "translation": "Merci."}])
    scoring = run.Scoring(identify=lambda t: ["en"] * len(t))
    res = run.evaluate(select("europarl/en-fr"), [Fake("echo", lambda r: r["text"])], tmp_path, tmp_path / "out",
                       scoring, log=quiet)
    (entry,) = res.entries
    assert "comet" not in entry.scores and entry.scores["lang_en"] == 100.0 and entry.scores["lang_target"] == 0.0
    assert entry.notes == ["COMET not computed: no COMET model (--comet-model)"]


def test_sqa_judged_exact_match_and_exact_choice(tmp_path):
    store_with(tmp_path / "spokensquad" / "test", [
        {"text": "Paris is big.", "question": "Which city?", "answer": "Paris"},
        {"text": "It rained.", "question": "What happened?", "answer": "It rained"},
    ])
    store_with(tmp_path / "librisqa" / "part2", [
        {"text": "a dog barked", "question": "What barked?", "answer": "B", "choices": ["a cat", "a dog"]},
        # as `smap prepare` stores LibriSQA Part II: options in the question, choices their labels
        {"text": "a cat ran", "question": "What ran? (A) a cat (B) a dog", "answer": "A", "choices": ["A", "B"]},
    ])
    said = {"Which city?": "The city is Paris.", "What happened?": "it rained",
            "What barked?": "B", "What ran? (A) a cat (B) a dog": "It is a dog."}
    prompts = []

    def judge(batch):  # yes when the candidate names the reference
        prompts.extend(batch)
        return ["yes" if re.search(r"Reference answer: (.*)\n", p).group(1).lower() in
                re.search(r"Candidate answer: (.*)\n", p).group(1).lower() else "no" for p in batch]

    system = Fake("qa", lambda r: said[r["question"]])
    scoring = run.Scoring(judges={"j1": lambda: judge, "j2": lambda: lambda b: ["no"] * len(b)})
    res = run.evaluate(select("spokensquad,librisqa/part2"), [system], tmp_path, tmp_path / "out", scoring, log=quiet)
    squad, part2 = res.entries
    # judge j1 accepts both, j2 neither: mean 50; exact match: only "it rained" equals its reference.
    assert squad.scores == {"judged": 50.0, "judged[j1]": 100.0, "judged[j2]": 0.0, "exact_match": 50.0}
    assert "Question: Which city?" in prompts[0]
    assert part2.scores == {"exact_choice": 50.0}  # B right; "It is a dog." picks B by its text, gold A


def test_a_spoken_question_is_its_transcript(tmp_path):
    store_with(tmp_path / "tts" / "test-qa", [{"text": "what is the capital of france", "answer": "Paris"},
                                              {"text": "what is two plus two", "answer": "four"}])
    prompts = []
    judge = lambda batch: prompts.extend(batch) or ["yes"] * len(batch)  # noqa: E731
    res = run.evaluate(select("tts/test-qa"), [Fake("qa", lambda r: "Paris.")], tmp_path, tmp_path / "out",
                       run.Scoring(judges={"j": lambda: judge}), log=quiet)
    assert res.entries[0].scores == {"answer_in_output": 50.0, "exact_match": 50.0, "judged": 100.0, "judged[j]": 100.0}
    assert "Question: what is two plus two\n" in prompts[1]


def test_spoken_questions_are_also_scored_on_those_the_topline_answers(tmp_path):
    qa = [("what is the capital of france", "Paris"), ("what is two plus two", "four"),
          ("what is the opposite of hot", "cold"), ("what comes after monday", "Tuesday")]
    store_with(tmp_path / "tts" / "test-qa", [{"text": q, "answer": a} for q, a in qa])
    topline = Fake("transcript", lambda r: "I don't know." if r["answer"] == "Tuesday" else f"It is {r['answer']}.")
    speech = Fake("speech", lambda r: r["answer"] if r["answer"] in ("Paris", "Tuesday") else "no idea")
    res = run.evaluate(select("tts/test-qa"), [topline, speech], tmp_path, tmp_path / "out", log=quiet)
    by = {e.system: e for e in res.entries}
    assert by["transcript"].scores["topline_answered"] == 100.0
    # speech answers Paris (kept) and Tuesday (dropped: the topline misses it): 1 of the 3 kept
    assert by["speech"].scores["answer_in_output"] == 50.0
    assert by["speech"].scores["topline_answered"] == pytest.approx(100 / 3)
    assert any("3 of 4 questions" in n for n in by["speech"].notes)
    assert "acc. where topline right" in (tmp_path / "out" / "results.md").read_text()
    alone = run.evaluate(select("tts/test-qa"), [speech], tmp_path, tmp_path / "out2", log=quiet)
    assert "topline_answered" not in alone.entries[0].scores
    assert any("without the 'transcript' system" in n for n in alone.entries[0].notes)


def test_judged_only_split_without_a_judge_is_skipped_before_generating(tmp_path):
    store_with(tmp_path / "librisqa" / "part1", [{"text": "t", "question": "q", "answer": "a"}])
    system = Fake("qa", lambda r: "a")
    res = run.evaluate(select("librisqa/part1"), [system], tmp_path, tmp_path / "out", log=quiet)
    assert system.calls == [] and res.failed
    assert res.problems[0].message == "librisqa/part1: judged accuracy not computed: no judge LLM (--judge SPEC)"


def test_make_scoring_loads_comet_only_when_asked_and_needed():
    assert run.make_scoring(select("tts"), "/no/such/comet", {}).comet_model is None  # no ST split: not loaded
    off = run.make_scoring(select("europarl/en-fr"), "none", {})
    assert off.comet_model is None and "switched off" in off.lacks("comet")
    pytest.importorskip("comet")
    with pytest.raises(metrics.MetricError, match="--comet-model /no/such/comet"):
        run.make_scoring(select("europarl/en-fr"), "/no/such/comet", {})


# --- the command --------------------------------------------------------------------------

runner = CliRunner()


def test_help_teaches_every_option_and_names_every_suite():
    result = runner.invoke(app, ["evaluate", "--help"], terminal_width=400)
    assert result.exit_code == 0
    for option in ("--suite", "--systems", "--model", "--mapper", "--llm", "--asr", "--asr-data-root", "--data-root",
                   "--out", "--judge",
                   "--comet-model", "--limit", "--num-beams", "--max-new-tokens", "--max-frames", "--batch-size", "--rescore"):
        assert option in result.output
    for name in suites.SUITES:
        assert name in result.output


@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "error: --suite: unknown suite 'nope'"),
    (["--suite", "tts", "--systems", "smap"], "error: --systems smap needs --model DIR"),
    (["--suite", "tts", "--systems", "cascade", "--llm", "x"], "error: --systems cascade needs --asr SPEC"),
    (["--suite", "tts", "--systems", "nearest"], "error: --systems nearest needs --model DIR"),
    (["--suite", "tts", "--systems", "oracle"], "error: --systems: unknown oracle"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, args, message):
    result = runner.invoke(app, ["evaluate", *args, "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rescore_scores_what_an_earlier_evaluation_said_without_running_a_system(root):
    run.evaluate(select("tts/test"), [oracle, lossy], root / "data", root / "first", log=quiet)
    first = json.loads((root / "first" / "results.json").read_text())
    saved = root / "first" / "outputs" / "tts" / "test" / "oracle.jsonl"
    rows = [json.loads(x) for x in saved.read_text().splitlines()]
    rows[0]["output"] = "the cat sat on the hat"  # one substitution in 16 words: the file is what is scored
    saved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--rescore", str(root / "first"),
                                 "--data-root", str(root / "data"), "--out", str(root / "again")], terminal_width=400)
    assert result.exit_code == 0, result.output
    again = json.loads((root / "again" / "results.json").read_text())
    assert {r["system"]: r["scores"]["wer"] for r in again["results"]} == {"oracle": 6.25, "lossy": 25.0}
    assert again["systems"]["lossy"] == {"fake": "lossy", "rescored_from": str(root / "first")}
    # the decoding's seconds, not the reading's
    assert [r["seconds"] for r in again["results"]] == [r["seconds"] for r in first["results"]]
    only = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--rescore", str(root / "first"), "--systems", "lossy",
                               "--data-root", str(root / "data"), "--out", str(root / "first")], terminal_width=400)
    assert only.exit_code == 0, only.output
    assert [r["system"] for r in json.loads((root / "first" / "results.json").read_text())["results"]] == ["lossy"]


def test_rescore_names_a_damaged_or_mismatched_output_file_and_scores_the_others(root):
    run.evaluate(select("tts/test"), [oracle, lossy], root / "data", root / "first", log=quiet)
    saved = root / "first" / "outputs" / "tts" / "test"
    lines = (saved / "oracle.jsonl").read_text().splitlines()
    (saved / "oracle.jsonl").write_text("\n".join(lines[:2] + ['{"id": "utt0002", "outp'] + lines[3:]) + "\n")
    args = ["evaluate", "--suite", "tts/test", "--rescore", str(root / "first"), "--data-root", str(root / "data")]
    result = runner.invoke(app, [*args, "--out", str(root / "again")], terminal_width=400)
    assert result.exit_code == 1
    assert f"failed tts/test x oracle: ValueError: {saved / 'oracle.jsonl'}:3: not JSON" in result.output
    assert [r["system"] for r in json.loads((root / "again" / "results.json").read_text())["results"]] == ["lossy"]
    fewer = runner.invoke(app, [*args, "--systems", "lossy", "--limit", "2", "--out", str(root / "two")], terminal_width=400)
    assert fewer.exit_code == 1
    assert f"{saved / 'lossy.jsonl'}: 4 outputs for 2 records (evaluate with the --limit" in fewer.output
    shutil.rmtree(root / "data" / "tts" / "test")
    write_store(root / "data" / "tts" / "test", TEXTS[::-1])  # prepared again, other references: not scored
    changed = runner.invoke(app, [*args, "--systems", "lossy", "--out", str(root / "three")], terminal_width=400)
    assert changed.exit_code == 1
    assert f"{root / 'data' / 'tts' / 'test'}: the store changed since {saved / 'lossy.jsonl'} was written" in changed.output


@pytest.mark.parametrize("extra, message", [
    ([], "error: --rescore {first}: no results.json there"),
    (["--model", "m"], "error: --rescore scores saved outputs: --model would not be used"),
])
def test_rescore_refuses_a_folder_without_a_report_or_options_it_would_not_use(tmp_path, extra, message):
    first = tmp_path / "first"
    first.mkdir()
    result = runner.invoke(app, ["evaluate", "--suite", "tts", "--rescore", str(first), *extra,
                                 "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 2, result.output
    said = result.output.strip()
    assert said.startswith(message.format(first=first)) and len(said.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_second_run_reuses_outputs_of_identical_systems_and_runs_only_what_changed(root):
    """A stopped or extended evaluation resumes: a system whose outputs under --out were made by the
    same system on the same store is not run again, and its time in the table is the first run's."""
    first, second = Fake("first", lambda r: r["text"]), Fake("second", lambda r: r["text"].rsplit(" ", 1)[0])
    one = run.evaluate(select("tts/test"), [first, second], root / "data", root / "out", log=quiet)
    again_first, again_second = Fake("first", lambda r: "wrong"), Fake("second", lambda r: "wrong")
    added = Fake("added", lambda r: r["text"])
    lines = []
    two = run.evaluate(select("tts/test"), [again_first, again_second, added], root / "data", root / "out",
                       log=lines.append)
    assert again_first.calls == again_second.calls == [] and added.calls == [("tts/test", None)]
    scores = {e.system: (e.scores["wer"], e.seconds) for e in two.entries}
    assert scores["first"] == (0.0, one.entries[0].seconds) and scores["second"] == (25.0, one.entries[1].seconds)
    assert "reused tts/test x first: its outputs under " + str(root / "out") + " (--fresh decodes again)" in lines
    assert two.meta["reused_outputs"] == ["tts/test x first", "tts/test x second"]
    assert json.loads((root / "out" / "results.json").read_text())["reused_outputs"] == two.meta["reused_outputs"]


@pytest.mark.parametrize("change", ["system", "limit", "store", "outputs", "record", "fresh"])
def test_outputs_are_made_again_when_anything_that_made_them_differs(root, change):
    run.evaluate(select("tts/test"), [Fake("sys", lambda r: r["text"])], root / "data", root / "out", log=quiet)
    saved = root / "out" / "outputs" / "tts" / "test" / "sys.jsonl"
    again = Fake("sys", lambda r: "new")
    kwargs = {"limit": 2} if change == "limit" else {"resume": False} if change == "fresh" else {}
    if change == "system":
        again.describe = lambda: {"fake": "sys", "weights": "trained again"}
    elif change == "store":  # prepared again: same ids, other transcripts
        shutil.rmtree(root / "data" / "tts" / "test")
        write_store(root / "data" / "tts" / "test", list(reversed(TEXTS)))
    elif change == "outputs":  # edited by hand: its digest no longer matches
        saved.write_text(saved.read_text().replace("the cat", "a cat"))
    elif change == "record":  # damaged: made again, not a crash
        saved.with_suffix(".json").write_text("{not json")
    res = run.evaluate(select("tts/test"), [again], root / "data", root / "out", log=quiet, **kwargs)
    assert again.calls and res.meta["reused_outputs"] == [] and not res.failed
    assert all(json.loads(line)["output"] == "new" for line in saved.read_text().splitlines())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_llama):
    """A model folder as `smap attach` writes it: a tiny mapper on the tiny Llama."""
    from smap.mapper import SpeechMapper, preset
    from smap.speech_llm import ModelSettings, SpeechLLM

    torch.manual_seed(0)
    mapper = SpeechMapper(preset("tiny", input_dim=16, output_dim=32))
    folder = tmp_path_factory.mktemp("model")
    SpeechLLM.build(mapper, ModelSettings(llm=str(tiny_llama), encoder="test-encoder")).save_pretrained(folder)
    return folder


def test_smap_transcript_and_cascade_end_to_end(root, tiny_model):
    """All three systems through the real adapters, on ASR and on spoken questions; a missing
    suite makes the exit code 1."""
    out = root / "out"
    store_with(root / "data" / "tts" / "test-qa", [{"text": "what is the capital of france", "answer": "paris"}])
    result = runner.invoke(app, ["evaluate", "--suite", "tts,fleurs", "--systems", "smap,transcript,cascade",
                                 "--model", str(tiny_model), "--asr", str(tiny_model), "--data-root", str(root / "data"),
                                 "--out", str(out), "--max-new-tokens", "4"], terminal_width=400)
    assert result.exit_code == 1, result.output
    assert "not run: fleurs/en: no feature store" in result.output
    assert "not run: tts/everyday: no feature store" in result.output
    data = json.loads((out / "results.json").read_text())
    assert [(r["split"], r["system"]) for r in data["results"]] == [
        (split, system) for split in ("test", "test-qa") for system in ("smap", "transcript", "cascade")]
    # each score is that of the outputs saved beside it, recomputed here: WER with jiwer after smap's normaliser
    for r in data["results"]:
        rows = [json.loads(x) for x in (out / "outputs" / "tts" / r["split"] / f"{r['system']}.jsonl").read_text().splitlines()]
        if r["split"] == "test":
            assert r["n"] == len(rows) == 4 and [row["text"] for row in rows] == TEXTS
            wer = 100 * jiwer.wer([normalize(x["text"]) for x in rows], [normalize(x["output"]) for x in rows])
            assert r["scores"]["wer"] == pytest.approx(wer)
        else:
            assert r["scores"]["exact_match"] == metrics.exact_match([x["answer"] for x in rows],
                                                                     [x["output"] for x in rows])
    qa = json.loads((out / "outputs" / "tts" / "test-qa" / "smap.jsonl").read_text())
    assert set(qa) == {"id", "text", "answer", "output"}
    assert data["systems"]["smap"]["encoder"] == "test-encoder"
    assert data["systems"]["cascade"]["input"] == f"ASR transcript ({tiny_model})"
    assert (out / "results.md").is_file() and (out / "results.png").is_file()
    rows = [json.loads(x) for x in (out / "outputs" / "tts" / "test" / "transcript.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["utt0000", "utt0001", "utt0002", "utt0003"]
    # Not a terminal: each split x system counts its utterances in plain lines; a cascade works on each twice.
    assert "tts/test x smap: 4/4 utterances" in result.output and "tts/test x cascade: 8/8 utterances" in result.output


def test_several_named_speech_models_are_rows_of_one_table(root, tiny_model, tiny_llama):
    out = root / "named"
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--systems", "transcript,smap",
                                 "--model", f"attach={tiny_model}", "--mapper", f"stage1={tiny_model / 'mapper'}",
                                 "--llm", str(tiny_llama),
                                 "--data-root", str(root / "data"), "--out", str(out), "--max-new-tokens", "2"],
                           terminal_width=400)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [r["system"] for r in data["results"]] == ["transcript", "attach", "stage1"]
    assert data["systems"]["stage1"]["mapper"] == str(tiny_model / "mapper")
    assert data["systems"]["stage1"]["token_mix"] == 0.0 == data["systems"]["attach"]["token_mix"]
    # --token-mix: the Stage-1 mapper read as token mixtures; a model folder keeps its own setting
    mixed = root / "mixed"
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--systems", "smap", "--model", f"attach={tiny_model}",
                                 "--mapper", f"stage1={tiny_model / 'mapper'}", "--llm", str(tiny_llama), "--token-mix", "100",
                                 "--mapper-system", "short", "--data-root", str(root / "data"), "--out", str(mixed),
                                 "--max-new-tokens", "2"],
                           terminal_width=400)
    assert result.exit_code == 0, result.output
    systems = json.loads((mixed / "results.json").read_text())["systems"]
    assert systems["stage1"]["token_mix"] == 100.0 and systems["attach"]["token_mix"] == 0.0
    # --mapper-system: Stage 1 prompted as the attached models were trained; the model folder keeps its own
    assert systems["stage1"]["system_prompt"] == "short" and systems["attach"]["system_prompt"] == "default"


def test_evaluate_resumes_a_speech_model_by_its_weights_and_fresh_decodes_again(root, tiny_model, tmp_path):
    """The report names each speech model's weights by digest; the same command again decodes
    nothing, a folder trained again under the same path is decoded, and --fresh decodes all."""
    from smap.evaluate.systems import weights_sha256
    from smap.speech_llm import SpeechLLM

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    args = ["evaluate", "--suite", "tts/test", "--systems", "smap", "--model", str(model),
            "--data-root", str(root / "data"), "--out", str(root / "again"), "--max-new-tokens", "2"]
    first = runner.invoke(app, args, terminal_width=400)
    assert first.exit_code == 0 and "reused" not in first.output, first.output
    digest = json.loads((root / "again" / "results.json").read_text())["systems"]["smap"]["mapper_sha256"]
    assert digest == weights_sha256(SpeechLLM.from_pretrained(model).mapper) and re.fullmatch("[0-9a-f]{64}", digest)
    second = runner.invoke(app, args, terminal_width=400)
    assert second.exit_code == 0 and "reused tts/test x smap" in second.output, second.output
    assert "tts/test x smap: 4/4 utterances" not in second.output
    assert runner.invoke(app, [*args, "--fresh"], terminal_width=400).output.count("tts/test x smap: 4/4 utterances") == 1
    trained = SpeechLLM.from_pretrained(model)
    with torch.no_grad():
        next(trained.mapper.parameters()).add_(1.0)
    trained.save_pretrained(model)
    third = runner.invoke(app, args, terminal_width=400)
    assert third.exit_code == 0 and "reused" not in third.output, third.output


def test_nearest_reads_each_speech_vector_as_its_closest_token_with_no_llm(tmp_path, tiny_model):
    """A model whose vectors are its transcripts' token embeddings (scaled: cosine, not distance,
    decides) is read back word for word, each utterance in its place, without generating."""
    from smap.evaluate.systems import build

    texts = ["we see them now", "it was", "one two", "we see"]  # in the tiny tokenizer's vocabulary
    store = FeatureStore(write_store(tmp_path / "data" / "tts" / "test", texts))
    (system,) = build(["nearest"], models=[f"attach={tiny_model}"])
    model = system.speech.model
    table = model.lm.llm.get_input_embeddings().weight.detach()
    ids = {float(store.features(i)[0, 0]): model.lm.tokenizer(r["text"], add_special_tokens=False)["input_ids"]
           for i, r in enumerate(store.records)}
    model.speech_contents = lambda padded, lengths: ([1.5 * table[ids[float(f[0, 0])]] for f in padded], None)
    model.lm.generate = None  # the LLM is not run
    res = run.evaluate(select("tts/test"), [system], tmp_path / "data", tmp_path / "out", log=quiet)
    (entry,) = res.entries
    assert entry.system == "attach-nearest" and entry.scores["wer"] == 0.0, res.problems
    said = [json.loads(x)["output"] for x in (tmp_path / "out" / "outputs" / "tts" / "test" / "attach-nearest.jsonl")
            .read_text().splitlines()]
    assert [s.strip() for s in said] == texts


def test_two_unnamed_speech_models_with_one_folder_name_are_refused():
    from smap.evaluate.systems import SystemSpecError, speech_specs

    assert speech_specs(["a/run"], []) == [("smap", "model", "a/run")]
    with pytest.raises(SystemSpecError, match="two speech models named 'run'"):
        speech_specs(["a/run"], ["b/run"])


def test_smap_refuses_features_of_another_encoder(tmp_path, tiny_model):
    write_store(tmp_path / "tts" / "test", TEXTS[:1], encoder="other-encoder")
    from smap.evaluate.systems import Inference, build
    from smap.speech_llm import Decoding

    (system,) = build(["smap"], models=[str(tiny_model)], inference=Inference(Decoding(max_new_tokens=2)))
    res = run.evaluate(select("tts/test"), [system], tmp_path, tmp_path / "out", log=quiet)
    assert res.problems[0].message == (f"ValueError: {tmp_path / 'tts' / 'test'} holds other-encoder features but the "
                                       "model reads test-encoder; prepare this split with --encoder test-encoder")


@pytest.mark.embedded
def test_whisper_cascade_reads_its_own_features(tmp_path):
    """From the split's store if it holds Whisper's features (cut ones would loop without the
    length cap: 2000%+ WER), else from the split under --asr-data-root, windowed and clean."""
    from smap.audio import synthesize
    from smap.encoders import load_encoder
    from smap.evaluate.systems import WhisperTranscriber

    text = "please send me the report before friday"
    wav = synthesize(text)
    wav = torch.as_tensor(wav[0] if isinstance(wav, tuple) else wav)
    split = select("tts/test")[0]
    for root, spec in ((tmp_path / "cut", "whisper-tiny.en"), (tmp_path / "windowed", "whisper-tiny.en?window=1")):
        enc = load_encoder(spec)
        with StoreWriter(split.store_dir(root), encoder=enc.name, dim=enc.dim, frame_rate=enc.frame_rate) as w:
            w.add({"id": "a", "text": text, "duration": 2.0}, enc.encode([wav])[0])
    cut = FeatureStore(split.store_dir(tmp_path / "cut"))
    (said,) = WhisperTranscriber("whisper-tiny.en")(split, cut, None)
    assert metrics.wer([text], [said]) <= 30.0, said
    other = FeatureStore(write_store(split.store_dir(tmp_path / "other"), ["x"], encoder="other-encoder"))
    other.records[0]["id"] = "a"  # the same utterance, encoded for the mapper
    (said,) = WhisperTranscriber("whisper-tiny.en", tmp_path / "windowed")(split, other, None)
    assert said == "Please send me the report before Friday."
    with pytest.raises(ValueError, match=r"holds other-encoder features, not whisper-tiny.en's; give --asr-data-root"):
        WhisperTranscriber("whisper-tiny.en")(split, other, None)
    with pytest.raises(ValueError, match=r"--asr-data-root: tts/test: no feature store .* --encoder whisper-tiny.en --window --out"):
        WhisperTranscriber("whisper-tiny.en", tmp_path / "nowhere")(split, other, None)


# --- the paper's baselines and judges ----------------------------------------------------------------

from test_encoders import tiny_seamless  # noqa: E402,F401  (a fixture: a tiny SeamlessM4T-v2, random weights)


@pytest.fixture(scope="module")
def sfm(tiny_seamless):  # noqa: F811
    """The tiny SeamlessM4T-v2 as a speech-to-text checkpoint: text languages and a tokenizer."""
    from conftest import make_tokenizer

    folder, model = tiny_seamless
    generation = model.generation_config
    generation.text_decoder_lang_to_code_id = {"eng": 10, "deu": 11, "fra": 12}
    generation._from_model_config = False  # else transformers rebuilds it from config.json on loading
    generation.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def test_the_sfm_transcribes_for_the_cascade_and_translates_st_splits(tmp_path, sfm, tiny_llama):
    from smap.encoders import load_encoder
    from smap.evaluate import systems
    from smap.speech_llm import Decoding

    encoder = load_encoder(str(sfm))
    torch.manual_seed(0)
    feats = encoder.encode([0.1 * torch.randn(n) for n in (16000, 20000, 12000)])
    for key, extra in (("europarl/en-de", {"translation": "hallo welt", "tgt_lang": "de"}), ("librispeech/test-clean", {})):
        with StoreWriter(tmp_path / "data" / key, encoder=encoder.name, dim=encoder.dim, frame_rate=encoder.frame_rate) as w:
            for i, f in enumerate(feats):
                w.add({"id": f"u{i}", "duration": 1.0, "text": "hello world", **extra}, f)
    built = systems.build(["cascade", "sfm-st"], llm=str(tiny_llama), asr=str(sfm),
                          inference=systems.Inference(Decoding(max_new_tokens=4)))
    cascade, sfm_st = built
    assert cascade.transcribe is sfm_st.sfm  # one SFM loaded for both
    asked, generate = [], sfm_st.sfm.model.generate
    sfm_st.sfm.model.generate = lambda **kw: asked.append(kw["tgt_lang"]) or generate(**kw)
    res = run.evaluate(select("europarl/en-de,librispeech/test-clean"), built, tmp_path / "data", tmp_path / "out",
                       run.Scoring(identify=lambda texts: ["de"] * len(texts)), log=quiet)
    assert not res.failed, res.problems
    # the SFM's own ST on the ST split only; the cascade's ASR asked for English on both
    assert {(e.split.key, e.system) for e in res.entries} == {
        ("europarl/en-de", "cascade"), ("europarl/en-de", "sfm-st"), ("librispeech/test-clean", "cascade")}
    assert sorted(asked) == ["deu"] * 3 + ["eng"] * 6
    said = [json.loads(line) for line in
            (tmp_path / "out" / "outputs" / "europarl" / "en-de" / "sfm-st.jsonl").read_text().splitlines()]
    assert [r["id"] for r in said] == ["u0", "u1", "u2"] and all(isinstance(r["output"], str) for r in said)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["systems"]["sfm-st"]["sfm"] == str(sfm) and data["systems"]["cascade"]["input"] == f"ASR transcript ({sfm})"
    assert "sfm-st" in (tmp_path / "out" / "results.md").read_text()


def test_sfm_st_needs_a_seamless_checkpoint_as_asr():
    from smap.evaluate import systems

    with pytest.raises(systems.SystemSpecError, match="--systems sfm-st needs --asr a SeamlessM4T-v2 checkpoint"):
        systems.build(["sfm-st"], llm="x", asr="whisper-tiny.en")


@pytest.mark.embedded
def test_whisper_cascade_reads_a_clip_over_30_seconds_window_by_window(tmp_path):
    """A 45 s clip, encoded in 30 s windows (`smap prepare --window`), is read whole: the words
    of both windows, as Whisper reads long audio."""
    from smap.audio import synthesize
    from smap.encoders import load_encoder
    from smap.evaluate.systems import WhisperTranscriber

    first, second = "please send me the report before friday", "thank you very much for your help"
    waves = [torch.as_tensor(w[0] if isinstance(w, tuple) else w) for w in map(synthesize, (first, second))]
    # the first sentence, then silence to the 30 s boundary, then the second and silence to 45 s
    wav = torch.zeros(45 * 16000)
    wav[:len(waves[0])] = waves[0]
    wav[30 * 16000:30 * 16000 + len(waves[1])] = waves[1]
    split = select("tts/test")[0]
    enc = load_encoder("whisper-tiny.en?window=1")
    with StoreWriter(split.store_dir(tmp_path), encoder=enc.name, dim=enc.dim, frame_rate=enc.frame_rate) as w:
        w.add({"id": "a", "text": f"{first} {second}", "duration": 45.0}, enc.encode([wav])[0])
    (said,) = WhisperTranscriber("whisper-tiny.en")(split, FeatureStore(split.store_dir(tmp_path)), None)
    assert metrics.wer([f"{first} {second}"], [said]) <= 10.0, said


def test_a_system_with_tasks_runs_only_on_splits_of_those_tasks(root):
    st_only = Fake("st-only", lambda r: r["text"])
    st_only.tasks = ("st",)
    res = run.evaluate(select("tts/test"), [oracle, st_only], root / "data", root / "out", log=quiet)
    assert [e.system for e in res.entries] == ["oracle"] and not res.problems and st_only.calls == []


def test_a_judge_that_is_the_llm_under_test_is_refused_before_any_judge_is_loaded(tiny_llama):
    from smap.evaluate import systems

    tested = {"oracle": None, "smap": str(tiny_llama)}
    # the first judge cannot be loaded: refused before, the second is the tested LLM by another path
    with pytest.raises(systems.SystemSpecError, match=r"^--judge \S+/: the LLM of system 'smap', which is under test"):
        systems.judges(["no/such-judge", f"{tiny_llama}/"], tested=tested)


def test_a_judge_naming_the_tested_hub_llm_another_way_is_refused(tmp_path, monkeypatch):
    from smap.evaluate import systems

    monkeypatch.chdir(tmp_path)  # no local folder 'meta-llama/' here: both specs are hub ids
    tested = {"smap": "meta-llama/Llama-3.1-8B-Instruct"}
    with pytest.raises(systems.SystemSpecError, match="the LLM of system 'smap'"):
        systems.judges(["hf:meta-llama/Llama-3.1-8B-Instruct@main"], tested=tested)
    assert systems.judges(["hf:Qwen/Qwen2.5-7B-Instruct"], tested=tested)  # another model: a loader, not loaded


def test_a_judge_that_is_the_llm_of_a_hub_speech_model_is_refused(tiny_llama, tiny_model, monkeypatch, tmp_path):
    """`--model org/name`: its LLM is read from the fetched snapshot's record, before any judge or model loads."""
    import smap.speech_llm
    from smap.evaluate import systems

    monkeypatch.chdir(tmp_path)  # no local folder 'org/'
    fetched = []
    monkeypatch.setattr(smap.speech_llm, "hub_snapshot", lambda hub, *a: fetched.append(hub.repo) or tiny_model)
    tested = systems.tested_llms(["smap", "transcript"], models=["org/speech-model"])
    assert tested == {"smap": str(tiny_llama), "transcript": str(tiny_llama)} and fetched == ["org/speech-model"]
    with pytest.raises(systems.SystemSpecError, match="the LLM of system 'smap'"):
        systems.judges([str(tiny_llama)], tested=tested)


def test_each_judges_score_and_their_mean_are_in_results_json(tmp_path):
    store_with(tmp_path / "librisqa" / "part1", [{"text": "t", "question": "q", "answer": "a"}] * 4)
    judges = {"yes-judge": lambda: lambda batch: ["yes"] * len(batch),
              "half-judge": lambda: lambda batch: ["yes", "no"] * (len(batch) // 2)}
    run.evaluate(select("librisqa/part1"), [Fake("qa", lambda r: "a")], tmp_path, tmp_path / "out",
                 run.Scoring(judges=judges), log=quiet)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"][0]["scores"] == {"judged": 75.0, "judged[yes-judge]": 100.0, "judged[half-judge]": 50.0}
    assert data["scoring"]["judges"] == ["yes-judge", "half-judge"]


class JudgeLLM:
    """A judge whose loading and freeing go into `events`; it answers yes to the candidates that
    contain the reference, or to all (`lenient`)."""

    def __init__(self, name, events, lenient):
        self.name, self.events, self.lenient = name, events, lenient
        events.append(("load", name))
        weakref.finalize(self, events.append, ("free", name))

    def __call__(self, prompts):
        def said(label, prompt):
            return re.search(rf"{label}: (.*)\n", prompt).group(1).lower()

        return ["yes" if self.lenient or said("Reference answer", p) in said("Candidate answer", p) else "no"
                for p in prompts]


def test_judges_load_after_every_output_exists_one_at_a_time(tmp_path):
    """The judges are loaded only once every system has generated on every split, each freed before
    the next is loaded; their scores are those of judging each output."""
    store_with(tmp_path / "spokensquad" / "test", [
        {"text": "Paris is big.", "question": "Which city?", "answer": "Paris"},
        {"text": "It rained.", "question": "What happened?", "answer": "snow"}])
    store_with(tmp_path / "librisqa" / "part1", [{"text": "t", "question": "Who?", "answer": "Ann"}] * 4)
    events = []

    class Logged(Fake):
        def outputs(self, split, store, limit, advance):
            events.append(("generated", split.key, self.name))
            return super().outputs(split, store, limit, advance)

        def release(self):
            events.append(("released", self.name))

    right = Logged("right", lambda r: f"It is {r['answer']}.")
    wrong = Logged("wrong", lambda r: "no idea")
    judges = {name: (lambda name=name: JudgeLLM(name, events, lenient=name == "lenient"))
              for name in ("strict", "lenient")}
    res = run.evaluate(select("spokensquad/test,librisqa/part1"), [right, wrong], tmp_path, tmp_path / "out",
                       run.Scoring(judges=judges), log=quiet)
    assert not res.failed, res.problems
    assert [e for e in events if e[0] == "generated"] == [
        ("generated", split, name) for split in ("spokensquad/test", "librisqa/part1") for name in ("right", "wrong")]
    assert events[4:] == [("released", "right"), ("released", "wrong"),
                          ("load", "strict"), ("free", "strict"), ("load", "lenient"), ("free", "lenient")]
    judged = {(e.split.key, e.system): {k: v for k, v in e.scores.items() if k.startswith("judged")} for e in res.entries}
    # strict: yes where the output holds the answer (all of right's), lenient: yes to all
    assert judged == {
        (key, "right"): {"judged": 100.0, "judged[strict]": 100.0, "judged[lenient]": 100.0}
        for key in ("spokensquad/test", "librisqa/part1")} | {
        (key, "wrong"): {"judged": 50.0, "judged[strict]": 0.0, "judged[lenient]": 100.0}
        for key in ("spokensquad/test", "librisqa/part1")}


def test_the_models_under_test_are_freed_before_a_judge_loads(tmp_path, tiny_model):
    """The judge has the memory to itself: the speech model's LLM is gone when the judge loads."""
    from smap.evaluate.systems import Inference, build
    from smap.speech_llm import Decoding

    store_with(tmp_path / "tts" / "test-qa", [{"text": "what is two plus two", "answer": "four"}])
    built = build(["smap", "transcript"], models=[str(tiny_model)], inference=Inference(Decoding(max_new_tokens=2)))
    llm = weakref.ref(built[0].model.lm.llm)
    alive = []

    def load():
        alive.append(llm() is not None)
        return lambda prompts: ["yes"] * len(prompts)

    res = run.evaluate(select("tts/test-qa"), built, tmp_path, tmp_path / "out", run.Scoring(judges={"j": load}),
                       log=quiet)
    assert alive == [False] and [e.scores["judged"] for e in res.entries] == [100.0, 100.0], res.problems
    # what the report says of each system was read before its model went
    assert json.loads((tmp_path / "out" / "results.json").read_text())["systems"]["transcript"]["layout"] == "quoted"


def test_a_judge_that_fails_to_load_names_the_outputs_it_would_judge_and_the_others_score(tmp_path):
    store_with(tmp_path / "librisqa" / "part1", [{"text": "t", "question": "Who?", "answer": "Ann"}])

    def broken():
        raise OSError("no space left on device")

    res = run.evaluate(select("librisqa/part1"), [Fake("qa", lambda r: "Ann")], tmp_path, tmp_path / "out",
                       run.Scoring(judges={"broken": broken}), log=quiet)
    assert res.entries == [] and res.failed
    assert [(p.key, p.system, p.message) for p in res.problems] == [
        ("librisqa/part1", "qa", "judge broken: OSError: no space left on device")]
    assert (tmp_path / "out" / "outputs" / "librisqa" / "part1" / "qa.jsonl").is_file()  # kept for --rescore


def test_judges_are_checked_before_any_model_loads_and_loaded_only_when_called(tmp_path, tiny_llama, tiny_model,
                                                                                    monkeypatch):
    import smap.generate
    from smap.evaluate import systems

    loaded = []
    monkeypatch.setattr(smap.generate, "load_text_lm", lambda spec, **kw: loaded.append(spec))
    monkeypatch.setattr(smap.generate, "load_model", lambda **kw: loaded.append(kw))
    # --judge the tested model's own LLM: refused before the model under test loads
    result = runner.invoke(app, ["evaluate", "--suite", "librisqa/part1", "--model", str(tiny_model),
                                 "--judge", str(tiny_llama), "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 2 and loaded == []
    assert result.output.startswith(f"error: --judge {tiny_llama}: the LLM of system 'smap', which is under test")
    result = runner.invoke(app, ["evaluate", "--suite", "librisqa/part1", "--model", str(tiny_model),
                                 "--judge", "./no/such-judge", "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 2 and loaded == [] and "error: ./no/such-judge: not an LLM spec" in result.output
    stage1 = tmp_path / "stage1"  # a Stage-1 mapper recording the LLM it was pretrained for
    shutil.copytree(tiny_model / "mapper", stage1)
    config = json.loads((stage1 / "config.json").read_text())
    (stage1 / "config.json").write_text(json.dumps({**config, "extra": {**config["extra"], "llm": "pretrained-for"}}))
    assert systems.tested_llms(["transcript", "smap"], mappers=[str(stage1)]) == {"smap": "pretrained-for",
                                                                                "transcript": "pretrained-for"}
    assert systems.tested_llms(["transcript"], mappers=[str(stage1)], llm="given") == {"transcript": "given"}
    loaders = systems.judges(["smollm2-135m", "smollm2-135m"], tested={"smap": str(tiny_llama)})
    assert list(loaders) == ["smollm2-135m"] and loaded == []
    loaders["smollm2-135m"]()
    assert loaded == ["smollm2-135m"]


# --- spoken questions: the held-out ones stay unheard ------------------------------------------------

def test_no_question_vocabulary_sentence_holds_a_word_only_the_held_out_questions_use():
    from smap.data.corpus import CorpusConfig, plan, read_lines
    from smap.text import normalize

    def words(texts):
        return {w for t in texts for w in normalize(t).split()}

    for seed in (0, 1):
        config = CorpusConfig(seed=seed, qa_vocab_voices=1)
        p = plan(config)
        wordnet, extra = [u.text for u in p["train"][: config.train]], [u.text for u in p["train"][config.train:]]
        unseen = (words(u.text for u in p["test-qa"]) | words(u.answer for u in p["test-qa"])) - words(wordnet) \
            - words(u.text for u in p["train-qa"]) - words(u.answer for u in p["train-qa"])
        assert {"kenya", "nairobi"} <= unseen if seed == 0 else unseen  # held-out capitals: something to find
        assert [s for s in extra if words([s]) & unseen] == []
        if seed == 0:  # the file itself, as the default corpus holds out its questions
            assert extra == read_lines("qa_vocabulary_sentences.txt")
