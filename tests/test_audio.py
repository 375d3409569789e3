"""smap.audio: decoding, down-mixing, resampling and signal effects (synthesis: tests/test_synth.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from smap.audio import AudioError, apply_effects, load_audio, resample


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


# -- hostile headers and samples ----------------------------------------------------------------

@pytest.mark.parametrize("rate", [1, 3999, 192001, 1_000_000])
def test_a_sample_rate_outside_the_sane_range_is_refused_before_reading(tmp_path, rate, monkeypatch):
    path = tmp_path / "odd.wav"
    sf.write(path, _tone(100, 16000, 0.1), rate)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a file it should refuse"))
    with pytest.raises(AudioError, match=f"odd.wav: sample rate {rate} Hz outside 4000-192000$") as e:
        load_audio(path)
    assert e.value.reason == "unreadable"


def test_an_odd_sample_rate_is_resampled_through_a_bounded_ratio(tmp_path, monkeypatch):
    """44,101 Hz -> 16 kHz (gcd 1) built a 16000 x 44101-tap kernel: 95 s and 23 GB for one clip."""
    import torchaudio

    from smap import audio

    built = []
    real = torchaudio.transforms.Resample

    def bounded(orig_freq, new_freq, *args, **kwargs):
        # refused here, before the kernel is built: on the old code this test fails fast, not after 95 s
        assert max(orig_freq, new_freq) <= audio.MAX_RATIO_TERM, (orig_freq, new_freq)
        built.append(real(orig_freq, new_freq, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(torchaudio.transforms, "Resample", bounded)
    audio._resampler.cache_clear()  # a resampler cached by another test would not pass through the spy
    path = tmp_path / "odd.wav"
    sf.write(path, _tone(1000, 44101, 1.0), 44101)
    wav = load_audio(path)
    (resampler,) = built
    assert resampler.kernel.numel() < 1_000_000
    assert wav.numel() == pytest.approx(16000, rel=1e-3)
    assert abs(_peak_hz(wav, 16000) - 1000) < 2  # the pitch kept
    audio._resampler.cache_clear()  # the spy's resampler is not left for later tests


def test_usual_rates_are_resampled_exactly():
    from fractions import Fraction

    from smap import audio

    for rate in (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000):
        r = audio._resampler(rate, 16000)
        assert Fraction(r.new_freq, r.orig_freq) == Fraction(16000, rate), rate


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_samples_are_refused(tmp_path, bad):
    """An infinite peak passed the silence test, and the features turned NaN."""
    samples = _tone(300, 16000, 0.5)
    samples[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="bad.wav: NaN or infinite samples$") as e:
        load_audio(path)
    assert e.value.reason == "unreadable"


def test_a_span_over_max_seconds_is_refused_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "long.flac"
    sf.write(path, _tone(300, 16000, 3.0), 16000)
    assert load_audio(path, max_seconds=3.0).numel() == 48000
    assert load_audio(path, start=1.0, end=2.0, max_seconds=1.5).numel() == 16000  # the span counts, not the file
    assert load_audio(path, start=2.0, max_seconds=1.5).numel() == 16000
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a file it should refuse"))
    with pytest.raises(AudioError, match=r"long.flac: 3.0 s > 2.5 s$") as e:
        load_audio(path, max_seconds=2.5)
    assert e.value.reason == "too long"
    with pytest.raises(AudioError, match=r"long.flac: 2.0 s > 1.5 s$"):
        load_audio(path, start=0.5, end=2.5, max_seconds=1.5)
    with pytest.raises(AudioError, match=r"<bytes>: 3.0 s > 1 s$"):
        load_audio(path.read_bytes(), max_seconds=1)


def test_effects_change_tempo_add_noise_and_cut_the_band():
    rng = np.random.default_rng(0)
    wav = torch.from_numpy(0.3 * _tone(300, 16000, 2.0) + 0.05 * rng.standard_normal(32000).astype(np.float32))
    faster = apply_effects(wav, 16000, (("speed", 1.1),), seed=0)
    assert faster.numel() == pytest.approx(32000 / 1.1, abs=2)
    assert abs(_peak_hz(faster, 16000) - 330) < 3  # the pitch moves with the tempo
    noisy = apply_effects(wav, 16000, (("noise", 20.0),), seed=1)
    snr = 10 * torch.log10(wav.square().mean() / (noisy - wav).square().mean())
    assert float(snr) == pytest.approx(20.0, abs=0.5)
    assert torch.equal(noisy, apply_effects(wav, 16000, (("noise", 20.0),), seed=1))  # the seed fixes the noise
    assert not torch.equal(noisy, apply_effects(wav, 16000, (("noise", 20.0),), seed=2))
    phone = apply_effects(wav, 16000, (("band", 8000),), seed=0)
    spectrum, before = torch.fft.rfft(phone).abs().square(), torch.fft.rfft(wav).abs().square()
    above = slice(int(4500 * 2), None)  # bins of 0.5 Hz: above 4.5 kHz, past the filter's transition
    assert phone.numel() == 32000 and float(spectrum[above].sum()) < 1e-3 * float(before[above].sum())
    assert apply_effects(wav * 4, 16000, (("noise", 10.0),), seed=0).abs().max() <= 1.0
