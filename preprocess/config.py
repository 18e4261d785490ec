"""Preprocessing configuration: one dataclass, printed at start and stored in index.json.

Defaults are documented in docs/PREPROCESS.md; a JSON or TOML file (`--config`) overrides
them, and command-line flags override the file. `preset="original"` reproduces the
original ad-hoc filter (duration ≥ 1 s, RMS > 0.001, peak > 0.01) for comparison.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESETS = ("default", "original")
SPLIT_BY = ("dir", "file")
QUALITY = ("snr", "dnsmos")


@dataclass(frozen=True)
class PreprocessConfig:
    """Every knob that changes the output bytes lives here (and so in the config hash)."""

    preset: str = "default"
    sample_rate: int = 16000
    frame_ms: float = 20.0
    block_seconds: float = 10.0
    # Segmenting
    segment_seconds: float = 1.0
    min_valid_fraction: float = 0.5
    trim: bool = True
    trim_margin_ms: float = 200.0
    # Splitting and sharding
    split_by: str = "dir"
    val_fraction: float = 0.05
    split_seed: int = 0
    shard_mb: float = 32.0
    audio_encoding: str = "flac"
    # Decisions (docs/CONTRACTS.md)
    min_peak_dbfs: float = -80.0
    min_no_speech_seconds: float = 0.1
    min_active_seconds: float = 1.0
    min_active_fraction: float = 0.2
    clip_level: float = 0.99
    clip_min_run: int = 3
    max_clipped_fraction: float = 0.005
    # Voice-activity detector (preprocess.kernels.active_frames)
    vad_margin_db: float = 12.0
    vad_floor_dbfs: float = -100.0
    # Minimum-statistics window: long enough that continuous read speech still holds a
    # pause (1.5 s marked a third of a 6 s continuous utterance inactive; 5 s: under 20 %).
    vad_window_seconds: float = 5.0
    # Loudness normalisation (BS.1770 on the active part)
    normalize: bool = True
    target_lufs: float = -23.0
    peak_limit_dbfs: float = -1.0
    rescue_gain_db: float = 20.0
    # The original filter's thresholds, used by preset "original"
    original_min_seconds: float = 1.0
    original_min_rms: float = 0.001
    original_min_peak: float = 0.01
    extra_audio_extensions: tuple[str, ...] = field(default_factory=tuple)
    # Quality scores (preprocess.quality). The speech-band SNR is always measured; DNSMOS
    # P.835 only with quality="dnsmos" (~0.6 CPU-s per 9.01 s window scored, up to
    # dnsmos_max_windows per file). The thresholds are off by default: no clean file lost.
    quality: str = "snr"
    dnsmos_max_windows: int = 2
    min_snr_db: float = -100.0  # reason `noisy`; the estimate never reads below −20 dB
    min_dnsmos_ovrl: float = 0.0  # reason `low_quality`; DNSMOS is 1–5

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: expected one of {PRESETS}")
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"split_by {self.split_by!r}: expected one of {SPLIT_BY}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction {self.val_fraction}: expected 0 ≤ f < 1")
        if not 0.0 < self.min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction {self.min_valid_fraction}: expected 0 < f ≤ 1")
        if self.segment_seconds <= 0 or self.shard_mb <= 0 or self.block_seconds <= 0:
            raise ValueError("segment_seconds, shard_mb and block_seconds must be positive")
        if self.sample_rate != 16000:
            raise ValueError("shards are 16 kHz by contract (shards.SAMPLE_RATE)")
        _check_quality(self)

    @property
    def frame_samples(self) -> int:
        return int(round(self.sample_rate * self.frame_ms / 1000.0))

    @property
    def segment_samples(self) -> int:
        return int(round(self.sample_rate * self.segment_seconds))

    @property
    def min_valid_samples(self) -> int:
        return max(1, math.ceil(self.segment_samples * self.min_valid_fraction))

    @property
    def block_frames_16k(self) -> int:
        """Analysis block in 16 kHz samples, a whole number of frames."""
        frames = max(1, int(self.block_seconds * 1000.0 / self.frame_ms))
        return frames * self.frame_samples

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extra_audio_extensions"] = list(self.extra_audio_extensions)
        d["segment_samples"] = self.segment_samples
        d["frame_samples"] = self.frame_samples
        return d

    def digest(self) -> str:
        """Hash of everything that shapes the output; a rerun only resumes a matching plan."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> PreprocessConfig:
        return dataclasses.replace(self, **changes)


def _check_quality(cfg: PreprocessConfig) -> None:
    if cfg.quality not in QUALITY:
        raise ValueError(f"quality {cfg.quality!r}: expected one of {QUALITY}")
    if cfg.dnsmos_max_windows < 1:
        raise ValueError(f"dnsmos_max_windows {cfg.dnsmos_max_windows}: expected ≥ 1")
    if cfg.min_dnsmos_ovrl > 0 and cfg.quality != "dnsmos":
        raise ValueError(
            f"min_dnsmos_ovrl {cfg.min_dnsmos_ovrl} needs quality='dnsmos' (--quality dnsmos): "
            "without it no file has a DNSMOS score to compare"
        )


def _known_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(PreprocessConfig)}


def load_config(path: str | Path | None = None, **overrides: Any) -> PreprocessConfig:
    """Defaults ← file (JSON or TOML; a `[preprocess]` table is accepted) ← overrides.

    Unknown keys are an error naming the key, so a typo never silently does nothing.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        if "preprocess" in data and isinstance(data["preprocess"], dict):
            data = data["preprocess"]
        data = {k: v for k, v in data.items() if k not in ("segment_samples", "frame_samples")}
        unknown = sorted(set(data) - _known_fields())
        if unknown:
            raise ValueError(
                f"{p}: unknown config keys {unknown}; known: {sorted(_known_fields())}"
            )
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "extra_audio_extensions" in values:
        values["extra_audio_extensions"] = tuple(values["extra_audio_extensions"])
    return PreprocessConfig(**values)
