"""transformers speech encoders: SeamlessM4T(-v2), Whisper, and the wav2vec 2.0 family.

The SeamlessM4T-v2 speech encoder is the paper's SFM. Its final output goes through the length
adaptor (stride 8: 6.25 frames/s for the large model), which the paper's mapper then shortens by
4 more: often fewer vectors than transcript tokens. ``layer=N`` takes the raw output of conformer
layer N instead, at 50 frames/s (the layers after N are dropped, not run). The frame rate is
recorded in the feature store, and `smap prepare --llm` reports frames per token, so the choice
can be measured.

Only the encoder's weights are read from a full checkpoint: the shards that hold them (the
safetensors index says which), not the text decoder or vocoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from smap.encoders import Encoder, EncoderError, check_options, resolve_device, spec_name
from smap.fileio import member

SSL_TYPES = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech", "unispeech-sat"}
SEAMLESS_TYPES = {"seamless_m4t", "seamless_m4t_v2"}


def torch_dtype(dtype) -> torch.dtype:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[str(dtype)]
    except KeyError:
        raise EncoderError(f"dtype={dtype!r}: expected float32, float16 or bfloat16") from None


# An encoder checkpoint's files: its weights as safetensors where the repository offers them, else as .bin.
ENCODER_FILES = (["*.json", "*.safetensors", "*.txt", "*.model"], ["*.json", "*.bin", "*.txt", "*.model"])


def model_folder(target: str) -> Path:
    """A local checkpoint folder, or the hub snapshot of an id ``org/name[@revision]`` (weights as
    safetensors when offered); a mistyped path is an error, never a download (`smap.llm.hub_id`)."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    from smap.llm import hub_id, hub_snapshot

    hub = hub_id(target, EncoderError, prefix_means_hub=False)
    if hub is None:
        raise EncoderError(f"{target}: no such folder, and not a hub id (org/name[@revision])")
    return hub_snapshot(hub, lambda folder: any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")),
                        EncoderError, ENCODER_FILES)


