import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import write_store
from smap.cli import app
from smap.data.store import FeatureStore
from smap.generate import generate_audio, generate_store, generate_text, load_model, load_text_lm, request_for
from smap.llm import load_causal_lm
from smap.mapper import SpeechMapper, preset
from smap.llm import tokenizer_fingerprint
from smap.prompts import INSTRUCTIONS, SPOKEN_QUESTION, Request
from smap.speech_llm import Decoding, ModelSettings, PromptedLM, SpeechLLM

runner = CliRunner()


def _mapper(folder, llm_folder, input_dim=16, encoder="test-encoder"):
    llm, tok = load_causal_lm(str(llm_folder))
    cfg = preset("tiny", input_dim, llm.config.hidden_size)
    cfg.extra = {"llm": str(llm_folder), "tokenizer": tokenizer_fingerprint(tok), "encoder": encoder}
    torch.manual_seed(0)
    SpeechMapper(cfg).save_pretrained(folder)
    return folder


@pytest.fixture()
def model_dir(tmp_path, tiny_llama):
    mapper = SpeechMapper.from_pretrained(_mapper(tmp_path / "mapper", tiny_llama))
    llm, tok = load_causal_lm(str(tiny_llama))
    SpeechLLM(mapper, PromptedLM(llm, tok, "short"), ModelSettings(llm=str(tiny_llama), encoder="test-encoder",
                                                                     system="short")).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_store_outputs_come_back_in_order_and_do_not_depend_on_batching(tmp_path, sentences, model_dir):
    store = write_store(tmp_path / "s", sentences[:7])
    model = load_model(model_dir)
    done = []  # what a progress bar is told, batch by batch
    batched = generate_store(model, store, max_frames=10_000, decoding=Decoding(max_new_tokens=5), advance=done.append)
    assert sum(done) == 7
    done.clear()
    alone = generate_store(model, store, max_frames=1, decoding=Decoding(max_new_tokens=5), advance=done.append)
    assert done == [1] * 7  # one utterance per batch
    assert [r["id"] for r in batched] == [r["id"] for r in FeatureStore(store).records]
    assert batched == alone and all(set(r) == {"id", "task", "prompt", "output"} for r in batched)
    beams = generate_store(model, store, limit=3, decoding=Decoding(max_new_tokens=5, num_beams=2))
    assert len(beams) == 3 and beams[0]["prompt"] == INSTRUCTIONS["asr"][0]


def test_requests_come_from_options_then_records():
    rec = {"id": "a", "text": "x", "tgt_lang": "fr", "question": "Which colour?", "choices": ["red", "blue"]}
    assert request_for(rec, "st") == Request("st", "fr")
    assert request_for(rec, "st", tgt_lang="de").tgt_lang == "de"
    sqa = request_for(rec, "sqa")
    assert sqa.question.startswith("Which colour?") and "blue" in sqa.question
    assert request_for(rec, "sqa", question="Why?").question == "Why?"
    # No question anywhere: the speech is the question (tts/train-qa, tts/test-qa).
    spoken = {"id": "q", "text": "What is the capital of France?", "answer": "Paris"}
    assert request_for(spoken, "sqa") == Request("sqa") and request_for(spoken, "sqa").instruction() == SPOKEN_QUESTION
    assert request_for(spoken, "sqa", prompt="Reply in a word.").instruction() == "Reply in a word."


