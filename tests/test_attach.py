import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import write_store
from smap.attach import AttachConfig, MixedBatchSampler, Stage2, attach, heldout_ce, task_of
from smap.cli import app
from smap.data.batching import BucketBatchSampler, UtteranceDataset, collate
from smap.data.store import FeatureStore, StoreWriter
from smap.llm import load_causal_lm
from smap.mapper import SpeechMapper, preset
from smap.llm import tokenizer_fingerprint
from smap.prompts import INSTRUCTIONS, Request
from smap.speech_llm import MODEL_FILE, ModelSettings, SpeechLLM

runner = CliRunner()


def save_mapper(folder, llm_folder, input_dim=16, output_dim=32, encoder="test-encoder"):
    _, tok = load_causal_lm(str(llm_folder))
    cfg = preset("tiny", input_dim, output_dim)
    cfg.extra = {"llm": str(llm_folder), "tokenizer": tokenizer_fingerprint(tok), "encoder": encoder,
                 "pad_id": tok.pad_token_id}
    torch.manual_seed(0)
    SpeechMapper(cfg).save_pretrained(folder)
    return folder


def write_sqa_store(folder, sentences, dim=16, question="what is it"):
    """SQA records answered by their first word; question=None: spoken questions (no text question)."""
    g = torch.Generator().manual_seed(2)
    with StoreWriter(folder, encoder="test-encoder", dim=dim, frame_rate=50.0) as w:
        for i, text in enumerate(sentences):
            n = 12 * len(text.split())
            w.add({"id": f"q{i:03d}", "text": text, "duration": n / 50, "answer": text.split()[0],
                   **({"question": question} if question else {})}, torch.randn(n, dim, generator=g))
    return folder


@pytest.fixture()
def setup(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:24])
    valid = write_store(tmp_path / "valid", sentences[32:36], seed=1)
    return train, valid, save_mapper(tmp_path / "mapper", tiny_llama)


def _cfg(tmp_path, train, valid, mapper, **kw):
    base = dict(out=str(tmp_path / "run"), mapper=str(mapper), train=[str(train)], valid=[str(valid)], steps=4,
                lr=3e-3, warmup=1, max_frames=300, save_every=1000, eval_every=1000, log_every=1, show=2)
    return AttachConfig(**{**base, **kw})


def test_attach_trains_the_mapper_only_and_writes_a_whole_model_folder(tmp_path, setup, tiny_llama, monkeypatch):
    train, valid, mapper = setup
    built = []
    build = SpeechLLM.build.__func__
    monkeypatch.setattr(SpeechLLM, "build", classmethod(lambda cls, *a, **k: built.append(build(cls, *a, **k)) or built[-1]))
    out = attach(_cfg(tmp_path, train, valid, mapper, save_every=2, eval_at_start=True))
    # the frozen LLM, as it was in memory at the end, is bit-identical to the checkpoint on disk
    fresh, _ = load_causal_lm(str(tiny_llama))
    trained = built[0].lm.llm.state_dict()
    assert all(torch.equal(trained[k].cpu(), v) for k, v in fresh.state_dict().items())  # on a GPU, trained is there
    # the mapper moved, and checkpoints hold the mapper alone
    before, after = SpeechMapper.from_pretrained(mapper), SpeechMapper.from_pretrained(out / "mapper")
    assert all(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters()))
    saved = load_file(str(out / "checkpoints" / "step-000004" / "model.safetensors"))
    assert set(saved) == {f"mapper.{k}" for k in before.state_dict()}
    manifest = json.loads((out / MODEL_FILE).read_text())
    assert manifest["llm"] == str(tiny_llama.resolve()) and manifest["encoder"] == "test-encoder"
    assert manifest["provenance"]["steps"] == 4
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {"id", "prompt", "output", "reference", "ce"} <= set(samples[0])  # at 0 and 4
    report = json.loads((out / "attach_report.json").read_text())
    assert report["initial_ce"] == samples[0]["ce"] and report["ce"] == samples[-1]["ce"]


def test_validation_logs_the_heldout_wer_of_the_greedy_transcripts(tmp_path, setup):
    from smap.text import wer

    train, valid, mapper = setup
    out = attach(_cfg(tmp_path, train, valid, mapper, steps=2, eval_every=2, eval_at_start=True, valid_decode=4, show=4))
    logged = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "valid_ce" in r]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 2] and len(samples) == 8
    for k, row in enumerate(logged):  # the WER logged is that of the decodings written beside it
        shown = samples[4 * k : 4 * k + 4]
        assert row["valid_wer"] == pytest.approx(wer([s["reference"] for s in shown], [s["output"] for s in shown]))
        assert all(s["wer"] == row["valid_wer"] for s in shown)
    quiet = attach(_cfg(tmp_path, train, valid, mapper, out=str(tmp_path / "quiet"), steps=1, valid_decode=0, show=0))
    assert not any("valid_wer" in r for r in map(json.loads, (quiet / "log.jsonl").read_text().splitlines()))


