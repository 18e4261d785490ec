"""`OUT/stats.zarr`: per-file scalars aligned with files.jsonl, and ragged per-frame RMS.

zarr has no ragged dtype, so per-frame RMS is one flat `frame_rms/values` array plus
`frame_rms/offsets` (N + 1 entries): file i owns values[offsets[i]:offsets[i + 1]].
`preprocess.diagnose` reads this (and files.jsonl) to report without decoding audio.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from preprocess.measure.policy import REASONS
from shards import SPLITS

SCALARS: dict[str, str] = {
    "seconds": "f8",
    "sample_rate": "i4",
    "channels": "i4",
    "bytes": "i8",
    "peak": "f4",
    "peak_without_dc": "f4",
    "trimmed_seconds": "f4",
    "rms": "f4",
    "dc": "f4",
    "active_fraction": "f4",
    "active_seconds": "f4",
    "loudness_lufs": "f4",
    "clipped_fraction": "f4",
    "nonfinite": "i8",
    "gain_db": "f4",
    "segments": "i4",
    "valid_seconds": "f4",
    "snr_db": "f4",
    "dnsmos_sig": "f4",
    "dnsmos_bak": "f4",
    "dnsmos_ovrl": "f4",
    "dnsmos_windows": "i4",
    "silero_speech_seconds": "f4",
}
_CHUNK = 1 << 16


def _compressor() -> zarr.codecs.BloscCodec:
    return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def _column(records: list[dict[str, Any]], name: str, dtype: str) -> np.ndarray:
    missing = np.nan if dtype.startswith("f") else -1
    return np.array([missing if r.get(name) is None else r[name] for r in records], dtype=dtype)


def write_stats(
    path: Path,
    records: list[dict[str, Any]],
    frame_chunks: Iterable[np.ndarray],
    frame_lengths: np.ndarray,
    frame_seconds: float,
) -> None:
    """Write the store; `frame_chunks` yields per-file RMS arrays in record order."""
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update(
        {
            "reasons": list(REASONS),
            "splits": list(SPLITS),
            "frame_seconds": frame_seconds,
            "missing": "NaN for floats, -1 for ints (files that could not be measured)",
        }
    )
    n = len(records)
    files = root.create_group("files")
    files.create_array("path", shape=(n,), dtype=str)[:] = (
        np.array([r["path"] for r in records], dtype=object) if n else None
    )
    for name, dtype in SCALARS.items():
        arr = files.create_array(
            name, shape=(n,), dtype=dtype, chunks=(_CHUNK,), compressors=_compressor()
        )
        if n:
            arr[:] = _column(records, name, dtype)
    codes = {
        "status": np.array([r["status"] == "kept" for r in records], dtype="u1"),
        "reason": np.array([REASONS.index(r["reason"]) for r in records], dtype="u1"),
        "split": np.array(
            [SPLITS.index(r["split"]) if r.get("split") else 255 for r in records], dtype="u1"
        ),
    }
    for name, values in codes.items():
        arr = files.create_array(name, shape=(n,), dtype="u1", chunks=(_CHUNK,))
        if n:
            arr[:] = values
    offsets = np.concatenate([[0], np.cumsum(frame_lengths, dtype=np.int64)])
    frames = root.create_group("frame_rms")
    frames.create_array("offsets", shape=offsets.shape, dtype="i8")[:] = offsets
    values = frames.create_array(
        "values",
        shape=(int(offsets[-1]),),
        dtype="f4",
        chunks=(1 << 18,),
        compressors=_compressor(),
    )
    # Write whole zarr chunks only: a partial-chunk write re-reads and re-compresses the
    # chunk, which per file made assembly quadratic-ish. Memory: one chunk of buffer.
    step = values.chunks[0]
    buf = np.empty(step, np.float32)
    filled, pos = 0, 0
    for chunk in frame_chunks:
        chunk = np.asarray(chunk, np.float32)
        while chunk.size:
            take = min(step - filled, chunk.size)
            buf[filled : filled + take] = chunk[:take]
            filled, chunk = filled + take, chunk[take:]
            if filled == step:
                values[pos : pos + step] = buf
                pos, filled = pos + step, 0
    if filled:
        values[pos : pos + filled] = buf[:filled]
        pos += filled
    if pos != offsets[-1]:
        raise RuntimeError(f"frame RMS count {pos} != offsets total {offsets[-1]}")


def read_stats(path: Path) -> dict[str, Any]:
    """Load every per-file column (small) and the frame offsets; frame values stay lazy."""
    root = zarr.open_group(str(path), mode="r")
    files = root["files"]
    cols = {name: files[name][:] for name in files.array_keys()}
    return {
        "attrs": dict(root.attrs),
        "files": cols,
        "frame_offsets": root["frame_rms/offsets"][:],
        "frame_values": root["frame_rms/values"],
    }