def test_text_only_path_is_plain_prompting_with_the_text_in_the_speech_slot(tiny_llama):
    lm = load_text_lm(str(tiny_llama), system="short")
    texts, requests = ["the speech model", "what was it that he said"], [Request("asr"), Request("free", prompt="the a of")]
    rows = generate_text(lm, ["t0", "t1"], texts, requests, decoding=Decoding(max_new_tokens=6))
    for row, text, req in zip(rows, texts, requests):
        ids = lm.tokenizer(lm.format.render(req.turn(lm.layout), speech=text), add_special_tokens=False,
                           return_tensors="pt")["input_ids"]
        # An ASR output stops at its text's tokens + asr_slack (1): 3 + 1 here, under 6.
        most = min(6, len(lm.embed_text(text)) + 1) if req.task == "asr" else 6
        stock = lm.llm.generate(ids, max_new_tokens=most, do_sample=False, eos_token_id=lm.format.eos_id,
                                pad_token_id=lm.pad_id)
        assert row["output"] == lm.tokenizer.decode(stock[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert row["task"] == req.task and row["prompt"] == req.instruction()


def test_infer_store_prints_lines_and_writes_jsonl(tmp_path, sentences, model_dir):
    store = write_store(tmp_path / "s", sentences[:3])
    out = tmp_path / "o" / "rows.jsonl"
    result = runner.invoke(app, ["infer", "--model", str(model_dir), "--store", str(store), "--out", str(out),
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["utt0000", "utt0001", "utt0002"]
    for r in rows:
        assert f"{r['id']}\t{r['output']}" in result.stdout
    assert "infer: 3/3 utterances" in result.stderr and "infer:" not in result.stdout  # progress apart from the rows


def test_stage1_mapper_with_an_llm_spec(tmp_path, sentences, tiny_llama):
    store = write_store(tmp_path / "s", sentences[:2])
    mapper = _mapper(tmp_path / "mapper", tiny_llama)
    out = tmp_path / "rows.jsonl"
    result = runner.invoke(app, ["infer", "--mapper", str(mapper), "--llm", str(tiny_llama), "--store", str(store),
                                 "--task", "free", "--prompt", "the a", "--max-new-tokens", "3",
                                 "--mixed-precision", "no", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["task"], r["prompt"]) for r in rows] == [("utt0000", "free", "the a"), ("utt0001", "free", "the a")]
    # The rows are the mapper's own outputs with that LLM, and the lines printed are the rows.
    model = load_model(mapper=mapper, llm=str(tiny_llama))
    assert rows == generate_store(model, store, task="free", prompt="the a", decoding=Decoding(max_new_tokens=3))
    assert all(r["output"].strip() for r in rows)
    assert result.stdout.splitlines() == [f"{r['id']}\t{r['output']}" for r in rows]


def test_help_explains_every_option():
    result = runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for opt in ("--model", "--mapper", "--llm", "--store", "--task", "--tgt-lang", "--question", "--prompt",
                "--num-beams", "--out", "--encoder", "--layout"):
        assert opt in result.output


@pytest.mark.parametrize("case,message", [
    ("unreadable_audio", "unreadable audio"),
    ("missing_audio", "no such audio file"),
    ("unknown_llm", "no-such-llm: not an LLM spec"),
    ("no_tgt_lang", "task 'st' needs a target language"),
    ("not_a_model", "not a smap model folder"),
    ("both_inputs", "give audio files or --store, not both"),
    ("bad_layout", "--layout must be one of quoted, instruction-first, speech-first, not 'audio-last'"),
    ("too_long_audio", "long.wav: 2.0 s > 1.5 s"),
])
def test_errors_are_one_line_nonzero_and_write_nothing(tmp_path, sentences, model_dir, tiny_llama, case, message):
    store = write_store(tmp_path / "s", sentences[:2])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt not really audio")
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(32000, np.float32), 16000)
    args = {
        "unreadable_audio": [str(bad), "--model", str(model_dir)],
        "missing_audio": [str(tmp_path / "none.wav"), "--model", str(model_dir)],
        "unknown_llm": ["--mapper", str(_mapper(tmp_path / "m", tiny_llama)), "--llm", "no-such-llm", "--store", str(store)],
        "no_tgt_lang": ["--model", str(model_dir), "--store", str(store), "--task", "st"],
        "not_a_model": ["--model", str(tmp_path), "--store", str(store)],
        "both_inputs": [str(bad), "--model", str(model_dir), "--store", str(store)],
        "bad_layout": ["--mapper", str(_mapper(tmp_path / "m", tiny_llama)), "--layout", "audio-last", "--store", str(store)],
        "too_long_audio": [str(long), "--model", str(model_dir), "--max-seconds", "1.5"],
    }[case]
    out = tmp_path / "rows.jsonl"
    result = runner.invoke(app, ["infer", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".rows.jsonl*"))


def test_audio_over_the_default_limit_is_refused_before_decoding(tmp_path, model_dir, monkeypatch):
    """`smap infer FILE` read any length: an hour-long file ran the machine out of memory. The
    limit is `smap prepare`'s, checked from the header."""
    from smap.audio import MAX_SECONDS, AudioError

    clip = tmp_path / "lecture.wav"
    sf.write(clip, np.zeros(int((MAX_SECONDS + 1) * 16000), np.float32), 16000)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a file it should refuse"))
    result = runner.invoke(app, ["infer", str(clip), "--model", str(model_dir)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert errors == [f"error: {clip}: {MAX_SECONDS + 1:.1f} s > {MAX_SECONDS:g} s"]
    with pytest.raises(AudioError, match="lecture.wav") as e:
        generate_audio(load_model(model_dir), [clip])
    assert e.value.reason == "too long"


@pytest.mark.embedded
def test_infer_on_a_clip_equals_decoding_its_stored_features(tmp_path):
    """`smap infer CLIP` gives what the same clip gives once prepared into a store."""
    from smap.audio import SAMPLE_RATE, synthesize
    from smap.llm import EMBEDDED_LLM
    from smap.prepare import PrepareConfig, prepare

    clip = tmp_path / "clip.wav"
    sf.write(clip, synthesize("open the door please").numpy(), SAMPLE_RATE)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "c", "audio": "clip.wav", "text": "open the door please"}) + "\n")
    prepare(PrepareConfig(source=str(tmp_path / "m.jsonl"), out=str(tmp_path / "store")))
    llm, tok = load_causal_lm(EMBEDDED_LLM)
    cfg = preset("tiny", 384, llm.config.hidden_size)
    cfg.extra = {"llm": EMBEDDED_LLM, "tokenizer": tokenizer_fingerprint(tok), "encoder": "whisper-tiny.en"}
    SpeechMapper(cfg).save_pretrained(tmp_path / "mapper")
    result = runner.invoke(app, ["infer", str(clip), "--mapper", str(tmp_path / "mapper"), "--system", "short",
                                 "--mixed-precision", "no", "--out", str(tmp_path / "rows.jsonl")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "rows.jsonl").read_text())
    assert row["id"] == str(clip) and row["task"] == "asr" and row["output"].strip()
    assert f"{clip}\t{row['output']}" in result.stdout
    (stored,) = generate_store(load_model(mapper=tmp_path / "mapper", system="short"), tmp_path / "store")
    assert row["output"] == stored["output"]


def _imported(path) -> set[str]:
    """Every smap module a file imports, at its top or inside a function."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("smap")}


def test_inference_and_training_sit_below_evaluation_and_stage_1():
    """Layers: evaluation is a client of inference and training, never the other way; inference and
    Stage 2 do not load the Stage-1 trainer."""
    import subprocess
    import sys
    from pathlib import Path

    import smap

    root = Path(smap.__file__).parent
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        if module.startswith("smap.evaluate") or module == "smap.cli":
            continue
        imported = _imported(path)
        assert not {n for n in imported if n.startswith("smap.evaluate")}, f"{module} imports the evaluation package"
        if module in ("smap.generate", "smap.attach", "smap.speech_llm", "smap.mapper"):
            assert "smap.pretrain" not in imported, f"{module} imports the Stage-1 trainer"
    code = ("import sys, smap.generate, smap.attach; assert 'smap.pretrain' not in sys.modules, 'pretrain'; "
            "import smap.pretrain; bad = [m for m in sys.modules if m.startswith('smap.evaluate')]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("precision, dtype", [("no", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_frozen_llm_is_loaded_in_the_precision_asked_and_the_mapper_stays_fp32(model_dir, precision, dtype):
    from smap.precision import DTYPES

    model = load_model(model_dir, dtype=DTYPES[precision])
    assert {p.dtype for p in model.lm.llm.parameters()} == {dtype}
    assert {p.dtype for p in model.mapper.parameters()} == {torch.float32}


def test_infer_and_evaluate_load_the_llm_in_the_resolved_precision(tmp_path, sentences, model_dir, monkeypatch):
    from smap import generate
    from smap.precision import resolve

    store = write_store(tmp_path / "s", sentences[:2])
    loaded = []
    real = generate.load_model
    monkeypatch.setattr(generate, "load_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    for args in (["infer", "--model", str(model_dir), "--store", str(store), "--max-new-tokens", "2"],
                 ["evaluate", "--suite", str(store), "--model", str(model_dir), "--max-new-tokens", "2",
                  "--out", str(tmp_path / "eval")]):
        auto = runner.invoke(app, args, terminal_width=400)
        assert auto.exit_code == 0, auto.output
        assert f"precision: {resolve('auto', 'cpu')}" in auto.output
        assert loaded[-1].lm.dtype == resolve("auto", "cpu").dtype
        chosen = runner.invoke(app, [*args, "--mixed-precision", "bf16"], terminal_width=400)
        assert chosen.exit_code == 0, chosen.output
        assert loaded[-1].lm.dtype == torch.bfloat16
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["systems"]["smap"]["inference"]["precision"] == "bf16"
    bad = runner.invoke(app, ["infer", "--model", str(model_dir), "--store", str(store), "--mixed-precision", "fp8"])
    assert bad.exit_code == 2 and "--mixed-precision must be one of auto, no, fp16, bf16, not 'fp8'" in bad.output
