"""`python -m preprocess.run --input IN --output OUT`: the preprocessing pipeline's CLI.

The same code runs as `python preprocess/run.py …` and under
`ray job submit --working-dir . -- python preprocess/run.py … --address auto`.

How a run ends is part of the CLI (and shared with `preprocess.diagnose`): one line on
stderr and an exit code a script can act on — 0 done, 1 failed (including an OUT another
run holds, a full disk, a damaged shard found after work began, and a result with nothing
to train or validate on), 2 bad usage (input refused before any work), 130 on SIGINT, 143
on SIGTERM — never a traceback for any of these.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocess.actors.ray_session import RayStartError, wait_for_stop  # noqa: E402
from preprocess.actors.schedule import WorkerDeaths  # noqa: E402
from preprocess.config import RETIRED_WHY, ConfigError, load_config  # noqa: E402
from preprocess.measure.quality import DnsmosUnavailable, require_dnsmos  # noqa: E402
from preprocess.measure.silero_vad import require_silero  # noqa: E402
from preprocess.measure.stage_times import PhaseClock  # noqa: E402
from preprocess.out.lock import OutputLocked, output_lock  # noqa: E402
from preprocess.out.outdir import OutputConflict  # noqa: E402
from preprocess.pipeline import (  # noqa: E402
    RedoDiffers,
    UsageError,
    check_run_paths,
    run_pipeline,
)
from preprocess.plan.split import SplitError  # noqa: E402
from preprocess.summary import print_summary, unusable_result  # noqa: E402
from shards.atomic import DISK_FULL_ERRNOS  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
# Not __name__: run as a script this module is __main__, outside the "preprocess" logger.
log = logging.getLogger("preprocess.run")
# Exit 2 ("bad usage, nothing written"): input refused before any work. Any other known
# failure (a shard, index or manifest error, a shard part gone missing) is exit 1.
USAGE_ERRORS = (UsageError, ConfigError, OutputConflict, SplitError, DnsmosUnavailable)
# What `preprocess.diagnose` still raises for its refusals: any of these is exit 2 there.
ANY_VALUE_ERROR = (ValueError, NotADirectoryError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, help="corpus directory (any nesting)")
    p.add_argument("--output", required=True, help="output directory (OUT)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray actors (default: the CPUs this process may use, or the cluster's)",
    )
    p.add_argument("--address", default=None, help="Ray cluster to join, e.g. 'auto'")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (local Ray)")
    p.add_argument("--config", default=None, help="JSON or TOML file of config overrides")
    p.add_argument("--preset", choices=("default", "original"), default=None)
    # Format 1's knobs, kept only to refuse them in one line (`RETIRED_FLAGS`).
    p.add_argument("--segment-seconds", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--min-valid-fraction", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--max-utterance-seconds",
        type=float,
        default=None,
        help="longest shard sample; longer speech is cut into near-equal pieces",
    )
    p.add_argument("--val-fraction", type=float, default=None)
    p.add_argument(
        "--min-val-seconds",
        type=float,
        default=None,
        help="val holds at least this much audio (capped at a quarter of the corpus)",
    )
    p.add_argument(
        "--split-by",
        default=None,
        metavar="RULE",
        help="group that never straddles the split: dir (top-level folder, default), file, "
        "re:PATTERN (speaker = its (?P<speaker>…) or only group, searched in the path) or "
        "manifest:FILE (.csv/.jsonl with path and split or speaker)",
    )
    p.add_argument("--shard-mb", type=float, default=None)
    p.add_argument("--audio-encoding", choices=("flac", "npy"), default=None)
    p.add_argument("--target-lufs", type=float, default=None)
    p.add_argument(
        "--quality",
        choices=("snr", "dnsmos"),
        default=None,
        help="quality scores: speech SNR (always, default) or also DNSMOS P.835 (slow)",
    )
    p.add_argument(
        "--vad",
        choices=("ours", "silero"),
        default=None,
        help="whose speech activity decides no_speech/short/mostly_silent: ours (default) "
        "or Silero VAD's (onnxruntime, ~6 CPU-s per audio-hour more)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace output of another config")
    p.add_argument("--keep-work", action="store_true", help="keep OUT/.work/units for debugging")
    p.add_argument("--no-report", action="store_true", help="skip the diagnosis report")
    p.add_argument(
        "--timings",
        action="store_true",
        help="print wall and CPU seconds per phase of the run (start-up … report)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when nothing is kept or val is empty although val_fraction > 0 "
        "(default: exit 1 with one line)",
    )
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbosity(args))
    with signals_end_the_run():
        return run_cli(lambda: _main(args), Path(args.output).resolve(), usage=USAGE_ERRORS)


RETIRED_FLAGS = {
    "segment_seconds": "--segment-seconds",
    "min_valid_fraction": "--min-valid-fraction",
}


def _main(args: argparse.Namespace) -> int:
    for dest, flag in RETIRED_FLAGS.items():
        if getattr(args, dest) is not None:
            raise ConfigError(f"{flag} is no longer a preprocess flag: {RETIRED_WHY}")
    cfg = load_config(
        args.config,
        preset=args.preset,
        max_utterance_seconds=args.max_utterance_seconds,
        val_fraction=args.val_fraction,
        min_val_seconds=args.min_val_seconds,
        split_by=args.split_by,
        shard_mb=args.shard_mb,
        audio_encoding=args.audio_encoding,
        target_lufs=args.target_lufs,
        quality=args.quality,
        vad=args.vad,
    )
    if cfg.quality == "dnsmos":
        require_dnsmos()
    if cfg.vad == "silero":
        require_silero()
    input_root, out = check_run_paths(args.input, args.output, args.workers)
    with output_lock(out):  # held through the report, which writes OUT/report/
        index = run_pipeline(
            input_root,
            out,
            cfg,
            workers=args.workers,
            address=args.address,
            overwrite=args.overwrite,
            keep_work=args.keep_work,
            dashboard=args.dashboard,
            stop_ray_in_background=True,  # assembly and the report overlap Ray's shutdown
        )
        print_summary(index)
        clock = PhaseClock()
        clock.rows = list(index.get("_phases", []))
        if not args.no_report:
            with clock.phase("report"):
                _write_report(out)
        if args.timings:
            print("\n" + "\n".join(clock.lines()))
    problem = unusable_result(index)
    if problem is None:
        return EXIT_OK
    if args.allow_empty:
        print(f"preprocess: warning: {problem} (accepted: --allow-empty)", file=sys.stderr)
        return EXIT_OK
    print(f"preprocess: error: {problem} (--allow-empty accepts it)", file=sys.stderr)
    return EXIT_FAILED


def _write_report(out: Path) -> None:
    try:
        from preprocess.diagnose.report import report_for_output
    except ImportError as exc:  # the plotting extras are optional; the run itself is done
        log.warning("report skipped: %s (install the extras it needs, or pass --no-report)", exc)
        return
    report = report_for_output(out)
    print(f"report: {report}")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so every
    `finally` on the way out runs (a local Ray is stopped, OUT's lock released)."""