def load_submodule(module: nn.Module, folder: Path, prefixes: tuple[str, ...], name: str) -> None:
    """Fill `module` with the checkpoint tensors whose keys start with one of `prefixes` (stripped)."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    state: dict[str, torch.Tensor] = {}
    if index.is_file() or (folder / "model.safetensors").is_file():
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            # a shard name must not lead out of the checkpoint folder
            files = sorted({member(folder, f, index) for k, f in weight_map.items() if k.startswith(prefixes)})
        else:
            files = [folder / "model.safetensors"]
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    prefix = next((p for p in prefixes if key.startswith(p)), None)
                    if prefix:
                        state[key[len(prefix):]] = f.get_tensor(key)
    elif (folder / "pytorch_model.bin").is_file():
        full = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        for key, value in full.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix:
                state[key[len(prefix):]] = value
    else:
        raise EncoderError(f"{name}: {folder} holds no model.safetensors, safetensors index or pytorch_model.bin")
    missing = sorted(set(module.state_dict()) - set(state))
    if missing:
        raise EncoderError(f"{name}: the checkpoint lacks {len(missing)} encoder tensors (e.g. "
                           f"{prefixes[0]}{missing[0]}); is it the right model?")
    module.load_state_dict({k: v for k, v in state.items() if k in module.state_dict()})


class LayerTap:
    """Keeps the raw output of transformer block `layer` (1-based) and drops the blocks after it.

    With ``layer=None`` nothing changes and `output` passes the model's own final output through.
    """

    def __init__(self, layers: nn.ModuleList, layer, name: str):
        self.layer = None if layer in (None, "", "last") else _int(layer, "layer")
        self.kept: torch.Tensor | None = None
        if self.layer is not None:
            if not 1 <= self.layer <= len(layers):
                raise EncoderError(f"{name}: layer={layer} is out of range 1..{len(layers)}")
            del layers[self.layer:]  # never run: the tapped output does not depend on them
            layers[-1].register_forward_hook(self._keep)

    def _keep(self, _module, _args, out) -> None:
        self.kept = out[0] if isinstance(out, tuple) else out

    def __enter__(self) -> LayerTap:
        self.kept = None
        return self

    def __exit__(self, *exc) -> None:
        pass

    def output(self, final: torch.Tensor) -> torch.Tensor:
        return final if self.layer is None else self.kept


def _int(value, option: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EncoderError(f"{option}={value!r}: expected a whole number") from None


class SeamlessEncoder(Encoder):
    """The SeamlessM4T(-v2) speech encoder: conformer stack, then the length adaptor.

    layer: 'adaptor' (default; the encoder's final output, as the model's text decoder reads it)
    or N, the raw output of conformer layer N at the feature rate (50 frames/s).
    """

    def __init__(self, folder, name: str, config, layer=None, device: str | None = None, dtype=None):
        from transformers import AutoFeatureExtractor, SeamlessM4TFeatureExtractor

        if config.model_type == "seamless_m4t_v2":
            from transformers.models.seamless_m4t_v2.modeling_seamless_m4t_v2 import SeamlessM4Tv2SpeechEncoder as Cls
        else:
            from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TSpeechEncoder as Cls
        self.device, self.dtype = resolve_device(device), torch_dtype(dtype)
        model = Cls(config)
        load_submodule(model, folder, ("speech_encoder.",), name)
        self.tap = LayerTap(model.encoder.layers, None if layer == "adaptor" else layer, name)
        self.model = model.to(self.device, self.dtype).eval()
        # transformers' adaptor convolves past a clip's end into the batch's padding (a single clip
        # sees zeros there instead), so a clip's last frames would depend on its batch neighbours.
        # Zeroing the padded positions where the convolutions read them makes batching exact.
        self._mask: torch.Tensor | None = None
        for adapter_layer in (model.adapter.layers if model.adapter is not None else []):
            for norm in (adapter_layer.residual_layer_norm, adapter_layer.self_attn_layer_norm):
                norm.register_forward_hook(self._zero_padding)
        self.extractor = (AutoFeatureExtractor.from_pretrained(folder) if (Path(folder) / "preprocessor_config.json").is_file()
                          else SeamlessM4TFeatureExtractor())
        self.name = spec_name(name, layer=self.tap.layer)
        self.dim = config.hidden_size
        feature_rate = self.extractor.sampling_rate / 160 / self.extractor.stride  # 10 ms fbank frames, stacked
        if self.tap.layer is None and config.add_adapter:
            self.frame_rate = feature_rate / config.adaptor_stride
        else:
            self.frame_rate = feature_rate

    def _zero_padding(self, _module, _args, out: torch.Tensor) -> torch.Tensor:
        return out * self._mask[:, :, None].to(out.dtype)

    @torch.inference_mode()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = self.extractor([w.numpy() for w in waves], sampling_rate=self.sample_rate,
                                padding=True, return_attention_mask=True, return_tensors="pt")
        features = inputs["input_features"].to(self.device, self.dtype)
        mask = inputs["attention_mask"].to(self.device)
        self._mask = mask
        with self.tap:
            if self.tap.layer is None:
                out = self.model(features, attention_mask=mask).last_hidden_state
                lengths = self.model._compute_sub_sample_lengths_from_attention_mask(mask) if self.model.adapter else mask.sum(1)
            else:
                self.model.encoder(self.model.feature_projection(features), attention_mask=mask)
                out, lengths = self.tap.output(None), mask.sum(1)
        out = out.float().cpu()
        return [out[i, : int(n)].clone() for i, n in enumerate(lengths.tolist())]


class SSLEncoder(Encoder):
    """wav2vec 2.0, HuBERT, mHuBERT-147, WavLM, ... through AutoModel (CNN front end: 50 frames/s).

    layer: N, the raw output of transformer layer N; default: the model's last hidden state.
    """

    def __init__(self, folder, name: str, config, layer=None, device: str | None = None, dtype=None):
        from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

        self.device, self.dtype = resolve_device(device), torch_dtype(dtype)
        model = AutoModel.from_pretrained(folder)
        self.tap = LayerTap(model.encoder.layers, layer, name)
        self.model = model.to(self.device, self.dtype).eval()
        # Models with layer-norm feature extractors take an attention mask; group-norm ones
        # (wav2vec2-base) were trained on zero-padded batches without one.
        self.extractor = (AutoFeatureExtractor.from_pretrained(folder) if (Path(folder) / "preprocessor_config.json").is_file()
                          else Wav2Vec2FeatureExtractor(do_normalize=True,
                                                        return_attention_mask=config.feat_extract_norm == "layer"))
        self.name = spec_name(name, layer=self.tap.layer)
        self.dim = config.hidden_size
        stride = 1
        for s in config.conv_stride:
            stride *= s
        self.frame_rate = self.sample_rate / stride

    @torch.inference_mode()
    def encode(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = self.extractor([w.numpy() for w in waves], sampling_rate=self.sample_rate,
                                padding=True, return_tensors="pt")
        values = inputs["input_values"].to(self.device, self.dtype)
        mask = inputs.get("attention_mask")
        with self.tap:
            out = self.model(values, attention_mask=None if mask is None else mask.to(self.device)).last_hidden_state
            out = self.tap.output(out).float().cpu()
        lengths = self.model._get_feat_extract_output_lengths(torch.tensor([w.numel() for w in waves]))
        return [out[i, : int(n)].clone() for i, n in enumerate(lengths.tolist())]


def load_transformers_encoder(target: str, **opts) -> Encoder:
    """The encoder of a transformers checkpoint (folder or hub id), chosen by its config's model type."""
    from transformers import AutoConfig

    from smap.encoders.whisper import HFWhisperEncoder
    from smap.llm import snapshot_commit

    folder = model_folder(target)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise EncoderError(f"{target}: unreadable config.json ({str(e).splitlines()[0]})") from None
    name = f"hf:{target}"
    if config.model_type in SEAMLESS_TYPES:
        cls = SeamlessEncoder
    elif config.model_type == "whisper":
        cls = HFWhisperEncoder
    elif config.model_type in SSL_TYPES:
        cls = SSLEncoder
    else:
        raise EncoderError(f"{target}: model type {config.model_type!r} is not a supported speech encoder "
                           f"(SeamlessM4T, Whisper, {', '.join(sorted(SSL_TYPES))})")
    check_options(name, opts, {"layer", "device", "dtype"})
    encoder = cls(folder, name, config, **opts)
    encoder.revision = snapshot_commit(folder)
    return encoder
