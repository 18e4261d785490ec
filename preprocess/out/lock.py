"""One run per OUT: an exclusive `flock` on `OUT/.lock`, held from before OUT is read until
the run (and its report) is done.

Two runs writing one OUT crashed each other or, with `--overwrite`, replaced each other's
output without a word. flock(2) belongs to the open file, so the kernel drops it when its
holder dies, kill -9 included: a lock file left behind is never a stale lock, and no PID is
trusted to decide anything (the PID written into the file only names the holder in the
refusal). The file is removed when the lock is released, with the usual inode check so a
run that opened the old file while it went away cannot think it holds the lock.

The lock is re-entrant within one process (the CLI holds it around the pipeline and its
report, and the pipeline takes it again for callers that use it as a library): a second
`flock` on another open file of the same path would refuse its own process.

On a filesystem without flock (some Lustre and FUSE mounts) the run goes on unlocked with
one warning: refusing to run at all would be worse than what a lock guards against.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from preprocess.out.outdir import LOCK_NAME, OutputConflict
from shards.atomic import DISK_FULL_ERRNOS

_NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF)

log = logging.getLogger(__name__)

_held: dict[Path, int] = {}  # OUT → depth of the locks this process holds on it


class OutputLocked(RuntimeError):
    """Another process holds OUT's lock; the message is one line for the CLI (exit 1)."""


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold OUT's lock for the block, or raise OutputLocked having changed nothing in OUT.

    A missing OUT is created to hold the lock file, and removed again on release if the
    block left it empty (a run refused before it wrote anything leaves no folder behind).
    """
    out = Path(out).resolve()
    if out in _held:
        _held[out] += 1
        try:
            yield
        finally:
            _held[out] -= 1
        return
    if out.exists() and not out.is_dir():
        raise OutputConflict(f"output {out} is a file; choose a directory")
    made_dir = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only filesystem, no permission
        if exc.errno in DISK_FULL_ERRNOS:
            raise
        raise OutputConflict(f"output {out} cannot be written: {exc.strerror or exc}") from exc
    fd = _acquire(out / LOCK_NAME)
    _held[out] = 1
    try:
        yield
    finally:
        del _held[out]
        _release(out / LOCK_NAME, fd)
        if made_dir:
            with suppress(OSError):
                out.rmdir()  # only if empty: the run was refused before writing


def _acquire(path: Path) -> int | None:
    """The open lock file's descriptor, locked; None where the filesystem has no flock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise
            raise OutputConflict(
                f"output {path.parent} cannot be written: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            by = f" (PID {holder})" if holder else ""
            raise OutputLocked(
                f"{path.parent} is in use by another preprocess run{by}; wait for it to end "
                "or choose another --output"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                os.close(fd)
                raise
            os.close(fd)
            log.warning(
                "%s: this filesystem cannot lock files (%s); make sure no other run writes "
                "this output",
                path.parent,
                exc.strerror,
            )
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    with suppress(OSError):  # the PID only names the holder in a refusal
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _release(path: Path, fd: int | None) -> None:
    if fd is None:
        return
    with suppress(OSError):
        if _same_file(fd, path):
            path.unlink()  # while still locked: a run that opened it will retry
    os.close(fd)  # drops the lock
