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
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from preprocess.config import PRESETS, PreprocessConfig
from preprocess.measure.policy import LISTING_REASONS, Decision, Measurements, decide_measured
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
    """Seconds (files.jsonl) → whole 16 kHz samples (rounded half to even, as `round`);
    None (not measured) → 0."""
    s = np.array([np.nan if x is None else x for x in seconds], dtype=np.float64)
    return np.rint(np.nan_to_num(s, nan=0.0) * SAMPLE_RATE).astype(np.int64)


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


class RecordTable:
    """What re-deciding needs from every record, extracted once.

    A report re-decides the corpus under a dozen configs (the what-ifs, the SNR grid);
    parsing each record's measurements once and keeping lengths as arrays makes each
    extra config cost one policy call per file and a few array operations, nothing more.
    """

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        # None: decided from bytes or decoding alone, so no threshold can change it.
        self.measurements: list[Measurements | None] = [
            None if r["reason"] in INTEGRITY_REASONS else Measurements.from_record(r)
            for r in records
        ]
        self.trimmed = to_samples(r.get("trimmed_seconds") for r in records)
        self.seconds = np.array([r["seconds"] or 0.0 for r in records], dtype=np.float64)
        self.reasons = [r["reason"] for r in records]  # as run; integrity ones never change


@dataclass(frozen=True)
class Outcome:
    """What one config keeps: the row of the what-if table."""

    label: str
    cfg: PreprocessConfig
    files_kept: int
    hours_kept: float  # input hours of the kept files
    valid_hours: float  # real (unpadded) audio in their segments
    segments: int
    kept: np.ndarray  # bool[N]: kept under this config, in record order
    passing: np.ndarray  # bool[N]: kept by the thresholds, before the segment rule
    # Per record: the policy's Decision, or None where the record's own (integrity)
    # reason stands; `decisions` spells them out only when a table asks.
    decided: list[Decision | None] = field(repr=False)
    fixed_reasons: list[str] = field(repr=False)

    @cached_property
    def decisions(self) -> tuple[tuple[str, str], ...]:
        """(status, reason) per record, in record order."""
        no_segment = (self.passing & ~self.kept).tolist()
        return tuple(
            ("rejected", fixed)
            if d is None
            else ("rejected", "short")
            if cut
            else (d.status, d.reason)
            for d, fixed, cut in zip(self.decided, self.fixed_reasons, no_segment, strict=True)
        )

    @cached_property
    def by_reason(self) -> dict[str, int]:
        """Files per reason under this config."""
        return dict(Counter(reason for _, reason in self.decisions))

    def kept_records(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records this config keeps, in record order."""
        return [records[i] for i in np.flatnonzero(self.kept)]


def outcome(
    label: str,
    records: Sequence[dict[str, Any]],
    cfg: PreprocessConfig,
    table: RecordTable | None = None,
) -> Outcome:
    """Re-decide every record under `cfg` (one policy call each) and total what is kept.
    Pass the `table` of these records when deciding them under several configs."""
    t = table if table is not None else RecordTable(records)
    decided = [None if m is None else decide_measured(m, cfg) for m in t.measurements]
    passing = np.array([d is not None and d.kept for d in decided], dtype=bool)
    # The pipeline's last rule, for every file at once: a kept file that yields no segment
    # is `short`. The first segment has min(n, segment) real samples, so there is none
    # exactly when n < min_valid.
    kept = passing & (t.trimmed >= cfg.min_valid_samples)
    segs, valid = masked_segments(t.trimmed[kept], cfg.segment_samples, cfg.min_valid_samples)
    return Outcome(
        label=label,
        cfg=cfg,
        files_kept=int(kept.sum()),
        hours_kept=float(t.seconds[kept].sum()) / 3600.0,
        valid_hours=float(valid.sum()) / SAMPLE_RATE / 3600.0,
        segments=int(segs.sum()),
        kept=kept,
        passing=passing,
        decided=decided,
        fixed_reasons=t.reasons,
    )


def what_if_table(
    records: Sequence[dict[str, Any]],
    cfg: PreprocessConfig,
    specs: Sequence[str],
    table: RecordTable | None = None,
) -> list[Outcome]:
    """The current config first, then one Outcome per `--what-if` spec."""
    t = table if table is not None else RecordTable(records)
    rows = [outcome("current", records, cfg, t)]
    for spec in specs:
        label, alt = parse_what_if(spec, cfg)
        rows.append(outcome(label, records, alt, t))
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
    """Largest grid length whose padding fraction (`way`) is ≤ max_padding and, our way,
    that yields segments at all (a length longer than every file stores nothing, so its
    "0 % padding" would recommend dropping all audio); the shortest length when none is
    (the report says so)."""
    fractions = getattr(curve, way)
    stores = curve.segments > 0 if way == "stored" else np.ones(fractions.shape, bool)
    ok = np.flatnonzero((fractions <= max_padding + 1e-12) & stores)
    return float(curve.seconds[ok[-1]] if ok.size else curve.seconds[0])
