"""Reading prepared shards for training: a deterministic, per-rank, resumable stream of batches.

Epoch ``e`` orders the shards by a permutation seeded with ``(seed, e)``, the same on every rank. With at least as
many shards as processes each rank reads its own shards (``order[rank::world]``); with fewer, every rank reads all
of them and keeps every ``world``-th sample. A per-rank shuffle buffer (seeded with ``(seed, e, rank)``) mixes
samples across shards. Every rank makes the same number of steps per epoch (the smallest rank's sample count //
batch size), so DDP never waits for a rank that ran dry. The data position saved in a checkpoint is
``(epoch, batch)``; resuming re-creates that epoch's stream and skips the consumed samples before decoding them.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldm3d import codec
from ldm3d.errors import FailedPrecondition, InvalidArgument


@dataclass
class Batch:
    pixels: np.ndarray  # float32 [B, C, H, W] in [-1, 1], RGB + packed depth
    captions: list[str]
    keys: list[str]


@dataclass(frozen=True)
class Position:
    epoch: int = 0
    batch: int = 0  # batches of this epoch already consumed


def read_manifest(prep: Path) -> dict:
    path = Path(prep) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"--data: {path} cannot be read ({exc}); re-run `ldm3d-train prepare`") from None


def decode_sample(sample: dict, vae_channels: int) -> tuple[np.ndarray, str]:
    """A shard sample → (``float32 [C, H, W]`` packed for the VAE by :mod:`ldm3d.codec`, caption)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(sample["rgb.png"])).convert("RGB"), dtype=np.uint8)
    depth = np.asarray(Image.open(io.BytesIO(sample["depth.png"])), dtype=np.uint16)
    return codec.encode_rgbd(rgb, depth, vae_channels)[0], sample["txt"].decode("utf-8")


class ShardStream:
    """The prepared ``split`` of ``prep`` as seen by one rank."""

    def __init__(self, prep: str | Path, split: str, rank: int, world: int, seed: int, batch_size: int,
                 shuffle_buffer: int, vae_channels: int):
        self.prep, self.split = Path(prep), split
        self.rank, self.world, self.seed, self.batch_size = rank, world, seed, batch_size
        self.buffer, self.channels = shuffle_buffer, vae_channels
        self.manifest = read_manifest(self.prep)
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split and s["count"] > 0]
        for s in self.shards:
            if not (self.prep / s["name"]).is_file():
                raise FailedPrecondition(f"--data: shard {self.prep / s['name']} listed in manifest.json is missing")
        total = sum(s["count"] for s in self.shards)
        self.steps_per_epoch = min(self._rank_count(r) for r in range(world)) // batch_size if self.shards else 0
        if split == "train" and self.steps_per_epoch < 1:
            raise InvalidArgument(
                f"--batch-size={batch_size} is too large for --data {self.prep}: its train split has {total} "
                f"sample(s) for {world} process(es); use a batch size <= {max(1, total // world)} or more data",
                field="batch_size")

    def _rank_count(self, rank: int) -> int:
        """Samples rank ``rank`` gets in any epoch (the count is independent of the shard order for the sample split
        and the minimum over orders is what matters for the shard split, so take the worst case)."""
        counts = [s["count"] for s in self.shards]
        if len(counts) >= self.world:
            # worst case over shard permutations: this rank gets the smallest ones
            per_rank = len(counts) // self.world + (1 if rank < len(counts) % self.world else 0)
            return sum(sorted(counts)[:per_rank]) if per_rank else 0
        total = sum(counts)
        return total // self.world + (1 if rank < total % self.world else 0)

    def _samples(self, epoch: int) -> Iterator[dict]:
        import webdataset as wds

        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        by_shard = len(self.shards) >= self.world
        mine = [self.shards[i] for i in (order[self.rank::self.world] if by_shard else order)]
        stream = wds.tarfile_samples([{"url": str(self.prep / s["name"])} for s in mine])
        if not by_shard:
            stream = (s for i, s in enumerate(stream) if i % self.world == self.rank)
        if self.buffer > 1:
            rng = random.Random(f"{self.seed}-{epoch}-{self.rank}")
            stream = wds.shuffle(self.buffer, initial=self.buffer, rng=rng)(stream)
        return stream

    def batches(self, start: Position) -> Iterator[tuple[Position, Batch]]:
        """Endless batches from ``start``; each comes with the position *after* it."""
        epoch, skip = start.epoch, start.batch
        while True:
            stream = self._samples(epoch)
            for _ in range(skip * self.batch_size):
                next(stream)
            for b in range(skip, self.steps_per_epoch):
                raw = [next(stream) for _ in range(self.batch_size)]
                yield Position(epoch, b + 1), self._decode(raw)
            epoch, skip = epoch + 1, 0

    def first(self, n: int) -> Batch | None:
        """The split's first ``n`` samples in shard order (validation; the same on every call)."""
        import webdataset as wds

        raw = []
        for s in wds.tarfile_samples([{"url": str(self.prep / s["name"])} for s in self.shards]):
            raw.append(s)
            if len(raw) == n:
                break
        return self._decode(raw) if raw else None

    def _decode(self, raw: list[dict]) -> Batch:
        pixels, captions = zip(*(decode_sample(s, self.channels) for s in raw))
        return Batch(np.stack(pixels), list(captions), [s["__key__"] for s in raw])
