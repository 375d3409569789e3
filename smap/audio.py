"""Audio in: decode files or bytes with soundfile, down-mix to mono, resample with torchaudio; and
the signal effects that make synthetic speech less clean (`apply_effects`).

Every waveform leaves this module as a float32 tensor of shape (samples,) in [-1, 1] at the rate
asked. Speech out (synthesis) is smap.synth.
"""

from __future__ import annotations

import functools
import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16000  # what every speech encoder here expects
RATES = (4000, 192000)  # sample rates accepted from a file's header (Hz): telephone to studio
MAX_RATIO_TERM = 1000  # the largest denominator of a resampling ratio (see `resample`)
# The longest clip `smap prepare` and `smap infer` read by default, for every encoder (a longer one
# is refused from its header). Self-attention over a whole clip grows with its square: one layer of
# the paper's SeamlessM4T-v2-large speech encoder (16 heads, relative keys) in fp32 took 0.58 GB at
# 20 s and 2.19 GB at 40 s, so with its 2.4 GB of weights about 7 GB at 60 s and 22 GB at 120 s.
# 60 s fits an 8 GB GPU or a 16 GB laptop, is two of Whisper's 30 s windows, and is past the
# longest utterance of LibriSpeech (35 s). A clip refused is a named skip, counted in the report.
MAX_SECONDS = 60.0


class AudioError(ValueError):
    """Audio that cannot be read or made; the message names the file or the voice.

    `reason` is a short category for reports: 'missing' (no such file), 'unreadable' or 'too long'.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


def _open(source: str | Path | bytes) -> tuple[str, sf.SoundFile]:
    """The file's name for messages, and the file opened (its header read, nothing decoded).

    A sample rate outside RATES is refused here: a damaged or hostile header (1 Hz, 10 MHz) would
    make a 4 MB file decode into hours of audio, or the resampler build a filter of gigabytes."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        try:
            found = Path(source).is_file()
        except OSError:  # a name too long for the file system, say
            found = False
        if not found:
            raise AudioError(f"{name}: no such audio file", reason="missing")
    try:
        f = sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except Exception as e:  # libsndfile reports every failure as one error type, with its own text
        hint = ""
        if Path(name).suffix.lower() in {".m4a", ".mp4", ".aac", ".webm", ".wma"}:
            hint = f"; soundfile cannot decode {Path(name).suffix}: convert it first, e.g. ffmpeg -i IN{Path(name).suffix} OUT.flac"
        raise AudioError(f"{name}: unreadable audio ({str(e).splitlines()[0]}){hint}") from None
    sr = f.samplerate
    if not RATES[0] <= sr <= RATES[1]:
        f.close()
        raise AudioError(f"{name}: sample rate {sr} Hz outside {RATES[0]}-{RATES[1]}", reason="unreadable")
    return name, f


def _span(f: sf.SoundFile, start: float, end: float | None) -> tuple[int, int]:
    """The first frame of [start, end) seconds and the frames to read (-1: to the end of the file)."""
    first = int(round(start * f.samplerate))
    return first, -1 if end is None else max(0, int(round(end * f.samplerate)) - first)


def _seconds(f: sf.SoundFile, first: int, count: int) -> float:
    """The duration of a span, as the header tells it (a span past the end holds what is there)."""
    left = max(0, f.frames - first)
    return (left if count < 0 else min(count, left)) / f.samplerate


def check_length(name: str, seconds: float, max_seconds: float | None) -> None:
    """Refuse audio longer than `max_seconds` (None: any length) with reason 'too long'."""
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s > {max_seconds:g} s", reason="too long")


def audio_seconds(source: str | Path | bytes, start: float = 0.0, end: float | None = None) -> float:
    """The duration in seconds of a file's [start, end) span, from its header alone (nothing decoded)."""
    _, f = _open(source)
    with f:
        return _seconds(f, *_span(f, start, end))


