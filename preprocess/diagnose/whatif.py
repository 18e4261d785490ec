"""Threshold what-ifs and the padding curve, as pure functions over files.jsonl records.

Every threshold rule in `preprocess.measure.policy` reads only the scalar measurements that
files.jsonl already holds, so "how many hours would I keep with min_rms=0.0005?" is
answered in milliseconds, without decoding a single file. Decisions are re-made by
`policy.decide_measured` itself — never a copy of the rules — plus the one rule the
pipeline applies after cutting utterances (a kept file that yields no utterance is `short`).

What a what-if can and cannot recompute. A file's utterances come from its per-frame
speech mask, which OUT does not store (stats.zarr holds frame RMS before the VAD's
high-pass, not the mask). So the utterances of every file the run's policy kept are the
run's own (files.jsonl `segments`, `valid_seconds`), exact under any threshold what-if;
a file the run rejected on a threshold, which a what-if keeps, is estimated from its
trimmed length as one speech region (`kernels.utterance_plan`: cap-split, under
`min_utterance_seconds` dropped), an upper bound that ignores its inner pauses; the
report counts such files. Keys that change how utterances are cut (`split_pause_seconds`,
`max_utterance_seconds`, `min_utterance_seconds`) need the masks: a rescan.

The padding curve is about TRAINING segment lengths S (`train_ds.py --segment-seconds`):
the loader cuts windows of S from the utterances, zero-pads and masks a short one, and
uses a window only if it holds min(S/2, 1 s) of real audio (`shards/loader.py`).
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

from preprocess.config import PRESETS, RETIRED_KEYS, PreprocessConfig
from preprocess.measure import kernels
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
        "vad_window_seconds",
        "vad",
        "clip_level",
        "clip_min_run",
        "extra_audio_extensions",
        "quality",
        "dnsmos_max_windows",
    }
)
# These change how a file's speech is cut into utterances, which needs its speech mask.
CUTS_UTTERANCES = frozenset(
    {"split_pause_seconds", "max_utterance_seconds", "min_utterance_seconds"}
)
ORIGINAL_SEGMENT_SECONDS = 2.0  # the original train_codec.py: "segment_length": 16000 * 2
# `train_ds.py --segment-seconds`'s default (training/args.py; preprocess never imports
# training): the length the report scores when not told another.
TRAIN_SEGMENT_SECONDS = 1.0
# shards.loader.MIN_REAL_SECONDS: a window is used only with min(S/2, 1 s) of real audio.
# Not imported: shards.loader imports torch, which the report after every preprocess run
# must not load (tests/e2e/test_diagnose.py checks that the two agree).
MIN_REAL_SECONDS = 1.0


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


def _refuse_key(key: str, fields: set[str]) -> None:
    """Raise ValueError, saying what to do instead, for a key a what-if cannot answer."""
    if key in RETIRED_KEYS:
        raise ValueError(
            f"what-if key {key!r}: the segment length is chosen at training time now "
            "(`train_ds.py --segment-seconds S`); score one with `--segment-seconds S`"
        )
    if key not in fields:
        raise ValueError(
            f"what-if key {key!r} is not a config field; known: {sorted(fields | set(SHORT_NAMES))}"
        )
    if key in NEEDS_DECODING:
        raise ValueError(
            f"what-if key {key!r} changes what was measured; rerun "
            "`python -m preprocess.diagnose CORPUS` with a --config instead"
        )
    if key in CUTS_UTTERANCES:
        raise ValueError(
            f"what-if key {key!r} changes how utterances are cut, which needs each file's "
            "speech mask (OUT does not store it); rerun "
            "`python -m preprocess.diagnose CORPUS` with a --config instead"
        )


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
        _refuse_key(key, fields)
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


def region_utterances(lengths: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each length as one speech region cut by the pipeline's kernel
    (`kernels.utterance_plan`: cap-split into near-equal pieces, pieces under
    `min_utterance_seconds` dropped) → (utterances[N], samples in them[N]).

    All regions go through one kernel call, laid end to end; each piece is attributed
    back to its region by its offset (no loop per file)."""
    lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 0)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    plan = kernels.utterance_plan(
        np.stack([starts, ends], axis=1), cfg.utterance_max_samples, cfg.utterance_min_samples
    )
    owner = np.searchsorted(ends, plan[:, 0], side="right")
    count = np.bincount(owner, minlength=lengths.size).astype(np.int64)
    audio = np.bincount(owner, weights=plan[:, 1], minlength=lengths.size)
    return count, np.rint(audio).astype(np.int64)


