"""Ctrl-C (SIGINT) and SIGTERM (`kill`, a scheduler's preemption or time limit) end a run
with one line and exit 130 / 143, the loader's workers stopped first, no traceback; the
last checkpoint is what --resume continues from (a save cut short never became `latest`)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the SIGINT/SIGTERM handler of `raise_on_signals`.

    A KeyboardInterrupt, so `except Exception` never swallows it, and a forked DataLoader
    worker, which inherits the handler, exits quietly on it as it does on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, as a shell reports."""
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    for sig in HANDLED:  # a second signal must not cut the clean-up short with a traceback
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise `Interrupted` in the main thread (SIGTERM's
    default would end the process on the spot: no word, and the loader's workers left to
    notice the parent is gone seconds later)."""
    for sig in HANDLED:
        signal.signal(sig, _raise_interrupted)


def interrupted_line(exc: Interrupted, step: int | None, ckpt_dir: Path) -> str:
    """`train_ds.py: interrupted (SIGTERM) at step 7; --resume continues from step00000006`."""
    where = f"at step {step}" if step is not None else "during set-up"
    latest = ckpt_dir / "latest"
    try:
        tag = latest.read_text().strip() if latest.is_file() else None
    except OSError:
        tag = None
    after = f"--resume continues from {tag}" if tag else "no checkpoint yet: --resume starts afresh"
    return f"train_ds.py: interrupted ({exc.name}) {where}; {after}"


def report(exc: Interrupted, step: int | None, ckpt_dir: Path, rank: int) -> int:
    """Print the one line (rank 0 only: a launcher signals every rank) → the exit status."""
    if rank == 0:
        print(interrupted_line(exc, step, ckpt_dir), file=sys.stderr, flush=True)
    return exc.exit_code
