"""Hostile input, part two: audio over the length limit refused from its header by every loader,
checkpoint indexes that point outside their folder, paths holding rich markup in the training
commands' prints and the evaluation table, and a mapper folder that a kill cannot leave mixed.

(Bad headers, odd rates and non-finite samples: tests/test_audio.py; the rest: tests/test_reliability.py.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from rich.console import Console
from safetensors.torch import save_file
from test_attach import save_mapper  # tests/ is on sys.path: its conftest.py has no package
from test_prepare import skips, tiny_encoder  # noqa: F401  (a fixture)
from test_synth import _flite_installed  # noqa: F401  (skips the flite test where flite is missing)
from typer.testing import CliRunner

from conftest import save_tiny_causal_lm, write_store
from smap.audio import AudioError
from smap.cli import app
from smap.data.sources import open_source
from smap.mapper import CONFIG_FILE, WEIGHTS_FILE, SpeechMapper, preset

runner = CliRunner()


def _write(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


@pytest.fixture()
def no_decoding(monkeypatch):
    """Fails a test that decodes audio (soundfile's read) once it is set: `no_decoding()`."""
    def refuse():
        monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded audio it should refuse"))

    return refuse


# -- max_seconds through every loader, and prepare ------------------------------------------------

def test_file_loaders_refuse_a_span_over_max_seconds_before_decoding(tmp_path, no_decoding):
    _write(tmp_path / "long.wav", 3.0)
    rows = [{"id": "whole", "audio": "long.wav", "text": "a"},
            {"id": "span", "audio": "long.wav", "text": "a", "start": 0.5, "end": 1.5}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole, span = open_source(str(tmp_path / "m.jsonl")).items
    assert span.load(16000, 2.0).numel() == 16000  # the span is measured, not the file
    no_decoding()
    with pytest.raises(AudioError, match=r"long.wav: 3.0 s > 2 s$") as e:
        whole.load(16000, 2.0)
    assert e.value.reason == "too long"


def test_a_passage_of_several_files_is_measured_by_their_sum(tmp_path, no_decoding):
    wavs = tmp_path / "dev_wav"
    wavs.mkdir()
    _write(wavs / "0_0_0.wav", 1.5)
    _write(wavs / "0_0_1.wav", 1.0)
    (tmp_path / "spoken_test-v1.1.json").write_text(json.dumps({"data": [{"title": "T", "paragraphs": [
        {"context": "the passage", "qas": [{"id": "q1", "question": "What?", "answers": [{"text": "it"}]}]}]}]}))
    (item,) = open_source("spoken-squad", "test", data_dir=tmp_path).items
    assert item.load(16000, 2.5).numel() == 40000
    no_decoding()
    with pytest.raises(AudioError, match=r"0_0_0.wav \+ 1 more: 2.5 s > 2 s$") as e:  # each part alone is shorter
        item.load(16000, 2.0)
    assert e.value.reason == "too long"


def test_hub_rows_are_measured_before_decoding(tmp_path, no_decoding):
    import datasets

    audio = {"bytes": _write(tmp_path / "a.flac", 1.0).read_bytes(), "path": "a.flac"}
    ds = datasets.Dataset.from_dict({"file": ["a.flac"], "audio": [audio], "text": ["HELLO"], "speaker_id": [1],
                                     "chapter_id": [3], "id": ["1-3-0"]})
    ds.cast_column("audio", datasets.Audio(sampling_rate=16000)).save_to_disk(str(tmp_path / "ls"))
    (item,) = open_source("librispeech", "test-clean", data_dir=tmp_path / "ls").items
    no_decoding()
    with pytest.raises(AudioError, match=r"<bytes>: 1.0 s > 0.5 s$"):
        item.load(16000, 0.5)


def test_synthetic_speech_is_measured_once_made():
    item = open_source("tts", "test").items[0]
    wav = item.load(16000)
    assert item.load(16000, wav.numel() / 16000).numel() == wav.numel()
    with pytest.raises(AudioError, match=rf"tts {item.id}: [0-9.]+ s > 0.1 s$") as e:
        item.load(16000, 0.1)
    assert e.value.reason == "too long"


def short_and_long(d: Path, long_seconds: float, monkeypatch) -> list[str]:
    """A manifest `d/m.jsonl` of a 0.5 s clip and one of `long_seconds`; returns the list of file
    names whose samples get read (soundfile spied on)."""
    d.mkdir()
    _write(d / "short.wav", 0.5)
    _write(d / "long.wav", long_seconds)
    rows = [{"id": "short", "audio": "short.wav", "text": "the cat"}, {"id": "long", "audio": "long.wav", "text": "a"}]
    (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read, real_read = [], sf.SoundFile.read

    def spy(self, *args, **kwargs):
        read.append(Path(self.name).name)
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    return read


def test_prepare_skips_a_long_clip_without_decoding_it(tmp_path, tiny_encoder, monkeypatch):  # noqa: F811
    from smap.prepare import PrepareConfig, prepare

    d = tmp_path / "d"
    read = short_and_long(d, 4.0, monkeypatch)
    prepare(PrepareConfig(source=str(d / "m.jsonl"), out=str(tmp_path / "s"), encoder=tiny_encoder, max_seconds=2.0))
    assert read == ["short.wav"]
    assert skips(tmp_path / "s") == [{"id": "long", "reason": "too long", "detail": f"{d / 'long.wav'}: 4.0 s > 2 s"}]


def test_every_encoder_has_a_default_length_limit(tmp_path, tiny_encoder, monkeypatch):  # noqa: F811
    """Encoders other than Whisper (SeamlessM4T, HuBERT...) took audio of any length: an hour-long
    file ran the machine out of memory, and again on every resume. Now every encoder has a default
    limit: a longer clip is a named skip found from its header, counted in the report."""
    from smap.audio import MAX_SECONDS

    d = tmp_path / "d"
    read = short_and_long(d, MAX_SECONDS + 1, monkeypatch)
    args = ["prepare", "--dataset", str(d / "m.jsonl"), "--out", str(tmp_path / "s"), "--encoder", tiny_encoder]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read == ["short.wav"]
    detail = f"{d / 'long.wav'}: {MAX_SECONDS + 1:.1f} s > {MAX_SECONDS:g} s"
    assert f"skip long: too long ({detail})" in result.output
    assert skips(tmp_path / "s") == [{"id": "long", "reason": "too long", "detail": detail}]
    report = json.loads((tmp_path / "s" / "prepare_report.json").read_text())
    # What "N of M utterances skipped" reads: skipped (by reason) of items, under max_seconds.
    assert (report["items"], report["stored"], report["skipped"]) == (2, 1, 1)
    assert (report["skip_reasons"], report["max_seconds"]) == ({"too long": 1}, MAX_SECONDS)
    # --max-seconds moves the limit: the clip is stored on a re-run.
    result = runner.invoke(app, args + ["--max-seconds", str(MAX_SECONDS + 2)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "prepare_report.json").read_text())
    assert (report["stored"], report["skipped"], report["max_seconds"]) == (2, 0, MAX_SECONDS + 2)


# -- checkpoint indexes ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["parent", "absolute"])
def test_an_llm_index_pointing_outside_its_folder_is_refused(tmp_path, how):
    from smap.llm import load_embedding_matrix, resolve

    folder = save_tiny_causal_lm(tmp_path / "llm", max_shard_size="20KB")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    key = next(k for k in data["weight_map"] if "embed_tokens" in k)
    outside = tmp_path / "outside.safetensors"  # a real shard: the old code read it without a word
    shutil.copy(folder / data["weight_map"][key], outside)
    name = "../outside.safetensors" if how == "parent" else str(outside)
    data["weight_map"][key] = name
    index.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"^{index}: {name!r} is not a file name inside {folder}$"):
        load_embedding_matrix(resolve(str(folder)))


def test_an_encoder_index_pointing_outside_its_folder_is_refused(tmp_path):
    from smap.encoders.hf import load_submodule

    folder = tmp_path / "enc"
    folder.mkdir()
    save_file({"enc.weight": torch.zeros(2, 2), "enc.bias": torch.zeros(2)}, str(tmp_path / "outside.safetensors"))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"enc.weight": "../outside.safetensors",
                                                "enc.bias": "../outside.safetensors"}}))
    with pytest.raises(ValueError, match=f"^{index}: '../outside.safetensors' is not a file name inside {folder}$"):
        load_submodule(torch.nn.Linear(2, 2), folder, ("enc.",), "test")


