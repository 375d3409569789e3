"""Audio in and speech out.

In: decode files or bytes with soundfile, down-mix to mono, resample with torchaudio. Every
waveform leaves this module as a float32 tensor of shape (samples,) in [-1, 1] at the rate asked.

Out: speech synthesised by eSpeak NG, called through ctypes on the shared library that the
`espeakng-loader` wheel ships with its voice data (no system package needed).
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16000  # what every speech encoder here expects


class AudioError(ValueError):
    """Audio that cannot be read or made; the message names the file or the voice.

    `reason` is a short category for reports: 'missing' (no such file) or 'unreadable'.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


def load_audio(source: str | Path | bytes, sr: int = SAMPLE_RATE, start: float = 0.0,
               end: float | None = None) -> torch.Tensor:
    """Decode a file (or its bytes), down-mix to mono and resample: (samples,) float32 at `sr`.

    `start` and `end` (seconds) cut a segment without decoding the rest, for corpora such as
    EuroParl-ST whose utterances are spans of long recordings.
    """
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
    with f:
        orig_sr = f.samplerate
        first = int(round(start * orig_sr))
        if first:
            f.seek(min(first, f.frames))
        count = -1 if end is None else max(0, int(round(end * orig_sr)) - first)
        try:
            data = f.read(count, dtype="float32", always_2d=True)  # (samples, channels)
        except Exception as e:
            raise AudioError(f"{name}: unreadable audio ({str(e).splitlines()[0]})") from None
    return resample(torch.from_numpy(to_mono(data)), orig_sr, sr)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,): the mean of the channels, as most corpora record one voice."""
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0])


def resample(wav: torch.Tensor, orig_sr: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """(samples,) at `orig_sr` -> (samples,) at `sr`, band-limited (torchaudio's sinc interpolation)."""
    if orig_sr == sr or wav.numel() == 0:
        return wav
    return _resampler(int(orig_sr), int(sr))(wav)


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, sr: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_sr, sr)  # builds its filter kernel once per rate pair


# ---------------------------------------------------------------------------------------------
# eSpeak NG

_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8 = 2, 1, 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _espeak_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise AudioError("speech synthesis needs the espeakng-loader wheel: pip install espeakng-loader") from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class _ESpeak:
    """One synthesis at a time, each on a freshly loaded copy of libespeak-ng.

    eSpeak keeps state in static variables across utterances (the pitch-flutter index, the echo
    buffer), so with one long-lived library the audio of a sentence would depend on everything
    spoken before it, and a resumed or sharded run would not reproduce an uninterrupted one.
    Loading the library anew (about 2 ms) and fixing its noise seed makes the audio a function of
    (text, voice, rate, pitch).
    """

    def __init__(self):
        self.library, self.data = _espeak_paths()
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # kept alive as long as the object

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
        """(samples,) int16 at eSpeak's own rate, and that rate."""
        import _ctypes

        with self.lock:
            lib = ctypes.CDLL(self.library, mode=os.RTLD_LOCAL)
            try:
                sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                    os.path.dirname(self.data).encode(), 0)
                if sample_rate <= 0:
                    raise AudioError(f"eSpeak NG could not start (voice data at {self.data})")
                lib.espeak_SetSynthCallback(self.callback)
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise AudioError(f"eSpeak NG has no voice {voice!r} (a language such as 'en-us', "
                                     f"optionally '+' a variant such as 'f2'; see smap.audio.espeak_variants())")
                lib.espeak_SetParameter(_RATE, int(rate), 0)
                lib.espeak_SetParameter(_PITCH, int(pitch), 0)
                # Breathy variants (f2, f3, ...) add noise from a generator that starting the
                # library seeds from the clock: fix it.
                lib.espeak_ng_SetRandSeed(ctypes.c_long(1))
                data = text.encode("utf-8") + b"\0"
                self.chunks = []
                if lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                    raise AudioError(f"eSpeak NG failed on {text[:40]!r}")
                lib.espeak_Synchronize()
            finally:
                lib.espeak_Terminate()
                _ctypes.dlclose(lib._handle)
            wav = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
            self.chunks = []
            return wav, sample_rate


@functools.lru_cache(maxsize=1)
def _espeak() -> _ESpeak:
    return _ESpeak()


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Speak `text` with eSpeak NG: (samples,) float32 at `sr`.

    voice: a language ('en-us', 'en', 'en-gb-scotland', ...) with an optional variant after '+'
    ('en-us+f2'); rate: words per minute (80-450, eSpeak's default 175); pitch: 0-100 (50).
    The same arguments give the same samples, whatever was synthesised before.
    """
    wav, native_sr = _espeak().synthesize(text, voice, rate, pitch)
    return resample(torch.from_numpy(wav.astype(np.float32) / 32768.0), native_sr, sr)


def espeak_variants() -> list[str]:
    """Names of eSpeak NG's voice variants (the part after '+' in a voice), as shipped in the wheel."""
    return sorted(p.name for p in (Path(_espeak_paths()[1]) / "voices" / "!v").iterdir() if p.is_file())
