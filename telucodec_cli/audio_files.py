"""Audio files in, for the codec CLI: `read_audio` (encode, compare --audio) and the folder
of real recordings that `python -m telucodec compare --audio DIR` scores.

Glue beside `telucodec_cli.main`, like it outside the model package: it reads files and uses the
pipeline's loudness meter (`preprocess.measure.loudness`), which `telucodec` must not import.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioFileError(ValueError):
    """A file `read_audio` cannot use; `reason` is the code `compare --audio` counts it under
    (`unreadable`, `empty`, `nonfinite`, as preprocess' files.jsonl names such files)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any soundfile-readable file → float32 mono at `sample_rate` (channel mean, soxr HQ)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioFileError("unreadable", f"{path}: cannot read audio: {exc}") from exc
    if audio.shape[0] == 0:
        raise AudioFileError("empty", f"{path}: no audio frames")
    if not np.isfinite(audio).all():
        raise AudioFileError("nonfinite", f"{path}: contains NaN or Inf samples")
    mono = audio.mean(axis=1).astype(np.float32)
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    return mono


MIN_ITEM_SECONDS = 0.25  # telucodec.compare drops shorter items: too little for PESQ/STOI
GATE_BLOCK_SECONDS = 0.4  # one BS.1770 gating block: shorter audio has no loudness
MIN_CHUNK_SECONDS = 1.0  # a shorter last piece of a long file joins the chunk before it


def chunk_bounds(n: int, sample_rate: int, chunk_seconds: float) -> list[tuple[int, int]]:
    """[start, end) of consecutive chunks of at most `chunk_seconds` covering n samples; a
    last piece under MIN_CHUNK_SECONDS is merged into the previous chunk rather than scored
    alone (PESQ and STOI on a few hundred ms say little)."""
    size = max(1, int(round(chunk_seconds * sample_rate)))
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_CHUNK_SECONDS * sample_rate:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def corpus_level() -> tuple[float, float]:
    """(target LUFS, peak limit dBFS) preprocess normalizes the training corpus to by
    default (PreprocessConfig): -23 LUFS under a -1 dBFS peak."""
    from preprocess.config import PreprocessConfig

    return PreprocessConfig.target_lufs, PreprocessConfig.peak_limit_dbfs


class SkipFile(Exception):
    """A recording compare --audio counts as skipped under `reason` instead of scoring."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_recording(
    path: Path, sample_rate: int, normalize: bool
) -> tuple[np.ndarray, float | None]:
    """One recording as compare --audio scores it → (float32 mono at `sample_rate`, at the
    corpus's level (corpus_level) unless `normalize` is False; its loudness in LUFS or None).
    SkipFile says why it cannot be scored: unreadable, empty, nonfinite, too_short (under
    0.25 s, or under 0.4 s when it must be normalized) or silent (no gated loudness)."""
    from preprocess.measure.loudness import integrated_loudness, normalize_loudness

    try:
        audio = read_audio(path, sample_rate)
    except AudioFileError as exc:
        raise SkipFile(exc.reason) from exc
    if audio.size < MIN_ITEM_SECONDS * sample_rate:
        raise SkipFile("too_short")
    lufs = integrated_loudness(audio, sample_rate)
    if not math.isfinite(lufs):
        short = audio.size < GATE_BLOCK_SECONDS * sample_rate
        if short and normalize:
            raise SkipFile("too_short")
        if not short or not audio.any():
            raise SkipFile("silent")
        return audio, None  # 0.25-0.4 s, scored as is: too short to measure, not silence
    if normalize:
        audio = normalize_loudness(audio, sample_rate, *corpus_level(), lufs=lufs)
    return audio, lufs


@dataclass
class Recordings:
    """The audio files under a folder and what became of each: scored in chunks, or skipped
    with a reason. `items()` reads one file at a time, so memory follows the longest file,
    and the model and PESQ see at most one chunk at a time."""

    root: Path
    files: list[Path]  # list_recordings(root)
    sample_rate: int  # the model's
    chunk_seconds: float
    normalize: bool  # to the training corpus's level (corpus_level)
    scored: list[dict] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> relative paths

    def items(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(chunk float32[T], mask all True) for every scorable file, in order."""
        from preprocess.measure.audio_io import audio_extensions

        readable = audio_extensions()
        for path in self.files:
            name = path.relative_to(self.root).as_posix()
            try:
                if path.suffix.lower() not in readable:  # .m4a, .aac, …: convert them first
                    raise SkipFile("unsupported_format")
                audio, lufs = load_recording(path, self.sample_rate, self.normalize)
            except SkipFile as skip:
                self.skipped.setdefault(skip.reason, []).append(name)
                continue
            bounds = chunk_bounds(audio.size, self.sample_rate, self.chunk_seconds)
            self.scored.append(
                {
                    "path": name,
                    "seconds": round(audio.size / self.sample_rate, 3),
                    "items": len(bounds),
                    "loudness_lufs": None if lufs is None else round(lufs, 2),
                }
            )
            for a, b in bounds:
                yield audio[a:b], np.ones(b - a, bool)

    def report(self, command: str) -> dict:
        """compare.json's account of the folder, after `items()` has run; one line on stderr
        when files were skipped; ValueError when nothing could be scored."""
        reasons = sorted(self.skipped.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        counts = ", ".join(f"{len(paths)} {reason.replace('_', ' ')}" for reason, paths in reasons)
        n_skipped = sum(len(paths) for paths in self.skipped.values())
        if not self.scored:
            n = len(self.files)
            raise ValueError(f"--audio {self.root}: none of its {n} audio files scored ({counts})")
        if n_skipped:
            print(
                f"telucodec {command}: skipped {n_skipped} of {len(self.files)} files: {counts}",
                file=sys.stderr,
            )
        target = corpus_level()[0] if self.normalize else None
        level = "at their own level" if target is None else f"at {target:g} LUFS"
        print(
            f"scored {len(self.scored)} of {len(self.files)} audio files {level}, as "
            f"{sum(f['items'] for f in self.scored)} items (cut every {self.chunk_seconds:g} s)"
        )
        return {
            "audio_dir": str(self.root),
            "normalized_to_lufs": target,
            "chunk_seconds": self.chunk_seconds,
            "files": len(self.files),
            "files_scored": len(self.scored),
            "items_scored": sum(f["items"] for f in self.scored),
            "skipped_files": n_skipped,
            "skipped": dict(reasons),
            "scored": self.scored,
        }


def list_recordings(root: str | Path) -> list[Path]:
    """The audio files under `root`, recursively, sorted by relative path so every run scores
    them in the same order. Audio is decided by extension with preprocess' lists: the formats
    libsndfile reads, and those it cannot (.m4a, …), which are listed to be counted as
    skipped; any other file is left out and not counted. ValueError when `root` is not a
    folder or holds no audio."""
    from preprocess.measure.audio_io import UNSUPPORTED_AUDIO_EXTENSIONS, audio_extensions

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--audio {root}: not a directory")
    audio = audio_extensions() | UNSUPPORTED_AUDIO_EXTENSIONS
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in audio]
    if not files:
        raise ValueError(f"--audio {root}: no audio files (by extension: .wav, .flac, …)")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())