# -- paths holding markup, printed as written -----------------------------------------------------

def _flat(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines, paths included


def test_pretrain_prints_an_llm_and_an_out_holding_markup_as_written(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:8])
    llm = shutil.copytree(tiny_llama, tmp_path / "ll[/x]m")
    out = tmp_path / "ru[/y]n"
    result = runner.invoke(app, ["pretrain", "--train", str(train), "--llm", str(llm), "--out", str(out),
                                 "--preset", "tiny", "--steps", "1", "--warmup", "0", "--max-frames", "400",
                                 "--eval-every", "1000"], terminal_width=400)
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    assert _flat(f"from {llm},") in _flat(result.output)
    assert _flat(f"mapper saved to {out / 'mapper'}") in _flat(result.output)


def test_attach_prints_paths_holding_markup_and_appends_its_samples_whole(tmp_path, sentences, tiny_llama, capsys,
                                                                           monkeypatch):
    import smap.attach
    from smap.attach import AttachConfig, attach

    appended, real_append = [], smap.attach.append_lines

    def spy(path, lines):
        lines = list(lines)
        appended.append((Path(path).name, len(lines)))
        real_append(path, lines)

    monkeypatch.setattr(smap.attach, "append_lines", spy)
    store = write_store(tmp_path / "train", sentences[:8])
    llm = shutil.copytree(tiny_llama, tmp_path / "ll[/x]m")
    out = tmp_path / "ru[/y]n"
    attach(AttachConfig(out=str(out), mapper=str(save_mapper(tmp_path / "mapper", tiny_llama)), llm=str(llm),
                        train=[str(store)], valid=[str(store)], steps=1, warmup=0, max_frames=300, eval_every=1000,
                        save_every=1000, show=2, valid_decode=2, asr_target="raw"))
    err = _flat(capsys.readouterr().err)
    assert _flat(f"LLM {llm} frozen") in err
    assert _flat(f"model saved to {out} (use: smap infer --model {out} ...)") in err
    assert appended == [("samples.jsonl", 2)]  # one flushed append per validation: a kill cuts no line
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_the_evaluation_table_shows_a_split_key_holding_markup_as_written():
    from smap.evaluate import report
    from smap.evaluate.run import Entry, Results
    from smap.evaluate.suites import Split

    split = Split(suite="my[/x]data", name="te[bold]st", task="asr", metrics=("wer",), path="/d/my[/x]data/te[bold]st")
    meta = {"finished": "now", "data_root": "data", "systems": {"smap": {}}, "packages": {}, "python": "3",
            "scoring": {}}
    console = Console(record=True, width=200)
    console.print(report.rich_table(Results([Entry(split, "smap", 3, {"wer": 12.34}, [], 1.0)], [], meta)))
    text = console.export_text()
    assert "my[/x]data/te[bold]st WER↓" in text and "12.3" in text


