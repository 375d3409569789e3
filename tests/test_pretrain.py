import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from conftest import write_store
from smap.cli import app
from smap.data.batching import UtteranceDataset
from smap.data.store import open_stores
from smap.llm import load_embeddings
from smap.mapper import SpeechMapper
from smap.pretrain import PretrainConfig, pretrain, token_hits

runner = CliRunner()


@pytest.fixture()
def stores(tmp_path, sentences):
    return write_store(tmp_path / "train", sentences[:32]), write_store(tmp_path / "valid", sentences[32:], seed=1)


def _args(train, valid, llm, out, steps=30, extra=()):
    return ["pretrain", "--train", str(train), "--valid", str(valid), "--llm", str(llm), "--out", str(out),
            "--preset", "tiny", "--steps", str(steps), "--warmup", "3", "--max-frames", "400",
            "--save-every", "10", "--eval-every", "1000", *extra]


def test_pretrain_writes_mapper_logs_and_report(tmp_path, stores, tiny_llama, monkeypatch):
    monkeypatch.setattr("smap.progress.LOG_EVERY_S", 0.0)
    result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=12))
    assert result.exit_code == 0, result.output
    # Not a terminal (a log): the steps are counted in plain lines as they go, with the loss once logged.
    assert "pretrain: 3/12 steps" in result.output and "12/12 steps, loss" in result.output
    mapper = SpeechMapper.from_pretrained(tmp_path / "run" / "mapper")
    assert mapper.config.input_dim == 16 and mapper.config.output_dim == 32
    assert mapper.config.extra["llm"] == str(tiny_llama) and mapper.config.extra["tokenizer"]
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())
    assert report["steps"] == 12 and report["utterances"] == 32 and "wer" in report
    assert 0 <= report["tokens_in_place"] <= report["tokens_anywhere"] <= 100
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [10, 12]
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))


def test_token_hits_tell_misplaced_words_from_missing_ones():
    ref = [5, 6, 7, 8]
    assert token_hits([5, 6, 7, 8], ref) == (4, 4)
    assert token_hits([6, 7, 8, 5], ref) == (0, 4)  # every word, none in its place
    assert token_hits([5, 5, 5, 9], ref) == (1, 1)  # a repeated token is found once
    assert token_hits([], ref) == (0, 0)


def test_training_lowers_the_loss(tmp_path, stores, tiny_llama):
    train, valid = stores
    # Same data for validation, so the check is about optimisation, not generalisation.
    cfg = PretrainConfig(out=str(tmp_path / "run"), train=[str(train)], valid=[str(train)], llm=str(tiny_llama),
                         preset="tiny", steps=60, lr=3e-3, warmup=5, max_frames=600, eval_every=1000, save_every=1000)
    pretrain(cfg)
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]


def test_loader_workers_read_the_same_batches_in_the_same_order(tmp_path, stores, tiny_llama):
    """--workers moves batch reading to other processes; the run must be the very same."""
    for workers in ("0", "2"):
        result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / workers, steps=12, extra=["--workers", workers]))
        assert result.exit_code == 0, result.output
    a = SpeechMapper.from_pretrained(tmp_path / "0" / "mapper").state_dict()
    b = SpeechMapper.from_pretrained(tmp_path / "2" / "mapper").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ce_weight_adds_the_token_cross_entropy(tmp_path, stores, tiny_llama):
    result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=10, extra=["--ce-weight", "0.01"]))
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert row["token_ce"] > 0 and row["mse"] > 0  # logged beside the MSE, so each can be followed
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())
    assert report["config"]["ce_weight"] == 0.01


def test_ctc_compression_learns_its_head_with_the_mapper_and_reloads(tmp_path, stores, tiny_llama):
    result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=10, extra=["--compress", "ctc"]))
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert row["ctc"] > 0 and row["mse"] > 0
    mapper = SpeechMapper.from_pretrained(tmp_path / "run")
    train = UtteranceDataset(open_stores([str(stores[0])]), load_embeddings(str(tiny_llama)).tokenizer)
    assert mapper.config.compress == "ctc" and mapper.config.ctc_weight == 0.05
    assert mapper.ctc_tokens.tolist() == torch.cat(train.tokens).unique().tolist()  # the training token types
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())
    assert report["config"]["compress"] == "ctc" and "wer" in report


