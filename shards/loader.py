"""Torch loaders over a preprocess output directory: a training stream and a validation split.

Both take shard paths as `shards.Index` lists them (`Index.load(out).paths(split)`, from
OUT/index.json); nothing here lists a folder.

Training is a WebDataset pipeline of small stages, each a plain function over an iterator:

    resampled shard draws → split_by_node → split by worker slot → read tar → shuffle buffer
    → decode (bad samples counted and skipped) → random crop → batch → with_epoch(n)

Shards are drawn *with replacement* from one stream that every rank and worker shares
(same seed), and the two splits deal its draws out round-robin, so no two workers read the
same draw and a rank never runs dry: with `with_epoch(n)` every rank yields exactly the
same number of batches per epoch whatever the shard sizes, and a collective never waits
on a rank that ran out (the classic hang with uneven shard counts). Every random choice is
seeded from (seed, epoch, rank, slot), and batch i of a run always comes from slot
i % num_workers, so a resumed run replays exactly the batches of an uninterrupted one
(`TrainStream.start`). Workers stay up across epochs: one DataLoader per session.

Validation is not resampled: items are read in sorted shard order, grouped into batches
of a fixed size, and batch j goes to rank j % world, so every item is evaluated exactly
once and inside the same batch whatever the world size.

A corrupt sample or an unreadable shard is skipped and counted (`ErrorTally`), never fatal;
the counts ride along with each batch so the trainer can report them per epoch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from shards.format import ShardFormatError, decode_sample
from shards.reader import iter_raw_samples, shard_name

# After this many consecutive shard reads or sample decodes without one good sample, the
# data is not "partly corrupt" any more and training must stop with a clear message.
MAX_CONSECUTIVE_FAILURES = 1000
# How many skip messages one tally prints: one per bad shard (its first error), at most this
# many shards; the per-shard counts cover the rest.
MAX_ERROR_MESSAGES = 5


# ------------------------------------------------------------------------- error counts


@dataclass
class ErrorTally:
    """Skipped samples and shard reads, per shard name ({name: [bad samples, bad reads]}),
    with one message per bad shard (its first error) for the log; `quiet` prints none (the
    training stream: the trainer reports per shard per epoch, `shard_report`)."""

    bad_samples: int = 0
    bad_shards: int = 0
    messages: list[str] = field(default_factory=list)
    by_shard: dict[str, list[int]] = field(default_factory=dict)
    quiet: bool = False

    def record(self, kind: str, exc: Exception, shard: str = "?") -> None:
        counts = self.by_shard.setdefault(shard, [0, 0])
        first = counts == [0, 0]
        if kind == "sample":
            self.bad_samples += 1
            counts[0] += 1
        else:
            self.bad_shards += 1
            counts[1] += 1
        if first and len(self.messages) < MAX_ERROR_MESSAGES:
            message = f"skipped {kind} in {shard}: {exc}"
            self.messages.append(message)
            if not self.quiet:
                print(f"[shards.loader] {message}", file=sys.stderr, flush=True)


def merge_by_shard(*tallies: dict[str, list[int]]) -> dict[str, list[int]]:
    """Sum {shard: [bad samples, bad reads]} dicts (workers, ranks)."""
    merged: dict[str, list[int]] = {}
    for by_shard in tallies:
        for name, (samples, reads) in by_shard.items():
            counts = merged.setdefault(name, [0, 0])
            counts[0] += samples
            counts[1] += reads
    return merged


def shard_report(by_shard: dict[str, list[int]]) -> list[str]:
    """One line per bad shard, sorted by name: what was skipped in it."""
    lines = []
    for name, (samples, reads) in sorted(by_shard.items()):
        parts = [f"{samples} corrupt samples"] if samples else []
        parts += [f"{reads} unreadable reads"] if reads else []
        lines.append(f"{name}: skipped " + " and ".join(parts))
    return lines


# ------------------------------------------------------------------ pipeline stages


def read_shards(src: Iterable[dict[str, Any]], tally: ErrorTally) -> Iterator[dict[str, Any]]:
    """`{"url"}` → raw members of each sample. A tar that breaks part-way yields the samples
    before the break; the break is counted as one bad shard read."""
    failures = 0
    for item in src:
        url = item["url"]
        yielded = 0
        try:
            for members in iter_raw_samples(url):
                members["__shard__"] = shard_name(url)
                yielded += 1
                yield members
        except (ShardFormatError, OSError) as exc:
            tally.record("shard", exc, shard_name(url))
        failures = 0 if yielded else failures + 1
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(f"{failures} shard reads in a row gave no sample; last {url}")


def decode_samples(src: Iterable[dict[str, Any]], tally: ErrorTally) -> Iterator[dict[str, Any]]:
    """Raw members → `{"key", "audio": float32[T], "mask": bool[T], "meta"}`; bad samples
    are counted and dropped."""
    failures = 0
    for members in src:
        try:
            sample = decode_sample(members, shard=members.get("__shard__", "?"))
        except ShardFormatError as exc:
            tally.record("sample", exc, members.get("__shard__", "?"))
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{failures} samples in a row failed to decode") from exc
            continue
        failures = 0
        yield sample


def random_crops(
    src: Iterable[dict[str, Any]], crop: int, rng: np.random.Generator, tries: int = 4
) -> Iterator[dict[str, Any]]:
    """Cut a `crop`-sample window from each sample (0: keep whole). Of up to `tries` random
    offsets, the first whose window is at least half real audio wins (else the one with
    the most), so training rarely spends a step on padding."""
    for sample in src:
        audio, mask = sample["audio"], sample["mask"]
        if crop <= 0 or audio.shape[0] == crop:
            yield sample
            continue
        if audio.shape[0] < crop:
            pad = crop - audio.shape[0]
            yield {**sample, "audio": np.pad(audio, (0, pad)), "mask": np.pad(mask, (0, pad))}
            continue
        best, best_valid = 0, -1
        for _ in range(tries):
            start = int(rng.integers(0, audio.shape[0] - crop + 1))
            valid = int(mask[start : start + crop].sum())
            if valid > best_valid:
                best, best_valid = start, valid
            if 2 * valid >= crop:
                break
        window = slice(best, best + crop)
        yield {**sample, "audio": audio[window], "mask": mask[window]}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples → `{"audio": Tensor[B x T] float32, "mask": Tensor[B x T] bool, "key": [B]}`
    (and `"item": [B]`, the ordinals val_batches numbers items by, when samples carry them).
    Shorter items are zero-padded at the end with mask False."""
    length = max(s["audio"].shape[0] for s in samples)
    audio = np.zeros((len(samples), length), dtype=np.float32)
    mask = np.zeros((len(samples), length), dtype=bool)
    for i, s in enumerate(samples):
        audio[i, : s["audio"].shape[0]] = s["audio"]
        mask[i, : s["mask"].shape[0]] = s["mask"]
    batch = {
        "audio": torch.from_numpy(audio),
        "mask": torch.from_numpy(mask),
        "key": [s["key"] for s in samples],
    }
    if all("item" in s for s in samples):
        batch["item"] = [s["item"] for s in samples]
    return batch


