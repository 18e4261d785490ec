"""Committing a directory that was built under a temporary name (a unit, stats.zarr).

A directory is filled under `<name>.partial`/`<name>.tmp`, then renamed to its final name,
so a reader or a rerun sees all of it or none of it. A rename is only as durable as what
it points to: every file and directory inside is fsynced first, and the parent after the
rename, so a power cut cannot leave a committed name over torn contents (kill -9 alone
could not: the page cache survives a killed process).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shards.atomic import fsync_dir


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
