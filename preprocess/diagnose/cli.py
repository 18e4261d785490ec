"""`python -m preprocess.diagnose PATH`: the original diagnosis's scenarios A/B/C, measured.

PATH is a raw corpus (scanned with the pipeline's own actors and kernels, no shards
written, into a sibling `PATH.diagnose/`) or a preprocess OUT (read from files.jsonl and
stats.zarr in seconds, no audio decoded). Writes report.md, PNG plots and per-count file
lists, and prints a summary with one verdict per scenario. docs/DIAGNOSE.md has more.
`python -m preprocess.diagnose` runs `main` (`__main__.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preprocess.actors.ray_session import RayStartError, wait_for_stop
from preprocess.actors.schedule import WorkerDeaths
from preprocess.config import PreprocessConfig, load_config
from preprocess.diagnose.findings import diagnose_output, is_output
from preprocess.diagnose.report import render_terminal, write_report
from preprocess.diagnose.whatif import parse_what_if
from shards import Index


def scan_corpus(corpus: Path, work: Path, cfg: PreprocessConfig, workers: int | None) -> Path:
    """Measure a raw corpus into `work` with the pipeline in scan-only mode (no shards).

    The one place diagnose runs the pipeline, imported only when a raw corpus is given, so
    the report library itself needs no Ray.
    """
    from preprocess.pipeline import run_pipeline

    if is_output(work) and not Index.load(work).scan_only:
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
        help="segment length to judge (default: the run's / config's)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="raw corpus: scan dir (default PATH.diagnose/, report in its "
        "report/); OUT: report dir (default OUT/report/)",
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
        help="padding fraction the recommended segment length may have",
    )
    p.add_argument("--config", default=None, help="JSON/TOML config for a raw scan")
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
    cfg = load_config(args.config, segment_seconds=args.segment_seconds)
    for spec in args.what_if:
        parse_what_if(spec, cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        wait_for_stop()  # a local Ray stopped in the background: down before we return


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    path: Path = args.path.resolve()
    try:
        cfg = check_args(args)
        if is_output(path):
            out, report_dir = path, args.out or path / "report"
        elif path.is_dir():
            out = (args.out or path.with_name(path.name + ".diagnose")).resolve()
            scan_corpus(path, out, cfg, args.workers)
            report_dir = out / "report"
        else:
            raise ValueError(f"{path}: expected a corpus directory or a preprocess OUT")
        f = diagnose_output(out, args.segment_seconds, args.what_if, args.top, args.max_padding)
        try:
            report = write_report(f, report_dir)
        except OSError as exc:
            detail = exc.strerror or exc
            raise ValueError(f"cannot write the report to {report_dir}: {detail}") from exc
    except (ValueError, FileNotFoundError) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 2
    except (RayStartError, WorkerDeaths) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 1
    print(render_terminal(f, report))
    return 0
