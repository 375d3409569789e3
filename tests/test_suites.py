"""The suite registry: the issue's suites and splits, the data layout, the one-line hints."""

import pytest
import torch

from smap.data.store import StoreWriter
from smap.evaluate import suites
from smap.evaluate.suites import SuiteError
from smap.prompts import question_text

from conftest import write_store


def test_registry_holds_the_papers_suites_and_splits():
    got = {name: [(s.name, s.task, s.tgt_lang) for s in suite.splits] for name, suite in suites.SUITES.items()}
    assert got["europarl"] == [(p, "st", p[3:]) for p in ("en-fr", "en-de", "en-es", "en-it")]
    assert got["covost2"] == [(p, "st", p[3:]) for p in ("en-de", "en-zh")]  # CoVoST 2 has no en-it
    assert got["librisqa"] == [("part1", "sqa", None), ("part2", "sqa", None)]
    assert got["librispeech"] == [("test-clean", "asr", None), ("test-other", "asr", None)]
    assert got["fleurs"] == [("en", "asr", None)]
    assert got["spokensquad"] == [("test", "sqa", None)]
    assert got["tts"] == [("test", "asr", None), ("test-flite", "asr", None), ("everyday", "asr", None), ("test-qa", "sqa", None)]
    for suite in suites.SUITES.values():
        for split in suite.splits:
            assert set(split.metrics) <= set(suites.METRICS), split.key


def test_metrics_and_paper_figures_per_task():
    by_key = {s.key: s for suite in suites.SUITES.values() for s in suite.splits}
    assert by_key["europarl/en-es"].metrics[0] == "comet" and "adherence" in by_key["europarl/en-es"].metrics
    assert by_key["europarl/en-es"].paper == {"comet": 85.4}
    assert by_key["covost2/en-zh"].paper == {"comet": 79.9}
    assert by_key["librispeech/test-other"].paper == {"wer": 5.8}
    assert by_key["fleurs/en"].paper == {"wer": 10.7}
    assert by_key["librisqa/part1"].metrics == ("judged",) and by_key["librisqa/part1"].paper == {"judged": 83.2}
    assert by_key["librisqa/part2"].optional and by_key["librisqa/part2"].metrics == ("exact_choice",)
    assert by_key["covost2/en-de"].needs == ("text", "translation")
    assert by_key["spokensquad/test"].needs == ("text", "question", "answer")
    # A spoken question has no question field: the speech is the question.
    assert by_key["tts/test-qa"].needs == ("text", "answer") and by_key["tts/test-qa"].prompt


def test_select_by_suite_and_by_split_in_order_without_repeats():
    keys = [s.key for s in suites.select("europarl, covost2/en-zh,europarl/en-de")]
    assert keys == ["europarl/en-fr", "europarl/en-de", "europarl/en-es", "europarl/en-it", "covost2/en-zh"]


@pytest.mark.parametrize("spec, message", [
    ("europarl,nope", r"unknown suite 'nope'; choose from europarl, covost2"),
    ("librispeech/dev-clean", r"librispeech has no split 'dev-clean'; it has test-clean, test-other"),
    (" , ", "no suite given"),
])
def test_select_refuses_unknown_names_in_one_line(spec, message):
    with pytest.raises(SuiteError, match=message) as e:
        suites.select(spec)
    assert "\n" not in str(e.value) and str(e.value).startswith("--suite")


def test_missing_store_is_one_line_with_the_command_that_makes_it(tmp_path):
    split = suites.select("europarl/en-fr")[0]
    assert split.store_dir(tmp_path) == tmp_path / "europarl" / "en-fr"
    line = split.missing(tmp_path, encoder="hf:facebook/seamless-m4t-v2-large")
    assert "\n" not in line
    assert line.startswith(f"europarl/en-fr: no feature store at {tmp_path / 'europarl' / 'en-fr' / 'store.json'}")
    assert "get the EuroParl-ST v1.1 release" in line
    assert line.endswith(f"run: smap prepare --dataset europarl-st --data-dir DIR --pair en-fr --split test "
                         f"--encoder hf:facebook/seamless-m4t-v2-large --out {tmp_path / 'europarl' / 'en-fr'}")
    # Without a model to ask, the encoder is a placeholder the user must fill in.
    assert "--encoder ENCODER_OF_YOUR_MODEL" in suites.select("tts/test")[0].missing(tmp_path)


def test_a_prepared_store_is_found(tmp_path):
    split = suites.select("librispeech/test-clean")[0]
    write_store(split.store_dir(tmp_path), ["a b c"])
    assert split.missing(tmp_path) is None


