"""Torch loaders over a preprocess output directory: a training stream and a validation split,
both made of WINDOWS of one length S (the training segment length) cut from the utterances
the shards hold (format 2, docs/SHARDS.md).

Both take the shards `shards.Index` lists (`Index.load(out).entries(split)`, from
OUT/index.json); nothing here lists a folder. Given those `ShardRef`s, every read is checked
against index.json (shards/reader.py): each sample's `split` must be the split read (a val
shard copied over a train one is skipped, counted per sample), and a shard read whole must
give the listed sample count and sha256 (a shortfall or mismatch is counted as a bad read,
with the samples it lacks). Plain paths or URLs (`Index.paths`, a bucket) are read unchecked.

Windows. An utterance of n samples gives the windows that start at phase + k·S (k ≥ 0,
start < n); a window running past the end is zero-padded with mask False, and an utterance
shorter than S gives one window at 0. A window is used only if it holds at least
min(S/2, 1 s) of real audio (its overlap with the `valid` runs): enough for every loss and
metric to see speech, while a short utterance still trains at a long S. Training draws the
phase per epoch and utterance, seeded from (seed, epoch, key), so every epoch sees other
cuts and a resumed run the same ones; validation and `telucodec eval` use phase 0, a fixed
grid.

Training is a WebDataset pipeline of small stages, each a plain function over an iterator:

    resampled shard draws → split_by_node → split by worker slot → read tar → shuffle
    utterances → decode (bad samples counted and skipped) → cut windows → shuffle windows
    → batch → with_epoch(n)

Shards are drawn *with replacement* from one stream that every rank and worker shares
(same seed), and the two splits deal its draws out round-robin, so no two workers read the
same draw and a rank never runs dry: with `with_epoch(n)` every rank yields exactly the
same number of batches per epoch whatever the shard sizes, and a collective never waits
on a rank that ran out (the classic hang with uneven shard counts). Every random choice is
seeded from (seed, epoch, rank, slot) or (seed, epoch, key), and batch i of a run always
comes from slot i % num_workers, so a resumed run replays exactly the batches of an
uninterrupted one (`TrainStream.start`). Workers stay up across epochs: one DataLoader per
session. The second shuffle mixes the windows of many utterances, so a batch is not one
utterance's consecutive windows.

Validation is not resampled: windows are numbered on the grid in sorted shard order from
each sample's json `samples` and `valid` (no audio decoded to count them), grouped into
batches of a fixed size, and batch j goes to rank j % world, so every window is evaluated
exactly once and inside the same batch whatever the world size; a rank decodes only the
utterances that hold one of its windows.

A corrupt sample, a sample of another split or an unreadable shard is skipped and counted
(`ErrorTally`), never fatal, and so is every shortfall or mismatch against index.json; the
per-shard counts ride along with each batch so the trainer reports them per epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from shards.format import (
    SAMPLE_RATE,
    ShardFormatError,
    SplitMismatchError,
    checked_runs,
    decode_pcm,
    pcm_to_float,
)
from shards.index import ShardRef
from shards.reader import (
    ShardMismatchError,
    ShardSource,
    check_source,
    iter_raw_samples,
    shard_name,
)

log = logging.getLogger(__name__)

# A window must hold min(S/2, MIN_REAL_SECONDS) of real audio to be used (`min_real_samples`).
MIN_REAL_SECONDS = 1.0
# Audio the window shuffle of a training worker holds: 256 s is 20 MB of float32 + mask,
# 256 one-second windows from ~30 utterances of 8 s, whatever S is.
WINDOW_BUFFER_SECONDS = 256.0
# After this many consecutive shard reads or sample decodes without one good sample, the
# data is not "partly corrupt" any more and training must stop with a clear message.
MAX_CONSECUTIVE_FAILURES = 1000
# How many messages one tally prints: one per bad shard and kind of problem (its first), at
# most this many in all; the per-shard counts cover the rest.
MAX_ERROR_MESSAGES = 5
# What ErrorTally.by_shard counts per shard, in the order of its lists (batches carry them,
# metrics.json keeps them). The last two are parts of the first two.
SHARD_COUNTS = (
    "skipped_samples",  # samples skipped: undecodable, or of another split
    "bad_reads",  # reads that broke, were refused, or differ from index.json
    "missing_samples",  # samples index.json lists that the reads did not give
    "other_split",  # of skipped_samples: meta `split` is not the split index.json lists
    "sha256_mismatches",  # of bad_reads: whole reads whose bytes differ from index.json
)


# ------------------------------------------------------------------------- error counts


@dataclass
class ErrorTally:
    """What reads skipped or found wrong, per shard name ({name: counts in SHARD_COUNTS
    order}), with one message per bad shard and kind (its first) for the log; `quiet`
    prints none (the training stream: the trainer reports per shard per epoch,
    `shard_report`). `bad_samples` and `bad_shards` are the first two columns' totals."""

    bad_samples: int = 0
    bad_shards: int = 0
    messages: list[str] = field(default_factory=list)
    by_shard: dict[str, list[int]] = field(default_factory=dict)
    quiet: bool = False
    _told: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def record(self, kind: str, exc: Exception, shard: str = "?", missing: int = 0) -> None:
        """Count one skipped sample (`kind` "sample") or one bad shard read ("shard"; of
        the samples index.json lists for it, `missing` were not read)."""
        counts = self.by_shard.setdefault(shard, [0] * len(SHARD_COUNTS))
        if kind == "sample":
            self.bad_samples += 1
            counts[0] += 1
            other = isinstance(exc, SplitMismatchError)
            counts[3] += int(other)
            what = "skipped samples of another split" if other else "skipped a corrupt sample"
        else:
            self.bad_shards += 1
            counts[1] += 1
            counts[2] += missing
            differs = isinstance(exc, ShardMismatchError)
            counts[4] += int(differs and exc.sha256_differs)
            what = "shard differs from index.json" if differs else "bad shard read"
        if missing:
            exc = f"{exc} ({missing} samples index.json lists not read)"
        if (shard, what) not in self._told and len(self.messages) < MAX_ERROR_MESSAGES:
            self._told.add((shard, what))
            message = f"{what}: {exc}"
            self.messages.append(message)
            if not self.quiet:
                log.warning("%s", message)

    def totals(self) -> list[int]:
        """SHARD_COUNTS summed over shards."""
        columns = range(len(SHARD_COUNTS))
        return [sum(counts[i] for counts in self.by_shard.values()) for i in columns]

    def total(self, column: str) -> int:
        """One SHARD_COUNTS column summed over shards."""
        return self.totals()[SHARD_COUNTS.index(column)]


