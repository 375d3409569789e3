"""Utterances from feature stores, batched by length under a frames-per-batch budget."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from smap.data.store import FeatureStore
from smap.text import normalize


def transcript_tokens(tokenizer, text: str) -> list[int]:
    """Token ids of the normalised transcript, without special tokens: the Stage-1 target."""
    return tokenizer(normalize(text), add_special_tokens=False)["input_ids"]


class UtteranceDataset(Dataset):
    """All utterances of one or more stores. Item i is a dict with ``features`` (frames, dim)
    float32, ``record`` and, when a tokenizer is given, ``tokens`` (n_tokens,) long."""

    def __init__(self, stores: list[FeatureStore], tokenizer=None):
        self.stores = stores
        self.index = [(s, i) for s, store in enumerate(stores) for i in range(len(store))]
        self.records = [stores[s].records[i] for s, i in self.index]
        self.lengths = [int(r["frames"]) for r in self.records]
        # Tokenising once up front keeps the per-step data cost to a memory-mapped read.
        self.tokens = (
            [torch.tensor(transcript_tokens(tokenizer, r.get("text", "")), dtype=torch.long) for r in self.records]
            if tokenizer is not None
            else None
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, j = self.index[i]
        item = {"index": i, "features": self.stores[s].features(j).float(), "record": self.records[i]}
        if self.tokens is not None:
            item["tokens"] = self.tokens[i]
        return item


@dataclass
class Batch:
    features: torch.Tensor  # (batch, frames, dim), zero-padded
    lengths: torch.Tensor  # (batch,)
    tokens: list[torch.Tensor] | None  # one (n_tokens,) per utterance
    records: list[dict]
    indices: list[int]

    def to(self, device) -> Batch:
        return Batch(self.features.to(device), self.lengths.to(device), self.tokens, self.records, self.indices)


def collate(items: list[dict]) -> Batch:
    lengths = torch.tensor([it["features"].shape[0] for it in items])
    feats = torch.zeros(len(items), int(lengths.max()), items[0]["features"].shape[1])
    for b, it in enumerate(items):
        feats[b, : lengths[b]] = it["features"]
    tokens = [it["tokens"] for it in items] if "tokens" in items[0] else None
    return Batch(feats, lengths, tokens, [it["record"] for it in items], [it["index"] for it in items])


class BucketBatchSampler:
    """Batches of similar length whose padded size (longest x count) stays within `max_frames`.

    Each epoch shuffles the utterances, sorts them by length inside windows of `window` items
    (so batches stay varied from one epoch to the next), packs them greedily, then shuffles the
    batches. The order depends only on (seed, epoch), which is what makes `--resume` exact.
    """

    def __init__(self, lengths: list[int], max_frames: int, seed: int = 0, shuffle: bool = True, window: int = 2000):
        self.lengths, self.max_frames, self.seed, self.shuffle, self.window = lengths, max_frames, seed, shuffle, window
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def start_epoch(self, epoch: int) -> None:
        # Not named set_epoch on purpose: Accelerate calls set_epoch with its own count of
        # loader iterations, which is wrong after a resume.
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._pack(epoch))
        return self._cache[1]

    def _pack(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        out: list[list[int]] = []
        for start in range(0, len(order), self.window):
            chunk = sorted(order[start : start + self.window], key=lambda i: self.lengths[i])
            batch: list[int] = []
            longest = 0
            for i in chunk:
                longest_if = max(longest, self.lengths[i])
                if batch and longest_if * (len(batch) + 1) > self.max_frames:
                    out.append(batch)
                    batch, longest_if = [], self.lengths[i]
                batch.append(i)
                longest = longest_if
            if batch:
                out.append(batch)
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


def training_loader(data: UtteranceDataset, sampler, workers: int = 0) -> DataLoader:
    """The loader `fit` iterates: `sampler`'s batches of `data`, collated by `workers` processes
    beside the training step (0: in the step's own process).

    Workers change where batches are read, never which: the order is the sampler's alone. Its own
    generator keeps the loader from drawing on the global RNG, which dropout uses: that is what makes
    a resumed run bit-for-bit the same as an uninterrupted one."""
    return DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator(),
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=workers > 0 and torch.cuda.is_available())


def evaluation_batches(data: UtteranceDataset, max_frames: int, limit: int | None = None, device=None):
    """The first `limit` utterances of `data` (all if None), collated in length buckets, in a fixed
    order: what validation reads. Yields `Batch` on `device`."""
    indices = list(range(min(limit or len(data), len(data))))
    for chunk in BucketBatchSampler([data.lengths[i] for i in indices], max_frames, shuffle=False):
        yield collate([data[indices[i]] for i in chunk]).to(device)
