"""Stops a local Ray whose driver was killed: kill -9 skips every `finally`.

A local Ray's daemons outlive a driver killed with SIGKILL: its dashboard and runtime-env
agents were measured alive, reparented to init, for over a minute, and its temp dir stayed
until the next run reaped it. `ray_session` therefore starts this watchdog beside the Ray it
starts, holding the read end of a pipe whose write end only the driver has. The pipe reads
EOF the moment the driver is gone, however it died; the watchdog then ends every process
that holds a file inside the session's temp dir (GCS, raylet, agents and workers all keep
their logs and sockets there, and the dir is a fresh `mkdtemp`, so nothing else does) and
removes the dir. After a normal stop the dir is already gone and it finds nothing to do.

    python -m preprocess.actors.ray_watchdog TEMP_DIR    # stdin: the pipe from the driver
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL


def processes_using(directory: Path) -> list[int]:
    """PIDs (other than this one) with an open file, cwd or command line inside `directory`."""
    prefix = os.fspath(directory).rstrip("/") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _uses(entry, prefix):
            found.append(int(entry.name))
    return found


def _uses(proc: Path, prefix: str) -> bool:
    try:
        if prefix.encode() in (proc / "cmdline").read_bytes():
            return True
        links = [proc / "cwd"] + list((proc / "fd").iterdir())
    except OSError:  # gone, or not ours to read
        return False
    for link in links:
        try:
            if (os.readlink(link) + "/").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def stop_session(directory: Path, grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM, then SIGKILL after `grace` s, every process using `directory`; then remove
    it. Returns the PIDs signalled."""
    pids = processes_using(directory)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
    _signal_all(pids + processes_using(directory), signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)
    return pids


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def alive(pid: int) -> bool:
    """Whether `pid` exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m preprocess.actors.ray_watchdog TEMP_DIR", file=sys.stderr)
        return 2
    # The driver's Ctrl-C reaches its whole process group; this process must outlive it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # the driver never writes: this waits for EOF
        pass
    directory = Path(argv[0])
    if directory.exists():
        stop_session(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