def count_in_slot(lo: int, hi: int, slot: int, num_slots: int) -> int:
    """How many batch indices i in [lo, hi) have i % num_slots == slot."""
    first = lo + (slot - lo) % num_slots
    return len(range(first, hi, num_slots))


def split_by_slot(src: Iterable[Any], slot: int, num_slots: int) -> Iterator[Any]:
    """Every num_slots-th item from `slot` on: wds.split_by_worker, but by stream slot.

    Batch i of a run always comes from slot i % num_workers. A DataLoader asks its workers
    round-robin starting with worker 0, so a session resumed at batch k gives worker w the
    slot (k + w) % num_workers; tying the split to the slot rather than to the worker id is
    what makes a resumed run replay exactly the batches of an uninterrupted one."""
    return islice(src, slot, None, num_slots)


# ---------------------------------------------------------------------- training stream


class TrainStream(IterableDataset):
    """The endless training stream of one rank; epoch e is its batches
    [e * batches_per_epoch, (e + 1) * batches_per_epoch), the same count on every rank.

    Set `start` (the run's batch index to begin at: 0, or the resume point) before making
    the DataLoader; workers then replay the exact batches an uninterrupted run would see.
    Rank and world come from RANK/WORLD_SIZE (or torch.distributed), as for wds.split_by_node.
    Each batch also carries `epoch`, `worker` and the worker's running `bad_samples` /
    `bad_shards` counts for that epoch.
    """

    def __init__(
        self,
        urls: list[str],
        batch_size: int,
        batches_per_epoch: int,
        crop_samples: int = 0,
        shuffle_buffer: int = 1000,
        seed: int = 0,
    ):
        super().__init__()
        if not urls:
            raise ValueError("no training shards")
        self.urls = list(urls)
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.crop_samples = crop_samples
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.start = 0

    def pipeline(
        self, epoch: int, slot: int, num_slots: int, n_batches: int, tally: ErrorTally
    ) -> wds.DataPipeline:
        """The `n_batches` batches of stream slot `slot` in epoch `epoch` on this rank."""
        rank = wds.utils.pytorch_worker_info()[0]
        slot_seed = wds.utils.make_seed(self.seed, epoch, rank, slot)
        return wds.DataPipeline(
            # One shard-draw stream shared by all ranks and slots (worker_seed is constant)…
            wds.ResampledShards(
                self.urls,
                seed=wds.utils.make_seed(self.seed, epoch),
                worker_seed=lambda: 0,
                deterministic=True,
            ),
            # …dealt out so every (rank, slot) reads different draws.
            wds.split_by_node,
            lambda src: split_by_slot(src, slot, num_slots),
            lambda src: read_shards(src, tally),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, seed=slot_seed),
            lambda src: decode_samples(src, tally),
            lambda src: random_crops(src, self.crop_samples, np.random.default_rng(slot_seed)),
            wds.batched(self.batch_size, collation_fn=collate, partial=False),
        ).with_epoch(nbatches=n_batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        _, _, worker, num_workers = wds.utils.pytorch_worker_info()
        slot = (self.start + worker) % num_workers
        per_epoch = self.batches_per_epoch
        epoch = (self.start + worker) // per_epoch
        while True:
            lo, hi = epoch * per_epoch, (epoch + 1) * per_epoch
            n_batches = count_in_slot(lo, hi, slot, num_workers)
            n_skip = count_in_slot(lo, max(lo, self.start), slot, num_workers)
            tally = ErrorTally(quiet=True)
            batches = iter(self.pipeline(epoch, slot, num_workers, n_batches, tally))
            for _ in range(n_skip):  # replay up to the resume point; these were trained on
                next(batches, None)
            for batch in batches:
                batch.update(
                    epoch=epoch,
                    worker=worker,
                    bad_samples=tally.bad_samples,
                    bad_shards=tally.bad_shards,
                    bad_by_shard={k: list(v) for k, v in tally.by_shard.items()},
                )
                yield batch
            epoch += 1


class EpochErrors:
    """Sums the per-worker counts that ride on the batches of one epoch."""

    def __init__(self):
        self.by_worker: dict[int, tuple[int, int]] = {}
        self.shards_by_worker: dict[int, dict[str, list[int]]] = {}

    def update(self, batch: dict[str, Any]) -> None:
        self.by_worker[batch["worker"]] = (batch["bad_samples"], batch["bad_shards"])
        self.shards_by_worker[batch["worker"]] = batch.get("bad_by_shard", {})

    def by_shard(self) -> dict[str, list[int]]:
        """{shard name: [bad samples, bad reads]} of this rank so far this epoch."""
        return merge_by_shard(*self.shards_by_worker.values())

    def clear(self) -> None:
        self.by_worker.clear()
        self.shards_by_worker.clear()

    def totals(self) -> tuple[int, int]:
        """(bad samples, bad shard reads) of this rank so far this epoch."""
        return (
            sum(v[0] for v in self.by_worker.values()),
            sum(v[1] for v in self.by_worker.values()),
        )


def batches_per_epoch(n_samples: int, batch_size: int, world: int) -> int:
    """Batches per rank that make one pass over `n_samples` with `world` ranks (at least 1)."""
    return max(1, n_samples // (batch_size * world))


def train_loader(stream: TrainStream, num_workers: int = 2, pin_memory: bool = False) -> DataLoader:
    """DataLoader over a TrainStream, made once per session: batching happens in the workers
    (batch_size=None), which stay up across epochs. Its own generator keeps the global torch
    RNG untouched, so resuming does not shift it."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(stream.seed),
    )


# ---------------------------------------------------------------------- validation


def listed_items(samples: int, max_items: int = 0) -> int:
    """Items `val_batches(…, max_items)` numbers from a split of `samples` items (what
    index.json lists): all of them, or the first `max_items` when that is > 0."""
    return min(samples, max_items) if max_items else samples


def val_batches(
    paths: Iterable[str | os.PathLike],
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    max_items: int = 0,
    tally: ErrorTally | None = None,
) -> Iterator[dict[str, Any]]:
    """Deterministic validation batches of this rank, full segments with their masks.

    Items are numbered in the order of `paths` (sorted by name) before decoding; item i is
    in batch i // batch_size and batch j belongs to rank j % world. So the union over ranks
    is every item exactly once, in the same batches for any world size; nothing is padded
    or repeated. A corrupt item or shard is skipped and counted in `tally`. `max_items` > 0
    keeps only the first items. Each batch carries its items' ordinals as `"item"`, so a
    fixed subset (evaluate's perceptual items) is the same for any world size.
    """
    tally = tally if tally is not None else ErrorTally()
    index = 0
    current, samples = -1, []
    for path in paths:
        shard = shard_name(path)
        raw = iter_raw_samples(path)
        while True:
            try:
                members = next(raw)
            except StopIteration:
                break
            except (ShardFormatError, OSError) as exc:
                tally.record("shard", exc, shard)
                break
            if max_items and index >= max_items:
                break
            batch_index, index = index // batch_size, index + 1
            if batch_index % world != rank:
                continue
            if batch_index != current and samples:
                yield collate(samples)
                samples = []
            current = batch_index
            try:
                samples.append({**decode_sample(members, shard=shard), "item": index - 1})
            except ShardFormatError as exc:
                tally.record("sample", exc, shard)
        if max_items and index >= max_items:
            break
    if samples:
        yield collate(samples)
