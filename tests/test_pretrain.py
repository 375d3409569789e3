import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from conftest import save_tiny_causal_lm, write_store
from smap.cli import app
from smap.data.batching import UtteranceDataset
from smap.data.store import open_stores
from smap.llm import load_embeddings
from smap.mapper import SpeechMapper
from smap.pretrain import PretrainConfig, pretrain, token_hits
from smap.training import TrainingError

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


def test_stage1_reads_the_embedding_shard_alone_and_never_the_llm(tmp_path, stores, monkeypatch):
    """Stage 1 loads the LLM's tokenizer and input embeddings, never the LLM itself (a 9B LLM would
    cost 18 GB): it trains and validates on a sharded checkpoint left with only the shard that
    holds the embedding, with every loader of a causal LM raising."""
    import transformers

    import smap.llm

    llm = save_tiny_causal_lm(tmp_path / "llm", layers=4, hidden=64, max_shard_size="100KB")
    shards = json.loads((llm / "model.safetensors.index.json").read_text())["weight_map"]
    others = set(shards.values()) - {shards["model.embed_tokens.weight"]}
    assert len(others) >= 2  # the layers and the output head are elsewhere
    for name in others:
        (llm / name).unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("Stage 1 loaded the LLM")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", refuse)
    monkeypatch.setattr(smap.llm, "load_causal_lm", refuse)
    train, valid = stores
    out = tmp_path / "run"
    pretrain(PretrainConfig(out=str(out), train=[str(train)], valid=[str(valid)], llm=str(llm), preset="tiny", steps=2,
                            warmup=1, max_frames=400, eval_every=1000, save_every=1000))
    assert SpeechMapper.from_pretrained(out / "mapper").config.output_dim == 64
    assert "wer" in json.loads((out / "pretrain_report.json").read_text())


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


def test_feature_options_are_kept_in_the_mapper_and_a_resume_refuses_other_ones(tmp_path, stores, tiny_llama):
    extra = ["--normalize", "--mask-time", "0.1", "--mask-channels", "0.05", "--dropout", "0.2"]
    result = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=10, extra=extra))
    assert result.exit_code == 0, result.output
    cfg = SpeechMapper.from_pretrained(tmp_path / "run").config
    assert (cfg.normalize, cfg.mask_time, cfg.mask_channels, cfg.dropout) == (True, 0.1, 0.05, 0.2)
    again = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "run", steps=12, extra=["--resume"]))
    assert again.exit_code == 2 and "started with another mapper" in again.output
    # A run saved before these options existed had them off, and resumes without them.
    runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "old", steps=10))
    saved = tmp_path / "old" / "mapper_config.json"
    saved.write_text(json.dumps({k: v for k, v in json.loads(saved.read_text()).items()
                                 if k not in ("normalize", "mask_time", "mask_channels")}))
    resumed = runner.invoke(app, _args(*stores, tiny_llama, tmp_path / "old", steps=12, extra=["--resume"]))
    assert resumed.exit_code == 0, resumed.output


def test_log_every_sets_the_log_rows_to_the_millisecond_and_a_resume_may_change_it(tmp_path, stores, tiny_llama):
    """--log-every N: a log.jsonl row every N steps and at the last, holding the run's seconds to the
    millisecond, so that --log-every 1 times each step. It is bookkeeping, not the model: a run
    resumed with another interval goes on, logging at the new one."""
    out = tmp_path / "run"

    def logged():
        return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"loss"' in l]

    result = runner.invoke(app, _args(*stores, tiny_llama, out, steps=6, extra=["--log-every", "1"]))
    assert result.exit_code == 0, result.output
    rows = logged()
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the default, 10, logs step 6 alone
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds) and all(s == round(s, 3) for s in seconds)
    assert any(s != round(s, 1) for s in seconds)  # milliseconds, not tenths
    resumed = runner.invoke(app, _args(*stores, tiny_llama, out, steps=11, extra=["--log-every", "4", "--resume"]))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from step 6" in resumed.output
    assert [r["step"] for r in logged()] == [1, 2, 3, 4, 5, 6, 8, 11]
    assert json.loads((out / "pretrain_report.json").read_text())["config"]["log_every"] == 4


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


def test_cut_targets_are_counted_and_a_few_allowed(tmp_path, sentences, tiny_llama, capsys):
    """One utterance in 21 (4.8%) has more tokens than the mapper outputs vectors: under
    max_cut_share (5%) the run goes on and counts it."""
    train = write_store(tmp_path / "train", sentences[:20])
    short = write_store(tmp_path / "short", ["the a of to and in is it that was he for on are"], frames_per_word=2)
    out = tmp_path / "run"
    pretrain(PretrainConfig(out=str(out), train=[str(train), str(short)], llm=str(tiny_llama), preset="tiny", steps=2,
                            warmup=1, max_frames=400, eval_every=1000, save_every=1000))
    assert json.loads((out / "pretrain_report.json").read_text())["cut_utterances"] == 1
    assert "targets cut for 1 utterances (4.8%)" in " ".join(capsys.readouterr().err.split())  # rich wraps lines