def merge_by_shard(*tallies: dict[str, list[int]]) -> dict[str, list[int]]:
    """Sum {shard: counts in SHARD_COUNTS order} dicts (workers, ranks); shorter lists (two
    columns, from before index.json checks) count as zeros in the rest."""
    merged: dict[str, list[int]] = {}
    for by_shard in tallies:
        for name, counts in by_shard.items():
            total = merged.setdefault(name, [0] * len(SHARD_COUNTS))
            for i, value in enumerate(counts):
                total[i] += value
    return merged


def describe_counts(counts: Sequence[int]) -> str:
    """SHARD_COUNTS (shorter lists: zeros for the rest) in words: `skipped 2 corrupt samples
    and 1 unreadable reads; 40 samples index.json lists not read; sha256 differs from
    index.json in 1 reads`."""
    skipped, reads, missing, other, sha = [*counts, 0, 0, 0, 0, 0][: len(SHARD_COUNTS)]
    skips = [
        (skipped - other, "corrupt samples"),
        (other, "samples of another split"),
        (reads - sha, "unreadable reads"),
    ]
    parts = []
    if any(n for n, _ in skips):
        parts.append("skipped " + " and ".join(f"{n} {what}" for n, what in skips if n))
    if missing:
        parts.append(f"{missing} samples index.json lists not read")
    if sha:
        parts.append(f"sha256 differs from index.json in {sha} reads")
    return "; ".join(parts)


