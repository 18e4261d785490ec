"""Pass 2 for a kept file: trim silence, split at long pauses, cap the length, and cut each
utterance as DC-free, gain-applied 16-bit PCM.

A shard sample is one utterance, not a fixed segment: the training segment length is
chosen when training (`train_ds.py --segment-seconds`), and the loader cuts its windows
from these. Speech regions come from the scan's per-frame activity mask
(`kernels.speech_regions`); a pause of at least `split_pause_seconds` separates two
utterances, a shorter one stays inside (it is real audio). A region over
`max_utterance_seconds` is cut into near-equal pieces, and pieces under
`min_utterance_seconds` are not written (`kernels.utterance_plan`). Each utterance is all
real audio: its validity run is `[0, n)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.measure import kernels
from preprocess.measure.scan import FileAnalysis
from preprocess.measure.spool import SampleSpool


@dataclass(frozen=True)
class Utterance:
    index: int  # 0, 1, … in file order: the `<utt:05d>` of the sample key
    offset: int  # first sample's position in the decoded 16 kHz file
    pcm: np.ndarray  # int16[n], every sample real audio

    @property
    def samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def valid(self) -> list[list[int]]:
        return [[0, self.samples]]


def trim_range(a: FileAnalysis, cfg: PreprocessConfig) -> tuple[int, int]:
    """[start, end) in samples: first active speech − margin to last + margin, or the whole
    file if not trimming (files.jsonl's `trimmed_seconds`)."""
    if not cfg.trim or a.active.size == 0:
        return 0, a.samples_16k
    first, last = kernels.trim_bounds(a.active, _margin_frames(cfg))
    if last <= first:
        return 0, 0
    return _to_samples(a, cfg, first, last)


def plan_utterances(a: FileAnalysis, cfg: PreprocessConfig) -> np.ndarray:
    """int64[U, 2] rows (offset, n) of the file's utterances, in file order.

    Without `trim` the whole file is one region (only the cap cuts it): pauses are kept,
    since dropping them is trimming.
    """
    if not cfg.trim or a.active.size == 0:
        regions = np.array([[0, a.samples_16k]], np.int64)
    else:
        pause = max(1, math.ceil(cfg.split_pause_seconds * 1000.0 / cfg.frame_ms - 1e-9))
        frames = kernels.speech_regions(a.active, _margin_frames(cfg), pause)
        regions = np.array(
            [_to_samples(a, cfg, int(lo), int(hi)) for lo, hi in frames], np.int64
        ).reshape(-1, 2)
    return kernels.utterance_plan(regions, cfg.utterance_max_samples, cfg.utterance_min_samples)


def cut_utterances(
    a: FileAnalysis, spool: SampleSpool, cfg: PreprocessConfig, gain_db: float
) -> Iterator[Utterance]:
    """Yield the file's utterances as 16-bit PCM, DC-free and gain-applied, reading the
    spool lazily (one utterance, ≤ max_utterance_seconds, in memory at a time)."""
    gain = np.float32(10.0 ** (gain_db / 20.0))
    for index, (offset, n) in enumerate(plan_utterances(a, cfg)):
        real = spool.read(int(offset), int(offset + n))
        # Clipping in segment_pcm only guards float rounding: the gain was capped from
        # the measured peak. `segment = n`: an utterance is never padded.
        pcm = kernels.segment_pcm(real, a.dc, gain, int(n))
        yield Utterance(index, int(offset), pcm)


def _margin_frames(cfg: PreprocessConfig) -> int:
    return int(round(cfg.trim_margin_ms / cfg.frame_ms))


def _to_samples(a: FileAnalysis, cfg: PreprocessConfig, lo: int, hi: int) -> tuple[int, int]:
    """Frame range → sample range; a range reaching the last whole frame takes the file's
    remainder too (the mask covers whole frames only)."""
    end = a.samples_16k if hi >= a.active.size else hi * cfg.frame_samples
    return lo * cfg.frame_samples, min(end, a.samples_16k)
