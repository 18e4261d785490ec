"""One WebDataset sample: a 16 kHz mono utterance, its validity runs and meta (format 2).

A sample is two tar members sharing a key `<file-id>-<utt:05d>`: `<key>.audio.flac` (or
`.audio.npy`, int16) of n samples, and `<key>.json` with `source`, `offset`, `valid`,
`gain_db`, `sample_rate`, `split` and `samples` (= n, so a reader counts training windows
without decoding audio). `valid` lists the `[start, end)` runs of real audio (an utterance
from preprocess: `[[0, n]]`); any other sample is padding and must not count in any loss
or metric. Lengths vary: the training segment length is cut from these at load time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
AUDIO_ENCODINGS = ("flac", "npy")
# FLAC PCM_16: about half the bytes of int16 npy and still far faster to decode than a
# training step consumes (docs/SHARDS.md has the measured figures).
DEFAULT_AUDIO_ENCODING = "flac"
INT16_SCALE = 32767.0
REQUIRED_META = ("source", "offset", "valid", "gain_db", "sample_rate", "split", "samples")


class ShardFormatError(ValueError):
    """A sample or shard that does not follow the format; the message names shard and key."""


class SplitMismatchError(ShardFormatError):
    """A sample whose meta `split` is not the split index.json lists its shard under: a
    shard copied over another (a val shard over a train one must not be trained on)."""


def sample_key(file_id: str, segment: int) -> str:
    """Key of segment `segment` of file `file_id`; '.' is reserved by tar member naming."""
    if "." in file_id or "/" in file_id:
        raise ValueError(f"file id {file_id!r} must not contain '.' or '/'")
    return f"{file_id}-{segment:05d}"


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] → int16 with rounding; refuses anything out of range.
    int16 audio is already PCM and passes through."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains non-finite samples")
    if audio.size and float(np.max(np.abs(audio))) > 1.0:
        raise ValueError(f"audio exceeds full scale: peak {float(np.max(np.abs(audio))):.4f}")
    return np.round(audio.astype(np.float64) * INT16_SCALE).astype(np.int16)


def runs_from_mask(mask: np.ndarray) -> list[list[int]]:
    """Boolean mask → sorted `[start, end)` runs of True."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], m, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [[int(s), int(e)] for s, e in zip(starts, ends, strict=True)]


def checked_runs(runs: Iterable[Sequence[int]], length: int) -> list[tuple[int, int]]:
    """`[start, end)` runs as integer pairs; ValueError naming the first run that is not
    inside a segment of `length` samples."""
    checked = []
    for run in runs:
        if len(run) != 2 or not all(_is_int(x) for x in run):
            raise ValueError(f"valid run {run!r} is not a pair of integers")
        start, end = int(run[0]), int(run[1])
        if not 0 <= start <= end <= length:
            raise ValueError(f"valid run [{start}, {end}) outside segment of {length} samples")
        checked.append((start, end))
    return checked


def _is_int(x: Any) -> bool:
    """An integer of JSON or numpy, never a bool, float or string ("05", 1e9, Infinity)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def mask_from_runs(runs: Iterable[Sequence[int]], length: int) -> np.ndarray:
    """`[start, end)` runs → boolean mask of `length`; runs must lie inside it."""
    mask = np.zeros(length, dtype=bool)
    for start, end in checked_runs(runs, length):
        mask[start:end] = True
    return mask


def pcm_to_float(pcm: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int16 PCM (any shape) → the format's float32 samples, `pcm / 32767`: IEEE float32
    division, bit for bit what every reader of the format gives; into `out` (float32, the
    shape of `pcm`) when given."""
    if out is None:
        out = np.empty(pcm.shape, dtype=np.float32)
    np.copyto(out, pcm, casting="safe")
    out /= np.float32(INT16_SCALE)
    return out


def _encode_audio(pcm: np.ndarray, encoding: str) -> bytes:
    buf = io.BytesIO()
    if encoding == "flac":
        sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    elif encoding == "npy":
        np.save(buf, pcm, allow_pickle=False)
    else:
        raise ValueError(f"unknown audio encoding {encoding!r}; expected one of {AUDIO_ENCODINGS}")
    return buf.getvalue()