def test_ce_plus_mse_adds_the_weighted_stage1_loss(tmp_path, setup):
    train, valid, mapper = setup
    logs = {}
    for w in (0.0, 2.0):
        out = attach(_cfg(tmp_path / f"w{w}", train, valid, mapper, steps=1, mse_weight=w, show=0))
        logs[w] = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "mse" not in logs[0.0] and logs[0.0]["loss"] == pytest.approx(logs[0.0]["ce"])
    assert logs[2.0]["ce"] == pytest.approx(logs[0.0]["ce"])  # same first batch, same start
    assert logs[2.0]["loss"] == pytest.approx(logs[2.0]["ce"] + 2.0 * logs[2.0]["mse"], rel=1e-5)
    assert logs[2.0]["mse"] > 0


def test_bf16_mixed_precision_runs_the_llm_in_bf16_and_keeps_the_mapper_fp32(tmp_path, setup, monkeypatch,
                                                                             fresh_accelerate_state):
    train, valid, mapper = setup
    built = []
    build = SpeechLLM.build.__func__
    monkeypatch.setattr(SpeechLLM, "build", classmethod(lambda cls, *a, **k: built.append(build(cls, *a, **k)) or built[-1]))
    out = attach(_cfg(tmp_path, train, valid, mapper, steps=2, mixed_precision="bf16", show=0))
    assert built[0].lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in SpeechMapper.from_pretrained(out / "mapper").parameters())
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    # asked for on a CPU: kept, and the run says what it costs there where bf16 is not native
    from smap.precision import resolve

    assert json.loads((out / "attach_report.json").read_text())["precision"] == resolve("bf16", "cpu").record()


def test_auto_precision_is_resolved_by_the_cpu_and_recorded(tmp_path, setup, monkeypatch, fresh_accelerate_state):
    from smap.precision import resolve

    train, valid, mapper = setup
    built = []
    build = SpeechLLM.build.__func__
    monkeypatch.setattr(SpeechLLM, "build", classmethod(lambda cls, *a, **k: built.append(build(cls, *a, **k)) or built[-1]))
    out = attach(_cfg(tmp_path, train, valid, mapper, steps=1, show=0))  # the default: auto
    expected = resolve("auto", "cpu")
    assert built[0].lm.dtype == expected.dtype
    for report in ("attach_report.json", "attach_config.json"):
        assert json.loads((out / report).read_text())["precision"] == expected.record()


def test_asr_mix_interleaves_asr_batches_with_the_asked_probability():
    task = BucketBatchSampler([10] * 200, 20, seed=0)  # 100 task batches of 2
    asr = BucketBatchSampler([10] * 30, 20, seed=1)
    for p in (0.0, 0.25, 0.5):
        batches = MixedBatchSampler(task, asr, p, offset=200).batches(0)
        share = sum(b[0] >= 200 for b in batches) / len(batches)
        assert share == pytest.approx(p, abs=0.01)
        assert sorted(i for b in batches if b[0] < 200 for i in b) == list(range(200))  # every task item once
    with pytest.raises(ValueError, match=r"--asr-mix must be in \[0, 1\)"):
        MixedBatchSampler(task, asr, 1.0, offset=200)


def test_task_mode_prompts_the_task_and_the_asr_mix_prompts_transcription(tmp_path, sentences, tiny_llama):
    sqa = write_sqa_store(tmp_path / "sqa", sentences[:8])
    mapper = save_mapper(tmp_path / "mapper", tiny_llama)
    out = attach(_cfg(tmp_path, sqa, sqa, mapper, mode="task", asr_mix=0.5, steps=2, show=1))
    cfg = json.loads((out / "attach_config.json").read_text())["config"]
    assert cfg["mode"] == "task" and cfg["asr_mix"] == 0.5
    # the loss sees SQA prompts for task items and transcription prompts for the mixed-in ones
    model = SpeechLLM.from_pretrained(out)
    data = UtteranceDataset([FeatureStore(sqa)] * 2, model.lm.tokenizer)
    sampler = BucketBatchSampler(data.lengths, 10_000)
    stage = Stage2(model, AttachConfig(out="x", mode="task"), data, 8, sampler)
    prompts, responses = stage.prompts(collate([data[3], data[8 + 3]]), phrasing=0)
    decode = model.lm.tokenizer.decode
    assert "what is it" in decode(prompts[0][0]) and "what is it" not in decode(prompts[1][0])  # instruction first
    assert decode(responses[0][:-1]) == sentences[3].split()[0] and decode(responses[1][:-1]) == sentences[3]
    assert task_of(data.records[3]) == "sqa" and stage.task(3) == "sqa" and stage.task(11) == "asr"


