"""Speech out: synthesisers of several families behind one call.

`synthesize(text, voice, rate, pitch, sr)` returns (samples,) float32 in [-1, 1] at `sr`; `voice`
names the family before a colon:

  espeak:en-us+m3    eSpeak NG (formant), through ctypes on the library that the `espeakng-loader`
                     wheel ships with its voice data. A name without a family ('en-us+m3', as
                     stores record their speakers) is eSpeak's.
  pico:en-US         SVOX Pico (HMM parametric) from the `py-nanotts` wheel, lingware inside it:
  pico:en-GB         two English women's voices, 16 kHz.
  flite:slt          CMU Flite (Debian's `flite`), one process per utterance: slt (US woman), rms
  flite:awb          (US man), awb (Scottish man), clustergen; kal16 (US man), diphone. 16 kHz.
  flite:rms          `SMAP_FLITE` names the program where it is not on PATH (a `dpkg -x` copy
  flite:kal16        without root: the libraries beside it are found).

rate is in words per minute on eSpeak's scale (175: its default). Pico and Flite take rate/175 as
a tempo relative to their voices' own; Pico's is kept to 0.8-1.2, as faster Pico speech loses
words. pitch is on eSpeak's 0-100 scale (50: the voice's own); Pico takes it as a factor,
2^((pitch-50)/50) kept to 0.7-1.3; Flite keeps its voices' pitch (rms has no pitch control).

Every family is a pure function of (text, voice, rate, pitch): the same arguments give the same
samples, whatever was synthesised before, in this process or another.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from smap.audio import SAMPLE_RATE, AudioError, resample
from smap.fileio import atomic_write_text

FAMILIES = ("espeak", "pico", "flite")
PICO_VOICES = ("en-US", "en-GB")
FLITE_VOICES = ("slt", "awb", "rms", "kal16")  # kal (8 kHz) and awb_time (clock times only) left out
DEFAULT_RATE = 175  # eSpeak's words per minute; the tempo every family speaks at its own pace
INSTALL = {
    "espeak": "pip install espeakng-loader",
    "pico": "pip install py-nanotts==0.1.1",
    "flite": ("apt-get install flite (without root: apt-get download flite libflite1, dpkg -x each .deb "
              "into one folder, and set SMAP_FLITE=that/folder/usr/bin/flite)"),
}
NO_SYNTHESISER = "no synthesiser"  # AudioError.reason of a family that is not installed


def _missing(family: str, what: str) -> AudioError:
    return AudioError(f"{family} voices need {what}: {INSTALL[family]}", reason=NO_SYNTHESISER)


def synthesize(text: str, voice: str = "en-us", rate: int = DEFAULT_RATE, pitch: int = 50,
               sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Speak `text`: (samples,) float32 at `sr`.

    voice: 'family:name' (module docstring), or an eSpeak voice alone: a language ('en-us', 'en',
    'en-gb-scotland', ...) with an optional variant after '+' ('en-us+f2'); rate: words per minute
    (eSpeak takes 80-450); pitch: 0-100 (50). Raises AudioError for an unknown voice, or one whose
    synthesiser is not installed (reason NO_SYNTHESISER, the message saying what to install).
    """
    family, _, name = voice.rpartition(":")
    speak = {"": _espeak_wave, "espeak": _espeak_wave, "pico": _pico_wave, "flite": _flite_wave}.get(family)
    if speak is None:
        raise AudioError(f"voice {voice!r}: no synthesiser family {family!r}; choose one of "
                         + ", ".join(f"'{f}:'" for f in FAMILIES))
    wav, native_sr = speak(text, name, rate, pitch)
    return resample(torch.from_numpy(wav), native_sr, sr)


# ---------------------------------------------------------------------------------------------
# eSpeak NG

_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8 = 2, 1, 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _espeak_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise _missing("espeak", "the espeakng-loader wheel") from None
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
                                     f"optionally '+' a variant such as 'f2'; see smap.synth.espeak_variants())")
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


