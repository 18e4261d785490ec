"""An OUT's utterances as a lazy Lhotse `CutSet`, so Lhotse's samplers and collation run on
our shards as they are: no export, no second copy of the audio.

>>> from lhotse.dataset import DynamicBucketingSampler
>>> cuts = cutset("OUT", "train", shuffle_shards=True, seed=0)
>>> sampler = DynamicBucketingSampler(cuts, max_duration=60, num_buckets=4, buffer_size=2000)
>>> batch = next(iter(sampler))          # a CutSet of whole utterances
>>> batch[0].load_audio()                # float32[1 x samples]

It reads the way Lhotse Shar does (`lhotse.shar.LazySharIterator`): the shards index.json
lists are streamed in name order (or shuffled per pass with `seed + epoch`), and each
utterance becomes a `MonoCut` whose recording holds the audio bytes of its tar member in
memory (`AudioSource(type="memory")`), decoded only when `load_audio()` is called. Lhotse
has no source type for "member of a tar", and a per-cut file path would mean unpacking
the shards. A buffering sampler keeps its buffer of cuts, audio bytes included, in memory
(~0.4 MB per 20-s utterance in FLAC, 0.64 MB in npy): size `buffer_size` to that.

Per cut: `id` and `recording.id` are the sample key; `duration` is `samples / 16000`; one
`SupervisionSegment` per `valid` run (the real audio; the rest is padding), and `custom`
carries `valid` (the runs in samples), `source`, `offset`, `gain_db`, `split` and `shard`.
Audio loads through soundfile as `int16 / 32768` (ours: `/ 32767`, `shards.decode_sample`).
Each sample is checked as every reader of an OUT checks it (`shards.decode_sample`: its
meta's `split` is the shard's, its `samples` the audio's length, its `valid` runs inside it),
and each shard against index.json as it is read (count, bytes, sha256: `shards.reader`).
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile as sf

from shards.format import SAMPLE_RATE, decode_sample
from shards.index import Index, ShardRef
from shards.reader import iter_raw_samples

CUSTOM_FIELDS = ("source", "offset", "gain_db", "split")


class OutCutIterator:
    """A re-iterable stream of one split's cuts: what `lhotse.CutSet` wraps lazily.

    Every full pass increments `epoch`, so `shuffle_shards=True` draws a new shard order
    (seeded by `seed + epoch`) each pass, as `LazySharIterator` does."""

    def __init__(self, index: Index, split: str, shuffle_shards: bool = False, seed: int = 0):
        self.refs = index.entries(split)  # raises on an unknown split
        self.split = split
        self.total = index.samples(split)
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.total

    def _shard_order(self) -> list[ShardRef]:
        refs = list(self.refs)
        if self.shuffle_shards:
            random.Random(self.seed + self.epoch).shuffle(refs)
        return refs

    def __iter__(self) -> Iterator[Any]:
        for ref in self._shard_order():
            for members in iter_raw_samples(ref):
                yield _to_cut(members, ref.name, self.split)
        self.epoch += 1


def _audio_bytes(name: str, data: bytes) -> bytes:
    """Bytes soundfile can read: FLAC as stored; an int16 `.npy` wrapped as 16-bit WAV."""
    if name == "audio.flac":
        return data
    pcm = np.load(io.BytesIO(data), allow_pickle=False)
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _to_cut(members: dict[str, Any], shard: str, split: str | None = None) -> Any:
    """One sample's tar members → a MonoCut over an in-memory recording.

    Checked by `shards.decode_sample` first, as every reader checks a sample: a sample of
    another split than `split` raises SplitMismatchError, bad members, `valid` runs or a
    `samples` that differs from the audio raise ShardFormatError. The decoded audio is
    dropped (the cut keeps the bytes and decodes again on `load_audio()`)."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    sample = decode_sample(members, shard, split=split)
    key, meta = sample["key"], sample["meta"]
    n = int(sample["audio"].shape[0])
    runs = [[int(s), int(e)] for s, e in meta["valid"]]  # checked inside [0, n) above
    audio = next(name for name in members if name.startswith("audio."))
    source = _audio_bytes(audio, bytes(members[audio]))
    recording = Recording(
        id=key,
        sources=[AudioSource(type="memory", channels=[0], source=source)],
        sampling_rate=SAMPLE_RATE,
        num_samples=n,
        duration=n / SAMPLE_RATE,
    )
    supervisions = [
        SupervisionSegment(
            id=f"{key}-valid{i}",
            recording_id=key,
            start=start / SAMPLE_RATE,
            duration=(end - start) / SAMPLE_RATE,
            channel=0,
        )
        for i, (start, end) in enumerate(runs)
    ]
    custom = {f: meta[f] for f in CUSTOM_FIELDS if f in meta}
    custom |= {"valid": runs, "shard": shard}
    return MonoCut(
        id=key,
        start=0.0,
        duration=recording.duration,
        channel=0,
        recording=recording,
        supervisions=supervisions,
        custom=custom,
    )


def cutset(out: str | os.PathLike, split: str, shuffle_shards: bool = False, seed: int = 0) -> Any:
    """The utterances of one split of OUT as a lazy `lhotse.CutSet` (module docstring).

    `Index.load(out)` first: an OUT of another format is refused in one line.
    `shuffle_shards` reorders the shards on every pass (seed + epoch); within a shard the
    order is the tar's, so shuffle cuts with the sampler (`shuffle=True`)."""
    from lhotse import CutSet

    return CutSet(OutCutIterator(Index.load(out), split, shuffle_shards, seed))