@contextmanager
def signals_end_the_run() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated in the main thread, in any
    phase; `run_cli` turns either into one line and 130/143.

    After the first signal both are ignored until the block ends (then the handlers found
    at its start are back): the clean-up it starts (stopping a local Ray, a few seconds)
    must finish, or Ray's daemons would outlive the run. `ray.init` would
    replace the SIGTERM handler with its own (`sys.exit`: exit 1, no word), so Ray is kept
    from installing one while this block runs.
    """
    # Costs no start-up time: preprocess.pipeline (imported by this module) imports ray.
    import ray._private.utils as ray_utils

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers: Python's defaults stay
        return

    def on_signal(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray_install = ray_utils.set_sigterm_handler
    for s in before:
        signal.signal(s, on_signal)
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = ray_install
        # Signal or not, leave them as we found them: an in-process caller (a test, a
        # notebook) must not keep SIGINT/SIGTERM ignored after main() returns.
        for s, handler in before.items():
            signal.signal(s, handler)


def run_cli(body: Any, out: Path | None, usage: tuple[type, ...] = ANY_VALUE_ERROR) -> int:
    """Run a CLI's `body()` and return its exit code; an exception that ends a run in a
    way the user can act on becomes one line on stderr and its code (`ending`; `usage`:
    the errors that are exit 2), anything else (a bug) keeps its traceback."""
    try:
        try:
            return body()
        finally:
            wait_for_stop()  # a local Ray stopped in the background: down before we return
    except BaseException as exc:
        end = ending(exc, out, usage)
        if end is None:
            raise
        code, line = end
        wait_for_stop()  # signals are ignored by now: let an interrupted wait finish
        print(line, file=sys.stderr)
        return code


def ending(
    exc: BaseException, out: Path | None, usage: tuple[type, ...] = ANY_VALUE_ERROR
) -> tuple[int, str] | None:
    """(exit code, one line) for an exception that ends a run, or None for a bug.

    `usage`: the exceptions that are exit 2 (input refused before any work); the other
    ValueErrors and missing files are exit 1, as one line too."""
    rerun = "run the same command again to continue (finished units are kept)"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT, f"preprocess: interrupted (SIGINT); {rerun}"
    if isinstance(exc, Terminated):
        return EXIT_SIGTERM, f"preprocess: terminated (SIGTERM); {rerun}"
    full = disk_full(exc)
    if full is not None:
        line = disk_full_line(full, out)
        return EXIT_FAILED, f"preprocess: error: {line}: free some space, then {rerun}"
    if isinstance(exc, (OutputLocked, RayStartError, WorkerDeaths, RedoDiffers)):
        return EXIT_FAILED, f"preprocess: error: {exc}"
    if _from_a_worker(exc):
        return None  # a worker's bug: its traceback is the report
    if isinstance(exc, usage):
        return EXIT_USAGE, f"preprocess: error: {exc}"
    if isinstance(exc, ANY_VALUE_ERROR):  # ShardFormatError, IndexFormatError, a lost part
        return EXIT_FAILED, f"preprocess: error: {exc}"
    return None


_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def disk_full(exc: BaseException) -> OSError | None:
    """The OSError ENOSPC/EDQUOT behind `exc`, wherever it was raised: in this process,
    or in a Ray worker (a RayTaskError whose `cause` is it, also through
    `as_instanceof_cause`), or as the cause of another error."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError's own exception
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS and cause is None:
            return e
        todo += [cause if isinstance(cause, BaseException) else None]
        todo += [e.__cause__, e.__context__]
    return None