def test_task_mode_on_spoken_questions_asks_the_evaluation_instruction(tmp_path, sentences, tiny_llama):
    qa = write_sqa_store(tmp_path / "qa", sentences[:8], question=None)
    out = attach(_cfg(tmp_path, qa, qa, save_mapper(tmp_path / "mapper", tiny_llama), mode="task", asr_mix=0.5,
                      steps=2, show=1))
    model = SpeechLLM.from_pretrained(out)
    data = UtteranceDataset([FeatureStore(qa)] * 2, model.lm.tokenizer)
    stage = Stage2(model, AttachConfig(out="x", mode="task"), data, 8, BucketBatchSampler(data.lengths, 10_000))
    # Any phrasing drawn: the question is the speech, asked as tts/test-qa asks it.
    prompts, responses = stage.prompts(collate([data[2], data[8 + 2]]))
    decode = model.lm.tokenizer.decode
    assert prompts[0] == model.lm.prompt_ids(Request("sqa")) and prompts[1] != prompts[0]
    assert decode(responses[0][:-1]) == sentences[2].split()[0] and decode(responses[1][:-1]) == sentences[2]


def test_phrasings_limits_the_instructions_drawn_in_training(tmp_path, setup, tiny_llama):
    train, _, mapper = setup
    model = SpeechLLM.build(SpeechMapper.from_pretrained(mapper), ModelSettings(llm=str(tiny_llama)))
    data = UtteranceDataset([FeatureStore(train)], model.lm.tokenizer)
    batch = collate([data[i] for i in range(len(data))])

    def heads(phrasings):
        stage = Stage2(model, AttachConfig(out="x", phrasings=phrasings), data, len(data), BucketBatchSampler(data.lengths, 10_000))
        return {model.lm.tokenizer.decode(head) for head, _ in stage.prompts(batch)[0]}

    def only(n):
        return {model.lm.tokenizer.decode(model.lm.prompt_ids(Request("asr"), k)[0]) for k in range(n)}

    n = len(INSTRUCTIONS["asr"])
    assert len(only(n)) == n  # the tiny tokenizer tells them apart
    assert heads(1) == only(1)
    assert heads(2) == only(2)
    assert heads(0) == only(n)  # 24 draws cover all six