def shard_report(by_shard: dict[str, list[int]]) -> list[str]:
    """One line per bad shard, sorted by name: what was skipped in it and how its reads
    differ from index.json (`describe_counts`)."""
    return [f"{name}: {describe_counts(counts)}" for name, counts in sorted(by_shard.items())]


# ------------------------------------------------------------------ pipeline stages


def read_shard(source: ShardSource, tally: ErrorTally) -> Iterator[dict[str, Any]]:
    """Raw members of each sample of one shard, tagged with `__shard__` (its name) and, for
    a ShardRef, `__split__` (the split index.json lists it under). Nothing is raised: a
    break, a refused URL, or a whole read that differs from index.json (count, sha256) is
    counted in `tally` as one bad read, with the listed samples it did not give. Closing
    the generator early (a max-items or epoch cut) is a partial read: nothing is counted."""
    name = shard_name(source)
    tags = {"__shard__": name}
    if isinstance(source, ShardRef):
        tags["__split__"] = source.split
    got = 0
    try:
        for members in iter_raw_samples(source):
            members.update(tags)
            got += 1
            yield members
    except (ShardFormatError, OSError) as exc:
        listed = source.samples if isinstance(source, ShardRef) else got
        tally.record("shard", exc, name, missing=max(0, listed - got))


def read_shards(
    src: Iterable[dict[str, Any]],
    tally: ErrorTally,
    listed: Mapping[str, ShardSource] | None = None,
) -> Iterator[dict[str, Any]]:
    """`{"url"}` → raw members of each sample (`read_shard`). A tar that breaks part-way
    yields the samples before the break; the break is counted as one bad shard read.
    `listed` maps a drawn url back to the ShardRef (or path object) it stands for, which
    is then read as a local file and checked against index.json."""
    failures = 0
    for item in src:
        source = item["url"]
        if listed and isinstance(source, str):
            source = listed.get(source, source)
        yielded = 0
        for members in read_shard(source, tally):
            yielded += 1
            yield members
        failures = 0 if yielded else failures + 1
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(
                f"{failures} shard reads in a row gave no sample; last {shard_name(source)}"
            )


def decode_samples(src: Iterable[dict[str, Any]], tally: ErrorTally) -> Iterator[dict[str, Any]]:
    """Raw members → `{"key", "pcm": int16[T], "runs", "meta"}` (`decode_pcm`: the audio as
    stored; `runs` its meta `valid` as checked integer pairs); bad samples, and samples
    whose `split` is not their shard's (`__split__`), are counted and dropped."""
    failures = 0
    for members in src:
        shard = members.get("__shard__", "?")
        try:
            pcm, meta = decode_pcm(members, shard=shard, split=members.get("__split__"))
        except ShardFormatError as exc:
            tally.record("sample", exc, shard)
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(
                    f"{failures} samples in a row were skipped; last: {exc}"
                ) from exc
            continue
        failures = 0
        yield utterance(members["__key__"], pcm, meta)


# ------------------------------------------------------------------------------ windows


