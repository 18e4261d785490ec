"""`python -m preprocess.run --input IN --output OUT`: the preprocessing pipeline's CLI.

The same code runs as `python preprocess/run.py …` and under
`ray job submit --working-dir . -- python preprocess/run.py … --address auto`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocess.actors.ray_session import RayStartError, wait_for_stop  # noqa: E402
from preprocess.actors.schedule import WorkerDeaths  # noqa: E402
from preprocess.config import load_config  # noqa: E402
from preprocess.measure.quality import require_dnsmos  # noqa: E402
from preprocess.pipeline import OutputConflict, run_pipeline  # noqa: E402
from preprocess.summary import print_summary  # noqa: E402


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
    p.add_argument("--segment-seconds", type=float, default=None)
    p.add_argument("--min-valid-fraction", type=float, default=None)
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
    p.add_argument("--overwrite", action="store_true", help="replace output of another config")
    p.add_argument("--keep-work", action="store_true", help="keep OUT/.work/units for debugging")
    p.add_argument("--no-report", action="store_true", help="skip the diagnosis report")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        wait_for_stop()  # a local Ray stopped in the background: down before we return


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(
            args.config,
            preset=args.preset,
            segment_seconds=args.segment_seconds,
            min_valid_fraction=args.min_valid_fraction,
            val_fraction=args.val_fraction,
            min_val_seconds=args.min_val_seconds,
            split_by=args.split_by,
            shard_mb=args.shard_mb,
            audio_encoding=args.audio_encoding,
            target_lufs=args.target_lufs,
            quality=args.quality,
        )
        if cfg.quality == "dnsmos":
            require_dnsmos()
        index = run_pipeline(
            args.input,
            args.output,
            cfg,
            workers=args.workers,
            address=args.address,
            overwrite=args.overwrite,
            keep_work=args.keep_work,
            dashboard=args.dashboard,
            stop_ray_in_background=True,  # assembly and the report overlap Ray's shutdown
        )
    except (OutputConflict, ValueError, NotADirectoryError, FileNotFoundError) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 2
    except (RayStartError, WorkerDeaths) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 1
    print_summary(index)
    if not args.no_report:
        _write_report(Path(args.output), cfg)
    return 0


def _write_report(out: Path, cfg) -> None:
    try:
        from preprocess.diagnose.report import report_for_output
    except ImportError:
        return
    report = report_for_output(out, segment_seconds=cfg.segment_seconds)
    print(f"report: {report}")


if __name__ == "__main__":
    sys.exit(main())
