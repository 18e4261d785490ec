"""`python -m preprocess.synth OUT`: a deterministic demo corpus with real-world faults.

A corpus scraped from the web is not a folder of clean WAVs: it holds quiet takes,
numerically dead and digitally silent files, noise, clipping, DC offset, NaN, byte
copies, empty/garbage/truncated/header-only files and plain non-audio, under nested,
non-ASCII, space-containing paths. This command plants each of those faults, in known
proportions, into speech from `preprocess.synth.speech`, and writes the ground truth of
what the pipeline should decide for every file (docs/CONTRACTS.md, "Decision policy") to
`OUT.truth.jsonl` beside the corpus. docs/SYNTH.md describes classes and schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from preprocess.synth.classes import CLASSES
from preprocess.synth.corpus import SynthConfig, config_path, prepare_output, synthesize, truth_path
from preprocess.synth.speech import ENGINES, espeak_version, resolve_engine


def summary(records: list[dict[str, Any]]) -> str:
    """Counts and minutes per class, as printed to stdout."""
    lines = [f"{'class':<16} {'files':>5}  {'expected':<26} {'minutes':>7}"]
    for name, fault in CLASSES.items():
        rs = [r for r in records if r["class"] == name]
        minutes = sum(r["seconds"] or 0.0 for r in rs) / 60.0
        lines.append(
            f"{name:<16} {len(rs):>5}  {fault.status + '/' + fault.reason:<26} {minutes:>7.2f}"
        )
    total = sum(r["seconds"] or 0.0 for r in records) / 60.0
    lines.append(f"{'total':<16} {len(records):>5}  {'':<26} {total:>7.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preprocess.synth",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", help="corpus directory to create; truth goes to OUT.truth.jsonl")
    p.add_argument("--minutes", type=float, default=10.0, help="about this much audio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="speech source: espeak-ng Telugu voice, procedural, or auto",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier synth corpus at OUT"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit("synth: --minutes must be positive")
    cfg = SynthConfig(str(args.out), args.minutes, args.seed, args.engine)
    out = Path(cfg.out)
    try:
        engine = resolve_engine(cfg.engine)
    except RuntimeError as exc:
        raise SystemExit(f"synth: {exc}") from exc
    meta = dataclasses.asdict(cfg) | {
        "engine_resolved": engine,
        "espeak_version": espeak_version() if engine == "espeak" else None,
        "libsndfile": sf.__libsndfile_version__,
        "numpy": np.__version__,
    }
    version = f" ({meta['espeak_version'].split(':')[0].strip()})" if engine == "espeak" else ""
    print(f"synth: {args.minutes:g} min, seed {args.seed}, speech by {engine}{version}", flush=True)
    prepare_output(out, args.overwrite)
    config_path(out).write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    records = synthesize(cfg, progress=not args.no_progress)
    print(summary(records))
    print(f"corpus: {out}\ntruth:  {truth_path(out)}")
    return 0
