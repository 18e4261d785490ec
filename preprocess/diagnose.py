"""`python -m preprocess.diagnose PATH`: the original diagnosis's scenarios A/B/C, measured.

PATH is a raw corpus (scanned with the pipeline's own actors and kernels, no shards
written, into a sibling `PATH.diagnose/`) or a preprocess OUT (read from files.jsonl and
stats.zarr in seconds, no audio decoded). Writes report.md, PNG plots and per-count file
lists, and prints a summary with one verdict per scenario. docs/DIAGNOSE.md has more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocess.config import PreprocessConfig, load_config  # noqa: E402
from preprocess.report import (  # noqa: E402
    Findings,
    frame_groups,
    frame_level_histograms,
    render_markdown,
    render_terminal,
    write_file_lists,
)
from preprocess.whatif import (  # noqa: E402
    ORIGINAL_SEGMENT_SECONDS,
    outcome,
    padding_curve,
    parse_what_if,
    recommend_segment_seconds,
    segment_grid,
    what_if_table,
)


def is_output(path: Path) -> bool:
    """A preprocess OUT (or a diagnosis scan) holds index.json and files.jsonl."""
    return (path / "index.json").is_file() and (path / "files.jsonl").is_file()


def config_from_index(index: dict[str, Any]) -> PreprocessConfig:
    """The config a run used, back from index.json (derived keys dropped)."""
    values = {
        k: v for k, v in index["config"].items() if k not in ("segment_samples", "frame_samples")
    }
    return load_config(None, **values)


def _read_records(out: Path) -> list[dict[str, Any]]:
    with open(out / "files.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _frame_hist(out: Path, records: list[dict[str, Any]]) -> Any:
    """Per-frame level histograms from stats.zarr; None when the store is absent."""
    store = out / "stats.zarr"
    if not store.exists():
        return None
    from preprocess.stats_store import read_stats

    stats = read_stats(store)
    paths = list(stats["files"]["path"])
    if paths != [r["path"] for r in records]:
        raise ValueError(f"{store}: rows are not aligned with {out / 'files.jsonl'}")
    return frame_level_histograms(
        stats["frame_values"], stats["frame_offsets"], frame_groups(records)
    )


def diagnose_output(
    out: Path,
    segment_seconds: float | None = None,
    what_ifs: Sequence[str] = (),
    top: int = 10,
    max_padding: float = 0.10,
) -> Findings:
    """Everything the report says, from OUT's files.jsonl, index.json and stats.zarr."""
    out = Path(out)
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    records = _read_records(out)
    run_cfg = config_from_index(index)
    cfg = run_cfg.replace(segment_seconds=segment_seconds) if segment_seconds else run_cfg
    outcomes = what_if_table(records, cfg, what_ifs)
    as_run = outcomes[0] if cfg == run_cfg else outcome("as run", records, run_cfg)
    decodable = [
        r for r in records if r["reason"] not in ("corrupt", "not_audio", "unsupported_format")
    ]
    curve = padding_curve(
        [r["seconds"] for r in decodable],
        [r["trimmed_seconds"] for r, ok in zip(records, outcomes[0].passing, strict=True) if ok],
        segment_grid(ORIGINAL_SEGMENT_SECONDS, cfg.segment_seconds),
        cfg.min_valid_fraction,
    )
    return Findings(
        source=index.get("input", str(out)),
        out=out.resolve(),
        cfg=cfg,
        records=records,
        curve=curve,
        recommended=recommend_segment_seconds(curve, max_padding, "stored"),
        recommended_naive=recommend_segment_seconds(curve, max_padding, "naive"),
        outcomes=outcomes,
        mismatches=[
            r["path"]
            for r, d in zip(records, as_run.decisions, strict=True)
            if d != (r["status"], r["reason"])
        ],
        frame_hist=_frame_hist(out, records),
        top=top,
        max_padding=max_padding,
        splits=index.get("totals", {}).get("splits"),
    )


def write_report(f: Findings, report_dir: Path) -> Path:
    """report.md, summary.txt, the PNGs and files/*.tsv into `report_dir`; returns report.md."""
    from preprocess.plots import write_plots

    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(report_dir / "files", ignore_errors=True)  # lists of an earlier report
    path = report_dir / "report.md"
    path.write_text(render_markdown(f), encoding="utf-8")
    write_file_lists(f.links, report_dir / "files", f.source)
    write_plots(f, report_dir)
    (report_dir / "summary.txt").write_text(render_terminal(f, path) + "\n", encoding="utf-8")
    return path


def report_for_output(
    out: Path,
    segment_seconds: float | None = None,
    report_dir: Path | None = None,
    **options: Any,
) -> Path:
    """Write the report for a preprocess OUT (default `OUT/report/`); never decodes audio.
    `options` are diagnose_output's what_ifs, top and max_padding."""
    f = diagnose_output(Path(out), segment_seconds, **options)
    return write_report(f, Path(report_dir) if report_dir else Path(out) / "report")


def scan_corpus(corpus: Path, work: Path, cfg: PreprocessConfig, workers: int | None) -> Path:
    """Measure a raw corpus into `work` with the pipeline in scan-only mode (no shards)."""
    from preprocess.pipeline import run_pipeline

    if is_output(work):
        index = json.loads((work / "index.json").read_text(encoding="utf-8"))
        if not index.get("scan_only", False):
            raise ValueError(f"{work} holds a preprocess output with shards; choose another --out")
    # The work dir is ours (a scan only): a config change replaces it instead of failing.
    run_pipeline(corpus, work, cfg, workers=workers, overwrite=True, scan_only=True)
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
        report = write_report(f, report_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 2
    print(render_terminal(f, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
