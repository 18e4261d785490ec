"""Pass 1 over one file: decode in blocks and measure everything the policy decides on.

All measurements are streamed: one pass per block (`meters.Meters`) gives frame RMS and
speech-band powers on whole 20 ms frames (a partial frame carries to the next block),
moments for DC/RMS and K-weighted 100 ms powers for BS.1770 loudness; clipping and
non-finite counts are taken on the source-rate samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocess.config import PreprocessConfig
from preprocess.measure import kernels
from preprocess.measure.audio_io import AudioHeader, DecodeError, DecodeResult, stream_mono_16k
from preprocess.measure.loudness import gated_loudness
from preprocess.measure.meters import Meters
from preprocess.measure.quality import DnsmosScores, dnsmos_file, speech_snr_db
from preprocess.measure.silero_vad import silero_speech
from preprocess.measure.spool import SampleSpool
from preprocess.measure.stage_times import lap

_QUARTER_SECONDS = 0.1  # BS.1770 block hop; a 400 ms block is four quarters


# libsndfile subtypes of float PCM, whose samples may legitimately exceed full scale.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


@dataclass
class FileAnalysis:
    """Everything pass 1 learned about a file; `error` is set when decoding failed."""

    header: AudioHeader | None = None
    error: str | None = None
    frames_read: int = 0
    truncated: str | None = None
    samples_16k: int = 0
    nonfinite: int = 0
    overflow: int = 0  # finite samples beyond ±kernels.OVERFLOW_LIMIT
    clipped_samples: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    min: float = 0.0
    max: float = 0.0
    frame_rms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    loudness_lufs: float = -math.inf
    frame_seconds: float = 0.02
    snr_db: float | None = None  # preprocess.measure.quality.speech_snr_db
    dnsmos: DnsmosScores | None = None  # only with cfg.quality == "dnsmos"
    silero_speech_seconds: float | None = None  # only with cfg.vad == "silero"

    @property
    def seconds(self) -> float:
        return self.header.seconds if self.header else 0.0

    @property
    def dc(self) -> float:
        return self.sum / self.samples_16k if self.samples_16k else 0.0

    @property
    def peak(self) -> float:
        """Sample peak of the 16 kHz mono signal as decoded (DC included)."""
        return max(abs(self.min), abs(self.max)) if self.samples_16k else 0.0

    @property
    def peak_without_dc(self) -> float:
        return max(self.max - self.dc, self.dc - self.min) if self.samples_16k else 0.0

    @property
    def rms(self) -> float:
        return math.sqrt(self.sumsq / self.samples_16k) if self.samples_16k else 0.0

    @property
    def source_samples(self) -> int:
        return self.frames_read * (self.header.channels if self.header else 0)

    @property
    def clipped_fraction(self) -> float:
        return self.clipped_samples / self.source_samples if self.source_samples else 0.0

    @property
    def active_seconds(self) -> float:
        return float(self.active.sum()) * self.frame_seconds

    @property
    def active_fraction(self) -> float:
        return float(self.active.mean()) if self.active.size else 0.0

    @property
    def dnsmos_ovrl(self) -> float | None:
        return self.dnsmos.ovrl if self.dnsmos else None


def analyze_file(path: str | Path, cfg: PreprocessConfig, spool: SampleSpool) -> FileAnalysis:
    """Decode `path` once, filling `spool` with its 16 kHz mono samples, and measure it.

    Never raises for a bad file: decoder failures come back in `FileAnalysis.error`.
    """
    a = FileAnalysis(frame_seconds=cfg.frame_samples / cfg.sample_rate)
    # Moments, frame RMS, and the energies speech activity and loudness are judged on
    # (high-passed speech bands: rumble and DC drift are not speech; K-weighting), in one
    # pass per block.
    meters = Meters(cfg.sample_rate, cfg.frame_samples)
    run_len: np.ndarray | None = None
    clip_ceiling = math.inf

    def on_open(header: AudioHeader) -> None:
        nonlocal clip_ceiling
        if header.subtype in FLOAT_SUBTYPES:  # above full scale is headroom, not a clip
            clip_ceiling = 1.0

    def check_source(block: np.ndarray) -> bool:
        nonlocal run_len
        bad, over = kernels.count_invalid(block)
        a.nonfinite += bad
        a.overflow += over
        if a.nonfinite or a.overflow:
            return False  # a resampler would smear NaN/Inf over the whole file; stop here
        if run_len is None:
            run_len = np.zeros(block.shape[1], dtype=np.int64)
        a.clipped_samples += int(
            kernels.count_clipped(block, cfg.clip_level, cfg.clip_min_run, run_len, clip_ceiling)
        )
        lap("analysis")
        return True

    try:
        blocks = stream_mono_16k(path, cfg.block_frames_16k, check_source, cfg.sample_rate, on_open)
        for item in blocks:
            if isinstance(item, DecodeResult):
                a.header, a.frames_read = item.header, item.frames_read
                a.truncated = item.truncated
                continue
            meters.add(item)
            lap("meters")
            spool.append(item)
            lap("analysis")
    except DecodeError as exc:
        a.error = str(exc)
        return a
    a.samples_16k, a.sum, a.sumsq = meters.samples, meters.sum, meters.sumsq
    if a.samples_16k:
        a.min, a.max = meters.min, meters.max
    a.frame_rms = meters.frame_rms()
    if a.nonfinite or a.overflow:
        return a
    band_db = meters.band_db()
    a.active = kernels.active_frames(
        band_db,
        margin_db=cfg.vad_margin_db,
        abs_floor_db=cfg.vad_floor_dbfs,
        frame_seconds=cfg.frame_samples / cfg.sample_rate,
        window_seconds=cfg.vad_window_seconds,
    )
    lap("speech")
    a.loudness_lufs = _active_loudness(meters.quarter_powers(), a.active, cfg)
    lap("loudness")
    a.snr_db = speech_snr_db(band_db[0], a.active, a.frame_seconds)
    if cfg.quality == "dnsmos" and a.active.any():
        a.dnsmos = dnsmos_file(spool, a.active, cfg.frame_samples, cfg.dnsmos_max_windows)
    lap("quality")
    if cfg.vad == "silero" and a.samples_16k:
        # A second opinion on how much speech the file holds (policy reads it); the
        # utterance cuts and the loudness still follow our mask.
        a.silero_speech_seconds = silero_speech(spool).seconds
        lap("silero")
    return a


def _active_loudness(quarters: np.ndarray, active: np.ndarray, cfg: PreprocessConfig) -> float:
    """BS.1770 loudness over 400 ms blocks that are mostly active speech.

    The −70 LUFS absolute gate of BS.1770 would discard every block of intact but very
    quiet speech; the speech-activity mask replaces it, the −10 LU relative gate stays.
    """
    n_blocks = max(0, quarters.size - 3)
    if n_blocks == 0 or active.size == 0:
        return -math.inf
    frames_per_quarter = int(round(_QUARTER_SECONDS * 1000.0 / cfg.frame_ms))
    frames_per_block = 4 * frames_per_quarter
    act = active.astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(act)])
    starts = np.arange(n_blocks) * frames_per_quarter
    ends = np.minimum(starts + frames_per_block, act.size)
    starts = np.minimum(starts, act.size)
    counts = np.maximum(ends - starts, 1)
    select = (cum[ends] - cum[starts]) / counts >= 0.5
    if not select.any():
        return -math.inf
    return float(gated_loudness(quarters, select=select))
