import json

import pytest
import torch
import torch.nn.functional as F

from conftest import save_tiny_causal_lm
from smap.llm import LLMSpecError, load_causal_lm
from smap.losses import pad_targets, weighted_mse
from smap.mapper import SpeechMapper, preset
from smap.speech_llm import (IGNORE, Decoding, MODEL_FILE, ModelMismatchError, ModelSettings, PromptedLM, SpeechLLM,
                             read_settings, token_mixture)
from smap.llm import tokenizer_fingerprint
from smap.prompts import LAYOUTS, PromptError, Request

REQUESTS = [Request("asr"), Request("free", prompt="what is it"), Request("sqa")]
RESPONSES = ["the a of", "to and in is it that", "was"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def lm(request, tmp_path_factory) -> PromptedLM:
    folder = save_tiny_causal_lm(tmp_path_factory.mktemp(request.param), arch=request.param)
    llm, tok = load_causal_lm(str(folder))
    return PromptedLM(llm, tok, system="short")


def _contents(dim: int, lengths=(5, 9, 3), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g) for n in lengths]


def _mapper(lm: PromptedLM, **extra) -> SpeechMapper:
    cfg = preset("tiny", 16, lm.llm.config.hidden_size)
    cfg.extra = {"tokenizer": tokenizer_fingerprint(lm.tokenizer), "llm": "tiny", **extra}
    torch.manual_seed(0)
    return SpeechMapper(cfg)


def test_an_unknown_layout_is_refused_when_the_lm_is_built(lm):
    with pytest.raises(PromptError, match="--layout must be one of .*, not 'audio-last'"):
        PromptedLM(lm.llm, lm.tokenizer, layout="audio-last")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pad_left", [False, True])
def test_speech_vectors_sit_exactly_at_the_placeholder(lm, pad_left, layout):
    lm = PromptedLM(lm.llm, lm.tokenizer, "short", layout=layout)
    contents = _contents(lm.llm.config.hidden_size)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    responses = [lm.format.response_ids(r) for r in RESPONSES]
    a = lm.assemble(contents, prompts, responses, pad_left=pad_left)
    for b, content in enumerate(contents):
        (head, tail), s, n = prompts[b], int(a.content_start[b]), len(content)
        tokens = tail + responses[b]
        assert torch.equal(a.embeds[b, s : s + n], content)  # bit-exact speech vectors
        assert torch.equal(a.embeds[b, s - len(head) : s], lm.embed(head))
        assert torch.equal(a.embeds[b, s + n : s + n + len(tokens)], lm.embed(tokens))
        real = a.mask[b].bool()
        assert int(real.sum()) == len(head) + n + len(tokens) and bool(real[s - len(head) : s + n + len(tokens)].all())
        assert not a.embeds[b][~real].any()  # padding is zeros
        assert (s == len(head)) != pad_left or a.embeds.shape[1] == len(head) + n + len(tokens)


def test_labels_cover_the_response_and_nothing_else(lm):
    contents = _contents(lm.llm.config.hidden_size)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    responses = [lm.format.response_ids(r) for r in RESPONSES]
    a = lm.assemble(contents, prompts, responses)
    for b in range(len(contents)):
        labelled = (a.labels[b] != IGNORE).nonzero().flatten()
        start = len(prompts[b][0]) + len(contents[b]) + len(prompts[b][1])
        assert labelled.tolist() == list(range(start, start + len(responses[b])))
        assert a.labels[b, labelled].tolist() == responses[b]
        assert responses[b][-1] == lm.tokenizer.eos_token_id


def _reference_ce(lm: PromptedLM, contents, prompts, responses) -> torch.Tensor:
    """One example at a time, whole prompt through the stock forward, no padding, no cache."""
    total, count = 0.0, 0
    for content, (head, tail), response in zip(contents, prompts, responses):
        seq = torch.cat([lm.embed(lm.format.prefix_ids + head), content, lm.embed(tail + response)])[None]
        logits = lm.llm(inputs_embeds=seq).logits[0]
        r = len(response)
        total += F.cross_entropy(logits[-r - 1 : -1], torch.tensor(response), reduction="sum")
        count += r
    return total / count


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prefix_cache_and_label_logits_give_the_full_forwards_loss(lm, layout):
    lm = PromptedLM(lm.llm, lm.tokenizer, "short", layout=layout)
    contents = _contents(lm.llm.config.hidden_size)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    responses = [lm.format.response_ids(r) for r in RESPONSES]
    reference = _reference_ce(lm, contents, prompts, responses)
    for cache in (True, False):
        for at_labels in (True, False):
            lm.use_prefix_cache, lm.logits_at_labels = cache, at_labels
            ce, n = lm.response_loss(contents, prompts, responses)
            assert n == sum(map(len, responses))
            assert abs(float(ce) - float(reference)) < 1e-5, (cache, at_labels)


