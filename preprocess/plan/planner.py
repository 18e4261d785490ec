"""Deterministic planning: list, fingerprint, deduplicate, pack work units; after the scan,
split the kept audio and pack the shard groups.

Everything here depends only on the input bytes and the config — never on worker count,
timing or listing order — so that every run of the same input makes the same units.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preprocess.config import PreprocessConfig
from preprocess.measure.audio_io import (
    UNSUPPORTED_AUDIO_EXTENSIONS,
    DecodeError,
    audio_extensions,
    probe,
)
from preprocess.plan.split import SplitItem, SplitPlan, plan_splits
from shards.index import SPLITS

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
# Rough bytes per second of 16 kHz utterances, to pack shard groups near the shard target.
_EST_BYTES_PER_SECOND = {"flac": 20_000, "npy": 32_000}
# Audio seconds per work unit (from headers). Units smaller than a shard keep every worker
# busy to the end: with one unit per 32 MB shard a 0.5 h corpus was 3 units for 2 workers.
# Several units make one shard, so shard boundaries never depend on the worker count. A
# unit costs one actor call and one fsynced commit, a few ms against ~2 CPU-s of work.
UNIT_SECONDS = 120.0
# A small corpus still makes MIN_UNITS units (of at least MIN_UNIT_SECONDS): a 1.5-minute
# corpus was one unit, which one worker ran while the others (another node's) sat idle.
# From the corpus alone, never the worker count: a rerun with other --workers reuses them.
MIN_UNITS = 16
MIN_UNIT_SECONDS = 10.0


# 1 kbit/s: under any codec libsndfile decodes (GSM 6.10 13, MP3 8, Opus 6 kbit/s) and
# under FLAC of anything but digital silence (47 B/s at 16 kHz, measured; such a file is
# rejected `silent` anyway, and files.jsonl takes a decoded file's seconds from its
# samples). PCM never comes near it.
MIN_AUDIO_BYTES_PER_SECOND = 125.0


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
    # A listing reason (bad_name, not_regular_file, broken_link, symlink_loop, unreadable)
    # decided before decoding; `probe_error` then holds the detail.
    plan_reason: str | None = None

    @property
    def file_id(self) -> str:
        """Stable id for sample keys: from the path, so duplicates get distinct ids."""
        return hashlib.sha256(self.path.encode("utf-8")).hexdigest()[:16]

    @property
    def group(self) -> str:
        return self.path.split("/", 1)[0] if "/" in self.path else self.path

    @property
    def est_seconds(self) -> float:
        """The header's duration, within what the file's size can hold (`plausible`)."""
        if not self.header or not self.header["sample_rate"]:
            return 0.0
        return self.plausible(self.header["frames"] / self.header["sample_rate"])

    def plausible(self, header_seconds: float) -> float:
        """A header's duration capped at what this many bytes can encode: a damaged MP3
        Xing or FLAC STREAMINFO frame count claimed 15 583 h for a 26 KB file, which
        drove the split (90 % val) and the hours reported."""
        if self.bytes <= 0:
            return header_seconds
        return min(header_seconds, self.bytes / MIN_AUDIO_BYTES_PER_SECOND)


@dataclass
class WorkUnit:
    """Files processed together by one actor; its output is committed atomically.

    A unit knows nothing of the split: that is decided on the kept audio once every unit
    is done (`assign_splits`), and the shard groups (`ShardGroup`) are packed from it.
    """

    unit_id: int
    paths: list[str] = field(default_factory=list)
    est_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Listing:
    """What is under the input root: regular files to read, and entries that cannot be."""

    files: list[str]  # sorted POSIX relative paths of regular files (or links to them)
    skipped: list[InputFile]  # everything else, each with its `plan_reason`


def list_inputs(root: str | Path) -> Listing:
    """Walk `root` without following directory links (so link loops cannot trap it) and
    without opening anything (a FIFO would block). Links to regular files, inside or
    outside the corpus, are followed; every other entry is accounted for with a reason."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"input {root} is not a directory")
    files: list[str] = []
    skipped: list[InputFile] = []
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            detail = f"directory cannot be listed ({exc.strerror}){_advice(exc)}"
            skipped.append(_skipped(f"{rel_dir}/", "unreadable", detail))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            kind, detail = _classify(entry)
            if kind == "dir":
                pending.append(rel)
            elif kind == "file" and not _is_utf8(rel):
                skipped.append(_skipped(rel, "bad_name", _bad_name_detail(rel), entry))
            elif kind == "file":
                files.append(rel)
            else:
                skipped.append(_skipped(rel, kind, detail))
    return Listing(sorted(files), sorted(skipped, key=lambda f: f.path))