def min_real_samples(window: int, sample_rate: int = SAMPLE_RATE) -> int:
    """The least real audio a window of `window` samples must hold to be used:
    min(S/2, 1 s). Half a window keeps padding from dominating short windows; a long window
    needs only 1 s, so a 2-s utterance still trains at S = 8 s."""
    return min(-(-window // 2), int(MIN_REAL_SECONDS * sample_rate))


def real_samples(valid: Sequence[Sequence[int]], start: int, stop: int) -> int:
    """Samples of the `[start, end)` runs `valid` inside [start, stop)."""
    return sum(max(0, min(int(e), stop) - max(int(s), start)) for s, e in valid)


def window_starts(
    samples: int, valid: Sequence[Sequence[int]], window: int, phase: int = 0
) -> list[int]:
    """Starts of the windows of one utterance of `samples` samples: phase + k·window for
    k ≥ 0 and start < samples (one window at 0 when the utterance is shorter than a
    window), each kept only if it holds `min_real_samples(window)` of the `valid` runs."""
    if samples < window:
        phase = 0
    need = min_real_samples(window)
    return [s for s in range(phase, samples, window) if real_samples(valid, s, s + window) >= need]


def phase_span(samples: int, window: int) -> int:
    """How many phases 0 … span − 1 training draws from for an utterance of `samples`:
    `window`, but no more than keep its first window at least `min_real_samples` long, so
    an utterance that has a window at all has one in every epoch (else a train split of a
    few utterances could give no window in an epoch, and its stream would never yield).
    1 for an utterance shorter than a window: its one window is at 0."""
    if samples < window:
        return 1
    return min(window, samples - min_real_samples(window) + 1)


def window_phase(seed: int, epoch: int, key: str, samples: int, window: int) -> int:
    """The training phase in [0, phase_span) of utterance `key` in `epoch`: a hash of
    (seed, epoch, key), the same in any process, worker or resumed run (Python's `hash` is
    salted per process), and another one in another epoch."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % phase_span(samples, window)


def grid_windows(samples: int, window: int) -> int:
    """Windows on the validation grid of an utterance of `samples` samples that is real
    audio throughout (`valid` [[0, samples]], what the manifest's rows describe)."""
    need = min_real_samples(window)
    return (samples - need) // window + 1 if samples >= need else 0


def expected_windows(samples: int, window: int) -> float:
    """Mean training windows of such an utterance over its phases (`phase_span`): a window
    at start s is kept when samples − s ≥ need, which the starts p + k·window of the phases
    p < window satisfy samples − need + 1 times in all, and those of a narrower span once
    each."""
    need = min_real_samples(window)
    if samples < window:
        return 1.0 if samples >= need else 0.0
    return max(1.0, (samples - need + 1) / window)


def count_windows(rows: Iterable[Mapping[str, Any]], window: int, grid: bool) -> int:
    """Windows of manifest rows (`samples` each): on the validation grid (`grid`), or the
    expected training windows of one epoch, rounded down."""
    if grid:
        return sum(grid_windows(int(r["samples"]), window) for r in rows)
    return int(sum(expected_windows(int(r["samples"]), window) for r in rows))


def utterance(key: str, pcm: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """A decoded utterance as the window stages take it: `{"key", "pcm", "runs", "meta"}`,
    `runs` the `valid` runs (already checked against the audio by `decode_pcm`) as integer
    pairs."""
    return {"key": key, "pcm": pcm, "runs": checked_runs(meta["valid"], pcm.shape[0]), "meta": meta}


def cut_window(sample: Mapping[str, Any], start: int, window: int) -> dict[str, Any]:
    """One window of a decoded utterance (`utterance`): `{"key": "<key>@<start>",
    "pcm": int16[<= window], "runs"}`, its PCM copied (a buffered window must not keep its
    whole utterance alive) and `runs` the `valid` runs inside it, from its start. Padding
    past the utterance's end, the float conversion and the mask wait for `collate`, which
    does them for a whole batch at once (measured: docs/BENCHMARKS.md §2)."""
    stop = start + window
    runs = [
        (max(s, start) - start, min(e, stop) - start)
        for s, e in sample["runs"]
        if s < stop and e > start
    ]
    pcm = sample["pcm"][start:stop].copy()
    return {"key": f"{sample['key']}@{start}", "pcm": pcm, "runs": runs}


def cut_windows(
    src: Iterable[dict[str, Any]], window: int, seed: int, epoch: int
) -> Iterator[dict[str, Any]]:
    """Decoded utterances → their training windows of `window` samples in `epoch`, at the
    phase `window_phase(seed, epoch, key)` (module docstring: the windows and the rule).
    MAX_CONSECUTIVE_FAILURES utterances in a row without a window stop the stream with a
    RuntimeError: a split whose utterances are all shorter than the rule allows would
    otherwise never yield a batch."""
    barren = 0
    for sample in src:
        n = sample["pcm"].shape[0]
        phase = window_phase(seed, epoch, sample["key"], n, window)
        starts = window_starts(n, sample["runs"], window, phase)
        barren = 0 if starts else barren + 1
        if barren >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(
                f"{barren} utterances in a row gave no {window}-sample window holding "
                f"{min_real_samples(window)} samples of real audio; last {sample['key']}"
            )
        for start in starts:
            yield cut_window(sample, start, window)


def window_buffer(window: int, batch_size: int) -> int:
    """Windows the second training shuffle holds: WINDOW_BUFFER_SECONDS of audio (its
    memory does not grow with S), and at least two batches."""
    return max(2 * batch_size, -(-int(WINDOW_BUFFER_SECONDS * SAMPLE_RATE) // window))


def batch_tensors(rows: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised audio Tensor[rows x window] float32 and mask BoolTensor[rows x window]
    that share one storage, the mask after the audio; in a DataLoader worker, a storage made
    in shared memory. Both for measured speed (docs/BENCHMARKS.md §2): a worker hands the
    main process each storage of a batch through a file descriptor and a socket round trip
    of its own, ~0.5 ms of the main process's CPU a storage, so one storage a batch instead
    of two halves that; and a storage made in shared memory (as torch's default_collate
    makes a worker's batch) is not copied there when the batch is sent, ~1 ms of the
    worker's CPU a batch less."""
    size = rows * window
    if torch.utils.data.get_worker_info() is None:
        flat = torch.empty(5 * size, dtype=torch.uint8)
    else:
        shared = torch.UntypedStorage._new_shared(5 * size)
        flat = torch.empty(0, dtype=torch.uint8).set_(shared)
    audio = flat[: 4 * size].view(torch.float32).view(rows, window)
    mask = flat[4 * size :].view(torch.bool).view(rows, window)
    return audio, mask


def collate(windows: list[dict[str, Any]], window: int) -> dict[str, Any]:
    """Windows (`cut_window`) → `{"audio": Tensor[B x S] float32, "mask": Tensor[B x S]
    bool, "key": [B]}` (and `"item": [B]`, the ordinals val_batches numbers windows by,
    when they carry them). A window shorter than S is zero-padded at the end, mask False.

    Hand-built for measured speed: the windows' PCM goes into one int16 [B x S] array,
    converted to float in one pass (`pcm_to_float`: the values `decode_sample` gives), the
    mask is set from their runs, and audio and mask share one storage (`batch_tensors`)."""
    audio, mask = batch_tensors(len(windows), window)
    pcm = np.zeros((len(windows), window), dtype=np.int16)
    mask_rows = mask.numpy()
    mask_rows.fill(False)
    for i, w in enumerate(windows):
        pcm[i, : w["pcm"].shape[0]] = w["pcm"]
        for start, end in w["runs"]:
            mask_rows[i, start:end] = True
    pcm_to_float(pcm, out=audio.numpy())
    batch = {"audio": audio, "mask": mask, "key": [w["key"] for w in windows]}
    if all("item" in w for w in windows):
        batch["item"] = [w["item"] for w in windows]
    return batch


def as_is(batch: Any) -> Any:
    """The DataLoader's collate_fn for ready batches (batch_size=None): its default,
    `default_convert`, walks every batch dict and key list to convert nothing."""
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
    """The endless training stream of one rank: batches of `window_samples`-sample windows
    (audio Tensor[B x S], mask BoolTensor[B x S]); epoch e is its batches
    [e * batches_per_epoch, (e + 1) * batches_per_epoch), the same count on every rank.

    Set `start` (the run's batch index to begin at: 0, or the resume point) before making
    the DataLoader; workers then replay the exact batches an uninterrupted run would see.
    Rank and world come from RANK/WORLD_SIZE (or torch.distributed), as for wds.split_by_node.
    Each batch also carries `epoch`, `worker` and the worker's running `bad_samples` /
    `bad_shards` counts for that epoch, and `bad_by_shard` (SHARD_COUNTS per shard).

    `urls`: the shards to draw from. `Index.entries("train")` (ShardRefs) are read as local
    files and checked against index.json (split of every sample; count and sha256 of every
    whole read); plain paths and URLs are read unchecked. A `pipe:` URL is refused here
    unless TELUCODEC_ALLOW_PIPE=1.
    """

    def __init__(
        self,
        urls: Sequence[ShardSource],
        batch_size: int,
        batches_per_epoch: int,
        window_samples: int = SAMPLE_RATE,
        shuffle_buffer: int = 100,
        seed: int = 0,
    ):
        super().__init__()
        if not urls:
            raise ValueError("no training shards")
        if window_samples < 1 or batches_per_epoch < 1:
            raise ValueError(
                f"window_samples {window_samples} and batches_per_epoch {batches_per_epoch} "
                "must be >= 1"
            )
        for source in urls:
            check_source(source)
        # ResampledShards draws strings: a ShardRef or path object is found again by its
        # path, so it is never taken for a URL.
        self.urls = [u.path if isinstance(u, ShardRef) else os.fspath(u) for u in urls]
        self.listed = {
            url: u for url, u in zip(self.urls, urls, strict=True) if not isinstance(u, str)
        }
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.window_samples = window_samples
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.start = 0

    def pipeline(
        self, epoch: int, slot: int, num_slots: int, n_batches: int, tally: ErrorTally
    ) -> wds.DataPipeline:
        """The `n_batches` batches of stream slot `slot` in epoch `epoch` on this rank."""
        rank = wds.utils.pytorch_worker_info()[0]
        slot_seed = wds.utils.make_seed(self.seed, epoch, rank, slot)
        windows = window_buffer(self.window_samples, self.batch_size)
        to_batch = functools.partial(collate, window=self.window_samples)
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
            lambda src: read_shards(src, tally, self.listed),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, seed=slot_seed),
            lambda src: decode_samples(src, tally),
            lambda src: cut_windows(src, self.window_samples, self.seed, epoch),
            wds.shuffle(windows, initial=windows, seed=wds.utils.make_seed(slot_seed, 1)),
            wds.batched(self.batch_size, collation_fn=to_batch, partial=False),
        ).with_epoch(nbatches=n_batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        _, _, worker, num_workers = wds.utils.pytorch_worker_info()
        slot = (self.start + worker) % num_workers
        per_epoch = self.batches_per_epoch
        epoch = (self.start + worker) // per_epoch
        while True:
            lo, hi = epoch * per_epoch, (epoch + 1) * per_epoch
            n_batches = count_in_slot(lo, hi, slot, num_workers)
            if n_batches == 0:  # more workers than batches: webdataset reads 0 as "endless"
                epoch += 1
                continue
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


def batches_per_epoch(n_windows: int, batch_size: int, world: int) -> int:
    """Batches per rank that make one pass over `n_windows` (`count_windows` of the train
    split's manifest rows) with `world` ranks (at least 1)."""
    return max(1, n_windows // (batch_size * world))


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
        collate_fn=as_is,
        generator=torch.Generator().manual_seed(stream.seed),
    )


# ---------------------------------------------------------------------- validation


def listed_items(windows: int, max_items: int = 0) -> int:
    """Windows `val_batches(…, max_items)` numbers from a split of `windows` grid windows
    (`count_windows(rows, S, grid=True)` of its manifest rows): all of them, or the first
    `max_items` when that is > 0."""
    return min(windows, max_items) if max_items else windows


def sample_meta(members: Mapping[str, Any], shard: str, split: str | None) -> dict[str, Any]:
    """The json member of one raw sample, checked enough to number its windows without
    decoding audio: an object with `samples` >= 1 and `valid` runs inside it. Raises
    ShardFormatError naming shard and key, SplitMismatchError (after the checks, so the
    windows can still be numbered) when its `split` is not `split`."""
    key = members.get("__key__", "?")
    try:
        meta = json.loads(bytes(members["json"]).decode("utf-8"))
        n = meta["samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"'samples' is {n!r}, expected an integer >= 1")
        checked_runs(meta["valid"], n)
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ShardFormatError(f"{shard}: sample {key!r}: bad json member: {exc!r}") from exc
    if split is not None and meta.get("split") != split:
        raise SplitMismatchError(
            f"{shard}: sample {key!r} has split {meta.get('split')!r}, but index.json lists "
            f"this shard under {split!r}"
        )
    return meta


def val_batches(
    paths: Iterable[ShardSource],
    batch_size: int,
    window: int,
    rank: int = 0,
    world: int = 1,
    max_items: int = 0,
    tally: ErrorTally | None = None,
) -> Iterator[dict[str, Any]]:
    """Deterministic validation batches of this rank: windows of `window` samples on the
    fixed grid 0, S, 2S, … of every utterance (`window_starts` at phase 0), with masks.

    Windows are numbered in the order of `paths` (sorted by name), then of the samples in
    a shard, from each sample's json (`samples`, `valid`) before any audio is decoded;
    window i is in batch i // batch_size and batch j belongs to rank j % world. So the
    union over ranks is every window exactly once, in the same batches for any world size;
    a rank decodes only the utterances that hold one of its windows. `max_items` > 0 keeps
    only the first windows. Each batch carries its windows' ordinals as `"item"`, so a
    fixed subset (evaluate's perceptual items) is the same for any world size; its keys
    are `<utterance key>@<start>`.

    Given `Index.entries("val")`, each read is checked against index.json: a sample of
    another split is skipped and counted like a corrupt one (its windows keep their
    ordinals); a shard read whole must give its listed count and sha256. Every rank reads
    every shard, but a bad read, and a sample whose json cannot be read (it numbers no
    window), is counted on rank 0 only, and any other bad sample on the rank that owns its
    first window, so tallies summed over ranks count each problem once. A shard the
    `max_items` cut stops in is read in part and not checked for count or sha256.
    """
    if window < 1 or batch_size < 1:
        raise ValueError(f"window {window} and batch_size {batch_size} must be >= 1")
    tally = tally if tally is not None else ErrorTally()
    reads = tally if rank == 0 else ErrorTally(quiet=True)  # the same reads on every rank
    index = 0
    current, items = -1, []

    def owner(item: int) -> int:
        return (item // batch_size) % world

    for path in paths:
        with closing(read_shard(path, reads)) as raw:
            for members in raw:
                if max_items and index >= max_items:
                    break
                shard = members["__shard__"]
                problem: ShardFormatError | None = None
                try:
                    meta = sample_meta(members, shard, members.get("__split__"))
                except SplitMismatchError as exc:
                    problem, meta = exc, json.loads(bytes(members["json"]).decode("utf-8"))
                except ShardFormatError as exc:
                    if rank == 0:
                        tally.record("sample", exc, shard)
                    continue
                starts = window_starts(meta["samples"], meta["valid"], window)
                if max_items:
                    starts = starts[: max_items - index]
                first, index = index, index + len(starts)
                mine = [(first + j, s) for j, s in enumerate(starts) if owner(first + j) == rank]
                if not mine:
                    continue
                try:
                    if problem is not None:
                        raise problem
                    # Also checks that the audio is the `samples` long the windows assumed.
                    pcm, meta = decode_pcm(members, shard=shard, split=members.get("__split__"))
                except ShardFormatError as exc:
                    if owner(first) == rank:
                        tally.record("sample", exc, shard)
                    continue
                sample = utterance(members["__key__"], pcm, meta)
                for item, start in mine:
                    if item // batch_size != current and items:
                        yield collate(items, window)
                        items = []
                    current = item // batch_size
                    items.append({**cut_window(sample, start, window), "item": item})
        if max_items and index >= max_items:
            break
    if items:
        yield collate(items, window)