def disk_full_line(err: OSError, out: Path | None) -> str:
    """'no space left on device in FOLDER (writing FILE)': the folder is OUT when the
    file lies in it, else the file's own (Ray's temp dir, $TMPDIR)."""
    what = _DISK_FULL.get(err.errno, "no space left on device")
    if what != _DISK_FULL[errno.ENOSPC]:
        what = f"no space left on device ({what})"
    if not err.filename:
        return f"{what} in {out or 'the output folder'}"
    path = Path(os.fsdecode(err.filename))
    folder = out if out is not None and (path == out or out in path.parents) else path.parent
    return f"{what} in {folder} (writing {path})"


def _from_a_worker(exc: BaseException) -> bool:
    try:
        from ray.exceptions import RayError
    except ImportError:
        return False
    return isinstance(exc, RayError)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"preprocess: {record.levelname.lower()}: {record.getMessage()}"


class _StreamAtEmit(logging.StreamHandler):
    """A StreamHandler on whatever sys.stdout/sys.stderr is when a record comes (a test
    swaps them)."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    @property
    def stream(self) -> Any:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def add_verbosity_flags(p: argparse.ArgumentParser) -> None:
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    talk.add_argument("-v", "--verbose", action="store_true", help="debug messages too")


def verbosity(args: argparse.Namespace) -> int:
    """-q → WARNING, -v → DEBUG, else INFO."""
    return logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO


def configure_logging(level: int = logging.INFO) -> None:
    """What the preprocess library logs reaches the user: progress facts (INFO: the run's
    input and config, the split) as plain lines on stdout, warnings and errors as
    `preprocess: warning: …` lines on stderr. Set once per process; `level` is updated."""
    logger = logging.getLogger("preprocess")
    logger.setLevel(level)
    if getattr(logger, "_cli_configured", False):
        return
    facts = _StreamAtEmit("stdout")
    facts.addFilter(lambda record: record.levelno < logging.WARNING)
    facts.setFormatter(logging.Formatter("%(message)s"))
    problems = _StreamAtEmit("stderr")
    problems.setLevel(logging.WARNING)
    problems.setFormatter(_CliFormatter())
    logger.addHandler(facts)
    logger.addHandler(problems)
    logger.propagate = False
    logger._cli_configured = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