def _advice(exc: OSError) -> str:
    """What to do about an entry the listing cannot read, by its errno ("" if unknown)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "; fix its permissions"
    if exc.errno == errno.ENAMETOOLONG:
        return "; its path is longer than the system allows (PATH_MAX): shorten it"
    return ""


def _classify(entry: os.DirEntry) -> tuple[str, str | None]:
    """("dir" | "file" | a listing reason, detail) from stat calls only."""
    try:
        if not entry.is_symlink():
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                return "dir", None
        else:
            try:
                mode = os.stat(entry.path).st_mode
            except OSError as exc:
                return _link_problem(entry, exc)
            if stat.S_ISDIR(mode):
                return "not_regular_file", (
                    "symlink to a directory: directory links are not followed (they can "
                    "loop); copy or bind-mount the directory into the corpus instead"
                )
    except OSError as exc:
        return "unreadable", f"cannot stat ({exc.strerror}){_advice(exc)}"
    if stat.S_ISREG(mode):
        return "file", None
    return "not_regular_file", f"{_file_type(mode)}, not a regular file: never opened"


def _link_problem(entry: os.DirEntry, exc: OSError) -> tuple[str, str]:
    try:
        target = os.readlink(entry.path)
    except OSError:
        target = "?"
    target = _escaped(target)
    if exc.errno == errno.ELOOP:
        return "symlink_loop", f"symlink loop (-> {target}); remove or fix the link"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "broken_link", f"symlink to missing {target}; remove or fix the link"
    return "unreadable", f"symlink -> {target} cannot be followed ({exc.strerror})"


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return f"file of mode {mode:o}"


def _is_utf8(name: str) -> bool:
    """os.scandir gives names that are not valid UTF-8 as lone surrogates (surrogateescape)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(name: str) -> str:
    """A name as valid UTF-8 text: bytes that are not UTF-8 become `\\xNN` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _bad_name_detail(rel: str) -> str:
    return (
        f"file name is not valid UTF-8 (raw path bytes, hex: {os.fsencode(rel).hex()}); "
        "rename it to UTF-8, e.g. `convmv -f latin1 -t utf-8 --notest FILE`"
    )


def _skipped(
    rel: str, reason: str, detail: str | None, entry: os.DirEntry | None = None
) -> InputFile:
    size = 0
    if entry is not None:
        with contextlib.suppress(OSError):
            size = entry.stat().st_size
    return InputFile(
        path=_escaped(rel),
        bytes=size,
        sha256="",
        is_audio_extension=False,
        probe_error=detail,
        plan_reason=reason,
    )


class NotRegularFile(OSError):
    """The path turned into a FIFO, device or directory after it was listed."""


def sha256_file(path: str | Path) -> tuple[int, str]:
    """(size, sha256) of a regular file. Opened non-blocking and checked with fstat, so a
    FIFO swapped in after listing is refused instead of blocking the worker forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{_file_type(st.st_mode)}, not a regular file")
        h = hashlib.sha256()
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return st.st_size, h.hexdigest()


PREFETCH_BYTES = 8 << 20  # per file: 4 min of 16 kHz PCM16, all of a typical utterance