def test_question_text_lists_labelled_choices():
    assert question_text({"question": "Who spoke?"}) == "Who spoke?"
    assert question_text({"text": "what is two plus two"}) == "what is two plus two"
    text = question_text({"question": "Who spoke?", "choices": ["a man", "a woman"]})
    assert text.splitlines() == ["Who spoke?", "A. a man", "B. a woman", "Answer with the letter of the right option."]
    # LibriSQA Part II: the options are in the question, the choices only their labels.
    written = {"question": "Who spoke? (A) a man (B) a woman", "choices": ["A", "B"]}
    assert question_text(written) == "Who spoke? (A) a man (B) a woman"


def _own_store(folder, records):
    with StoreWriter(folder, encoder="test-encoder", dim=4, frame_rate=50.0,
                     meta={"source": "my.jsonl", "split": "test"}) as w:
        for i, rec in enumerate(records):
            w.add({"id": f"u{i}", "duration": 0.2, **rec}, torch.zeros(10, 4))
    return folder


def test_a_store_folder_is_a_split_of_its_own_beside_the_suites(tmp_path):
    asr = _own_store(tmp_path / "data" / "mine" / "test", [{"text": "hello there"}, {"text": "good bye"}])
    st = _own_store(tmp_path / "elsewhere" / "st-de", [{"text": "hi", "translation": "hallo", "tgt_lang": "de"}])
    sqa = _own_store(tmp_path / "qa", [{"text": "a passage", "question": "What?", "answer": "passage"}])
    choice = _own_store(tmp_path / "mc", [{"text": "x", "question": "Who?", "answer": "A", "choices": ["a", "b"]}])
    spoken = _own_store(tmp_path / "spoken", [{"text": "what is the capital of france", "answer": "paris"}])
    chosen = suites.select(f"librispeech/test-clean,{asr},{st},{sqa},{choice},{spoken}")
    assert [s.key for s in chosen] == ["librispeech/test-clean", "mine/test", "elsewhere/st-de",
                                       f"{tmp_path.name}/qa", f"{tmp_path.name}/mc", f"{tmp_path.name}/spoken"]
    own = chosen[1]
    assert (own.task, own.metrics, own.path) == ("asr", ("wer",), str(asr))
    # Read where it is, whatever --data-root, so `missing` finds it.
    assert own.store_dir(tmp_path / "other-root") == asr and own.missing(tmp_path / "other-root") is None
    assert own.prepare == "my.jsonl --split test"
    assert (chosen[2].task, chosen[2].tgt_lang, chosen[2].metrics) == ("st", "de", ("comet", "bleu", "chrf", "adherence"))
    assert (chosen[3].task, chosen[3].metrics, chosen[3].needs) == ("sqa", ("judged", "exact_match"), ("text", "question", "answer"))
    assert chosen[4].metrics == ("exact_choice",)
    assert chosen[5].prompt and chosen[5].needs == ("text", "answer")
    assert chosen[5].metrics == suites.select("tts/test-qa")[0].metrics


def test_a_store_in_the_standard_layout_keeps_its_suites_figures(tmp_path):
    folder = write_store(tmp_path / "librispeech" / "test-clean", ["a b c"])
    split = suites.select(str(folder))[0]
    assert split.key == "librispeech/test-clean" and split.paper == {"wer": 2.9} and split.path == str(folder)


@pytest.mark.parametrize("records, message", [
    ([{"text": "hi", "translation": "hallo"}], "an ST store needs one tgt_lang in its records, found none"),
    ([{"text": "hi", "translation": "hallo", "tgt_lang": "de"}, {"text": "ho", "translation": "salut", "tgt_lang": "fr"}],
     "found de, fr"),
])
def test_an_st_store_needs_one_target_language(tmp_path, records, message):
    folder = _own_store(tmp_path / "mine" / "st", records)
    with pytest.raises(SuiteError, match=message):
        suites.select(str(folder))


def test_store_folders_that_are_not_or_that_clash_are_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "empty", "data/mine/test"):
        with pytest.raises(SuiteError, match=r"^--suite .*: no store.json there, so not a feature store .*"
                                             r"and not a suite \(europarl, covost2") as e:
            suites.select(str(where))
        assert "\n" not in str(e.value)
    with pytest.raises(SuiteError, match="unknown suite 'mine'; choose from .* or give a feature store folder"):
        suites.select("mine")
    a = write_store(tmp_path / "a" / "mine" / "test", ["a b"])
    b = write_store(tmp_path / "b" / "mine" / "test", ["c d"])
    with pytest.raises(SuiteError, match="would both be reported as mine/test"):
        suites.select(f"{a},{b}")
    assert [s.key for s in suites.select(f"{a},{a}")] == ["mine/test"]
    (tmp_path / "broken" / "x").mkdir(parents=True)
    (tmp_path / "broken" / "x" / "store.json").write_text("{not json")
    with pytest.raises(SuiteError, match=r"^--suite .*broken/x: .*unreadable store index"):
        suites.select(str(tmp_path / "broken" / "x"))