def test_resume_continues_and_refuses_another_mapper(tmp_path, setup, tiny_llama):
    train, valid, mapper = setup
    attach(_cfg(tmp_path, train, valid, mapper, steps=2, save_every=2, show=0))
    # the log interval is bookkeeping, not the run's identity: a resume may change it
    attach(_cfg(tmp_path, train, valid, mapper, steps=5, save_every=2, show=0, resume=True, log_every=2))
    steps = [r["step"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 4, 5]
    other = save_mapper(tmp_path / "other", tiny_llama)
    with pytest.raises(ValueError, match="started with another mapper"):
        attach(_cfg(tmp_path, train, valid, other, steps=4, resume=True))
    with pytest.raises(ValueError, match="started with another mapper.*--token-mix"):
        attach(_cfg(tmp_path, train, valid, mapper, steps=4, resume=True, token_mix=100.0))
    # a run saved before --token-mix existed read the vectors, and resumes as such
    saved = tmp_path / "run" / "attach_config.json"
    config = json.loads(saved.read_text())
    del config["identity"]["token_mix"]
    saved.write_text(json.dumps(config))
    attach(_cfg(tmp_path, train, valid, mapper, steps=6, save_every=2, show=0, resume=True))


def test_log_every_on_the_command_line_sets_the_log_rows(tmp_path, setup):
    train, _, mapper = setup
    out = tmp_path / "o"
    result = runner.invoke(app, ["attach", "--mapper", str(mapper), "--train", str(train), "--out", str(out),
                                 "--steps", "3", "--max-frames", "300", "--warmup", "1", "--save-every", "1000",
                                 "--log-every", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # every 2 steps and the last; the default, 10, logs step 3 alone
    assert all(r["seconds"] == round(r["seconds"], 3) for r in rows)
    assert json.loads((out / "attach_report.json").read_text())["config"]["log_every"] == 2


def test_token_mix_trains_through_the_mixture_and_is_recorded(tmp_path, setup):
    train, valid, mapper = setup
    out = attach(_cfg(tmp_path, train, valid, mapper, token_mix=50.0, eval_at_start=True))
    assert json.loads((out / MODEL_FILE).read_text())["token_mix"] == 50.0
    model = SpeechLLM.from_pretrained(out)
    assert model.settings.token_mix == 50.0  # `smap infer --model` and `evaluate` read mixtures too
    before, after = SpeechMapper.from_pretrained(mapper), model.mapper
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters()))


def test_help_explains_every_option():
    result = runner.invoke(app, ["attach", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for opt in ("--mapper", "--mode", "--llm", "--asr-mix", "--mse-weight", "--system", "--layout", "--resume",
                "--mixed-precision", "--grad-accum", "--max-frames", "--valid"):
        assert opt in result.output


@pytest.mark.parametrize("change,message", [
    ({"--llm": "no-such-llm"}, "no-such-llm: not an LLM spec"),
    ({"mapper_dim": 48}, "the mapper outputs 48-d vectors but"),
    ({"mapper_input": 24}, "features of dim 16, the mapper takes 24"),
    ({"--mode": "task"}, "hold no ST (translation) or SQA"),
    ({"--mode": "chat"}, "--mode must be asr or task"),
    ({"--layout": "audio-last"}, "--layout must be one of quoted, instruction-first, speech-first, not 'audio-last'"),
])
def test_bad_input_is_one_line_nonzero_and_writes_no_model(tmp_path, setup, tiny_llama, change, message):
    train, valid, _ = setup
    mapper = save_mapper(tmp_path / "m2", tiny_llama, input_dim=change.get("mapper_input", 16),
                         output_dim=change.get("mapper_dim", 32))
    args = {"--mapper": str(mapper), "--train": str(train), "--out": str(tmp_path / "o"), "--steps": "1",
            **{k: v for k, v in change.items() if k.startswith("--")}}
    result = runner.invoke(app, ["attach", *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "o" / MODEL_FILE).exists()


# -- the embedded default ---------------------------------------------------------------------

TRAIN = ["the cat sat on the mat", "open the door please", "it is raining today", "we like green apples",
         "the dog runs fast", "please close the window", "my friend reads books", "the sun is hot",
         "birds sing in the morning", "she drinks cold water", "he walks to school", "the car is red"]
HELD_OUT = ["the bird drinks water", "we walk in the morning", "my dog likes the sun", "open the red book"]


def encoded_store(folder, texts, voice="en-us"):
    from smap.audio import synthesize
    from smap.encoders import load_encoder

    enc = load_encoder("whisper-tiny.en")
    feats = enc.encode([synthesize(t, voice) for t in texts])
    with StoreWriter(folder, encoder=enc.name, dim=enc.dim, frame_rate=enc.frame_rate) as w:
        for i, (t, f) in enumerate(zip(texts, feats)):
            w.add({"id": f"e{i:02d}", "text": t, "duration": len(f) / enc.frame_rate}, f)
    return folder


@pytest.mark.embedded
def test_attaching_a_pretrained_mapper_lowers_heldout_ce(tmp_path):
    from smap.pretrain import PretrainConfig, pretrain

    train = encoded_store(tmp_path / "train", TRAIN)
    held = encoded_store(tmp_path / "held", HELD_OUT, voice="en-us+f2")
    mapper = pretrain(PretrainConfig(out=str(tmp_path / "pre"), train=[str(train)], llm="smollm2-135m",
                                     preset="tiny", steps=5, lr=3e-3, warmup=1, max_frames=2000,
                                     save_every=1000, eval_every=1000))
    stage1 = SpeechLLM.from_mapper(mapper, system="short")
    data = UtteranceDataset([FeatureStore(held)], stage1.lm.tokenizer)
    before = heldout_ce(stage1, data, 2000)
    out = attach(AttachConfig(out=str(tmp_path / "att"), mapper=str(mapper), train=[str(train)], system="short",
                              steps=5, lr=3e-3, warmup=1, max_frames=250, save_every=1000, eval_every=1000, show=0,
                              mse_weight=0.1))
    attached = SpeechLLM(SpeechMapper.from_pretrained(out / "mapper"), stage1.lm, stage1.settings)
    after = heldout_ce(attached, data, 2000)
    assert after < before - 0.2, (before, after)