class RecordTable:
    """What re-deciding needs from every record, extracted once, under the run's config.

    A report re-decides the corpus under a dozen configs (the what-ifs, the SNR grid);
    parsing each record's measurements once and keeping lengths as arrays makes each
    extra config cost one policy call per file and a few array operations, nothing more.
    The utterances per file are the run's where it cut them and an estimate elsewhere
    (module docstring).
    """

    def __init__(self, records: Sequence[dict[str, Any]], run_cfg: PreprocessConfig) -> None:
        self.cfg = run_cfg
        # None: decided from bytes or decoding alone, so no threshold can change it.
        self.measurements: list[Measurements | None] = [
            None if r["reason"] in INTEGRITY_REASONS else Measurements.from_record(r)
            for r in records
        ]
        self.run_decided = [
            None if m is None else decide_measured(m, run_cfg) for m in self.measurements
        ]
        # The unit plans utterances for exactly the files its policy keeps (those it then
        # finds without one are `short`, with 0): for them files.jsonl is exact.
        self.planned = np.array([d is not None and d.kept for d in self.run_decided], bool)
        self.trimmed = to_samples(r.get("trimmed_seconds") for r in records)
        self.seconds = np.array([r["seconds"] or 0.0 for r in records], dtype=np.float64)
        self.reasons = [r["reason"] for r in records]  # as run; integrity ones never change
        run_count = np.array([r.get("segments") or 0 for r in records], dtype=np.int64)
        run_audio = to_samples(r.get("valid_seconds") for r in records)
        guess_count, guess_audio = region_utterances(
            np.where(self.planned, 0, self.trimmed), run_cfg
        )
        self.utterances = np.where(self.planned, run_count, guess_count)
        self.utterance_samples = np.where(self.planned, run_audio, guess_audio)


