import random

import pytest

from conftest import make_tokenizer
from smap.prompts import (INSTRUCTIONS, LAYOUTS, PLACEHOLDER, SPOKEN_QUESTION, PromptError, PromptFormat, Request,
                          language_name)


def test_every_task_has_several_phrasings_and_training_draws_them_all():
    for task, options in INSTRUCTIONS.items():
        assert len(options) >= 3, task
    rng = random.Random(0)
    drawn = {Request("st", tgt_lang="de").instruction(rng) for _ in range(200)}
    assert drawn == {o.format(tgt_lang="German") for o in INSTRUCTIONS["st"]}


def test_a_random_phrasing_among_the_first_n():
    rng = random.Random(0)
    assert {Request("asr").instruction(rng, among=2) for _ in range(100)} == set(INSTRUCTIONS["asr"][:2])
    assert {Request("asr").instruction(rng, among=1) for _ in range(20)} == {INSTRUCTIONS["asr"][0]}


def test_instructions_name_the_language_and_carry_the_question():
    assert "German" in Request("st", tgt_lang="de").instruction()
    assert "Klingon" in Request("st", tgt_lang="Klingon").instruction()
    assert language_name("pt-BR") == "Portuguese"
    for k in range(len(INSTRUCTIONS["sqa"])):
        assert "Who spoke first?" in Request("sqa", question="Who spoke first?").instruction(k)
    assert Request("free", prompt="Summarise the talk.").instruction() == "Summarise the talk."


def test_sqa_without_a_text_question_is_a_spoken_question():
    assert Request("sqa").spoken_question and Request("sqa").instruction() == SPOKEN_QUESTION
    assert Request("sqa", prompt="Answer briefly.").instruction() == "Answer briefly."
    assert not Request("sqa", question="Who spoke first?").spoken_question


@pytest.mark.parametrize("request_,message", [
    (Request("st"), "needs a target language"),
    (Request("free"), "needs a prompt"),
    (Request("dictation"), "unknown task 'dictation'"),
])
def test_incomplete_requests_are_refused(request_, message):
    with pytest.raises(PromptError, match=message):
        request_.instruction()


WHAT = Request("free", prompt="what is it")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prefix_is_shared_and_prompt_tokens_match_the_rendered_template(layout):
    fmt = PromptFormat(make_tokenizer(), system="short")
    rendered = fmt.render(WHAT.turn(layout), speech="")
    assert PLACEHOLDER not in rendered and "helpful" in rendered
    # prefix + head + tail tokens are the rendered template's tokens, the speech being empty
    head, tail = fmt.around(WHAT.turn(layout))
    assert fmt.prefix_ids + head + tail == fmt.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # one prefix for every turn and layout (one cache serves every prompt); the turn is in head and tail
    assert fmt.around(WHAT.turn(layout)) != fmt.around(Request("free", prompt="the speech").turn(layout))


def test_a_user_turn_holds_the_speech_placeholder_once():
    fmt = PromptFormat(make_tokenizer())
    for turn in ("what is it", f"{PLACEHOLDER} and {PLACEHOLDER}"):
        with pytest.raises(PromptError, match="placeholder"):
            fmt.around(turn)


def test_the_instruction_comes_before_the_speech_unless_told_otherwise():
    fmt = PromptFormat(make_tokenizer())
    rendered = fmt.render(WHAT.turn("instruction-first"), speech="SPEECH")
    assert rendered.index("what is it") < rendered.index("SPEECH")
    rendered = fmt.render(WHAT.turn("speech-first"), speech="SPEECH")
    assert rendered.index("SPEECH") < rendered.index("what is it")
    assert fmt.around(WHAT.turn("speech-first"))[0] == []  # nothing between prefix and speech
    assert fmt.tokenizer.decode(fmt.around(WHAT.turn("instruction-first"))[0]).strip() == "what is it"
    with pytest.raises(PromptError, match="--layout must be one of .*, not 'audio-last'"):
        WHAT.turn("audio-last")


def test_the_default_layout_quotes_asr_speech_and_puts_a_spoken_question_first():
    fmt = PromptFormat(make_tokenizer())
    asr = Request("asr")
    for k, phrasing in enumerate(INSTRUCTIONS["asr"]):
        assert asr.turn(phrasing=k) == f'{phrasing}\n"{PLACEHOLDER}"'
        assert asr.turn("instruction-first", k) == f"{phrasing}\n{PLACEHOLDER}"
    # The task places the speech, not the wording: a user's own prompt is never quoted.
    assert Request("free", prompt=INSTRUCTIONS["asr"][0]).turn() == f"{INSTRUCTIONS['asr'][0]}\n{PLACEHOLDER}"
    # A spoken question is a message to answer, read before the instruction (no "?" to end it),
    # whatever it is asked.
    for question in (Request("sqa"), Request("sqa", prompt="Reply in one word.")):
        assert question.turn() == f"{PLACEHOLDER}\n{question.instruction()}"
        assert question.turn("instruction-first") == f"{question.instruction()}\n{PLACEHOLDER}"
    # Translation, SQA on a text question and a user's own prompt are left instruction first, unquoted.
    for other in (Request("st", tgt_lang="de"), Request("sqa", question="Who?"), WHAT):
        assert other.turn() == other.turn("instruction-first")
    # The quotes are in the ids around the speech.
    assert fmt.around(asr.turn()) != fmt.around(asr.turn("instruction-first"))


def test_system_options_change_only_the_prefix():
    tok = make_tokenizer()
    default, short, custom = (PromptFormat(tok, s) for s in ("default", "short", "you are a speech model"))
    x = Request("free", prompt="x").turn()
    assert "system" not in default.render(x)  # the test template adds no default system turn
    assert "You are a helpful assistant." in short.render(x)
    assert "you are a speech model" in custom.render(x)
    assert default.around(x) == short.around(x) == custom.around(x)
    assert len(default.prefix_ids) < len(short.prefix_ids)


def test_response_ends_with_eos_and_fallback_template_for_base_models():
    tok = make_tokenizer()
    fmt = PromptFormat(tok)
    assert fmt.response_ids("the speech") == tok("the speech", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    tok.chat_template = None
    plain = PromptFormat(tok).render(WHAT.turn())
    assert plain.startswith(f"User: what is it\n{PLACEHOLDER}") and plain.endswith("Assistant: ")
