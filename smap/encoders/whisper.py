"""Whisper encoders: CTranslate2 (the embedded default, faster-whisper models) and transformers.

Both read Whisper's log-mel spectrogram (computed here in torch, equal to openai/whisper's) and
return one 50 Hz frame per 20 ms, cut to the real length of each clip.

Whisper was trained on clips padded to a 30 s window. CTranslate2 also accepts shorter inputs;
without the window a 3 s clip costs about a thirtieth of the compute, and the features still carry
the words (greedy decoding from them finds the same content words). ``window=1`` restores the
30 s padding; the transformers encoder always uses it, since it refuses other lengths.

A clip over 30 s is cut into 30 s windows (the last one shorter), without overlap: each window is
encoded as a clip of its own (what Whisper was trained on), kept for its real length, and the
frames are joined in time. A window is a whole number of frames (1500), so a clip of n samples
gives `encoder_frames(n)` frames however it is cut, and its first 30 s give the features of those
30 s alone. Each window has its own log-mel normalisation and no context across the cut: an
overlap would buy that context with frames encoded twice and a rule to merge them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

from smap.encoders import Encoder, EncoderError, cpu_threads, resolve_device, spec_name

SAMPLE_RATE, N_FFT, HOP = 16000, 400, 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
FRAME_RATE = SAMPLE_RATE / HOP / 2  # the encoder's stride-2 convolution halves the 100 Hz mel rate


@functools.lru_cache(maxsize=2)
def _mel_filters(n_mels: int) -> torch.Tensor:
    """(n_mels, 201) Slaney-style filters, as librosa builds them for openai/whisper."""
    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                                 norm="slaney", mel_scale="slaney").T.contiguous()


def log_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """(batch, samples) -> (batch, n_mels, samples // 160): Whisper's normalised log-mel spectrogram."""
    stft = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT, device=audio.device), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels).to(audio.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    # Per clip, as Whisper: a dynamic range of 8 (80 dB) below the loudest bin.
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


def encoder_frames(n_samples: int) -> int:
    """Output frames of a clip: one per two mel frames, rounded up (the stride-2 convolution)."""
    return (n_samples // HOP + 1) // 2


def _batch(waves: list[torch.Tensor], window: bool) -> torch.Tensor:
    """(batch, samples) zero-padded to the longest clip, or to the 30 s window; each clip at most 30 s.

    At least one STFT frame long: the last window of a long clip can be a few samples."""
    size = WINDOW_SAMPLES if window else max(N_FFT, max(w.numel() for w in waves))
    out = torch.zeros(len(waves), size)
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return out


def encode_windows(waves: list[torch.Tensor], window: bool, encode) -> list[torch.Tensor]:
    """Waves of any length, each (samples,) -> features, each (encoder_frames(samples), dim).

    `encode`: (batch, samples) of at most 30 s -> (batch, frames, dim). Each wave is cut into 30 s
    windows, each window's frames are cut to its real length and a wave's windows joined. No call
    takes more windows than there are waves: a batch of long clips costs no more memory at once
    than a batch of 30 s ones."""
    pieces = [(i, w[start: start + WINDOW_SAMPLES]) for i, w in enumerate(waves)
              for start in range(0, max(w.numel(), 1), WINDOW_SAMPLES)]
    parts: list[list[torch.Tensor]] = [[] for _ in waves]
    for k in range(0, len(pieces), len(waves)):
        group = pieces[k: k + len(waves)]
        feats = encode(_batch([p for _, p in group], window))
        for j, (i, p) in enumerate(group):
            parts[i].append(feats[j, : encoder_frames(p.numel())])
    return [torch.cat(p) for p in parts]


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise EncoderError(f"window={value!r}: expected true or false")


def ct2_device(device: str) -> tuple[str, int]:
    """CTranslate2's (device, device_index) for a torch device: 'cuda:1' -> ('cuda', 1), and 'cuda'
    -> this process's current GPU, which under `accelerate launch` is each process's own (CTranslate2
    alone would put every process's model on GPU 0)."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return kind, 0
    return kind, int(index) if index else torch.cuda.current_device()


class CT2WhisperEncoder(Encoder):
    """The encoder half of a CTranslate2 Whisper model (`ctranslate2.models.Whisper.encode`)."""

    frame_rate = FRAME_RATE

    def __init__(self, path, name: str, window=False, compute_type: str | None = None,
                 device: str | None = None, threads=None):
        import ctranslate2

        device = resolve_device(device)
        self.window = _flag(window)
        self.name = spec_name(name, window=1 if self.window else None)
        device, index = ct2_device(device)
        # One pool of intra-op threads over the cores we have: CTranslate2's default of 4 threads
        # plus torch's own pool would oversubscribe a 2-core machine.
        try:
            self.model = ctranslate2.models.Whisper(
                str(path), device=device, device_index=index,
                compute_type=compute_type or ("int8" if device == "cpu" else "float16"),
                intra_threads=int(threads) if threads else (cpu_threads() if device == "cpu" else 0),
                inter_threads=1)
        except (RuntimeError, ValueError) as e:
            raise EncoderError(f"{name}: CTranslate2 could not load {path} ({e})") from None
        self.n_mels = self.model.n_mels
        self.dim = self._encode(torch.zeros(1, SAMPLE_RATE)).shape[-1]

    def _encode(self, audio: torch.Tensor) -> np.ndarray:
        """(batch, samples) -> (batch, frames, dim)."""
        import ctranslate2

        mel = np.ascontiguousarray(log_mel(audio, self.n_mels).numpy())
        out = self.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
        return np.asarray(out, dtype=np.float32)

    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return encode_windows(waves, self.window, lambda audio: torch.from_numpy(self._encode(audio)))


class HFWhisperEncoder(Encoder):
    """The encoder of a transformers Whisper checkpoint, loaded without its decoder."""

    frame_rate = FRAME_RATE

    def __init__(self, folder, name: str, config, layer=None, device: str | None = None, dtype=None):
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from smap.encoders.hf import LayerTap, load_submodule, torch_dtype

        self.device, self.dtype = resolve_device(device), torch_dtype(dtype)
        model = WhisperEncoder(config)
        load_submodule(model, folder, ("model.encoder.", "encoder."), name)
        self.tap = LayerTap(model.layers, layer, name)
        self.model = model.to(self.device, self.dtype).eval()
        self.name = spec_name(name, layer=self.tap.layer)
        self.n_mels, self.dim = config.num_mel_bins, config.d_model

    @torch.inference_mode()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return encode_windows(waves, True, self._encode)

    def _encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, 30 s of samples) -> (batch, 1500, dim) on the CPU."""
        mel = log_mel(audio.to(self.device), self.n_mels).to(self.dtype)
        with self.tap:
            out = self.model(mel).last_hidden_state
        return self.tap.output(out).float().cpu()