def _espeak_wave(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    wav, native_sr = _espeak().synthesize(text, voice, rate, pitch)
    return wav.astype(np.float32) / 32768.0, native_sr


def espeak_variants() -> list[str]:
    """Names of eSpeak NG's voice variants (the part after '+' in a voice), as shipped in the wheel."""
    return sorted(p.name for p in (Path(_espeak_paths()[1]) / "voices" / "!v").iterdir() if p.is_file())


# ---------------------------------------------------------------------------------------------
# SVOX Pico

_M_PERTURB = -6  # glibc's mallopt: fill the memory malloc hands out with this byte ^ 0xFF
_PICO_LOCK = threading.Lock()


def _pico_wave(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """(samples,) float32 at 16 kHz.

    Each call starts a new Pico system in memory that py-nanotts mallocs, and Pico reads some of it
    before writing it: the audio depended on what the process had freed before (the same call after
    another sentence gave other samples). glibc's perturb byte 0xFF makes malloc hand out zeroed
    memory, as in a fresh process: set for the call only, under a lock. (The wheel is manylinux,
    so glibc is there.)
    """
    try:
        from py_nanotts import NanoTTS
    except ImportError:
        raise _missing("pico", "the py-nanotts wheel") from None
    speed = min(max(rate / DEFAULT_RATE, 0.8), 1.2)
    factor = min(max(2.0 ** ((pitch - 50) / 50), 0.7), 1.3)
    libc = ctypes.CDLL(None)
    with _PICO_LOCK:
        libc.mallopt(_M_PERTURB, 0xFF)
        try:
            # At full volume Pico clips up to 1% of the samples; at half, none (peaks up to 0.93).
            pcm = NanoTTS().speak(text, voice=voice, speed=speed, pitch=factor, volume=0.5)
        except (ValueError, RuntimeError) as e:
            raise AudioError(f"Pico failed on voice {voice!r} ({e}); its English voices are "
                             + ", ".join(f"'pico:{v}'" for v in PICO_VOICES)) from None
        finally:
            libc.mallopt(_M_PERTURB, 0)
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, 16000


# ---------------------------------------------------------------------------------------------
# Flite

@functools.lru_cache(maxsize=4)
def _flite(own: str | None, search_path: str | None) -> tuple[str, dict[str, str] | None, frozenset[str]]:
    """The flite program (SMAP_FLITE `own`, else found on `search_path`), the environment to run it
    in (None: this process's) and its voices. Looked up once per SMAP_FLITE and PATH."""
    if not own:
        found = shutil.which("flite", path=search_path)
        if found is None:
            raise _missing("flite", "the flite program")
        program, env = found, None
    elif not (os.path.isfile(own) and os.access(own, os.X_OK)):
        raise AudioError(f"SMAP_FLITE={own}: no such program; {INSTALL['flite']}", reason=NO_SYNTHESISER)
    else:
        # A copy unpacked with dpkg -x keeps its libraries in usr/lib/<triplet>/ beside usr/bin/.
        libs = sorted({str(f.parent) for f in (Path(own).resolve().parent.parent / "lib").glob("**/lib*.so*")})
        inherited = os.environ.get("LD_LIBRARY_PATH")
        path = os.pathsep.join(libs + ([inherited] if inherited else []))
        program, env = own, {**os.environ, "LD_LIBRARY_PATH": path}
    # Checked here because flite speaks an unknown voice's name in its default 8 kHz voice.
    listed = _run_flite([program, "-lv"], env, "flite -lv")  # "Voices available: kal awb_time ..."
    return program, env, frozenset(listed.split(":", 1)[-1].split())


def _run_flite(args: list[str], env: dict[str, str] | None, what: str) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise AudioError(f"{args[0]} could not start ({e}); {INSTALL['flite']}", reason=NO_SYNTHESISER) from None
    except subprocess.TimeoutExpired:
        raise AudioError(f"flite took over 120 s on {what}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if "error while loading shared libraries" in detail:  # a dpkg -x copy on a bare system: libasound2, say
            raise AudioError(f"flite cannot start ({detail}); apt-get download the Debian package that holds "
                             f"it and dpkg -x it into the same folder", reason=NO_SYNTHESISER)
        raise AudioError(f"flite failed on {what} ({detail})")
    return done.stdout


def _flite_wave(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """(samples,) float32 at the voice's own rate (16 kHz for FLITE_VOICES). pitch is not used."""
    program, env, voices = _flite(os.environ.get("SMAP_FLITE"), os.environ.get("PATH"))
    if voice not in voices:
        raise AudioError(f"flite has no voice {voice!r}; choose one of "
                         + ", ".join(f"'flite:{v}'" for v in FLITE_VOICES))
    with tempfile.TemporaryDirectory(prefix="smap-flite-") as folder:
        # The text goes in a file: on the command line, a sentence starting with '-' would be an option.
        text_file, wav_file = Path(folder) / "text.txt", Path(folder) / "speech.wav"
        atomic_write_text(text_file, text)
        _run_flite([program, "-voice", voice, "--setf", f"duration_stretch={DEFAULT_RATE / rate:.4f}",
                    "-f", str(text_file), "-o", str(wav_file)], env, repr(text[:40]))
        wav, native_sr = sf.read(wav_file, dtype="float32")
    return wav, native_sr
