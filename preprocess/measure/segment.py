"""Pass 2 for a kept file: remove DC, apply gain, trim silence, cut masked segments.

Each segment is `segment_samples` long; a final partial segment is zero-padded and kept
only when its real part is at least `min_valid_fraction` of a segment. The validity run
`[0, n_valid)` travels with the sample so padding never counts in a loss or metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.measure import kernels
from preprocess.measure.scan import FileAnalysis
from preprocess.measure.spool import SampleSpool


@dataclass(frozen=True)
class Segment:
    index: int
    offset: int  # in 16 kHz samples from the start of the decoded file
    pcm: np.ndarray  # int16[segment_samples]: real audio in [0, n_valid), zeros after
    n_valid: int

    @property
    def valid(self) -> list[list[int]]:
        return [[0, self.n_valid]]


def trim_range(a: FileAnalysis, cfg: PreprocessConfig) -> tuple[int, int]:
    """[start, end) in samples: active speech ± margin, or the whole file if not trimming."""
    if not cfg.trim or a.active.size == 0:
        return 0, a.samples_16k
    margin = int(round(cfg.trim_margin_ms / cfg.frame_ms))
    first, last = kernels.trim_bounds(a.active, margin)
    if last <= first:
        return 0, 0
    start = int(first) * cfg.frame_samples
    end = a.samples_16k if int(last) >= a.active.size else int(last) * cfg.frame_samples
    return start, min(end, a.samples_16k)


def plan_segments(a: FileAnalysis, cfg: PreprocessConfig) -> np.ndarray:
    """int64[K, 2] rows of (offset, n_valid) for the file's segments."""
    start, end = trim_range(a, cfg)
    return kernels.segment_plan(start, end, cfg.segment_samples, cfg.min_valid_samples)


def cut_segments(
    a: FileAnalysis, spool: SampleSpool, cfg: PreprocessConfig, gain_db: float
) -> Iterator[Segment]:
    """Yield the file's segments as 16-bit PCM, DC-free and gain-applied, reading the
    spool lazily."""
    gain = np.float32(10.0 ** (gain_db / 20.0))
    for index, (offset, n_valid) in enumerate(plan_segments(a, cfg)):
        real = spool.read(int(offset), int(offset + n_valid))
        # Clipping in segment_pcm only guards float rounding: the gain was capped from
        # the measured peak.
        pcm = kernels.segment_pcm(real, a.dc, gain, cfg.segment_samples)
        yield Segment(index, int(offset), pcm, int(n_valid))
