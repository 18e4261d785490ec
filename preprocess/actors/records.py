"""The one-line-per-file record of files.jsonl, built from what planning and scanning found."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from preprocess.measure.policy import Decision
from preprocess.measure.scan import FileAnalysis
from preprocess.plan.planner import InputFile
from shards import SAMPLE_RATE


def _num(x: float | int | None, digits: int = 6) -> float | int | None:
    """Six significant digits; None for non-finite, which JSON cannot carry."""
    if x is None:
        return None
    if isinstance(x, int):
        return x
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def file_record(
    f: InputFile,
    decision: Decision,
    analysis: FileAnalysis | None = None,
    utterance_samples: Sequence[int] = (),
    trimmed_samples: int = 0,
) -> dict[str, Any]:
    """The files.jsonl line for one input file (fields in docs/PREPROCESS.md).

    `utterance_samples`, the length of each utterance the file gives (written, or in a scan
    planned), in file order, is kept as is; their count goes to the field `segments`, which
    keeps its name for readers of files.jsonl and stats.zarr, and their audio to
    `valid_seconds`.
    """
    h = analysis.header if analysis and analysis.header else None
    hd = f.header or {}
    rec: dict[str, Any] = {
        "path": f.path,
        "file_id": f.file_id,
        "status": decision.status,
        "reason": decision.reason,
        "detail": decision.detail,
        "sha256": f.sha256,
        "bytes": f.bytes,
        "duplicate_of": f.duplicate_of,
        "split": None,  # a kept file's is set at assembly, once the split is decided
        "sample_rate": h.sample_rate if h else hd.get("sample_rate"),
        "channels": h.channels if h else hd.get("channels"),
        "format": h.format if h else hd.get("format"),
        "subtype": h.subtype if h else hd.get("subtype"),
        "seconds": _num(_seconds(f, analysis) if h else f.est_seconds if hd else None),
        "peak": None,
        "peak_without_dc": None,
        "rms": None,
        "dc": None,
        "active_fraction": None,
        "active_seconds": None,
        "loudness_lufs": None,
        "clipped_fraction": None,
        "nonfinite": None,
        "gain_db": _num(decision.gain_db) if decision.kept else None,
        "segments": len(utterance_samples),
        "utterance_samples": [int(n) for n in utterance_samples],
        "trimmed_seconds": _num(trimmed_samples / SAMPLE_RATE),
        "valid_seconds": _num(sum(utterance_samples) / SAMPLE_RATE),
        "snr_db": None,
        "dnsmos_sig": None,
        "dnsmos_bak": None,
        "dnsmos_ovrl": None,
        "dnsmos_windows": None,
        "silero_speech_seconds": None,
    }
    if analysis is not None and analysis.error is None and analysis.header is not None:
        rec.update(
            peak=_num(analysis.peak),
            peak_without_dc=_num(analysis.peak_without_dc),
            rms=_num(analysis.rms),
            dc=_num(analysis.dc),
            active_fraction=_num(analysis.active_fraction),
            active_seconds=_num(analysis.active_seconds),
            loudness_lufs=_num(analysis.loudness_lufs),
            clipped_fraction=_num(analysis.clipped_fraction),
            nonfinite=analysis.nonfinite + analysis.overflow,
            snr_db=_num(analysis.snr_db),
            silero_speech_seconds=_num(analysis.silero_speech_seconds),
        )
        if analysis.dnsmos is not None:
            rec.update(
                dnsmos_sig=_num(analysis.dnsmos.sig),
                dnsmos_bak=_num(analysis.dnsmos.bak),
                dnsmos_ovrl=_num(analysis.dnsmos.ovrl),
                dnsmos_windows=analysis.dnsmos.windows,
            )
    return rec


def dumps_record(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False, sort_keys=False, separators=(",", ":"))


def _seconds(f: InputFile, a: FileAnalysis) -> float:
    """A decoded file's length from its samples (a truncated one's is what decoded); the
    header's, within what the file's size holds, when decoding stopped early."""
    h = a.header
    if a.error is None and not (a.nonfinite or a.overflow) and h.sample_rate:
        return a.frames_read / h.sample_rate
    return f.plausible(h.seconds)
