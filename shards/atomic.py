"""Atomic file writes: a file exists under its final name only when complete.

Bytes go to a temp file beside the target, are fsynced, then renamed over it (rename is
atomic within a filesystem), and the directory entry is fsynced, so a kill at any moment
leaves either the old file or the new one, never a torn one that a rerun or a reader
could take for whole.

A directory (a preprocess work unit, a shard group, stats.zarr) is committed the same way:
filled under a temporary name, every file and directory in it fsynced, renamed to its final
name, the parent fsynced (`commit_dir`). A rename is only as durable as what it points to,
so a power cut cannot leave a committed name over torn contents.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

# The errnos of a full disk: no space left, or the user's quota spent. Every writer
# (preprocess's units, groups, OUT; training's checkpoints) reports them as one line.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """JSON with a trailing newline; `dumps_kwargs` go to json.dumps (indent, sort_keys…)."""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def write_json_for_commit(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """JSON (trailing newline) written plainly into a directory that `commit_dir` will
    commit: its `fsync_tree` makes the file durable before the rename, and an uncommitted
    directory is wiped, never read, so a temp file, fsync and rename of its own would only
    pay twice (5 of a work unit's 13 fsyncs)."""
    Path(path).write_text(json.dumps(obj, **dumps_kwargs) + "\n", encoding="utf-8")


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (deepest first), and `root` itself."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def commit_dir(tmp: Path, final: Path) -> None:
    """Make `tmp` durable, replace `final` (if any) with it, and make the rename durable."""
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
