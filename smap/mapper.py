"""The SpeechMapper projector: frozen speech-encoder features -> LLM input embeddings.

    features (batch, frames, input_dim)
      average-pool by `pool` frames (1 by default: none)
      block 1: Conv1d(k=6, s=2) -> Transformer encoder x n_layers -> Linear up-projection
      block 2: Conv1d(k=6, s=2) -> Transformer encoder x n_layers -> Linear up-projection
      Linear to the LLM's embedding size
    -> embeddings (batch, frames // (4 * pool), output_dim)

`pool` is ours, not the paper's: it matches a fast encoder to the token rate before any work is
done (Whisper's 50 Hz frames, pooled by 2, give 6.25 outputs a second against ~3.6 tokens), which
halves the mapper's cost and the number of speech vectors the LLM reads in attach.

`compress="ctc"` is ours too. A linear CTC head on block 1's output (blank, the training
transcripts' token types, one label for any other token) is trained with the mapper; its greedy
labels cut block 1's frames into runs of one non-blank label, each run is averaged into one vector
and blank frames are dropped (`segment_means`), and block 2 (convolution with stride 1) maps those
vectors. The output then has about one vector per token, in the tokens' order, so position j
already holds token j's sound, where the strided mapper must learn to move each word to its
left-packed place. Its length depends on the speech, not only on the frame count. In Stage 1,
`forward(..., align=True)` cuts instead by the forced alignment of the transcript
(`smap.losses.ctc_align`): one run per token, so that vector k is trained towards token k.

`normalize` (each utterance's features to zero mean and unit variance per channel, at inference too)
and SpecAugment-style masks on the features while the mapper trains (`mask_time`, `mask_channels`) are
ours as well, off by default: on the embedded default neither helped it read an unseen synthesiser.

Padding follows the downsampling exactly: a sequence of length L leaves the pooling with
L // pool frames (a last partial window is dropped), block 1 with half that and block 2 with a
quarter (with compress="ctc": as many as block 1's label runs), and its outputs are the same
whether it is alone or padded in a batch (padded frames are zeroed before every convolution and
masked in attention, and runs are cut within each sequence's own frames).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from smap.fileio import atomic_write_dir
from smap.losses import ctc_align, ctc_loss

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class MapperConfig:
    """Dimensions of a SpeechMapper. `dims[i]` is block i's width; block i up-projects to dims[i+1]."""

    input_dim: int = 1024
    output_dim: int = 4096
    dims: tuple[int, ...] = (1024, 2048, 4096)
    n_layers: int = 6
    n_heads: int = 16
    # The paper does not give the feed-forward width; 2560 puts the paper preset at 279M,
    # within 1% of the 277M it reports.
    ffn_dim: int = 2560
    kernel_size: int = 6
    stride: int = 2
    dropout: float = 0.1
    pool: int = 1  # input frames averaged before block 1
    compress: str = "none"  # "ctc": block 1's frames merged by CTC labels before block 2 (module docstring)
    ctc_labels: int = 0  # compress="ctc": token types the CTC head tells apart (it has 2 more outputs)
    ctc_weight: float = 0.05  # compress="ctc": weight of the CTC loss wherever the mapper trains
    normalize: bool = False  # each utterance's features to zero mean, unit variance per channel (`utterance_norm`)
    mask_time: float = 0.0  # in training, about this share of input frames masked, in spans (`mask_features`)
    mask_channels: float = 0.0  # in training, this share of feature channels masked per utterance
    extra: dict = field(default_factory=dict)  # free-form provenance (encoder, LLM, presets)

    def __post_init__(self):
        if self.compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {', '.join(COMPRESSIONS)}, not {self.compress!r}")
        if self.compress == "ctc" and (not isinstance(self.ctc_labels, int) or self.ctc_labels < 1):
            raise ValueError(f"compress='ctc' needs ctc_labels >= 1 token types, not {self.ctc_labels!r}")
        if not isinstance(self.ctc_weight, (int, float)) or self.ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0, not {self.ctc_weight!r}")
        sizes = {"input_dim": self.input_dim, "output_dim": self.output_dim, "n_layers": self.n_layers,
                 "n_heads": self.n_heads, "ffn_dim": self.ffn_dim, "kernel_size": self.kernel_size,
                 "stride": self.stride, "pool": self.pool}
        if not isinstance(self.dims, (list, tuple)):
            raise ValueError(f"dims must be a list of sizes, not {self.dims!r}")
        sizes.update({f"dims[{i}]": d for i, d in enumerate(self.dims)})
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("dropout", "mask_time", "mask_channels"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {value!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a JSON object, not {self.extra!r}")
        self.dims = tuple(self.dims)
        if len(self.dims) != 3:
            raise ValueError(f"dims must give two block widths and the up-projection size, got {self.dims}")
        for d in self.dims[:2]:
            if d % self.n_heads:
                raise ValueError(f"block width {d} is not divisible by n_heads={self.n_heads}")

    @property
    def downsampling(self) -> int:
        """Input frames per output vector; for compress="ctc", the fewest (block 1's)."""
        return self.pool * self.stride ** (1 if self.compress == "ctc" else 2)

    @property
    def block2(self) -> MapperConfig:
        """Block 2's settings: compress="ctc" keeps its length (kernel 3, stride 1)."""
        return replace(self, kernel_size=3, stride=1) if self.compress == "ctc" else self

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output vectors for inputs of `lengths` frames: (batch,) -> (batch,); for compress="ctc"
        the most there can be (one per block-1 frame)."""
        lengths = torch.div(lengths, self.pool, rounding_mode="floor")
        lengths = _conv_lengths(lengths, self.kernel_size, self.stride)
        block2 = self.block2
        return _conv_lengths(lengths, block2.kernel_size, block2.stride)


COMPRESSIONS = ("none", "ctc")

PRESETS: dict[str, dict] = {
    # The paper's mapper: SeamlessM4T-v2 (1024-d) to a 4096-d LLM, ~277M parameters.
    "paper": dict(dims=(1024, 2048, 4096), n_layers=6, n_heads=16, ffn_dim=2560),
    # CPU-sized, for Whisper tiny.en (384-d) and SmolLM2-135M (576-d): ~13M parameters.
    "small": dict(dims=(384, 512, 576), n_layers=2, n_heads=8, ffn_dim=1536),
    # For tests.
    "tiny": dict(dims=(32, 48, 64), n_layers=1, n_heads=2, ffn_dim=64, dropout=0.0),
}


def preset(name: str, input_dim: int, output_dim: int, **overrides) -> MapperConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown mapper preset {name!r}; choose one of {', '.join(PRESETS)}")
    return MapperConfig(input_dim=input_dim, output_dim=output_dim, **{**PRESETS[name], **overrides})


def _conv_lengths(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    # Padding (kernel - stride) // 2 on each side: L -> L // stride for L >= stride.
    pad = (kernel - stride) // 2
    return torch.div(lengths + 2 * pad - kernel, stride, rounding_mode="floor") + 1


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) -> (batch, max_len) bool, True at real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal position encodings, (length, dim)."""
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half - 1, 1))
    t = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    pe = torch.cat([t.sin(), t.cos()], dim=1)
    return pe if pe.shape[1] == dim else nn.functional.pad(pe, (0, dim - pe.shape[1]))


