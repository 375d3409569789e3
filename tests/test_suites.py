"""The suite registry: the issue's suites and splits, the data layout, the one-line hints."""

import pytest

from smap.evaluate import suites
from smap.evaluate.suites import SuiteError

from conftest import write_store


def test_registry_holds_the_papers_suites_and_splits():
    got = {name: [(s.name, s.task, s.tgt_lang) for s in suite.splits] for name, suite in suites.SUITES.items()}
    assert got["europarl"] == [(p, "st", p[3:]) for p in ("en-fr", "en-de", "en-es", "en-it")]
    assert got["covost2"] == [(p, "st", p[3:]) for p in ("en-de", "en-zh", "en-it")]
    assert got["librisqa"] == [("part1", "sqa", None), ("part2", "sqa", None)]
    assert got["librispeech"] == [("test-clean", "asr", None), ("test-other", "asr", None)]
    assert got["fleurs"] == [("en", "asr", None)]
    assert got["spokensquad"] == [("test", "sqa", None)]
    assert got["tts"] == [("test", "asr", None), ("everyday", "asr", None), ("test-qa", "sqa", None)]
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
    assert suites.question_text({"question": "Who spoke?"}) == "Who spoke?"
    assert suites.question_text({"text": "what is two plus two"}) == "what is two plus two"
    text = suites.question_text({"question": "Who spoke?", "choices": ["a man", "a woman"]})
    assert text.splitlines() == ["Who spoke?", "A. a man", "B. a woman", "Answer with the letter of the right option."]
    # LibriSQA Part II: the options are in the question, the choices only their labels.
    written = {"question": "Who spoke? (A) a man (B) a woman", "choices": ["A", "B"]}
    assert suites.question_text(written) == "Who spoke? (A) a man (B) a woman"