def test_time_budget_stops_with_a_checkpoint_and_the_schedule_spent(tmp_path, stores, tiny_llama):
    train, valid = stores
    out = tmp_path / "run"
    pretrain(PretrainConfig(out=str(out), train=[str(train)], valid=[str(valid)], llm=str(tiny_llama), preset="tiny",
                            steps=100_000, warmup=1, max_frames=400, log_every=1, eval_every=1000, save_every=1000,
                            time_budget=0.05))
    report = json.loads((out / "pretrain_report.json").read_text())
    assert 0 < report["steps"] < 100_000 and report["seconds"] >= 3.0
    assert (out / "checkpoints" / f"step-{report['steps']:06d}").is_dir() and (out / "mapper").is_dir()
    lrs = [json.loads(l)["lr"] for l in (out / "log.jsonl").read_text().splitlines() if '"lr"' in l]
    assert len(lrs) == report["steps"] and lrs[-1] < 0.05 * max(lrs)  # the cosine follows the budget, not --steps


def test_cut_targets_are_counted(tmp_path, tiny_llama):
    train = write_store(tmp_path / "short", ["the a of to and in is it that was he for on are"] * 4, frames_per_word=2)
    result = runner.invoke(app, _args(train, train, tiny_llama, tmp_path / "run", steps=2))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "pretrain_report.json").read_text())["cut_utterances"] == 4
    assert "targets cut for 4 utterances" in " ".join(result.output.split())  # rich wraps at 80 columns


def test_help_explains_every_option():
    result = runner.invoke(app, ["pretrain", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for opt in ("--train", "--llm", "--preset", "--max-frames", "--alpha", "--resume", "--mixed-precision", "--grad-accum"):
        assert opt in result.output


@pytest.mark.parametrize("args,message", [
    (["--train", "nowhere"], "nowhere: not a feature store"),
    (["--llm", "missing.gguf"], "missing.gguf: no such GGUF file"),
    (["--preset", "huge"], "unknown mapper preset 'huge'"),
    (["--mixed-precision", "fp8"], "--mixed-precision must be no, fp16 or bf16"),
    (["--compress", "bpe"], "--compress must be none or ctc, not 'bpe'"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, stores, tiny_llama, args, message):
    base = {"--train": str(stores[0]), "--llm": str(tiny_llama), "--preset": "tiny", "--mixed-precision": "no"}
    base.update(dict(zip(args[::2], args[1::2])))
    cli = ["pretrain", "--out", str(tmp_path / "o"), "--steps", "1"] + [x for kv in base.items() for x in kv]
    result = runner.invoke(app, cli)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_ctc_align_without_ctc_compression_is_refused(tmp_path, stores, tiny_llama):
    result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=1, extra=["--ctc-align"]))
    assert result.exit_code == 2
    assert "--ctc-align cuts by a CTC head's alignment: it needs --compress ctc, not 'none'" in result.output
    assert not (tmp_path / "run").exists()


def _run_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "smap.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, stores, tiny_llama):
    steps = 40
    full = _run_cli(_args(*stores, tiny_llama, tmp_path / "full", steps=steps))
    assert full.wait(timeout=300) == 0, full.stdout.read().decode()

    killed = _run_cli(_args(*stores, tiny_llama, tmp_path / "killed", steps=steps))
    ckpt = tmp_path / "killed" / "checkpoints" / "step-000010"
    deadline = time.time() + 300
    while not ckpt.is_dir() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert ckpt.is_dir() and not (tmp_path / "killed" / "mapper").exists()

    resumed = _run_cli(_args(*stores, tiny_llama, tmp_path / "killed", steps=steps, extra=["--resume"]))
    out = resumed.stdout.read().decode()
    assert resumed.wait(timeout=300) == 0, out
    assert "resuming from step" in out
    a = SpeechMapper.from_pretrained(tmp_path / "full" / "mapper").state_dict()
    b = SpeechMapper.from_pretrained(tmp_path / "killed" / "mapper").state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.embedded
def test_stage1_overfits_a_small_store_of_the_embedded_default(tmp_path):
    """Real Whisper tiny.en features of eSpeak speech, SmolLM2's embeddings: a few utterances are
    learned until nearest-embedding decoding gives their transcripts back (WER below 10%)."""
    from smap.prepare import PrepareConfig, prepare

    store = tmp_path / "train"
    prepare(PrepareConfig(source="tts", split="train", out=str(store), limit=8))
    cfg = PretrainConfig(out=str(tmp_path / "run"), train=[str(store)], valid=[str(store)], llm="smollm2-135m",
                         preset="small", steps=150, lr=2e-3, warmup=20, max_frames=8000, dropout=0.0,
                         eval_every=10_000, save_every=10_000, max_valid=8)
    pretrain(cfg)
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())
    assert report["wer"] < 10, report["wer"]
