"""smap.audio: decoding, down-mixing, resampling, and eSpeak NG synthesis."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch

from smap.audio import AudioError, espeak_variants, load_audio, resample, synthesize


def _tone(freq: float, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wav: torch.Tensor, sr: int) -> float:
    spectrum = torch.fft.rfft(wav).abs()
    return float(spectrum.argmax()) * sr / wav.numel()


def test_stereo_file_is_downmixed_and_resampled(tmp_path):
    left, right = _tone(440, 44100, 1.0), _tone(1000, 44100, 1.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wav = load_audio(path)  # -> 16 kHz mono
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - 16000) <= 1
    # The mean of the channels holds both tones at half amplitude, still at their frequencies.
    spectrum = torch.fft.rfft(wav).abs()
    for hz in (440, 1000):
        assert spectrum[hz] > 0.5 * spectrum.max()
    assert float(wav.abs().max()) < 0.55


def test_resample_keeps_pitch_and_duration():
    tone = torch.from_numpy(_tone(1000, 22050, 2.0))
    out = resample(tone, 22050, 16000)
    assert out.numel() == 32000
    assert abs(_peak_hz(out, 16000) - 1000) < 2
    assert resample(tone, 22050, 22050) is tone


def test_bytes_and_segments(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, _tone(300, 16000, 3.0), 16000)
    whole = load_audio(path.read_bytes())
    assert whole.numel() == 48000
    seg = load_audio(path, start=1.0, end=1.5)
    assert seg.numel() == 8000
    assert torch.allclose(seg, whole[16000:24000], atol=1e-4)


def test_errors_name_the_file_and_reason(tmp_path):
    with pytest.raises(AudioError, match="nowhere.wav: no such audio file") as e:
        load_audio(tmp_path / "nowhere.wav")
    assert e.value.reason == "missing"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\x00" * 40)
    with pytest.raises(AudioError, match="bad.wav: unreadable audio") as e:
        load_audio(bad)
    assert e.value.reason == "unreadable"
    m4a = tmp_path / "talk.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    with pytest.raises(AudioError, match="ffmpeg -i IN.m4a OUT.flac"):
        load_audio(m4a)


def _sha(wav: torch.Tensor) -> str:
    return hashlib.sha256(wav.numpy().tobytes()).hexdigest()


def test_synthesis_is_a_pure_function_of_its_arguments():
    text = "The birds sang before sunrise."
    first = synthesize(text, "en-us+f2", rate=160, pitch=40)
    synthesize("Something else entirely, to disturb any state.", "en+m3", rate=220, pitch=70)
    again = synthesize(text, "en-us+f2", rate=160, pitch=40)
    assert _sha(first) == _sha(again)
    assert 1.0 < first.numel() / 16000 < 4.0 and float(first.abs().max()) > 0.05
    other_voice = synthesize(text, "en-us+m2", rate=160, pitch=40)
    faster = synthesize(text, "en-us+f2", rate=300, pitch=40)
    assert _sha(other_voice) != _sha(first)
    assert faster.numel() < 0.8 * first.numel()


def test_synthesis_is_the_same_in_another_process():
    """Breathy variants draw noise from a generator eSpeak seeds from the clock unless told."""
    import subprocess
    import sys

    code = ("import hashlib; from smap.audio import synthesize; "
            "print(hashlib.sha256(synthesize('A breathy voice.', 'en-us+f2').numpy().tobytes()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert other == _sha(synthesize("A breathy voice.", "en-us+f2"))


def test_unknown_voice_is_refused():
    with pytest.raises(AudioError, match="no voice 'xx-nowhere'"):
        synthesize("hello", "xx-nowhere")


def test_variants_ship_with_the_wheel():
    variants = espeak_variants()
    assert {"f2", "m3", "Michael"} <= set(variants)
