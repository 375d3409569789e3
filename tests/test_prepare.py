"""smap prepare: bad items skipped and named, resume without re-encoding, reports, processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import child_env
from test_encoders import save_tiny_ssl  # tests/ is on sys.path: its conftest.py has no package
from typer.testing import CliRunner

from smap.audio import synthesize
from smap.cli import app
from smap.data.store import FeatureStore
from smap.prepare import PrepareConfig, batches, prepare



@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-hubert")
    save_tiny_ssl(folder)
    return str(folder)


def skips(store: Path) -> list[dict]:
    """The skipped items of the last run on `store`, from its skips.jsonl."""
    return [json.loads(line) for line in (store / "skips.jsonl").read_text().splitlines()]


def _shards(store: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(store.glob("shard-*.safetensors"))}


def _contents(store: Path) -> tuple[list[list[dict]], dict[str, torch.Tensor]]:
    """Records shard by shard, and every utterance's features."""
    fs = FeatureStore(store)
    per_shard: list[list[dict]] = [[] for _ in fs.info.shards]
    for (k, _), rec in zip(fs._where, fs.records):
        per_shard[k].append(rec)
    return per_shard, {r["id"]: f for r, f in fs}


def test_batches_respect_the_padded_budget():
    lengths = [5, 30, 10, 25, 8, 100]
    groups = batches(lengths, max_total=60, max_size=3)
    assert groups == [[5], [1, 3], [2, 4, 0]]  # longest first; 2 x 30 and 3 x 10 fit in 60
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert batches([4, 4, 4, 4], max_total=100, max_size=2) == [[0, 1], [2, 3]]