@dataclass(frozen=True)
class Outcome:
    """What one config keeps: the row of the what-if table."""

    label: str
    cfg: PreprocessConfig
    files_kept: int
    hours_kept: float  # input hours of the kept files
    utterance_hours: float  # audio in their utterances (what the shards hold)
    utterances: int
    estimated: int  # kept files whose utterances are estimated (the run did not cut them)
    kept: np.ndarray  # bool[N]: kept under this config, in record order
    passing: np.ndarray  # bool[N]: kept by the thresholds, before the utterance rule
    # Per record: the policy's Decision, or None where the record's own (integrity)
    # reason stands; `decisions` spells them out only when a table asks.
    decided: list[Decision | None] = field(repr=False)
    fixed_reasons: list[str] = field(repr=False)

    @cached_property
    def decisions(self) -> tuple[tuple[str, str], ...]:
        """(status, reason) per record, in record order."""
        no_utterance = (self.passing & ~self.kept).tolist()
        return tuple(
            ("rejected", fixed)
            if d is None
            else ("rejected", "short")
            if cut
            else (d.status, d.reason)
            for d, fixed, cut in zip(self.decided, self.fixed_reasons, no_utterance, strict=True)
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
    table: RecordTable,
) -> Outcome:
    """Re-decide every record under `cfg` (one policy call each; none for the run's own
    config, decided once in `table`) and total what is kept."""
    t = table
    if cfg == t.cfg:
        decided = t.run_decided
    else:
        decided = [None if m is None else decide_measured(m, cfg) for m in t.measurements]
    passing = np.array([d is not None and d.kept for d in decided], dtype=bool)
    # The pipeline's last rule, for every file at once: a kept file that yields no
    # utterance is `short`.
    kept = passing & (t.utterances > 0)
    return Outcome(
        label=label,
        cfg=cfg,
        files_kept=int(kept.sum()),
        hours_kept=float(t.seconds[kept].sum()) / 3600.0,
        utterance_hours=float(t.utterance_samples[kept].sum()) / SAMPLE_RATE / 3600.0,
        utterances=int(t.utterances[kept].sum()),
        estimated=int((kept & ~t.planned).sum()),
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
    t = table if table is not None else RecordTable(records, cfg)
    rows = [outcome("current", records, cfg, t)]
    for spec in specs:
        label, alt = parse_what_if(spec, cfg)
        rows.append(outcome(label, records, alt, t))
    return rows


# ---------------------------------------------------------------------------------------
# Scenario A: the padding curve over training segment lengths
# ---------------------------------------------------------------------------------------


def min_real_samples(window: int) -> int:
    """The least real audio a window of `window` samples must hold to be used, min(S/2, 1 s)
    (= shards.loader.min_real_samples)."""
    return min(-(-window // 2), int(MIN_REAL_SECONDS * SAMPLE_RATE))


def grid_windows(samples: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The loader's validation grid over utterances of `samples` real samples each:
    windows at 0, S, 2S, …, a window running past the end zero-padded and used only if
    it holds `min_real_samples(S)` → (windows used[U], real samples in them[U]).
    Padding is windows·S − real; the real audio outside them is dropped."""
    samples = np.asarray(samples, dtype=np.int64)
    full = samples // window  # whole windows are all real, always used
    rest = samples - full * window
    tail = rest >= min_real_samples(window)
    return full + tail, full * window + np.where(tail, rest, 0)


def naive_padding(samples: np.ndarray, segment: int) -> tuple[int, int]:
    """The original way: every file zero-padded up to a whole number of segments →
    (padding samples, total samples fed to the model); padding counted as signal."""
    samples = np.asarray(samples, dtype=np.int64)
    total = -(-samples // segment) * segment
    return int((total - samples).sum()), int(total.sum())


@dataclass(frozen=True)
class PaddingCurve:
    """Per training segment length S (seconds): how much is padding.

    naive: the original way, every decodable file zero-padded to whole segments of S,
    padding counted as signal.
    padding: ours, the share of window samples that are zero padding when the loader cuts
    windows of S from the utterances on the validation grid — masked, so the share
    *counted* in losses and metrics is always 0.
    dropped: the share of utterance audio in tail windows too short to use (< min(S/2, 1 s)).
    windows: windows on the validation grid.
    """

    seconds: np.ndarray
    naive: np.ndarray
    padding: np.ndarray
    dropped: np.ndarray
    windows: np.ndarray

    def at(self, seconds: float) -> int:
        """Index of the grid point nearest `seconds`."""
        return int(np.argmin(np.abs(self.seconds - seconds)))


def segment_grid(
    *marks: float, lo: float = 0.5, hi: float = 8.0, step: float = 0.1, cap: float = math.inf
) -> np.ndarray:
    """Training lengths lo…hi every `step` s, plus the marked ones (2 s, the scored one),
    none above `cap` (the utterance cap: the loader cuts nothing longer)."""
    grid = np.round(np.arange(lo, hi + step / 2, step), 3)
    grid = np.unique(np.concatenate([grid, np.round(np.asarray(marks, dtype=float), 3)]))
    return grid[grid <= cap + 1e-9]


def padding_curve(
    naive_seconds: Iterable[float | None],
    utterance_samples: np.ndarray,
    lengths: Sequence[float],
) -> PaddingCurve:
    """The curve at each training length: files for the original way, utterance lengths
    (samples) for ours; see PaddingCurve."""
    raw = to_samples(naive_seconds)
    utt = np.asarray(utterance_samples, dtype=np.int64)
    real = int(utt.sum())
    out: dict[str, list[float]] = {"naive": [], "padding": [], "dropped": [], "windows": []}
    for length in lengths:
        seg = int(round(length * SAMPLE_RATE))
        pad, total = naive_padding(raw, seg)
        windows, used = grid_windows(utt, seg)
        n, kept = int(windows.sum()), int(used.sum())
        out["naive"].append(pad / total if total else 0.0)
        out["padding"].append((n * seg - kept) / (n * seg) if n else 0.0)
        out["dropped"].append((real - kept) / real if real else 0.0)
        out["windows"].append(n)
    return PaddingCurve(
        seconds=np.asarray(lengths, dtype=float),
        **{k: np.asarray(v, dtype=float) for k, v in out.items()},
    )


def recommend_segment_seconds(
    curve: PaddingCurve, max_padding: float, way: str = "padding"
) -> float:
    """The longest training length whose padding (`way`: ours or "naive") is ≤ max_padding
    — ours also drops ≤ max_padding of the audio and yields windows at all (a length no
    utterance fills would "pad" 0 % of nothing) — or the shortest length when none is
    (the report says so)."""
    budget = max_padding + 1e-12
    if way == "naive":
        ok = np.flatnonzero(curve.naive <= budget)
    else:
        ok = np.flatnonzero(
            (curve.padding <= budget) & (curve.dropped <= budget) & (curve.windows > 0)
        )
    return float(curve.seconds[ok[-1]] if ok.size else curve.seconds[0])