def load_audio(source: str | Path | bytes, sr: int = SAMPLE_RATE, start: float = 0.0,
               end: float | None = None, max_seconds: float | None = None) -> torch.Tensor:
    """Decode a file (or its bytes), down-mix to mono and resample: (samples,) float32 at `sr`.

    `start` and `end` (seconds) cut a segment without decoding the rest, for corpora such as
    EuroParl-ST whose utterances are spans of long recordings. A span longer than `max_seconds` is
    refused from the header, before anything is decoded (`AudioError` with reason 'too long'); a
    sample rate outside RATES, or a NaN or infinite sample, with reason 'unreadable'.
    """
    name, f = _open(source)
    with f:
        orig_sr = f.samplerate
        first, count = _span(f, start, end)
        check_length(name, _seconds(f, first, count), max_seconds)
        if first:
            f.seek(min(first, f.frames))
        try:
            data = f.read(count, dtype="float32", always_2d=True)  # (samples, channels)
        except Exception as e:
            raise AudioError(f"{name}: unreadable audio ({str(e).splitlines()[0]})") from None
    # A float file can hold NaN or Inf: an infinite peak passes any silence test, and either one
    # turns the encoder's features, then the training loss, into NaN.
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: NaN or infinite samples", reason="unreadable")
    return resample(torch.from_numpy(to_mono(data)), orig_sr, sr)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,): the mean of the channels, as most corpora record one voice."""
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0])


def resample(wav: torch.Tensor, orig_sr: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """(samples,) at `orig_sr` -> (samples,) at `sr`, band-limited (torchaudio's sinc interpolation).

    The ratio sr / orig_sr is taken as the nearest fraction whose denominator is at most
    MAX_RATIO_TERM: exact for the usual rates (8, 11.025, 16, 22.05, 44.1, 48, 96 kHz ...), within
    0.1% of tempo and pitch for an odd one such as 44,101 Hz."""
    if orig_sr == sr or wav.numel() == 0:
        return wav
    return _resampler(int(orig_sr), int(sr))(wav)


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, sr: int) -> torchaudio.transforms.Resample:
    # torchaudio's kernel has about (sr / gcd) x (orig_sr / gcd) taps, the gcd of the two rates: for
    # 44,101 Hz -> 16 kHz (gcd 1) 706 M taps, 95 s and 23 GB. A bounded ratio bounds the kernel.
    ratio = Fraction(sr, orig_sr).limit_denominator(MAX_RATIO_TERM)
    return torchaudio.transforms.Resample(ratio.denominator, ratio.numerator)  # built once per rate pair


EFFECTS = ("speed", "noise", "band")  # the order they are applied in


def apply_effects(wav: torch.Tensor, sr: int, effects: tuple[tuple[str, float], ...], seed: int) -> torch.Tensor:
    """(samples,) at `sr` -> (samples,) at `sr` with each (effect, value) applied, in EFFECTS' order:

    speed  factor f: tempo and pitch times f, as Kaldi's speed perturbation (read as if sampled at
           f * sr; f in steps of 0.01, so that the resampling filter stays short)
    noise  white noise `value` dB below the utterance's mean power, drawn from `seed`
    band   band-limited as if recorded at `value` Hz (down to that rate and back)
    """
    values = dict(effects)
    if "speed" in values:
        wav = resample(wav, int(round(sr * round(values["speed"], 2))), sr)
    if "noise" in values:
        noise = torch.randn(wav.numel(), generator=torch.Generator().manual_seed(seed))
        wav = wav + noise * wav.square().mean().sqrt() * 10 ** (-values["noise"] / 20)
    if "band" in values:
        narrow = int(values["band"])
        wav = resample(resample(wav, sr, narrow), narrow, sr)[: wav.numel()]  # the way back may add a sample
    return wav.clamp(-1.0, 1.0)


def __getattr__(name: str):
    # Synthesis moved to smap.synth; `from smap.audio import synthesize` still works.
    if name in ("synthesize", "espeak_variants"):
        from smap import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