def test_too_many_cut_targets_stop_the_run_before_training(tmp_path, tiny_llama):
    """Features too slow for the mapper's 4x downsampling (as SeamlessM4T's adaptor output): refused
    in one line that names the share, the store and the fixes, before anything is written."""
    train = write_store(tmp_path / "slow", ["the a of to and in is it that was he for on are"] * 4, frames_per_word=2)
    out = tmp_path / "run"
    cfg = PretrainConfig(out=str(out), train=[str(train)], llm=str(tiny_llama), preset="tiny", steps=2, pool=2)
    with pytest.raises(TrainingError) as e:
        pretrain(cfg)
    message = str(e.value)
    assert "\n" not in message and f"--train {train}: 4 of 4 utterances (100.0%, more than --max-cut-share 0.05)" in message
    assert "(50 frames/s, 8x downsampling)" in message
    assert "--layer N" in message and "--pool 1" in message and "--compress ctc" in message
    assert not out.exists()
    cfg.max_cut_share = 1.0  # the user's call: train anyway
    pretrain(cfg)
    assert json.loads((out / "pretrain_report.json").read_text())["cut_utterances"] == 4


def test_a_tokenizer_without_pad_pads_with_eos_and_records_it(tmp_path, sentences, capsys):
    """Llama-3.1 has no pad token: the targets are padded with EOS's input embedding, and the run
    says so in its report, its mapper's config and its summary."""
    from conftest import make_tokenizer
    from smap.llm import load_causal_lm
    from smap.losses import pad_targets

    llm = save_tiny_causal_lm(tmp_path / "llama")
    tok = make_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(llm)
    emb = load_embeddings(str(llm))
    eos = emb.tokenizer.eos_token_id
    assert emb.tokenizer.pad_token_id is None and emb.pad_id == eos and emb.pad_rule.startswith("eos_token")

    model, _ = load_causal_lm(str(llm))
    table = model.get_input_embeddings().weight.float()
    assert not torch.equal(table[eos], model.get_output_embeddings().weight[eos].float())  # untied: which one matters
    tg = pad_targets([torch.tensor([4, 5])], torch.tensor([5]), emb.weight, emb.pad_id)
    assert torch.equal(tg.target[0, 2:], table[eos].expand(3, -1)) and torch.equal(tg.target[0, 0], table[4])

    train = write_store(tmp_path / "train", sentences[:8])
    out = tmp_path / "run"
    pretrain(PretrainConfig(out=str(out), train=[str(train)], llm=str(llm), preset="tiny", steps=1, warmup=1,
                            max_frames=400, eval_every=1000, save_every=1000))
    report = json.loads((out / "pretrain_report.json").read_text())
    record = {"pad_id": eos, "pad_token": "<|im_end|>", "pad_rule": "eos_token: the tokenizer has no pad token"}
    assert {k: report[k] for k in record} == record
    assert {k: SpeechMapper.from_pretrained(out / "mapper").config.extra[k] for k in record} == record
    assert "padded with <|im_end|> (id 3, the eos_token: the tokenizer has no pad token)" in " ".join(
        capsys.readouterr().err.split())


def test_help_explains_every_option():
    result = runner.invoke(app, ["pretrain", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for opt in ("--train", "--llm", "--preset", "--max-frames", "--alpha", "--resume", "--mixed-precision", "--grad-accum"):
        assert opt in result.output


@pytest.mark.parametrize("args,message", [
    (["--train", "nowhere"], "nowhere: not a feature store"),
    (["--llm", "missing.gguf"], "missing.gguf: no such GGUF file"),
    (["--preset", "huge"], "unknown mapper preset 'huge'"),
    (["--mixed-precision", "fp8"], "--mixed-precision must be one of auto, no, fp16, bf16"),
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
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []


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


def test_a_checkpoint_from_before_the_schedule_was_saved_resumes_on_schedule(tmp_path, stores, tiny_llama):
    """Checkpoints written while accelerate held the scheduler have no schedule file of their own:
    resuming one replays the schedule to its step."""
    from smap.training import SCHEDULE_FILE

    def run(out, steps, resume=False):
        pretrain(PretrainConfig(out=str(out), train=[str(stores[0])], llm=str(tiny_llama), preset="tiny", steps=steps,
                                warmup=3, max_frames=400, log_every=1, eval_every=1000, save_every=4, resume=resume))
        return {r["step"]: r["lr"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())}

    straight = run(tmp_path / "straight", 8)
    run(tmp_path / "old", 4)
    (tmp_path / "old" / "checkpoints" / "step-000004" / SCHEDULE_FILE).unlink()
    resumed = run(tmp_path / "old", 8, resume=True)
    assert [resumed[s] for s in range(5, 9)] == pytest.approx([straight[s] for s in range(5, 9)], rel=1e-9)
