"""Fault injection: bad input, damaged stores, mismatches, full disks, NaN losses, kills, fuzzed parsers.

Each case asserts what a user relies on: the command either does the right thing or stops with one
`error:` line (exit 2, no traceback), and no finished checkpoint or shard is lost. Cases already
covered elsewhere are not repeated here: unreadable/missing/empty/silent/too-long audio and
SIGKILL of prepare (test_prepare), corrupt shards in a FeatureStore (test_store), SIGKILL of
pretrain (test_pretrain), encoder-dim and bad-spec refusals at attach (test_attach).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_attach import save_mapper  # tests/ is on sys.path: its conftest.py has no package
from test_prepare import skips, tiny_encoder  # noqa: F401  (a fixture)
from typer.testing import CliRunner

from conftest import child_env, write_store
from smap.audio import AudioError, synthesize
from smap.cli import app
from smap.data.sources import SourceError, open_source
from smap.data.store import FeatureStore, StoreWriter
from smap.encoders import EncoderError, parse_spec
from smap.llm import LLMSource, LLMSpecError, resolve
from smap.mapper import SpeechMapper, preset
from smap.speech_llm import MODEL_FILE
from smap.training import checkpoints

runner = CliRunner()


def one_line_error(result, *needles: str) -> str:
    """Exit 2, exactly one `error:` line holding every needle, and no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def ok(result):
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return result


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return SpeechMapper.from_pretrained(folder).state_dict()


