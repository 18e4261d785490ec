"""Deterministic planning: list, fingerprint, deduplicate, split and group into work units.

Everything here depends only on the input bytes and the config — never on worker count,
timing or listing order — so that every run of the same input makes the same units.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preprocess.audio_io import (
    UNSUPPORTED_AUDIO_EXTENSIONS,
    DecodeError,
    audio_extensions,
    probe,
)
from preprocess.config import PreprocessConfig

_HASH_CHUNK = 1 << 20
# Rough bytes per second of 16 kHz segments, to size work units near the shard target.
_EST_BYTES_PER_SECOND = {"flac": 20_000, "npy": 32_000}
# Audio seconds per work unit (from headers). Units smaller than a shard keep every worker
# busy to the end: with one unit per 32 MB shard a 0.5 h corpus was 3 units for 2 workers.
# Several units make one shard, so shard boundaries never depend on the worker count. A
# unit costs one actor call and one fsynced commit, a few ms against ~2 CPU-s of work.
UNIT_SECONDS = 120.0


@dataclass
class InputFile:
    """One input file as the planner sees it (header probed, bytes hashed)."""

    path: str  # POSIX, relative to the input root
    bytes: int
    sha256: str
    is_audio_extension: bool
    is_unsupported_audio: bool = False
    header: dict[str, Any] | None = None
    probe_error: str | None = None
    duplicate_of: str | None = None
    split: str | None = None

    @property
    def file_id(self) -> str:
        """Stable id for sample keys: from the path, so duplicates get distinct ids."""
        return hashlib.sha256(self.path.encode("utf-8")).hexdigest()[:16]

    @property
    def group(self) -> str:
        return self.path.split("/", 1)[0] if "/" in self.path else self.path

    @property
    def est_seconds(self) -> float:
        if not self.header or not self.header["sample_rate"]:
            return 0.0
        return self.header["frames"] / self.header["sample_rate"]


@dataclass
class WorkUnit:
    """Files processed together by one actor; its output is committed atomically.

    The units of one `shard_group` are written into that group's shard(s) once all of
    them are done.
    """

    unit_id: int
    split: str
    paths: list[str] = field(default_factory=list)
    est_seconds: float = 0.0
    shard_group: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_files(root: str | Path) -> list[str]:
    """Every regular file under `root` (hidden ones too), as sorted POSIX relative paths."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"input {root} is not a directory")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_file():
                found.append(full.relative_to(root).as_posix())
    return sorted(found)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(
    root: str | Path, rel_paths: list[str], extra_exts: tuple[str, ...] = ()
) -> list[dict]:
    """Hash and probe a batch of files (runs inside Ray tasks); never raises per file."""
    exts = audio_extensions(extra_exts)
    out = []
    for rel in rel_paths:
        full = Path(root) / rel
        suffix = full.suffix.lower()
        rec: dict[str, Any] = {
            "path": rel,
            "is_audio_extension": suffix in exts,
            "is_unsupported_audio": suffix in UNSUPPORTED_AUDIO_EXTENSIONS,
        }
        try:
            rec["bytes"] = full.stat().st_size
            rec["sha256"] = sha256_file(full)
        except OSError as exc:
            rec.update(bytes=0, sha256="", probe_error=f"unreadable: {exc}")
            out.append(rec)
            continue
        try:
            h = probe(full)
            rec["header"] = {
                "sample_rate": h.sample_rate,
                "channels": h.channels,
                "frames": h.frames,
                "format": h.format,
                "subtype": h.subtype,
            }
        except DecodeError as exc:
            rec["probe_error"] = str(exc)
        out.append(rec)
    return out


def mark_duplicates(files: list[InputFile]) -> None:
    """Exact duplicates by sha256: the first in path order is kept, later ones point to it."""
    first: dict[str, str] = {}
    for f in sorted(files, key=lambda f: f.path):
        if not f.sha256 or f.bytes == 0:
            continue  # empty or unreadable files are judged on their own
        if f.sha256 in first:
            f.duplicate_of = first[f.sha256]
        else:
            first[f.sha256] = f.path


def _unit_hash(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")


def assign_splits(files: list[InputFile], cfg: PreprocessConfig) -> None:
    """Val membership by group (speaker directory or file), from a hash of the group name.

    Stable under adding files: a group's split depends only on its own name. When hashing
    puts no group holding decodable audio in val, but val is wanted and there are ≥ 2 such
    groups, the one with the smallest hash goes to val, so a small corpus still gets a
    validation set. Call after `mark_duplicates`.
    """
    key = (lambda f: f.group) if cfg.split_by == "dir" else (lambda f: f.path)
    groups = sorted({key(f) for f in files})
    threshold = int(cfg.val_fraction * 2**64)
    val = {g for g in groups if _unit_hash(g, cfg.split_seed) < threshold}
    audio_groups = sorted({key(f) for f in files if needs_decoding(f)})
    if cfg.val_fraction > 0 and not (val & set(audio_groups)) and len(audio_groups) >= 2:
        val.add(min(audio_groups, key=lambda g: _unit_hash(g, cfg.split_seed)))
    for f in files:
        f.split = "val" if key(f) in val else "train"


def make_units(files: list[InputFile], cfg: PreprocessConfig) -> list[WorkUnit]:
    """Group decodable, non-duplicate files into shard groups of about one shard each, per
    split, and each group into work units of about `UNIT_SECONDS` of audio.

    Files are ordered by a seeded hash of their path before packing, so each shard mixes
    speakers instead of holding one directory.
    """
    target = cfg.shard_mb * 1e6 / _EST_BYTES_PER_SECOND.get(cfg.audio_encoding, 32_000)
    units: list[WorkUnit] = []
    group = -1
    for split in ("train", "val"):
        todo = [f for f in files if f.split == split and needs_decoding(f)]
        todo.sort(key=lambda f: (_unit_hash(f.path, cfg.split_seed), f.path))
        current: WorkUnit | None = None
        group_seconds = float("inf")  # the first file opens a group
        for f in todo:
            if group_seconds >= target:
                group, group_seconds, current = group + 1, 0.0, None
            if current is None or current.est_seconds >= UNIT_SECONDS:
                current = WorkUnit(unit_id=len(units), split=split, shard_group=group)
                units.append(current)
            current.paths.append(f.path)
            current.est_seconds += f.est_seconds
            group_seconds += f.est_seconds
    return units


def needs_decoding(f: InputFile) -> bool:
    """Files decided at planning time (duplicates, unopenable) never reach a worker."""
    return f.duplicate_of is None and f.probe_error is None