@pytest.mark.parametrize("beams", [1, 3])
def test_batched_cached_generation_matches_one_at_a_time_uncached(lm, beams):
    contents = _contents(lm.llm.config.hidden_size, seed=1)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    lm.use_prefix_cache = True
    batched = lm.generate(contents, prompts, Decoding(max_new_tokens=6, num_beams=beams))
    lm.use_prefix_cache = False
    alone = [lm.generate([c], [s], Decoding(max_new_tokens=6, num_beams=beams))[0] for c, s in zip(contents, prompts)]
    lm.use_prefix_cache = True
    assert batched == alone and any(batched)


@pytest.mark.parametrize("beams", [1, 3])
def test_each_row_stops_at_its_own_limit_as_if_decoded_alone(lm, beams):
    contents = _contents(lm.llm.config.hidden_size, seed=3)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    limits = [2, 7, 4]
    batched = lm.generate(contents, prompts, Decoding(max_new_tokens=7, num_beams=beams), limits)
    alone = [lm.generate([c], [p], Decoding(max_new_tokens=n, num_beams=beams))[0]
             for c, p, n in zip(contents, prompts, limits)]
    assert batched == alone
    assert [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) <= n for t, n in zip(batched, limits)] == [True] * 3
    assert len(set(map(len, batched))) > 1


def test_no_repeat_ngram_stops_the_loops_of_greedy_decoding(lm, monkeypatch):
    outputs = []  # the generated ids, seen on their way out of the LLM's generate()
    real = lm.llm.generate
    monkeypatch.setattr(lm.llm, "generate", lambda *a, **k: outputs.append(real(*a, **k)) or outputs[-1])

    def loops(ids: torch.Tensor) -> bool:  # some bigram twice
        pairs = [p for p in zip(ids.tolist(), ids[1:].tolist()) if lm.format.eos_id not in p and lm.pad_id not in p]
        return len(pairs) != len(set(pairs))

    contents = _contents(lm.llm.config.hidden_size, seed=2)
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    lm.generate(contents, prompts, Decoding(max_new_tokens=40))
    guarded = lm.generate(contents, prompts, Decoding(max_new_tokens=40, no_repeat_ngram=2))
    assert any(map(loops, outputs[0]))  # a random tiny LM loops, as a weakly attached one does
    assert not any(map(loops, outputs[1])) and all(guarded)


def test_gradients_reach_the_mapper_only_and_ce_plus_mse_adds_the_stage1_loss(lm):
    model = SpeechLLM(_mapper(lm), lm, ModelSettings(llm="tiny"))
    g = torch.Generator().manual_seed(0)
    features, lengths = torch.randn(3, 40, 16, generator=g), torch.tensor([40, 28, 33])
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    responses = [lm.format.response_ids(r) for r in RESPONSES]
    tokens = [torch.tensor([4, 5, 6]), torch.tensor([], dtype=torch.long), torch.tensor([7, 8])]
    ce_only, logs = model(features, lengths, prompts, responses)
    both, logs2 = model(features, lengths, prompts, responses, tokens, mse_weight=0.5)
    # the MSE is Stage 1's, over the rows that have a transcript
    emb, out_len, _ = model.mapper(features, lengths)
    tg = pad_targets([tokens[0], tokens[2]], out_len[[0, 2]], lm.llm.get_input_embeddings().weight, lm.pad_id)
    mse = float(weighted_mse(emb[[0, 2]], tg.target, tg.weight).detach())
    assert abs(float(both.detach()) - (float(ce_only.detach()) + 0.5 * mse)) < 1e-5 and logs2["mse"] == pytest.approx(mse)
    both.backward()
    assert all(p.grad is not None for p in model.mapper.parameters())
    assert all(p.grad is None and not p.requires_grad for p in lm.llm.parameters())
    assert [n for n, _ in model.named_parameters()] == [f"mapper.{n}" for n, _ in model.mapper.named_parameters()]