def prefetch(root: Path, rel_paths: list[str]) -> None:
    """Ask the kernel to start reading these files now (POSIX_FADV_WILLNEED), so that on a
    cold page cache the disk works ahead of a reader that takes them one at a time: the
    hash of 4,000 mission files (576 MB) took 1.65–1.80 s cold with one reader, 0.98–1.07 s
    with the batch's 32 files asked for first (CPU 1.2 → 0.9 s; warm: 0.76 s either way).
    Threads instead (four readers) gained less and cost 2.4× the CPU on a warm cache.
    Only regular files are asked for, and only their first PREFETCH_BYTES: a long file
    is read ahead by the kernel as it is read, and asking for all of a 2 GB file at once
    could push out pages still in use. One that cannot be opened is left to its reader."""
    for rel in rel_paths:
        try:
            fd = os.open(root / rel, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.posix_fadvise(fd, 0, PREFETCH_BYTES, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def fingerprint(
    root: str | Path, rel_paths: list[str], extra_exts: tuple[str, ...] = ()
) -> list[dict]:
    """Hash and probe a batch of files (runs inside Ray tasks); never raises per file."""
    exts = audio_extensions(extra_exts)
    prefetch(Path(root), rel_paths)
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
            rec["bytes"], rec["sha256"] = sha256_file(full)
        except NotRegularFile as exc:
            rec.update(bytes=0, sha256="", plan_reason="not_regular_file", probe_error=str(exc))
            out.append(rec)
            continue
        except OSError as exc:
            detail = f"cannot be read ({exc.strerror}){_advice(exc)}"
            rec.update(bytes=0, sha256="", plan_reason="unreadable", probe_error=detail)
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


def kept_items(records: list[dict[str, Any]]) -> list[SplitItem]:
    """What the split weighs, from files.jsonl records: the audio each kept file gives
    its utterances (`valid_seconds`); rejected files give none, so a group whose files
    are all rejected never counts toward val."""
    return [
        SplitItem(r["path"], r["valid_seconds"] or 0.0, True)
        if r["status"] == "kept"
        else SplitItem(r["path"], 0.0, False)
        for r in records
    ]


def assign_splits(items: list[SplitItem], cfg: PreprocessConfig) -> SplitPlan:
    """The split (preprocess.plan.split) of the audio the decisions kept: the groups whose
    seeded hash falls under `val_fraction`, topped up in hash order to `min_val_seconds`
    (or 0.8 × the share) of the kept hours; or the manifest's split as given. `dir` falls
    back to files where whole folders cannot hold val.

    Logs the shares and, as warnings, the fallback and why val could not be what was asked.
    """
    plan = split_plan(items, cfg)
    log.info(plan.summary())
    for warning in plan.warnings:
        log.warning(warning)
    return plan


def check_split(files: list[InputFile], cfg: PreprocessConfig) -> None:
    """Raise SplitError now for a split that cannot be made (a regex that misses an audio
    file, a manifest that cannot be read or changed since the config was made): the split
    waits for the decisions, its errors must not wait hours of scanning for them. Every
    file to decode stands in for kept here, as the split would see them all kept."""
    split_plan([SplitItem(f.path, f.est_seconds, needs_decoding(f)) for f in files], cfg)


def split_plan(items: list[SplitItem], cfg: PreprocessConfig) -> SplitPlan:
    """`plan_splits` with the config's split settings, logging nothing."""
    return plan_splits(
        items,
        cfg.split_by,
        cfg.val_fraction,
        cfg.min_val_seconds,
        cfg.split_seed,
        cfg.split_manifest_sha256,
    )


def make_units(files: list[InputFile], cfg: PreprocessConfig) -> list[WorkUnit]:
    """Pack the files to decode (decodable, not duplicates) into work units of about
    `UNIT_SECONDS` of audio each (smaller in a small corpus, down to MIN_UNIT_SECONDS, so
    that there are MIN_UNITS of them), in the seeded hash order `make_shard_groups` packs
    shards in: a train shard's files then come from a run of neighbouring units, whose
    spools are freed as soon as those shards are written (val's few files per unit spread
    each val shard over many units; the pipeline writes those first)."""
    units: list[WorkUnit] = []
    todo = [f for f in files if needs_decoding(f)]
    todo.sort(key=lambda f: (_unit_hash(f.path, cfg.split_seed), f.path))
    total = sum(f.est_seconds for f in todo)
    unit_seconds = min(UNIT_SECONDS, max(MIN_UNIT_SECONDS, total / MIN_UNITS))
    for f in todo:
        if not units or units[-1].est_seconds >= unit_seconds:
            units.append(WorkUnit(unit_id=len(units)))
        units[-1].paths.append(f.path)
        units[-1].est_seconds += f.est_seconds
    return units


@dataclass
class ShardGroup:
    """The utterances of one shard (rarely several: `shard_group.write_group`), as the
    files they come from: `members` are (unit_id, position of the file in that unit)."""

    group_id: int
    split: str
    members: list[tuple[int, int]] = field(default_factory=list)
    est_bytes: float = 0.0

    def unit_ids(self) -> list[int]:
        return sorted({u for u, _ in self.members})

    def to_dict(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "split": self.split, "members": self.members}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardGroup:
        return cls(d["group_id"], d["split"], [tuple(m) for m in d["members"]])


def make_shard_groups(
    units: list[WorkUnit],
    records: dict[int, list[dict[str, Any]]],
    split_of: dict[str, str],
    cfg: PreprocessConfig,
) -> list[ShardGroup]:
    """Pack each split's kept files into shard groups of about `shard_mb` of encoded
    audio, train's first. Files are ordered by a seeded hash of their path, so a shard
    mixes speakers and folders instead of holding one directory; `records` are each
    unit's files.jsonl lines, in unit order. Depends on the plan and the decisions only,
    never on the worker count."""
    per_second = _EST_BYTES_PER_SECOND.get(cfg.audio_encoding, 32_000)
    target = cfg.shard_mb * 1e6
    kept = [
        (_unit_hash(rec["path"], cfg.split_seed), rec["path"], unit.unit_id, pos, rec)
        for unit in units
        for pos, rec in enumerate(records[unit.unit_id])
        if rec["status"] == "kept" and rec["segments"] > 0
    ]
    kept.sort()
    groups: list[ShardGroup] = []
    for split in SPLITS:
        current: ShardGroup | None = None
        for _, path, unit_id, pos, rec in kept:
            if split_of[path] != split:
                continue
            if current is None or current.est_bytes >= target:
                current = ShardGroup(len(groups), split)
                groups.append(current)
            current.members.append((unit_id, pos))
            current.est_bytes += (rec["valid_seconds"] or 0.0) * per_second
    return groups


def needs_decoding(f: InputFile) -> bool:
    """Files decided at planning time (duplicates, unopenable) never reach a worker."""
    return f.duplicate_of is None and f.probe_error is None and f.plan_reason is None


def input_digest(files: list[InputFile]) -> str:
    """sha256 over every input path with its size, hash and listing reason: what a finished
    OUT was made from, so a rerun can tell an unchanged input from a changed one."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(json.dumps([f.path, f.bytes, f.sha256, f.plan_reason]).encode() + b"\n")
    return h.hexdigest()
