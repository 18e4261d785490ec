"""Threshold what-ifs and the padding curve, as pure functions over files.jsonl records.

Every threshold rule in `preprocess.measure.policy` reads only the scalar measurements that
files.jsonl already holds, so "how many hours would I keep with min_rms=0.0005?" or "how
much padding would 2 s segments add?" is answered in milliseconds, without decoding a
single file. Decisions are re-made by `policy.decide_measured` itself — never a copy of
the rules — plus the one rule the pipeline applies after segmenting (a kept file that
yields no segment is `short`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from preprocess.config import PRESETS, PreprocessConfig
from preprocess.measure.policy import LISTING_REASONS, Measurements, decide_measured
from shards import SAMPLE_RATE

# Files that never decoded: no duration to pad, no measurement to re-decide.
UNDECODABLE_REASONS = ("corrupt", "not_audio", "unsupported_format")
# Decided from bytes or decoding alone (plan, decode errors, NaN): thresholds cannot change them.
INTEGRITY_REASONS = (*UNDECODABLE_REASONS, "duplicate", "nonfinite", *LISTING_REASONS)
# The original filter's own names for its three thresholds (its "Solution #2").
SHORT_NAMES = {
    "min_seconds": "original_min_seconds",
    "min_rms": "original_min_rms",
    "min_peak": "original_min_peak",
}
# Changing these changes what the analysis measured (frames, VAD, trim range, clip runs):
# files.jsonl cannot answer for them, only a rerun of the pipeline can.
NEEDS_DECODING = frozenset(
    {
        "sample_rate",
        "frame_ms",
        "block_seconds",
        "trim",
        "trim_margin_ms",
        "vad_margin_db",
        "vad_floor_dbfs",
        "clip_level",
        "clip_min_run",
        "extra_audio_extensions",
        "quality",
        "dnsmos_max_windows",
    }
)
ORIGINAL_SEGMENT_SECONDS = 2.0  # the original train_codec.py: "segment_length": 16000 * 2


# ---------------------------------------------------------------------------------------
# What-if specs
# ---------------------------------------------------------------------------------------


def _coerce(key: str, text: str, like: Any) -> Any:
    """Parse `text` as the type of the field's current value, naming the key on failure."""
    try:
        if isinstance(like, bool):
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return low in ("true", "1", "yes")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        return text.strip()
    except ValueError:
        raise ValueError(f"what-if {key}={text!r}: expected a {type(like).__name__}") from None


def parse_what_if(spec: str, base: PreprocessConfig) -> tuple[str, PreprocessConfig]:
    """`"original"` or `"min_seconds=0.5,min_rms=0.0005"` → (label, config).

    Keys are PreprocessConfig field names, plus the original filter's short names
    min_seconds / min_rms / min_peak (→ original_min_*). Those only exist in the original
    filter, so a spec that uses them and names no preset means preset "original"; a bare
    token "original" or "default" sets the preset explicitly.
    """
    fields = {f.name for f in dataclasses.fields(PreprocessConfig)}
    changes: dict[str, Any] = {}
    preset: str | None = None
    uses_short = False
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if "=" not in token:
            if token not in PRESETS:
                raise ValueError(f"what-if {token!r}: expected key=value or a preset {PRESETS}")
            preset = token
            continue
        key, _, value = (s.strip() for s in token.partition("="))
        if key in SHORT_NAMES:
            key, uses_short = SHORT_NAMES[key], True
        if key not in fields:
            raise ValueError(
                f"what-if key {key!r} is not a config field; known: "
                f"{sorted(fields | set(SHORT_NAMES))}"
            )
        if key in NEEDS_DECODING:
            raise ValueError(
                f"what-if key {key!r} changes what was measured; rerun "
                "`python -m preprocess.diagnose CORPUS` with a --config instead"
            )
        changes[key] = _coerce(key, value, getattr(base, key))
    if preset is None and "preset" not in changes:
        preset = "original" if uses_short else None
    if preset is not None:
        changes["preset"] = preset
    if not changes:
        raise ValueError(f"what-if {spec!r}: nothing to change")
    return spec.strip(), base.replace(**changes)


# ---------------------------------------------------------------------------------------
# Re-deciding records
# ---------------------------------------------------------------------------------------


def to_samples(seconds: Iterable[float | None]) -> np.ndarray:
    """Seconds (files.jsonl) → whole 16 kHz samples; None (not measured) → 0."""
    return np.array(
        [0 if s is None else int(round(float(s) * SAMPLE_RATE)) for s in seconds], dtype=np.int64
    )


def min_valid_samples(segment: int, min_valid_fraction: float) -> int:
    """The pipeline's rule (PreprocessConfig.min_valid_samples) for any segment length."""
    return max(1, math.ceil(segment * min_valid_fraction))


