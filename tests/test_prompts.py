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


@pytest.mark.parametrize("request_,message", [
    (Request("st"), "needs a target language"),
    (Request("sqa"), "needs a question"),
    (Request("free"), "needs a prompt"),
    (Request("dictation"), "unknown task 'dictation'"),
])
def test_incomplete_requests_are_refused(request_, message):
    with pytest.raises(PromptError, match=message):
        request_.instruction()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prefix_is_shared_and_prompt_tokens_match_the_rendered_template(layout):
    fmt = PromptFormat(make_tokenizer(), system="short", layout=layout)
    rendered = fmt.render("what is it", speech="")
    assert PLACEHOLDER not in rendered and "helpful" in rendered
    # prefix + head + tail tokens are the rendered template's tokens, the speech being empty
    head, tail = fmt.around("what is it")
    assert fmt.prefix_ids + head + tail == fmt.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # the prefix depends on neither the instruction nor the layout: one cache serves every prompt
    assert PromptFormat(make_tokenizer(), "short").prefix_ids == fmt.prefix_ids
    assert fmt.around("what is it") != fmt.around("the speech")


def test_the_instruction_comes_before_the_speech_unless_told_otherwise():
    tok = make_tokenizer()
    first, speech_first = PromptFormat(tok, layout="instruction-first"), PromptFormat(tok, layout="speech-first")
    rendered = first.render("what is it", speech="SPEECH")
    assert rendered.index("what is it") < rendered.index("SPEECH")
    rendered = speech_first.render("what is it", speech="SPEECH")
    assert rendered.index("SPEECH") < rendered.index("what is it")
    assert speech_first.around("what is it")[0] == []  # nothing between prefix and speech
    assert tok.decode(first.around("what is it")[0]).strip() == "what is it"
    with pytest.raises(PromptError, match="unknown prompt layout 'audio-last'"):
        PromptFormat(tok, layout="audio-last")


def test_the_default_layout_quotes_asr_speech_and_puts_a_spoken_question_first():
    tok = make_tokenizer()
    quoted, bare = PromptFormat(tok), PromptFormat(tok, layout="instruction-first")
    assert quoted.layout == "quoted"
    for asr in INSTRUCTIONS["asr"]:
        assert f'{asr}\n"SPEECH"' in quoted.render(asr, speech="SPEECH")
        assert f"{asr}\nSPEECH" in bare.render(asr, speech="SPEECH")
    # A spoken question is a message to answer, read before the instruction (no "?" to end it).
    assert f"SPEECH\n{SPOKEN_QUESTION}" in quoted.render(SPOKEN_QUESTION, speech="SPEECH")
    assert f"{SPOKEN_QUESTION}\nSPEECH" in bare.render(SPOKEN_QUESTION, speech="SPEECH")
    # Translation, SQA and a user's own prompt are left instruction first, unquoted.
    for other in (Request("st", tgt_lang="de").instruction(), "Summarise the talk."):
        assert quoted.render(other, speech="SPEECH") == bare.render(other, speech="SPEECH")
    # The prefix is shared; the quotes are in the ids around the speech.
    assert quoted.prefix_ids == bare.prefix_ids
    assert quoted.around(INSTRUCTIONS["asr"][0]) != bare.around(INSTRUCTIONS["asr"][0])


def test_system_options_change_only_the_prefix():
    tok = make_tokenizer()
    default, short, custom = (PromptFormat(tok, s) for s in ("default", "short", "you are a speech model"))
    assert "system" not in default.render("x")  # the test template adds no default system turn
    assert "You are a helpful assistant." in short.render("x")
    assert "you are a speech model" in custom.render("x")
    assert default.around("x") == short.around("x") == custom.around("x")
    assert len(default.prefix_ids) < len(short.prefix_ids)


def test_response_ends_with_eos_and_fallback_template_for_base_models():
    tok = make_tokenizer()
    fmt = PromptFormat(tok)
    assert fmt.response_ids("the speech") == tok("the speech", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    tok.chat_template = None
    plain = PromptFormat(tok).render("what is it")
    assert plain.startswith(f"User: what is it\n{PLACEHOLDER}") and plain.endswith("Assistant: ")