def test_a_ctc_mapper_keeps_training_its_ctc_head_in_attach_at_its_own_weight(lm):
    cfg = preset("tiny", 16, lm.llm.config.hidden_size, compress="ctc", ctc_labels=3, ctc_weight=0.5,
                 extra={"tokenizer": tokenizer_fingerprint(lm.tokenizer), "llm": "tiny"})
    torch.manual_seed(0)
    mapper = SpeechMapper(cfg)
    mapper.set_ctc_tokens(torch.tensor([4, 5, 7]))
    model = SpeechLLM(mapper, lm, ModelSettings(llm="tiny"))
    features, lengths = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([40, 28, 33])
    prompts = [lm.prompt_ids(r) for r in REQUESTS]
    responses = [lm.format.response_ids(r) for r in RESPONSES]
    tokens = [torch.tensor([4, 5, 6]), torch.tensor([], dtype=torch.long), torch.tensor([7, 8])]
    ce_only, logs = model(features, lengths, prompts, responses)  # no transcripts: no CTC
    with_ctc, logs2 = model(features, lengths, prompts, responses, tokens)  # mse_weight 0: CE + CTC
    ctc = float(mapper(features, lengths, tokens).ctc_loss.detach())
    assert "ctc" not in logs and logs2["ctc"] == pytest.approx(ctc)
    assert float(with_ctc.detach()) == pytest.approx(float(ce_only.detach()) + 0.5 * ctc, abs=1e-5)
    with_ctc.backward()
    assert mapper.ctc_head.weight.grad.abs().sum() > 0


def test_a_sharp_token_mixture_is_the_nearest_tokens_up_to_the_first_pad():
    g = torch.Generator().manual_seed(0)
    table, pad = torch.randn(20, 8, generator=g), 2
    vocab = torch.tensor([2, 3, 5, 7, 11])
    # shrunken, noisy versions of tokens 3, 5, pad, 7 (the mapper's averaged outputs), and of 11, 11
    said = [torch.tensor([3, 5, 2, 7]), torch.tensor([11, 11])]
    vectors = [(0.4 * table[ids] + 0.05 * torch.randn(len(ids), 8, generator=g)).requires_grad_() for ids in said]
    sharp = token_mixture(vectors, table, vocab, pad, sharpness=1e4)
    assert [len(m) for m in sharp] == [2, 2]  # the first vector read as the pad ends the speech
    assert torch.allclose(sharp[0], table[[3, 5]], atol=1e-4) and torch.allclose(sharp[1], table[[11, 11]], atol=1e-4)
    flat = token_mixture(vectors, table, vocab, pad, sharpness=0.0)[1]  # no sharpness: the mean of the vocabulary
    assert torch.allclose(flat, table[vocab].mean(0).expand(2, -1), atol=1e-6)
    # gradients reach the mapper's vectors through a softer mixture, never the frozen table
    soft = token_mixture(vectors, table.requires_grad_(), vocab, pad, sharpness=5.0)
    soft[0].sum().backward()
    assert vectors[0].grad[:2].abs().sum() > 0 and not vectors[0].grad[2:].any() and table.grad is None


