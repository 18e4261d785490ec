"""`python -m preprocess.diagnose PATH`: the original diagnosis's scenarios A/B/C, measured.

PATH is a raw corpus (scanned with the pipeline's own actors and kernels, no shards
written, into `NAME.diagnose/` under the working directory, so a read-only corpus
works) or a preprocess OUT (files.jsonl and stats.zarr read in seconds, no audio
decoded). Writes report.md, PNG plots and per-count file lists, and prints a summary
with one verdict per scenario. docs/DIAGNOSE.md has more.
`python -m preprocess.diagnose` runs `main` (`__main__.py`).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from preprocess.config import PreprocessConfig, load_config
from preprocess.diagnose.findings import diagnose_output, is_output
from preprocess.diagnose.report import render_terminal, write_report
from preprocess.diagnose.whatif import parse_what_if
from preprocess.measure.silero_vad import require_silero
from preprocess.out.lock import output_lock
from preprocess.run import (
    add_verbosity_flags,
    configure_logging,
    disk_full,
    run_cli,
    signals_end_the_run,
    verbosity,
)
from shards import Index


def scan_corpus(corpus: Path, work: Path, cfg: PreprocessConfig, workers: int | None) -> Path:
    """Measure a raw corpus into `work` with the pipeline in scan-only mode (no shards).

    The one place diagnose runs the pipeline, imported only when a raw corpus is given, so
    the report library itself needs no Ray.
    """
    from preprocess.pipeline import run_pipeline

    if is_output(work) and not Index.load(work, check_version=False).scan_only:
        raise ValueError(f"{work} holds a preprocess output with shards; choose another --out")
    # The work dir is ours (a scan only): a config change replaces it instead of failing.
    # Ray stops in the background while the report is drawn; `main` waits for it.
    run_pipeline(
        corpus,
        work,
        cfg,
        workers=workers,
        overwrite=True,
        scan_only=True,
        stop_ray_in_background=True,
    )
    return work


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess.diagnose",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", type=Path, help="raw corpus directory or preprocess OUT")
    p.add_argument(
        "--segment-seconds",
        type=float,
        default=None,
        help="training segment length to score (`train_ds.py --segment-seconds`, cut from "
        "the utterances at load time; default: training's 1.0)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="raw corpus: scan dir (default ./NAME.diagnose/ in the working directory, "
        "report in its report/); OUT: report dir (default OUT/report/)",
    )
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="SPEC",
        help="'original' or 'key=value,…' (config fields; min_seconds/min_rms/"
        "min_peak = the original filter's); repeatable",
    )
    p.add_argument("--top", type=int, default=10, help="files per worst-files list")
    p.add_argument("--workers", type=int, default=None, help="Ray actors for a raw scan")
    p.add_argument(
        "--max-padding",
        type=float,
        default=0.10,
        help="padding (and dropped audio) fraction the recommended training length may have",
    )
    p.add_argument("--config", default=None, help="JSON/TOML config for a raw scan")
    add_verbosity_flags(p)
    return p


def check_args(args: argparse.Namespace) -> PreprocessConfig:
    """Every flag and the --config file judged before any scan starts or a folder is made;
    returns the config for a raw scan."""
    if args.top < 0:
        raise ValueError(f"--top {args.top}: expected a count ≥ 0")
    if not 0.0 <= args.max_padding < 1.0:
        raise ValueError(f"--max-padding {args.max_padding}: expected 0 ≤ fraction < 1")
    if args.workers is not None and args.workers <= 0:
        raise ValueError(f"--workers {args.workers}: expected a positive number of workers")
    if args.segment_seconds is not None and not 0.0 < args.segment_seconds <= 600.0:
        raise ValueError(f"--segment-seconds {args.segment_seconds}: expected 0 < seconds ≤ 600")
    # The segment length is a training setting, scored by the report; the scan's config
    # (what decides and cuts utterances) never sees it.
    cfg = load_config(args.config)
    for spec in args.what_if:
        parse_what_if(spec, cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Exit codes and signals as `preprocess.run`'s: 0 done, 1 failed, 2 bad usage,
    130/143 on SIGINT/SIGTERM, each with one line."""
    args = build_parser().parse_args(argv)
    configure_logging(verbosity(args))
    with signals_end_the_run():
        return run_cli(lambda: _main(args), None)


def _main(args: argparse.Namespace) -> int:
    path: Path = args.path.resolve()
    cfg = check_args(args)
    with ExitStack() as held:  # OUT's lock (out/lock.py) while this writes into an OUT
        if is_output(path):
            out, report_dir = path, args.out or path / "report"
            if report_dir.resolve().is_relative_to(out):
                held.enter_context(output_lock(out))
        elif path.is_dir():
            if cfg.vad == "silero":
                require_silero()  # one line before the scan folder is made
            out = (args.out or Path.cwd() / (path.name + ".diagnose")).resolve()
            held.enter_context(output_lock(out))
            scan_corpus(path, out, cfg, args.workers)
            report_dir = out / "report"
        else:
            raise ValueError(f"{path}: expected a corpus directory or a preprocess OUT")
        f = diagnose_output(out, args.segment_seconds, args.what_if, args.top, args.max_padding)
        try:
            report = write_report(f, report_dir)
        except OSError as exc:
            if disk_full(exc):
                raise  # a full disk is exit 1, not a usage error
            detail = exc.strerror or exc
            raise ValueError(f"cannot write the report to {report_dir}: {detail}") from exc
    print(render_terminal(f, report))
    return 0