def test_bad_items_are_skipped_named_and_not_redone(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setattr("smap.progress.LOG_EVERY_S", 0.0)  # a progress line after every shard
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "good1.wav", synthesize("the cat sat on the mat").numpy(), 16000)
    sf.write(data / "good2.flac", synthesize("a dog ran in the park", "en-us+f2").numpy(), 16000)
    (data / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    sf.write(data / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(data / "silent.wav", np.zeros(8000, np.float32), 16000)
    rows = [("good1", "good1.wav", "the cat sat on the mat"), ("corrupt", "corrupt.wav", "x y z"),
            ("missing", "missing.wav", "not here"), ("empty", "empty.wav", "empty clip"),
            ("silent", "silent.wav", "silence"), ("untranscribed", "good1.wav", " ... "),
            ("good2", "good2.flac", "a dog ran in the park")]
    manifest = data / "m.tsv"
    manifest.write_text("id\taudio\ttext\n" + "".join(f"{i}\t{a}\t{t}\n" for i, a, t in rows))
    out = tmp_path / "store"
    args = ["prepare", "--dataset", str(manifest), "--out", str(out), "--encoder", tiny_encoder, "--shard-size", "4"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = {"corrupt": "unreadable", "missing": "missing", "empty": "empty", "silent": "empty",
                "untranscribed": "untranscribed"}
    for uid, reason in expected.items():
        assert f"skip {uid}: {reason}" in result.output
    report = json.loads((out / "prepare_report.json").read_text())
    assert {s["id"]: s["reason"] for s in skips(out)} == expected and len(skips(out)) == 5
    assert report["skip_reasons"] == {"unreadable": 1, "missing": 1, "empty": 2, "untranscribed": 1}
    assert report["skips"] == str(out / "skips.jsonl") and "skipped_items" not in report
    assert (report["items"], report["stored"], report["encoded_now"], report["finished"]) == (7, 2, 2, True)
    assert "missing.wav: no such audio file" in next(s["detail"] for s in skips(out) if s["id"] == "missing")
    store = FeatureStore(out)
    assert sorted(r["id"] for r in store.records) == ["good1", "good2"]
    for rec, feats in store:
        assert feats.dtype == torch.float16 and feats.shape == (rec["frames"], 16)
        assert abs(rec["frames"] - rec["duration"] * 50) <= 2
    assert "2 utterances" in result.output and "5 skipped" in result.output
    # Not a terminal (a log file): plain progress lines, shard by shard, not one bar at the end.
    assert "4/7 utterances" in result.output and "7/7 utterances" in result.output

    before = _shards(out)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    report = json.loads((out / "prepare_report.json").read_text())
    assert (report["encoded_now"], report["stored_before"], report["stored"], report["skipped"]) == (0, 2, 2, 5)
    assert _shards(out) == before  # no shard rewritten
    assert {s["id"] for s in skips(out)} == set(expected) and len(skips(out)) == 5  # this run's skips, each once


def test_too_long_and_frames_per_token(tmp_path, tiny_encoder, tiny_llama):
    data = tmp_path / "d"
    data.mkdir()
    texts = {"short": "the water was long", "long": "we made one more way to find the people"}
    sf.write(data / "short.wav", synthesize(texts["short"]).numpy(), 16000)
    sf.write(data / "long.wav", synthesize(texts["long"] + " and then some more of it", rate=100).numpy(), 16000)
    with open(data / "m.jsonl", "w") as f:
        for uid, text in texts.items():
            f.write(json.dumps({"id": uid, "audio": f"{uid}.wav", "text": text}) + "\n")
    cfg = PrepareConfig(source=str(data / "m.jsonl"), out=str(tmp_path / "s"), encoder=tiny_encoder, max_seconds=3.0,
                        llm=str(tiny_llama))
    report = prepare(cfg)
    assert [(s["id"], s["reason"]) for s in skips(tmp_path / "s")] == [("long", "too long")]
    fpt = report["frames_per_token"]
    (rec,) = FeatureStore(tmp_path / "s").records
    tokens = len(texts["short"].split())  # the tiny tokenizer has one token per word
    assert fpt["utterances"] == 1 and fpt["mean"] == pytest.approx(rec["frames"] / tokens, abs=1e-3)
    # The paper's mapper keeps about frames / 4 vectors: enough here.
    assert fpt["mapper_downsampling"] == 4 and fpt["too_short_for_mapper"] == 0


@pytest.mark.embedded
def test_whisper_stores_a_45_s_clip_in_30_s_windows(tmp_path):
    """Whisper refused clips over its 30 s window and prepare skipped them: a test split lost its
    longest utterances. Now they are stored, their frames for their whole length, with --window too."""
    from test_encoders import long_speech

    from smap.encoders.whisper import FRAME_RATE

    data = tmp_path / "d"
    data.mkdir()
    sf.write(data / "long.wav", long_speech(45.0).numpy(), 16000)
    manifest = _manifest(data, [{"id": "long", "audio": "long.wav", "text": "the children are playing"}])
    for window in (False, True):
        out = tmp_path / f"window-{window}"
        report = prepare(PrepareConfig(source=str(manifest), out=str(out), encoder_options={"window": window}))
        (rec,) = FeatureStore(out).records
        assert (report["stored"], report["skipped"]) == (1, 0)
        assert (rec["frames"], rec["duration"]) == (int(45 * FRAME_RATE), 45.0)


def test_another_corpus_is_not_mixed_into_a_store(tmp_path, tiny_encoder):
    out = tmp_path / "s"
    args = ["prepare", "--dataset", "tts", "--split", "test", "--tts-train", "10", "--tts-dev", "0", "--tts-test", "4",
            "--encoder", tiny_encoder, "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, args).exit_code == 0  # the same corpus: a resume
    other = CliRunner().invoke(app, args + ["--seed", "1"])
    assert other.exit_code == 2
    assert "holds features of tts (test) prepared with other settings (corpus differs)" in other.output
    assert len(FeatureStore(out)) == 4


def test_a_hub_encoders_commit_is_recorded_and_a_resume_on_another_is_refused(tmp_path, monkeypatch):
    """A hub id's branch moves: the store names the snapshot's commit, and features of two commits
    never share a store."""
    import huggingface_hub

    commits = iter(["a" * 40, "a" * 40, "b" * 40])

    def snapshot_download(repo_id, revision=None, **kwargs):  # the cache's layout: snapshots/COMMIT
        folder = tmp_path / "hub" / "models--org--enc" / "snapshots" / next(commits)
        if not folder.is_dir():
            save_tiny_ssl(folder)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)  # no local folder 'org/'
    out = tmp_path / "s"
    args = ["prepare", "--dataset", "tts", "--split", "test", "--tts-train", "10", "--tts-dev", "0", "--tts-test", "2",
            "--encoder", "org/enc", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert FeatureStore(out).info.meta["encoder_revision"] == "a" * 40
    assert CliRunner().invoke(app, args).exit_code == 0  # the same commit: a resume
    moved = CliRunner().invoke(app, args)
    assert moved.exit_code == 2 and "prepared with other settings (encoder_revision differs)" in moved.output, moved.output


@pytest.mark.embedded
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    # A tts split encoded by the embedded Whisper in its 30 s window: slow enough to kill mid-run.
    args = ["--dataset", "tts", "--split", "dev", "--tts-train", "10", "--tts-test", "10", "--tts-dev", "12",
            "--shard-size", "2", "--window"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "smap.cli", "prepare", *args, "--out", str(killed)]
    env = child_env()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(killed.glob("shard-*.safetensors"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = _shards(killed)
    assert 2 <= len(finished) < 6, "the run was not interrupted mid-way"

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((killed / "prepare_report.json").read_text())
    done_before = report["stored_before"]
    assert done_before >= 4 and report["encoded_now"] == 12 - done_before and report["stored"] == 12
    after = _shards(killed)
    assert {k: after[k] for k in finished} == finished  # finished shards kept, not re-encoded

    clean = tmp_path / "clean"
    from smap.data.corpus import CorpusConfig

    prepare(PrepareConfig(source="tts", split="dev", out=str(clean), encoder="whisper-tiny.en",
                          encoder_options={"window": True}, shard_size=2,
                          source_options={"tts": CorpusConfig(train=10, test=10, dev=12)}))
    shards_a, feats_a = _contents(killed)
    shards_b, feats_b = _contents(clean)
    assert shards_a == shards_b  # same shards, same records in the same order
    assert feats_a.keys() == feats_b.keys()
    assert all(torch.equal(feats_a[k], feats_b[k]) for k in feats_a)


def _manifest(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_skips_go_to_a_jsonl_of_their_own_each_once(tmp_path, tiny_encoder):
    """A wrong --audio-dir on a large manifest: each row a named skip, written once, not the whole
    list rewritten into the report after every shard."""
    data = tmp_path / "d"
    data.mkdir()
    sf.write(data / "good.wav", synthesize("the cat sat on the mat").numpy(), 16000)
    rows = [{"id": "good", "audio": "good.wav", "text": "the cat sat on the mat"}]
    rows += [{"id": f"gone{i:03d}", "audio": f"gone{i:03d}.wav", "text": "not here"} for i in range(40)]
    cfg = PrepareConfig(source=str(_manifest(data, rows)), out=str(tmp_path / "s"), encoder=tiny_encoder, shard_size=4)
    for _ in range(2):  # a re-run tries every skipped row again, and lists this run's skips
        report = prepare(cfg)
        assert [s["id"] for s in skips(tmp_path / "s")] == [f"gone{i:03d}" for i in range(40)]
        assert all(s["reason"] == "missing" and s["detail"].endswith("no such audio file") for s in skips(tmp_path / "s"))
        assert (report["skipped"], report["skip_reasons"]) == (40, {"missing": 40})
        assert report["skips"] == str(tmp_path / "s" / "skips.jsonl")
        saved = json.loads((tmp_path / "s" / "prepare_report.json").read_text())
        assert "gone000" not in json.dumps(saved) and saved["skipped"] == 40  # counts, never the list


def test_a_very_long_text_is_a_named_skip(tmp_path, tiny_encoder):
    from smap.prepare import MAX_TEXT_CHARS

    data = tmp_path / "d"
    data.mkdir()
    sf.write(data / "a.wav", synthesize("the cat sat on the mat").numpy(), 16000)
    long = "word " * (MAX_TEXT_CHARS // 5) + "x"
    rows = [{"id": "fine", "audio": "a.wav", "text": "the cat sat on the mat"},
            {"id": "book", "audio": "a.wav", "text": long},
            {"id": "essay", "audio": "a.wav", "text": "the cat", "translation": long},
            {"id": "menu", "audio": "a.wav", "text": "the cat", "choices": ["a choice"] * 100_000}]  # 1.4 MB of record
    report = prepare(PrepareConfig(source=str(_manifest(data, rows)), out=str(tmp_path / "s"), encoder=tiny_encoder))
    assert [r["id"] for r in FeatureStore(tmp_path / "s").records] == ["fine"]
    found = [(s["id"], s["reason"], s["detail"]) for s in skips(tmp_path / "s")]
    assert found[:2] == [("book", "long text", f"text: {len(long)} characters, more than {MAX_TEXT_CHARS}"),
                         ("essay", "long text", f"translation: {len(long)} characters, more than {MAX_TEXT_CHARS}")]
    assert found[2][:2] == ("menu", "long text") and "utterance 'menu' has 1400" in found[2][2]
    assert report["skip_reasons"] == {"long text": 3}


def test_an_encoder_failure_costs_its_clip_only_and_a_rerun_goes_past_it(tmp_path, tiny_encoder, monkeypatch, capsys):
    """A clip the encoder cannot take fails its whole batch: the batch is encoded again clip by
    clip, that clip is skipped and named (as is one with non-finite features), the others stored."""
    from rich.console import Console

    import smap.prepare

    data = tmp_path / "d"
    data.mkdir()
    texts = {"a": "the cat sat on the mat", "b": "a dog ran in the park", "poison": "one more way",
             "nan": "the water was long", "c": "we made it"}
    for uid, text in texts.items():
        sf.write(data / f"{uid}.wav", synthesize(text).numpy(), 16000)
    poison = len(synthesize(texts["poison"]))
    nan = len(synthesize(texts["nan"]))
    real = smap.prepare.load_encoder
    batch_sizes = []

    def load_encoder(spec, **options):
        encoder = real(spec, **options)
        encode = encoder.encode

        def failing(waves):
            batch_sizes.append(len(waves))
            if any(len(w) == poison for w in waves):
                raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")
            return [f * float("nan") if len(w) == nan else f for w, f in zip(waves, encode(waves))]

        encoder.encode = failing
        return encoder

    monkeypatch.setattr(smap.prepare, "load_encoder", load_encoder)
    rows = [{"id": uid, "audio": f"{uid}.wav", "text": text} for uid, text in texts.items()]
    cfg = PrepareConfig(source=str(_manifest(data, rows)), out=str(tmp_path / "s"), encoder=tiny_encoder)
    for run in range(2):
        report = prepare(cfg, console=Console(stderr=True, width=200))
        assert sorted(r["id"] for r in FeatureStore(tmp_path / "s").records) == ["a", "b", "c"]
        assert sorted((s["id"], s["reason"], s["detail"]) for s in skips(tmp_path / "s")) == [
            ("nan", "encoder", "non-finite features (NaN, or beyond float16's range)"),
            ("poison", "encoder", "RuntimeError: CUDA error: an illegal memory access was encountered")]
        assert report["skip_reasons"] == {"encoder": 2} and report["encoded_now"] == (3 if run == 0 else 0)
    assert batch_sizes[:6] == [5, 1, 1, 1, 1, 1]  # the batch, then each clip alone
    assert batch_sizes[6:] == [2, 1, 1]  # the re-run: the two skipped clips, then each alone
    err = capsys.readouterr().err
    assert "encoder failed on a batch of 5 clips (RuntimeError: CUDA error: an illegal memory access was encountered); " \
           "encoding them one by one" in err