# -- a mapper folder, saved in one step -----------------------------------------------------------

def _pair(folder: Path) -> tuple[bytes | None, bytes | None]:
    return tuple((folder / f).read_bytes() if (folder / f).is_file() else None for f in (CONFIG_FILE, WEIGHTS_FILE))


class _Killed(BaseException):
    """A kill at a rename, as far as the code under test can tell (not an Exception: nothing catches it)."""


@pytest.mark.parametrize("kill_at", [1, 2])
def test_a_kill_while_saving_a_mapper_never_leaves_new_weights_beside_an_old_config(tmp_path, monkeypatch, kill_at):
    torch.manual_seed(0)
    old, new = SpeechMapper(preset("tiny", 16, 24)), SpeechMapper(preset("tiny", 16, 32))
    new.save_pretrained(tmp_path / "new")
    folder = tmp_path / "mapper"
    old.save_pretrained(folder)
    pairs = {"old": _pair(folder), "new": _pair(tmp_path / "new"), "none": (None, None)}
    renames, real_replace = [], os.replace

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == kill_at:
            raise _Killed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    try:
        new.save_pretrained(folder)
    except _Killed:
        pass
    monkeypatch.setattr(os, "replace", real_replace)
    # The old pair, the new pair, or (killed between removing the old folder and renaming the new
    # one into place) neither; never one of each.
    assert _pair(folder) in pairs.values()
    new.save_pretrained(folder)  # a save over a folder that exists replaces it
    assert _pair(folder) == pairs["new"] and SpeechMapper.from_pretrained(folder).config == new.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mapper", "new"]  # no temporary left beside


# -- flite's input ---------------------------------------------------------------------------------

@pytest.mark.flite
def test_flites_text_file_is_written_through_smap_fileio(monkeypatch):
    import smap.synth
    from smap.synth import synthesize

    written, real = [], smap.synth.atomic_write_text

    def spy(path, text):
        written.append(text)
        real(path, text)

    monkeypatch.setattr(smap.synth, "atomic_write_text", spy)
    assert synthesize("-o is not an option here.", "flite:slt").numel() > 16000
    assert written == ["-o is not an option here."]
