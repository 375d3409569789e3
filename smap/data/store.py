"""Feature stores: cached speech-encoder features of one data split, on disk.

Layout of a store folder::

    store.json                 encoder spec, feature dim, frame rate, and the shard index
    shard-00000.safetensors    one tensor per utterance, (frames, dim) float16, keyed by id;
                               the utterances' records (JSON) in the file's metadata

A shard is written to a temporary name and renamed, so it is either complete or absent, and
`store.json` (also written atomically) lists each finished shard with its SHA-256. A writer
reopened on an existing store keeps what is there and reports which ids are done, so an
interrupted `smap prepare` resumes without re-encoding. Readers check checksums on demand
(`verify`) and name the shard that fails; opening a store refuses an index naming files outside
its folder and an id found twice.

The records ride in the safetensors header, which safetensors caps at 100 MB: a record's JSON is
held to MAX_RECORD_BYTES, and a shard is written early once its records reach
MAX_SHARD_METADATA_BYTES, so no shard can outgrow the cap and become unreadable.

Records are plain dicts. Fields every record has: ``id``, ``text`` (the transcript, may be
empty for tasks that need none), ``frames``, ``duration``. Optional fields: ``src_lang``,
``tgt_lang``, ``translation``, ``question``, ``answer``, ``choices``, ``speaker``, ``split``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smap.fileio import atomic_write, atomic_write_text, member

STORE_FILE = "store.json"
FORMAT_VERSION = 1
# JSON bytes, as escaped into the header. A record holds a transcript and a few short fields (smap
# prepare skips texts over 10,000 characters): 1 MB is far beyond any.
MAX_RECORD_BYTES = 1_000_000
MAX_SHARD_METADATA_BYTES = 50_000_000  # half of safetensors' 100 MB header cap: room for the tensor entries


class StoreError(RuntimeError):
    """A store that is missing, corrupt or inconsistent; the message names the file."""


class RecordTooLargeError(StoreError):
    """A record whose metadata is over MAX_RECORD_BYTES: that utterance cannot be stored."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class StoreInfo:
    """What a store holds, written to `store.json`."""

    encoder: str
    dim: int
    frame_rate: float  # feature frames per second of audio
    meta: dict
    shards: list[dict]  # {"file", "sha256", "count"}

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "encoder": self.encoder,
                "dim": self.dim,
                "frame_rate": self.frame_rate,
                "meta": self.meta,
                "shards": self.shards,
            },
            indent=2,
        )

    @classmethod
    def read(cls, root: Path) -> StoreInfo:
        path = root / STORE_FILE
        if not path.is_file():
            raise StoreError(f"{root}: not a feature store (no {STORE_FILE}); run `smap prepare` first")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            info = cls(d["encoder"], int(d["dim"]), float(d["frame_rate"]), d.get("meta", {}), d["shards"])
            files = [s["file"] for s in info.shards]
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{path}: unreadable store index ({e})") from None
        for name in files:
            try:
                member(root, name, path)
            except ValueError as e:
                raise StoreError(str(e)) from None
        return info


class StoreWriter:
    """Appends utterances to a store, one atomically written shard at a time.

    >>> with StoreWriter("feats/train", encoder="whisper-tiny.en", dim=384, frame_rate=50) as w:
    ...     if utt_id not in w.done:
    ...         w.add({"id": utt_id, "text": text, "duration": 3.1}, feats)  # feats (frames, dim)
    """

    def __init__(self, root: str | Path, encoder: str, dim: int, frame_rate: float,
                 meta: dict | None = None, shard_size: int = 256, prefix: str = "shard", index: bool = True):
        """index: write `store.json`. Under several processes only one writes it (the others' shards
        are adopted by the next writer that does), so that no process overwrites another's view."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.prefix = prefix
        self.index = index
        if (self.root / STORE_FILE).is_file():
            self.info = StoreInfo.read(self.root)
            if self.info.dim != dim or self.info.encoder != encoder:
                raise StoreError(
                    f"{self.root}: holds {self.info.encoder} features of dim {self.info.dim}, "
                    f"not {encoder} of dim {dim}; choose another output folder"
                )
            self.info.meta.update(meta or {})
        else:
            self.info = StoreInfo(encoder, dim, float(frame_rate), dict(meta or {}), [])
        self._adopt_orphans()
        self.done: set[str] = {r["id"] for _, r in _index(self.root, self.info.shards)}
        self._records: list[dict] = []
        self._tensors: dict[str, torch.Tensor] = {}
        self._metadata_bytes = 0
        self._flush_index()

    def _adopt_orphans(self) -> None:
        """Shards renamed into place by a run killed before it updated the index."""
        listed = {s["file"] for s in self.info.shards}
        for path in sorted(self.root.glob(f"{self.prefix}-*.safetensors")):
            if path.name not in listed:
                self.info.shards.append(
                    {"file": path.name, "sha256": sha256_file(path), "count": len(_read_records(path))}
                )

    def add(self, record: dict, features: torch.Tensor) -> None:
        """Queue one utterance; `features` is (frames, dim). Writes a shard when one is full."""
        if features.ndim != 2 or features.shape[1] != self.info.dim:
            raise StoreError(f"{record.get('id')}: features of shape {tuple(features.shape)}, "
                             f"expected (frames, {self.info.dim})")
        uid = str(record["id"])
        if uid in self.done or uid in self._tensors:
            raise StoreError(f"{self.root}: duplicate utterance id {uid!r}")
        record = {**record, "id": uid, "frames": int(features.shape[0])}
        size = record_bytes(record)
        if size > MAX_RECORD_BYTES:
            raise RecordTooLargeError(f"{self.root}: utterance {uid!r} has {size} bytes of record metadata, "
                                      f"more than {MAX_RECORD_BYTES}")
        if self._metadata_bytes + size > MAX_SHARD_METADATA_BYTES:
            self.flush()  # within safetensors' header cap, whatever the shard size
        self._records.append(record)
        self._metadata_bytes += size
        self._tensors[uid] = features.detach().to("cpu", torch.float16).contiguous()
        if len(self._records) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._records:
            return
        n = 0
        while (self.root / f"{self.prefix}-{n:05d}.safetensors").exists():
            n += 1
        name = f"{self.prefix}-{n:05d}.safetensors"
        atomic_write(self.root / name, lambda tmp: save_file(self._tensors, str(tmp),
                                                             metadata={"records": json.dumps(self._records)}))
        self.info.shards.append({"file": name, "sha256": sha256_file(self.root / name), "count": len(self._records)})
        self.done.update(r["id"] for r in self._records)
        self._records, self._tensors, self._metadata_bytes = [], {}, 0
        self._flush_index()

    def _flush_index(self) -> None:
        if self.index:
            atomic_write_text(self.root / STORE_FILE, self.info.to_json())

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception, keep finished shards and drop the partial one: a re-run redoes it.
        if exc_type is None:
            self.close()


def record_bytes(record: dict) -> int:
    """The bytes a record takes in a shard's header: its JSON, escaped once more as a header string."""
    return len(json.dumps(json.dumps(record))) - 2