def test_a_token_mix_model_feeds_the_llm_mixtures_over_its_ctc_token_types(lm):
    cfg = preset("tiny", 16, lm.llm.config.hidden_size, compress="ctc", ctc_labels=3,
                 extra={"tokenizer": tokenizer_fingerprint(lm.tokenizer), "llm": "tiny"})
    torch.manual_seed(0)
    mapper = SpeechMapper(cfg)
    mapper.set_ctc_tokens(torch.tensor([4, 5, 7]))
    table = lm.llm.get_input_embeddings().weight
    with torch.no_grad():  # a mapper that says token 5, give or take, rather than the pad at once
        mapper.proj.weight.mul_(0.01)
        mapper.proj.bias.copy_(3 * table[5])
    features, lengths = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([40, 28])
    plain = SpeechLLM(mapper, lm, ModelSettings(llm="tiny"))
    mixed = SpeechLLM(mapper, lm, ModelSettings(llm="tiny", token_mix=100.0))
    vectors, _ = plain.speech_contents(features, lengths)
    contents, _ = mixed.speech_contents(features, lengths)
    assert mixed.mix_vocab.tolist() == sorted({4, 5, 7, lm.pad_id})
    assert [len(c) for c in contents] == [len(v) for v in vectors] and all(len(c) for c in contents)
    assert all(torch.equal(c, m) for c, m in zip(token_mixture(vectors, table, mixed.mix_vocab, lm.pad_id, 100.0), contents))
    assert torch.allclose(contents[0], table[5].expand_as(contents[0]), atol=1e-3)  # the LLM reads token 5
    prompts = [lm.prompt_ids(r) for r in REQUESTS[:2]]
    responses = [lm.format.response_ids(r) for r in RESPONSES[:2]]
    loss, _ = SpeechLLM(mapper, lm, ModelSettings(llm="tiny", token_mix=5.0))(features, lengths, prompts, responses)
    loss.backward()
    assert mapper.proj.weight.grad.abs().sum() > 0


def test_mismatched_mapper_is_refused_naming_both_sides(lm):
    wrong_dim = SpeechMapper(preset("tiny", 16, 48))
    with pytest.raises(ModelMismatchError, match=r"48-d vectors but tiny-llm takes 32-d"):
        SpeechLLM(wrong_dim, lm, ModelSettings(llm="tiny-llm"))
    ours = tokenizer_fingerprint(lm.tokenizer)
    other = _mapper(lm, tokenizer="0123456789abcdef", vocab_size=50000, llm="other-llm")
    with pytest.raises(ModelMismatchError) as e:
        SpeechLLM(other, lm, ModelSettings(llm="tiny-llm"))
    assert "other-llm (50000 tokens, fingerprint 0123456789abcdef)" in str(e.value)
    assert f"tiny-llm has {len(lm.tokenizer)} tokens, fingerprint {ours}" in str(e.value)


def test_model_folder_round_trip(tmp_path, tiny_llama):
    llm, tok = load_causal_lm(str(tiny_llama))
    lm = PromptedLM(llm, tok, system="short")
    settings = ModelSettings(llm=str(tiny_llama), encoder="test-encoder", system="short", layout="speech-first",
                             token_mix=30.0, provenance={"stage": 2})
    model = SpeechLLM(_mapper(lm), lm, settings)
    model.save_pretrained(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert manifest["llm"] == str(tiny_llama) and manifest["encoder"] == "test-encoder" and manifest["system"] == "short"
    again = SpeechLLM.from_pretrained(tmp_path / "m")
    assert again.settings == settings and again.lm.format.prefix_ids == lm.format.prefix_ids
    assert again.lm.layout == "speech-first"  # decoded with the layout it was trained with
    # a folder from before layouts were recorded was trained speech-first, on the mapper's vectors
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("layout", "token_mix")}))
    assert read_settings(tmp_path / "m").layout == "speech-first"
    assert read_settings(tmp_path / "m").token_mix == 0.0
    assert ModelSettings(llm="x").layout == "quoted"
    for (n, p), (_, q) in zip(model.mapper.state_dict().items(), again.mapper.state_dict().items()):
        assert torch.equal(p, q), n
    with pytest.raises(FileNotFoundError, match="not a smap model folder"):
        read_settings(tmp_path)


def test_stage1_mapper_attaches_to_its_llm_and_unknown_specs_fail(tmp_path, tiny_llama):
    llm, tok = load_causal_lm(str(tiny_llama))
    mapper = _mapper(PromptedLM(llm, tok), llm=str(tiny_llama), encoder="test-encoder")
    mapper.save_pretrained(tmp_path / "mapper")
    model = SpeechLLM.from_mapper(tmp_path / "mapper")
    assert model.settings.llm == str(tiny_llama.resolve()) and model.settings.encoder == "test-encoder"
    with pytest.raises(LLMSpecError, match="no-such-llm: not an LLM spec"):
        SpeechLLM.from_mapper(tmp_path / "mapper", llm="no-such-llm")