def masked_segments(
    samples: np.ndarray, segment: int, min_valid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Our segmenting (kernels.segment_plan), vectorised over files: int64[N] lengths →
    (segments[N], valid samples[N]). Whole segments are kept; a final partial one only
    if its real part is ≥ min_valid samples. Padding is segments·segment − valid."""
    samples = np.asarray(samples, dtype=np.int64)
    full = samples // segment
    rest = samples - full * segment
    tail = rest >= min_valid
    return full + tail, full * segment + np.where(tail, rest, 0)


def naive_padding(samples: np.ndarray, segment: int) -> tuple[int, int]:
    """The original way: every file zero-padded up to a whole number of segments →
    (padding samples, total samples fed to the model); padding counted as signal."""
    samples = np.asarray(samples, dtype=np.int64)
    total = -(-samples // segment) * segment
    return int((total - samples).sum()), int(total.sum())


def decide_record(rec: dict[str, Any], cfg: PreprocessConfig) -> tuple[tuple[str, str], bool]:
    """The (status, reason) the pipeline would give this record's file under `cfg`, and
    whether the threshold rules alone keep it (before the segment rule)."""
    if rec["reason"] in INTEGRITY_REASONS:
        return ("rejected", rec["reason"]), False
    d = decide_measured(Measurements.from_record(rec), cfg)
    return _after_segmenting(rec, cfg, d), d.kept


def _after_segmenting(rec: dict[str, Any], cfg: PreprocessConfig, d: Any) -> tuple[str, str]:
    """The pipeline's last rule: a kept file that yields no segment is `short`. The first
    segment has min(n, segment) real samples, so there is none exactly when n < min_valid."""
    trimmed = rec.get("trimmed_seconds") or 0.0
    if d.kept and int(round(trimmed * SAMPLE_RATE)) < cfg.min_valid_samples:
        return "rejected", "short"
    return d.status, d.reason


@dataclass(frozen=True)
class Outcome:
    """What one config keeps: the row of the what-if table."""

    label: str
    cfg: PreprocessConfig
    files_kept: int
    hours_kept: float  # input hours of the kept files
    valid_hours: float  # real (unpadded) audio in their segments
    segments: int
    by_reason: dict[str, int]
    kept_paths: frozenset[str]
    decisions: tuple[tuple[str, str], ...]  # (status, reason) per record, in record order
    passing: tuple[bool, ...]  # kept by the thresholds, before the segment rule


def outcome(label: str, records: Sequence[dict[str, Any]], cfg: PreprocessConfig) -> Outcome:
    """Re-decide every record under `cfg` (one policy call each) and total what is kept."""
    decided = [decide_record(r, cfg) for r in records]
    decisions = [d for d, _ in decided]
    passing = [ok for _, ok in decided]
    kept = [r for r, (status, _) in zip(records, decisions, strict=True) if status == "kept"]
    segs, valid = masked_segments(
        to_samples(r.get("trimmed_seconds") for r in kept),
        cfg.segment_samples,
        cfg.min_valid_samples,
    )
    return Outcome(
        label=label,
        cfg=cfg,
        files_kept=len(kept),
        hours_kept=sum(r["seconds"] or 0.0 for r in kept) / 3600.0,
        valid_hours=float(valid.sum()) / SAMPLE_RATE / 3600.0,
        segments=int(segs.sum()),
        by_reason=dict(Counter(reason for _, reason in decisions)),
        kept_paths=frozenset(r["path"] for r in kept),
        decisions=tuple(decisions),
        passing=tuple(passing),
    )


def what_if_table(
    records: Sequence[dict[str, Any]], cfg: PreprocessConfig, specs: Sequence[str]
) -> list[Outcome]:
    """The current config first, then one Outcome per `--what-if` spec."""
    rows = [outcome("current", records, cfg)]
    for spec in specs:
        label, alt = parse_what_if(spec, cfg)
        rows.append(outcome(label, records, alt))
    return rows


# ---------------------------------------------------------------------------------------
# Scenario A: the padding curve
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaddingCurve:
    """Fraction of samples that are zero padding, per segment length (seconds).

    naive: the original way over every decodable file (padding counted as signal).
    stored: our way over the kept files' trimmed audio — padding stored in shards but
    masked, so the fraction *counted* in losses and metrics is always 0.
    dropped: real audio lost in final partial segments shorter than min_valid_fraction.
    """

    seconds: np.ndarray
    naive: np.ndarray
    stored: np.ndarray
    dropped: np.ndarray
    segments: np.ndarray

    def at(self, seconds: float) -> int:
        """Index of the grid point nearest `seconds`."""
        return int(np.argmin(np.abs(self.seconds - seconds)))


def segment_grid(*marks: float, lo: float = 0.5, hi: float = 4.0, step: float = 0.1) -> np.ndarray:
    """Lengths lo…hi every `step` s, plus the marked lengths (2 s, the configured one)."""
    grid = np.round(np.arange(lo, hi + step / 2, step), 3)
    return np.unique(np.concatenate([grid, np.round(np.asarray(marks, dtype=float), 3)]))


def padding_curve(
    naive_seconds: Iterable[float | None],
    trimmed_seconds: Iterable[float | None],
    lengths: Sequence[float],
    min_valid_fraction: float,
) -> PaddingCurve:
    """Padding fractions at each segment length; see PaddingCurve for the two ways."""
    raw = to_samples(naive_seconds)
    trimmed = to_samples(trimmed_seconds)
    out: dict[str, list[float]] = {"naive": [], "stored": [], "dropped": [], "segments": []}
    for length in lengths:
        seg = int(round(length * SAMPLE_RATE))
        pad, total = naive_padding(raw, seg)
        segs, valid = masked_segments(trimmed, seg, min_valid_samples(seg, min_valid_fraction))
        stored = int(segs.sum()) * seg
        out["naive"].append(pad / total if total else 0.0)
        out["stored"].append((stored - int(valid.sum())) / stored if stored else 0.0)
        out["dropped"].append(
            (int(trimmed.sum()) - int(valid.sum())) / trimmed.sum() if trimmed.sum() else 0.0
        )
        out["segments"].append(int(segs.sum()))
    return PaddingCurve(
        seconds=np.asarray(lengths, dtype=float),
        **{k: np.asarray(v, dtype=float) for k, v in out.items()},
    )


def recommend_segment_seconds(
    curve: PaddingCurve, max_padding: float, way: str = "stored"
) -> float:
    """Largest grid length whose padding fraction (`way`) is ≤ max_padding; the shortest
    length when none is (the report says so)."""
    fractions = getattr(curve, way)
    ok = np.flatnonzero(fractions <= max_padding + 1e-12)
    return float(curve.seconds[ok[-1]] if ok.size else curve.seconds[0])