def _differing(a: dict, b: dict) -> list[str]:
    """The tensors of two state dicts that are not bit for bit the same (a resumed run must have none)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


# -- audio and manifests through `smap prepare` --------------------------------------------------

def test_prepare_resamples_downmixes_and_names_every_bad_row(tmp_path, tiny_encoder):
    d = tmp_path / "d"
    d.mkdir()
    speech = synthesize("the cat sat on the mat").numpy()  # 16 kHz mono
    seconds = len(speech) / 16000
    sf.write(d / "mono.wav", speech, 16000)
    sf.write(d / "stereo.wav", np.stack([speech, speech], 1), 16000)  # the same voice on both channels
    sf.write(d / "quad.wav", np.stack([speech] * 4, 1), 16000)
    sf.write(d / "phone.wav", synthesize("the cat sat on the mat", sr=8000).numpy(), 8000)
    sf.write(d / "cd.flac", np.stack([synthesize("the cat sat on the mat", sr=44100).numpy()] * 2, 1), 44100)
    sf.write(d / "silent51.wav", np.zeros((44100, 6), np.float32), 44100)  # 5.1 digital silence
    sf.write(d / "long.wav", speech, 16000)
    whole = (d / "long.wav").read_bytes()
    (d / "truncated.wav").write_bytes(whole[: len(whole) // 2])  # header says 2 s, half the data is there
    sf.write(d / "full.flac", speech, 16000)
    flac = (d / "full.flac").read_bytes()
    (d / "truncated.flac").write_bytes(flac[: len(flac) // 3])
    rows = [
        {"id": "mono", "audio": "mono.wav", "text": "the cat sat on the mat"},
        {"id": "stereo", "audio": "stereo.wav", "text": "the cat sat on the mat"},
        {"id": "quad", "audio": "quad.wav", "text": "the cat sat on the mat"},
        {"id": "phone", "audio": "phone.wav", "text": "the cat sat on the mat"},
        {"id": "cd", "audio": "cd.flac", "text": "the cat sat on the mat"},
        {"id": "silent51", "audio": "silent51.wav", "text": "nothing said"},
        {"id": "truncated_wav", "audio": "truncated.wav", "text": "the cat sat"},
        {"id": "truncated_flac", "audio": "truncated.flac", "text": "the cat"},
        {"id": "no_text", "audio": "mono.wav", "text": ""},
        {"id": "span", "audio": "mono.wav", "text": "the cat", "start": -1, "end": 0.5},
        {"id": "inf", "audio": "mono.wav", "text": "the cat", "start": 0, "end": float("inf")},
        {"id": "home", "audio": "~no-such-user-here/a.wav", "text": "somewhere else"},
    ]
    lines = [json.dumps(r).encode() for r in rows]
    lines.insert(3, b'{"id": "latin1", "audio": "mono.wav", "text": "caf\xe9 au lait"}')  # line 4: Latin-1
    lines.insert(5, b"{not json")  # line 6
    lines.insert(7, b"[1, 2, 3]")  # line 8
    manifest = d / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "store"
    result = ok(runner.invoke(app, ["prepare", "--dataset", str(manifest), "--out", str(out),
                                    "--encoder", tiny_encoder, "--shard-size", "4"]))
    report = json.loads((out / "prepare_report.json").read_text())
    skipped = {s["id"]: (s["reason"], s["detail"]) for s in skips(out)}
    assert skipped["m.jsonl:4"] == ("invalid", "line 4: not UTF-8 text (byte 0xe9)")
    assert skipped["m.jsonl:6"][0] == "invalid" and skipped["m.jsonl:6"][1].startswith("line 6: malformed JSON")
    assert skipped["m.jsonl:8"] == ("invalid", "line 8: not a JSON object")
    assert skipped["span"] == ("invalid", "line 13: start/end are not a span of seconds")
    assert skipped["inf"] == ("invalid", "line 14: start/end are not a span of seconds")
    assert skipped["no_text"][0] == "untranscribed" and skipped["silent51"][0] == "empty"
    assert skipped["home"][0] == "missing" and "~no-such-user-here/a.wav" in skipped["home"][1]
    for uid in skipped:
        assert f"skip {uid}: " in result.output
    store = {r["id"]: (r, f.float()) for r, f in FeatureStore(out)}
    # Down-mixing identical channels gives the mono clip's features; other rates come out at 16 kHz, same length.
    mono = store["mono"][1]
    for uid in ("stereo", "quad"):
        assert store[uid][1].shape == mono.shape and (store[uid][1] - mono).abs().max() < 1e-2
    for uid in ("phone", "cd"):
        rec, feats = store[uid]
        assert rec["duration"] == pytest.approx(seconds, abs=0.06) and feats.shape[1] == 16
        assert abs(feats.shape[0] - 50 * rec["duration"]) <= 2 and torch.isfinite(feats).all()
    # A truncated file is either encoded for what it holds, or skipped as unreadable: never its claimed length.
    for uid in ("truncated_wav", "truncated_flac"):
        if uid in store:
            assert store[uid][0]["duration"] < 0.6 * seconds
        else:
            assert skipped[uid][0] == "unreadable"
    assert len(store) + len(skipped) == report["items"] == 15


def test_non_utf8_table_manifest_is_refused_with_file_and_line(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_bytes(b"audio\ttext\na.wav\thello\nb.wav\tna\xefve\n")
    result = runner.invoke(app, ["prepare", "--dataset", str(m), "--out", str(tmp_path / "s")])
    one_line_error(result, f"{m}: line 3 is not UTF-8 text (byte 0xef)")
    assert not (tmp_path / "s").exists()


# -- damaged feature stores -------------------------------------------------------------------

def _damage(store: Path, how: str) -> Path:
    shard = store / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    if how == "flipped":  # inside the tensor data: the records still read, only the checksum can tell
        for i in range(len(data) // 2, len(data) // 2 + 16):
            data[i] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "truncated":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    else:
        shard.unlink()
    return shard


@pytest.mark.parametrize("command", ["pretrain", "attach"])
@pytest.mark.parametrize("how,message", [("flipped", "checksum mismatch"), ("truncated", "unreadable shard"),
                                         ("missing", "shard listed in store.json is missing")])
def test_damaged_shard_is_refused_by_name_before_training(tmp_path, sentences, tiny_llama, command, how, message):
    train = write_store(tmp_path / "train", sentences[:24])
    if how == "flipped":
        assert len(FeatureStore(train)) == 24  # intact shard to start with
    shard = _damage(train, how)
    if how == "flipped":
        FeatureStore(train).features(8)  # readable: without the checksum it would be trained on
    out = tmp_path / "run"
    source = ["--llm", str(tiny_llama), "--preset", "tiny"] if command == "pretrain" else \
        ["--mapper", str(save_mapper(tmp_path / "mapper", tiny_llama))]
    result = runner.invoke(app, [command, "--train", str(train), "--out", str(out), "--steps", "2", *source])
    one_line_error(result, f"{shard}: {message}")
    assert not checkpoints(out) and not (out / "mapper").exists()


# -- mismatches at attach: both values named ------------------------------------------------------

def test_attach_names_both_sides_of_a_mismatch(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:8])
    wide = save_mapper(tmp_path / "wide", tiny_llama, output_dim=48)
    result = runner.invoke(app, ["attach", "--mapper", str(wide), "--train", str(train), "--out", str(tmp_path / "o1")])
    one_line_error(result, "the mapper outputs 48-d vectors but", "takes 32-d embeddings")
    other = save_mapper(tmp_path / "other", tiny_llama)
    cfg = json.loads((other / "config.json").read_text())
    cfg["extra"].update(tokenizer="0123456789abcdef", vocab_size=50000, llm="another-llm")
    (other / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["attach", "--mapper", str(other), "--train", str(train), "--out", str(tmp_path / "o2"),
                                 "--llm", str(tiny_llama)])
    one_line_error(result, "tokenizer of another-llm (50000 tokens, fingerprint 0123456789abcdef)", "fingerprint")
    for o in ("o1", "o2"):
        assert not (tmp_path / o / MODEL_FILE).exists()


# -- full disk ------------------------------------------------------------------------------------

def _pretrain_args(train, llm, out, steps, extra=()):
    return ["pretrain", "--train", str(train), "--llm", str(llm), "--out", str(out), "--preset", "tiny",
            "--steps", str(steps), "--warmup", "1", "--max-frames", "400", "--save-every", "2",
            "--eval-every", "1000", *extra]


def test_full_disk_keeps_the_last_good_checkpoint_and_resume_continues(tmp_path, sentences, tiny_llama, monkeypatch):
    import accelerate

    train = write_store(tmp_path / "train", sentences[:24])
    out = tmp_path / "run"
    real_save = accelerate.Accelerator.save_state
    calls = []

    def save_state(self, output_dir=None, **kw):
        calls.append(output_dir)
        if len(calls) == 2:  # the step-4 checkpoint: part of it is written, then the disk is full
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", save_state)
    first = ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 4)))
    good = out / "checkpoints" / "step-000002"
    said = f"warning: checkpoint at step 4 failed (No space left on device); the last good one is {good} and is intact"
    assert "".join(said.split()) in "".join(first.output.split())  # rich wraps long paths
    assert checkpoints(out) == [good] and not list((out / "checkpoints").glob(".tmp-*"))
    intact = _tree(good)
    in_memory = _weights(out / "mapper")  # the run itself went on to step 4 and saved its mapper

    # Now the mapper itself cannot be written: one line, exit 2, the checkpoint untouched.
    monkeypatch.setattr(accelerate.Accelerator, "save_state", real_save)
    (out / "mapper" / "model.safetensors").unlink()
    real_mapper_save = SpeechMapper.save_pretrained

    def full(self, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(SpeechMapper, "save_pretrained", full)
    result = runner.invoke(app, _pretrain_args(train, tiny_llama, out, 4, ["--resume"]))
    assert "resuming from step 2" in result.output
    one_line_error(result, "No space left on device")
    assert _tree(good) == intact and [p.name for p in checkpoints(out)] == ["step-000002", "step-000004"]

    # Space again: --resume finds the step-4 checkpoint of the resumed run, which is where the
    # uninterrupted run ended.
    monkeypatch.setattr(SpeechMapper, "save_pretrained", real_mapper_save)
    resumed = ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 4, ["--resume"])))
    assert "resuming from step 4" in resumed.output
    assert _differing(_weights(out / "mapper"), in_memory) == []
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # each step logged once


# -- non-finite losses ----------------------------------------------------------------------------

def _nan_store(folder: Path, texts: list[str], bad: set[int]) -> Path:
    g = torch.Generator().manual_seed(0)
    with StoreWriter(folder, encoder="test-encoder", dim=16, frame_rate=50.0, shard_size=8) as w:
        for i, text in enumerate(texts):
            feats = torch.randn(12 * len(text.split()), 16, generator=g)
            if i in bad:
                feats[3, 5] = float("nan")
            w.add({"id": f"utt{i:04d}", "text": text, "duration": len(feats) / 50}, feats)
    return folder


def test_nan_batches_are_skipped_counted_and_repeated_ones_stop_the_run(tmp_path, sentences, tiny_llama):
    some = _nan_store(tmp_path / "some", sentences[:24], bad={5})
    out = tmp_path / "some-run"
    result = ok(runner.invoke(app, _pretrain_args(some, tiny_llama, out, 12, ["--max-frames", "200"])))
    report = json.loads((out / "pretrain_report.json").read_text())
    warned = result.output.count("non-finite loss at step")
    assert report["bad_steps"] == warned >= 1 and report["steps"] == 12
    assert all(torch.isfinite(v).all() for v in _weights(out / "mapper").values())

    every = _nan_store(tmp_path / "all", sentences[:24], bad=set(range(24)))
    out = tmp_path / "all-run"
    result = runner.invoke(app, _pretrain_args(every, tiny_llama, out, 5, ["--max-frames", "200"]))
    one_line_error(result, "5 non-finite losses in a row at step 0", "last good checkpoint: none")
    assert not (out / "mapper").exists()


# -- SIGKILL of attach in the middle of writing a checkpoint ----------------------------------------

KILLER = """
import os, signal, sys
from pathlib import Path
import accelerate
real = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kw):
    if output_dir.endswith("step-000006"):
        real(self, output_dir, **kw)
        Path(output_dir, "model.safetensors").write_bytes(b"half")  # mid-write
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, output_dir, **kw)
accelerate.Accelerator.save_state = save_state
from smap.cli import app
sys.argv = ["smap", *sys.argv[1:]]
app()
"""


def test_sigkill_while_attach_checkpoints_then_resume_matches(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:24])
    mapper = save_mapper(tmp_path / "mapper", tiny_llama)
    config = mapper / "config.json"  # dropout on: the resumed run must restore the RNG it draws from
    config.write_text(json.dumps({**json.loads(config.read_text()), "dropout": 0.1}))

    def args(out, *extra):
        return ["attach", "--mapper", str(mapper), "--train", str(train), "--out", str(out), "--steps", "6",
                "--save-every", "3", "--eval-every", "1000", "--max-frames", "300", "--lr", "3e-3", "--warmup", "1",
                "--system", "short", "--show", "0", *extra]

    ok(runner.invoke(app, args(tmp_path / "full")))
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, *args(killed)], capture_output=True, text=True, timeout=300,
                          env=child_env())
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in checkpoints(killed)] == ["step-000003"] and not (killed / MODEL_FILE).exists()
    assert (killed / "checkpoints" / ".tmp-step-000006").is_dir()  # the half-written one, never resumed from

    resumed = ok(runner.invoke(app, args(killed, "--resume")))
    assert "resuming from step 3" in resumed.output
    assert _differing(_weights(killed / "mapper"), _weights(tmp_path / "full" / "mapper")) == []
    steps = [r["step"] for r in map(json.loads, (killed / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [r["step"] for r in map(json.loads, (tmp_path / "full" / "log.jsonl").read_text().splitlines())
                     if "loss" in r]  # nothing lost, nothing logged twice
    assert [p.name for p in checkpoints(killed)] == ["step-000003", "step-000006"]


# -- fuzzing the parsers --------------------------------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.sampled_from([10**12, -(10**12)])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)
row_keys = st.sampled_from(["id", "audio", "path", "text", "transcript", "start", "end", "split", "translation",
                            "answer", "question", "speaker", "choices", "tgt_lang", "x"])
manifest_lines = st.one_of(
    st.binary(max_size=60),
    st.dictionaries(row_keys, json_values | st.just("a.wav"), max_size=6).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"audio": st.just("a.wav"), "text": st.text(max_size=10)},
                          optional={"start": json_values, "end": json_values}).map(lambda d: json.dumps(d).encode()),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    sf.write(d / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    return d


@FUZZ
@given(suffix=st.sampled_from([".jsonl", ".json", ".tsv", ".csv"]), lines=st.lists(manifest_lines, max_size=6),
       header=st.sampled_from([b"", b"audio\ttext\tstart\tend\n", b"audio,text,id,split\n"]))
def test_fuzz_manifest_parser_raises_only_source_errors(fuzz_dir, suffix, lines, header):
    with tempfile.TemporaryDirectory(dir=fuzz_dir) as tmp:
        path = Path(tmp) / f"m{suffix}"
        path.write_bytes((header if suffix in (".tsv", ".csv") else b"") + b"\n".join(lines))
        try:
            source = open_source(str(path), audio_dir=str(fuzz_dir))
        except SourceError:
            return
        for item in source.items:
            assert isinstance(item.id, str) and isinstance(item.record, dict)
            assert (item.error is None) != (item.load is None)
            if item.error:
                assert item.error.startswith("line ")
            else:
                try:  # what `prepare` turns into a named skip
                    wav = item.load(16000)
                    assert wav.ndim == 1 and wav.dtype == torch.float32
                except AudioError:
                    pass


@FUZZ
@given(st.text(max_size=40) | st.sampled_from(["~", "~nobody-xyz/m.gguf", "a/b", "./x", "/", "x.gguf", "\0", "~\0"]))
def test_fuzz_llm_and_encoder_specs(spec):
    try:
        assert isinstance(resolve(spec), LLMSource)
    except LLMSpecError:
        pass
    try:
        base, opts = parse_spec(spec)
        assert isinstance(base, str) and all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
    except EncoderError:
        pass


@pytest.fixture(scope="module")
def mapper_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mapper")
    torch.manual_seed(0)
    SpeechMapper(preset("tiny", 16, 32)).save_pretrained(folder)
    return folder


config_keys = st.sampled_from(["input_dim", "output_dim", "dims", "n_heads", "ffn_dim", "kernel_size", "stride",
                               "dropout", "extra", "bogus"])


@FUZZ
@given(changes=st.dictionaries(config_keys, json_values, max_size=3), drop=st.sets(config_keys, max_size=2),
       raw=st.none() | st.binary(max_size=40), weights=st.none() | st.integers(0, 2000))
def test_fuzz_mapper_config_and_weights(mapper_folder, changes, drop, raw, weights):
    with tempfile.TemporaryDirectory(dir=mapper_folder) as tmp:
        folder = Path(tmp)
        cfg = json.loads((mapper_folder / "config.json").read_text())
        cfg = {k: v for k, v in {**cfg, **changes}.items() if k not in drop}
        (folder / "config.json").write_bytes(raw if raw is not None else json.dumps(cfg).encode())
        blob = (mapper_folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(blob if weights is None else blob[:weights] + blob[weights + 8:])
        try:
            model = SpeechMapper.from_pretrained(folder)
        except ValueError as e:
            assert str(folder) in str(e)
            return
        assert all(torch.isfinite(p).all() and p.device.type == "cpu" for p in model.parameters())
        assert not math.isnan(model.config.dropout)


# -- data printed as data: ids, transcripts, outputs and paths holding markup or control characters --

def test_an_id_holding_markup_or_control_characters_is_printed_as_written(tmp_path, tiny_encoder):
    """`x[/INST]` was read as a closing tag: MarkupError, exit 1, the good clip beside it unstored."""
    d = tmp_path / "d"
    d.mkdir()
    sf.write(d / "good.wav", synthesize("the cat sat on the mat").numpy(), 16000)
    rows = [{"id": "good[bold]", "audio": "good.wav", "text": "[INST] the cat sat on the mat [/INST]"},
            {"id": "x[/INST]", "audio": "gone.wav", "text": "lost"},
            {"id": "esc\x1b[2J\nline", "audio": "gone[/red].wav", "text": "lost"}]
    (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "s"
    result = ok(runner.invoke(app, ["prepare", "--dataset", str(d / "m.jsonl"), "--out", str(out),
                                    "--encoder", tiny_encoder]))
    assert "Traceback" not in result.output
    assert [(r["id"], r["text"]) for r in FeatureStore(out).records] == [("good[bold]", rows[0]["text"])]
    assert f"skip x[/INST]: missing ({d / 'gone.wav'}: no such audio file)" in result.output
    assert f"skip esc\\x1b[2J\\nline: missing ({d / 'gone[/red].wav'}: no such audio file)" in result.output
    assert "\x1b[2J" not in result.output and [s["id"] for s in skips(out)] == ["x[/INST]", "esc\x1b[2J\nline"]
    assert "1 utterances" in result.output and "2 skipped (2 missing)" in result.output


def test_an_error_quoting_markup_is_one_plain_line(tmp_path, tiny_llama):
    store = tmp_path / "no[/INST]store"
    result = runner.invoke(app, ["pretrain", "--train", str(store), "--llm", str(tiny_llama), "--out", str(tmp_path / "o")])
    one_line_error(result, f"{store}: not a feature store (no store.json)")
    bad = tmp_path / "esc\x1b]0;title\x07"
    result = runner.invoke(app, ["pretrain", "--train", str(bad), "--llm", str(tiny_llama), "--out", str(tmp_path / "o")])
    one_line_error(result, f"{tmp_path}/esc\\x1b]0;title\\x07: not a feature store")


def test_validation_samples_holding_markup_are_shown_as_written(tmp_path, sentences, tiny_llama, capsys):
    from smap.attach import AttachConfig, attach

    train = write_store(tmp_path / "train", sentences[:8])
    valid = tmp_path / "valid"
    with StoreWriter(valid, encoder="test-encoder", dim=16, frame_rate=50.0) as w:
        w.add({"id": "v[/INST]", "text": "the [bold] cat", "duration": 1.0}, torch.randn(48, 16))
    attach(AttachConfig(out=str(tmp_path / "run"), mapper=str(save_mapper(tmp_path / "mapper", tiny_llama)),
                        train=[str(train)], valid=[str(valid)], steps=1, warmup=0, max_frames=300, eval_every=1000,
                        save_every=1000, show=1, valid_decode=1, asr_target="raw"))
    assert "v[/INST] ref: the [bold] cat" in " ".join(capsys.readouterr().err.split())


def test_evaluate_prints_paths_holding_markup_as_written(tmp_path, tiny_llama):
    root = tmp_path / "da[/x]ta"
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--systems", "transcript", "--llm", str(tiny_llama),
                                 "--data-root", str(root), "--out", str(tmp_path / "o[/y]")], terminal_width=400)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # a split not run
    assert f"not run: tts/test: no feature store at {root / 'tts' / 'test'}" in result.output
    assert f"report:{tmp_path / 'o[/y]' / 'results.json'}," in "".join(result.output.split())  # rich wraps paths


def test_a_progress_bar_shows_its_description_as_written():
    from io import StringIO

    from rich.console import Console

    from smap.progress import progress

    console = Console(file=StringIO(), force_terminal=True, width=200)
    with progress(console, "prepare test -> st[/INST]{0}re", 2, "utterances") as update:
        update(advance=2)
    assert "prepare test -> st[/INST]{0}re" in console.file.getvalue()


# -- names that become paths --------------------------------------------------------------------

@pytest.mark.parametrize("value", ["../../evil=DIR", "a/b=DIR", ".hidden=DIR", "x[/INST]=DIR"])
def test_a_model_name_that_is_not_a_plain_file_name_is_refused(tmp_path, value):
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--model", value, "--model", "b=DIR2",
                                 "--out", str(tmp_path / "o")], terminal_width=400)
    name = value.split("=")[0]
    one_line_error(result, f"--model {value}: the system name {name!r} may hold only letters, digits")
    assert not (tmp_path / "o").exists()


def test_names_read_back_by_rescore_are_checked_the_same_way(tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.json").write_text(json.dumps({"systems": {"../../../evil": {}}, "results": [], "data": {}}))
    write_store(tmp_path / "data" / "tts" / "test", ["the cat"])
    result = runner.invoke(app, ["evaluate", "--suite", "tts/test", "--rescore", str(earlier),
                                 "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "o")], terminal_width=400)
    one_line_error(result, f"{earlier / 'results.json'}: the system name '../../../evil' may hold only")
    assert not (tmp_path / "o").exists()


# -- two runs, one folder -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["pretrain", "attach"])
def test_a_folder_holding_another_run_is_refused_without_resume_or_overwrite(tmp_path, sentences, tiny_llama, command):
    train = write_store(tmp_path / "train", sentences[:8])
    out = tmp_path / "run"
    (out / "checkpoints" / "step-000900").mkdir(parents=True)
    (out / "log.jsonl").write_text('{"step": 900, "loss": 0.1}\n')
    source = ["--llm", str(tiny_llama), "--preset", "tiny"] if command == "pretrain" else \
        ["--mapper", str(save_mapper(tmp_path / "mapper", tiny_llama))]
    result = runner.invoke(app, [command, "--train", str(train), "--out", str(out), "--steps", "1", *source])
    one_line_error(result, f"--out {out} holds another run (checkpoints, log.jsonl): give --resume to continue it, "
                           "--overwrite to replace it, or another --out")
    both = runner.invoke(app, [command, "--train", str(train), "--out", str(out), "--resume", "--overwrite", *source])
    one_line_error(both, "--resume continues the run in --out, --overwrite replaces it: give one of them")
    assert _tree(out) == {"log.jsonl": b'{"step": 900, "loss": 0.1}\n'} and (out / "checkpoints" / "step-000900").is_dir()


def test_overwrite_replaces_the_old_run_and_keeps_what_is_not_a_run(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:24])
    out = tmp_path / "run"
    ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 6)))
    assert [p.name for p in checkpoints(out)] == ["step-000004", "step-000006"]
    again = ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 2, ["--overwrite"])))
    assert "--overwrite: removed checkpoints, log.jsonl, mapper, mapper_config.json, pretrain_report.json, tb" in \
        " ".join(again.output.split())
    assert [p.name for p in checkpoints(out)] == ["step-000002"]  # the old run's step 6 is not resumed from later
    assert [json.loads(r)["step"] for r in (out / "log.jsonl").read_text().splitlines()] == [2]  # one run's log
    (out / "notes.txt").write_text("mine")
    kept = runner.invoke(app, _pretrain_args(train, tiny_llama, out, 2, ["--overwrite"]))
    one_line_error(kept, f"--out {out}: --overwrite removes a run's files, and notes.txt is not one")
    assert (out / "notes.txt").read_text() == "mine" and [p.name for p in checkpoints(out)] == ["step-000002"]


def test_pruning_removes_only_this_runs_checkpoints(tmp_path, fresh_accelerate_state):
    from smap.training import STATE_FILE, Checkpointer, LoopConfig, make_accelerator

    acc, _ = make_accelerator(LoopConfig(out=str(tmp_path / "run")))
    model = acc.prepare(torch.nn.Linear(2, 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=0.1), lambda s: 1.0)
    foreign = tmp_path / "run" / "checkpoints" / "step-000900"  # a later step of another run
    foreign.mkdir(parents=True)
    (foreign / STATE_FILE).write_text(json.dumps({"step": 900, "run": "another"}))
    ckpt = Checkpointer(acc, tmp_path / "run", keep=1, scheduler=scheduler)
    for step in (1, 2):
        ckpt.save(step, {"run": "this", "epoch": 0, "pos": step})
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["step-000002", "step-000900"]


def test_resume_refuses_training_stores_that_changed(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:24])
    out = tmp_path / "run"
    ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 2)))
    shutil.rmtree(train)
    write_store(train, sentences[:24], seed=5)  # prepared again: the same ids, other features
    result = runner.invoke(app, _pretrain_args(train, tiny_llama, out, 4, ["--resume"]))
    one_line_error(result, f"--resume: the --train stores changed since the run in {out} started")
    assert [p.name for p in checkpoints(out)] == ["step-000002"]


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_cannot_be_read(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:24])
    straight, out = tmp_path / "straight", tmp_path / "run"
    ok(runner.invoke(app, _pretrain_args(train, tiny_llama, straight, 6)))
    ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 6)))
    newest = out / "checkpoints" / "step-000006"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut by a crash of the disk, not of smap
    resumed = ok(runner.invoke(app, _pretrain_args(train, tiny_llama, out, 6, ["--resume"])))
    said = " ".join(resumed.output.split())
    assert f"warning: checkpoint {newest} cannot be read (" in said and "resuming from the one before" in said
    assert "resuming from step 4" in said
    assert _differing(_weights(out / "mapper"), _weights(straight / "mapper")) == []


# -- one writer per folder ----------------------------------------------------------------------

HOLD = """
import sys, time
from smap.fileio import FolderLock
lock = FolderLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_command_on_a_folder_in_use_stops_at_once(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:8])
    holders = {}
    try:
        for name in ("store", "run"):
            holders[name] = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / name)], stdout=subprocess.PIPE,
                                             text=True, env=child_env())
            assert holders[name].stdout.readline().strip() == "locked"
        busy = runner.invoke(app, ["prepare", "--dataset", "tts", "--limit", "1", "--out", str(tmp_path / "store")])
        one_line_error(busy, f"{tmp_path / 'store'}: in use by another smap process (pid {holders['store'].pid})")
        busy = runner.invoke(app, _pretrain_args(train, tiny_llama, tmp_path / "run", 1))
        one_line_error(busy, f"{tmp_path / 'run'}: in use by another smap process (pid {holders['run'].pid})")
        assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()
    finally:
        for holder in holders.values():
            holder.kill()
            holder.wait()
    ok(runner.invoke(app, _pretrain_args(train, tiny_llama, tmp_path / "run", 1)))  # a dead holder blocks nothing