def encode_sample(
    key: str,
    audio: np.ndarray,
    valid: Sequence[Sequence[int]],
    meta: dict[str, Any],
    encoding: str = DEFAULT_AUDIO_ENCODING,
) -> dict[str, Any]:
    """Build the dict `webdataset.TarWriter.write` takes. `audio` is 1-D: float in
    [-1, 1], or int16 PCM as is. `meta` must carry REQUIRED_META except `valid` and
    `samples`, which come from the arguments (the runs and the audio's length); extra
    fields are kept."""
    pcm = to_int16(audio)
    mask_from_runs(valid, pcm.shape[0])  # validates the runs
    full_meta = dict(meta)
    full_meta["valid"] = [[int(s), int(e)] for s, e in valid]
    full_meta["samples"] = int(pcm.shape[0])
    missing = [f for f in REQUIRED_META if f not in full_meta]
    if missing:
        raise ValueError(f"sample {key}: meta lacks {missing}")
    return {
        "__key__": key,
        f"audio.{encoding}": _encode_audio(pcm, encoding),
        "json": json.dumps(full_meta, sort_keys=True, separators=(",", ":")).encode("utf-8"),
    }


# The most samples one stored utterance may decode to: 2,097 s at 16 kHz, as many as an
# npy member of the reader's 64 MiB limit holds (a 20-s utterance has 320,000).
MAX_DECODED_SAMPLES = 32 << 20


def _decode_pcm(name: str, data: bytes) -> np.ndarray:
    if name == "audio.flac":
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate != SAMPLE_RATE:
                raise ValueError(f"sample rate {f.samplerate}, expected {SAMPLE_RATE}")
            if not 0 <= f.frames <= MAX_DECODED_SAMPLES:  # a few KB of FLAC can claim hours
                raise ValueError(f"{f.frames} samples, more than {MAX_DECODED_SAMPLES}")
            pcm = f.read(dtype="int16", always_2d=False)
    elif name == "audio.npy":
        pcm = np.load(io.BytesIO(data), allow_pickle=False)
        if pcm.dtype != np.int16:
            raise ValueError(f"dtype {pcm.dtype}, expected int16")
    else:
        raise ValueError(f"unknown audio member {name!r}")
    if pcm.ndim != 1:
        raise ValueError(f"audio shape {pcm.shape}, expected mono")
    return pcm


def decode_pcm(
    members: dict[str, bytes], shard: str = "?", split: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tar members of one key → (int16[n] PCM as stored, meta), checked as `decode_sample`
    checks them (its errors, the same messages); meta `valid` is known to lie inside the n
    samples. The training loader reads this: it converts only the windows it batches to
    float, one pass per batch, and its window buffer holds int16 (docs/BENCHMARKS.md §2)."""
    key = members.get("__key__", "?")
    audio_names = [n for n in members if n.startswith("audio.")]
    if len(audio_names) != 1 or "json" not in members:
        raise ShardFormatError(
            f"{shard}: sample {key!r} has members {sorted(n for n in members if n[0] != '_')}, "
            "expected one audio.flac|audio.npy and json"
        )
    try:
        meta = json.loads(bytes(members["json"]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ShardFormatError(f"{shard}: sample {key!r}: bad json member: {exc!r}") from exc
    if split is not None and (not isinstance(meta, dict) or meta.get("split") != split):
        found = meta.get("split") if isinstance(meta, dict) else None
        raise SplitMismatchError(
            f"{shard}: sample {key!r} has split {found!r}, but index.json lists this shard "
            f"under {split!r}"
        )
    try:
        pcm = _decode_pcm(audio_names[0], bytes(members[audio_names[0]]))
    except Exception as exc:  # soundfile raises several types; all mean a bad member
        raise ShardFormatError(
            f"{shard}: sample {key!r}: cannot decode {audio_names[0]}: {exc}"
        ) from exc
    try:
        checked_runs(meta["valid"], pcm.shape[0])
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ShardFormatError(f"{shard}: sample {key!r}: bad 'valid' runs: {exc}") from exc
    if "samples" in meta and meta["samples"] != pcm.shape[0]:
        raise ShardFormatError(
            f"{shard}: sample {key!r}: meta says {meta['samples']!r} samples, its audio has "
            f"{pcm.shape[0]}"
        )
    return pcm, meta


def decode_sample(
    members: dict[str, bytes], shard: str = "?", split: str | None = None
) -> dict[str, Any]:
    """Tar members of one key → `{"key", "audio": float32[T], "mask": bool[T], "meta"}`.

    Raises ShardFormatError naming the shard and key on any missing or undecodable member;
    SplitMismatchError when `split` is given and the meta's `split` is another (checked
    before the audio is decoded).
    """
    pcm, meta = decode_pcm(members, shard, split)
    audio = pcm_to_float(pcm)
    mask = mask_from_runs(meta["valid"], audio.shape[0])
    return {"key": members.get("__key__", "?"), "audio": audio, "mask": mask, "meta": meta}