def _read_records(path: Path) -> list[dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["records"])
    except Exception as e:  # safetensors raises several types for a damaged file
        raise StoreError(f"{path}: unreadable shard ({e})") from None


def _index(root: Path, shards: list[dict]) -> Iterator[tuple[int, dict]]:
    """(shard number, record) of every utterance listed, each shard checked: there, holding as many
    utterances as listed, and no id seen before in the store (an id names one utterance)."""
    seen: dict[str, str] = {}
    for k, shard in enumerate(shards):
        path = root / shard["file"]
        if not path.is_file():
            raise StoreError(f"{path}: shard listed in {STORE_FILE} is missing")
        recs = _read_records(path)
        if len(recs) != shard["count"]:
            raise StoreError(f"{path}: holds {len(recs)} utterances, index says {shard['count']}")
        for r in recs:
            uid = r["id"]
            if uid in seen:
                raise StoreError(f"{path}: utterance id {uid!r} also in {seen[uid]} (an id must name one utterance)")
            seen[uid] = shard["file"]
            yield k, r


class FeatureStore:
    """Read access to a store: `records`, `features(i)` -> (frames, dim) float16.

    Shards are memory-mapped and opened lazily, so a store far larger than RAM is fine.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = StoreInfo.read(self.root)
        self.records: list[dict] = []
        self._where: list[tuple[int, str]] = []
        for k, r in _index(self.root, self.info.shards):
            self.records.append(r)
            self._where.append((k, r["id"]))
        self._open: dict[int, object] = {}

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def encoder(self) -> str:
        return self.info.encoder

    def __len__(self) -> int:
        return len(self.records)

    def features(self, i: int) -> torch.Tensor:
        k, uid = self._where[i]
        if k not in self._open:
            path = self.root / self.info.shards[k]["file"]
            try:
                self._open[k] = safe_open(str(path), framework="pt")
            except Exception as e:
                raise StoreError(f"{path}: unreadable shard ({e})") from None
        return self._open[k].get_tensor(uid)

    def __iter__(self) -> Iterator[tuple[dict, torch.Tensor]]:
        for i, r in enumerate(self.records):
            yield r, self.features(i)

    def verify(self) -> None:
        """Check every shard's SHA-256 against the index; raise naming the first bad shard."""
        for shard in self.info.shards:
            path = self.root / shard["file"]
            if sha256_file(path) != shard["sha256"]:
                raise StoreError(f"{path}: checksum mismatch (corrupt shard); re-run `smap prepare` on it")

    def __getstate__(self):  # DataLoader workers reopen shards themselves
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def open_stores(paths: Iterable[str | Path]) -> list[FeatureStore]:
    """Open several stores and check that they hold features of one encoder and dim."""
    stores = [FeatureStore(p) for p in paths]
    if not stores:
        raise StoreError("no feature store given")
    first = stores[0]
    for s in stores[1:]:
        if s.dim != first.dim or s.encoder != first.encoder:
            raise StoreError(f"{s.root}: {s.encoder} features of dim {s.dim} differ from "
                             f"{first.root}: {first.encoder} features of dim {first.dim}")
    return stores