def pool_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each `k` consecutive frames: (batch, frames, dim), (batch,) ->
    (batch, frames // k, dim), lengths // k. Only whole windows of real frames are kept, so
    the result does not depend on how much padding follows a sequence."""
    n = x.shape[1] // k
    return x[:, : n * k].reshape(x.shape[0], n, k, x.shape[2]).mean(2), torch.div(lengths, k, rounding_mode="floor")


def utterance_norm(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each sequence's real frames to zero mean and unit variance per channel; padding stays zero.
    x (batch, frames, dim), lengths (batch,) -> (batch, frames, dim). What stays is how the frames
    differ within the utterance: a voice's constant offset in the features is gone."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.clamp_min(1)[:, None, None].to(x.dtype)
    mean = (x * mask).sum(1, keepdim=True) / n
    var = ((x - mean).pow(2) * mask).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


MASK_SPAN = 10  # input frames per time mask: 0.2 s of Whisper's 50 Hz frames, about a syllable


def mask_features(x: torch.Tensor, lengths: torch.Tensor, time: float, channels: float) -> torch.Tensor:
    """SpecAugment on encoder features (Park et al., 2019), as wav2vec 2.0 masks its hidden states:
    spans of MASK_SPAN frames starting at random real frames, drawn so that about `time` of each
    sequence's frames are covered, and `channels` of the feature channels of each sequence, are set
    to zero. x (batch, frames, dim), lengths (batch,) -> (batch, frames, dim). Draws from torch's
    global generator, which the training loop seeds and checkpoints."""
    batch, frames, dim = x.shape
    keep = torch.ones(batch, frames, 1, dtype=x.dtype, device=x.device)
    if time > 0 and frames:
        starts = torch.rand(batch, frames, device=x.device) < time / MASK_SPAN
        starts &= length_mask(lengths, frames)
        covered = F.max_pool1d(F.pad(starts.to(x.dtype)[:, None], (MASK_SPAN - 1, 0)), MASK_SPAN, 1)[:, 0]
        keep = keep * (1 - covered)[..., None]
    if channels > 0:
        keep = keep * (torch.rand(batch, 1, dim, device=x.device) >= channels).to(x.dtype)
    return x * keep


def segment_means(x: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge frames by greedy CTC labels: each run of one non-blank label becomes the mean of its
    frames, blank frames are dropped (a label repeated across a blank starts a new run, as CTC
    reads it). x (batch, frames, dim), labels (batch, frames) with 0 the blank, lengths (batch,) ->
    (batch, runs, dim), (batch,). A sequence with no non-blank frame becomes one vector, the mean
    of its frames, so that every utterance reaches the LLM."""
    batch, frames, dim = x.shape
    valid = length_mask(lengths, frames)
    kept = valid & (labels > 0)
    silent = ~kept.any(1) & (lengths > 0)
    kept = kept | (valid & silent[:, None])
    prev = F.pad(labels[:, :-1], (1, 0), value=-1)
    starts = kept & (labels != prev)
    counts = starts.sum(1)
    runs = max(int(counts.max()) if batch else 0, 1)
    run_id = (torch.arange(batch, device=x.device)[:, None] * runs + starts.cumsum(1) - 1)[kept]
    sums = x.new_zeros(batch * runs, dim).index_add_(0, run_id, x[kept])
    sizes = torch.zeros(batch * runs, device=x.device).index_add_(0, run_id, torch.ones_like(run_id, dtype=torch.float))
    return (sums / sizes.clamp_min(1)[:, None].to(x.dtype)).view(batch, runs, dim), counts


def mapper_folder(path: str | Path) -> Path:
    """A mapper folder, or the `smap pretrain` run folder that holds one in mapper/."""
    p = Path(path)
    return p / "mapper" if (p / "mapper" / CONFIG_FILE).is_file() else p


class MapperBlock(nn.Module):
    """Conv1d downsampling -> Transformer encoder stack -> linear up-projection."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, cfg: MapperConfig):
        super().__init__()
        self.kernel, self.stride = cfg.kernel_size, cfg.stride
        self.conv = nn.Conv1d(in_dim, dim, cfg.kernel_size, cfg.stride, padding=(cfg.kernel_size - cfg.stride) // 2)
        layer = nn.TransformerEncoderLayer(
            dim, cfg.n_heads, cfg.ffn_dim, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # enable_nested_tensor would drop padded positions in eval mode and change output shapes.
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.up = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (batch, frames, in_dim), lengths (batch,) -> (batch, frames', out_dim), (batch,)."""
        x = x * length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        lengths = _conv_lengths(lengths, self.kernel, self.stride)
        x = x + sinusoids(x.shape[1], x.shape[2], x.device).to(x.dtype)
        x = self.encoder(x, src_key_padding_mask=~length_mask(lengths, x.shape[1]))
        return self.up(x), lengths


class MapperOutput(NamedTuple):
    embeddings: torch.Tensor  # (batch, frames', output_dim)
    lengths: torch.Tensor  # (batch,)
    ctc_loss: torch.Tensor | None  # compress="ctc" given tokens: the CTC head's loss (unweighted)


class SpeechMapper(nn.Module):
    def __init__(self, config: MapperConfig):
        super().__init__()
        self.config = config
        d = config.dims
        self.block1 = MapperBlock(config.input_dim, d[0], d[1], config)
        self.block2 = MapperBlock(d[1], d[1], d[2], config.block2)
        self.proj = nn.Linear(d[2], config.output_dim)
        if config.compress == "ctc":
            # outputs: blank, the ctc_labels token types (ctc_tokens, sorted LLM ids), any other token
            self.ctc_head = nn.Linear(d[1], config.ctc_labels + 2)
            self.register_buffer("ctc_tokens", torch.zeros(config.ctc_labels, dtype=torch.long))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor,
                tokens: list[torch.Tensor] | None = None, align: bool = False) -> MapperOutput:
        """features (batch, frames, input_dim), lengths (batch,) -> embeddings (batch, frames',
        output_dim), lengths (batch,) and, for compress="ctc" given `tokens` (each row's transcript
        ids; empty: none), the CTC loss. frames' = frames // (4 * pool), or for compress="ctc"
        the number of runs of block 1's CTC labels: its greedy labels, or with `align` (and
        `tokens`) the forced alignment of the tokens, so that run k holds token k."""
        cfg = self.config
        if features.shape[-1] != cfg.input_dim:
            raise ValueError(f"features have dim {features.shape[-1]}, the mapper expects {cfg.input_dim}")
        if cfg.normalize:
            features = utterance_norm(features, lengths)
        if self.training and (cfg.mask_time or cfg.mask_channels):
            features = mask_features(features, lengths, cfg.mask_time, cfg.mask_channels)
        if cfg.pool > 1:
            features, lengths = pool_frames(features, lengths, cfg.pool)
        x, lengths = self.block1(features, lengths)
        loss = None
        if cfg.compress == "ctc":
            logits = self.ctc_head(x)
            labels = None
            if tokens is not None:  # one lookup for the batch, not one per row (the step is hot)
                labels = list(self.ctc_targets(torch.cat(tokens)).split([len(t) for t in tokens]))
                loss = ctc_loss(logits, lengths, labels)
            # ctc_align keeps the greedy labels of a row without a feasible alignment
            cut = ctc_align(logits, lengths, labels) if align and labels is not None else logits.argmax(-1)
            x, lengths = segment_means(x, cut, lengths)
        x, lengths = self.block2(x, lengths)
        return MapperOutput(self.proj(x), lengths, loss)

    def set_ctc_tokens(self, token_ids: torch.Tensor) -> None:
        """The LLM token ids that the CTC head tells apart (compress="ctc"); the others share a label."""
        ids = token_ids.unique()  # sorted
        if len(ids) != self.config.ctc_labels:
            raise ValueError(f"the CTC head has {self.config.ctc_labels} token labels, given {len(ids)} token types")
        self.ctc_tokens.copy_(ids)

    def ctc_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(n,) LLM token ids -> (n,) CTC labels: 1 + the index in ctc_tokens, or the last label."""
        ids = token_ids.to(self.ctc_tokens.device)
        pos = torch.searchsorted(self.ctc_tokens, ids).clamp_max(len(self.ctc_tokens) - 1)
        return torch.where(self.ctc_tokens[pos] == ids, pos + 1, self.config.ctc_labels + 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors: `directory` (the mapper's own folder) replaced whole.

        Both files are written into a temporary sibling folder that then takes the folder's place
        (`smap.fileio.atomic_write_dir` with `replace`): after a kill the folder holds the old pair or the new one (or,
        killed between the removal and the rename, none), never new weights beside an old config."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}

        def fill(tmp: Path) -> None:
            tmp.mkdir()
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            (tmp / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")

        atomic_write_dir(directory, fill, replace=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> SpeechMapper:
        """Load from a mapper folder or a pretrain run folder (see `mapper_folder`)."""
        directory = mapper_folder(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing; is {directory} a SpeechMapper folder?")
        try:
            config = MapperConfig(**json.loads(cfg_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{cfg_path}: not a valid mapper config ({e})") from None
        try:
            with torch.device("meta"):  # no memory until the weights are in: a config's sizes cost nothing
                model = cls(config)
            model.load_state_dict(load_file(str(w_path), device=str(map_location)), assign=True)
        except Exception as e:  # safetensors' own error type for a damaged file; RuntimeError for shapes
            raise ValueError(f"{directory}: {WEIGHTS_FILE} does not hold the mapper {CONFIG_FILE} describes "
                             f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
        return model
