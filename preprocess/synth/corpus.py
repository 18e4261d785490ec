"""Writing a corpus: plan it, render every file, write it and its truth beside it.

Same seed (and engine, and library versions) ⇒ byte-identical files and truth: all
randomness comes from seeded `numpy.random.Generator`s, one per file (`spec.rng_stream`),
and the bytes libsndfile takes from the clock are rewritten (`sndfile_bytes`).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from preprocess.synth.classes import render
from preprocess.synth.plan import plan_corpus
from preprocess.synth.spec import rng_stream
from preprocess.synth.speech import resolve_engine
from preprocess.synth.truth import check_truth, truth_record, write_truth


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the corpus bytes (with the engine's and libraries' versions)."""

    out: str
    minutes: float = 10.0
    seed: int = 0
    engine: str = "auto"


def truth_path(out: Path) -> Path:
    """`demo/corpus` → `demo/corpus.truth.jsonl`: beside the corpus, never inside it."""
    return out.with_name(out.name + ".truth.jsonl")


def config_path(out: Path) -> Path:
    """`demo/corpus` → `demo/corpus.synth.json`: the settings and library versions used."""
    return out.with_name(out.name + ".synth.json")


def synthesize(cfg: SynthConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Plan, render and write the corpus and its truth; returns the truth records."""
    out = Path(cfg.out)
    engine = resolve_engine(cfg.engine)
    specs = plan_corpus(cfg.minutes, cfg.seed)
    copied = {s.duplicate_of for s in specs if s.duplicate_of is not None}
    originals: dict[str, bytes] = {}  # only the files that get copied stay in memory
    records = []
    order = sorted(specs, key=lambda s: (s.cls == "duplicate", s.path))
    for spec in tqdm(order, desc="synth", unit="file", disable=not progress, file=sys.stderr):
        if spec.duplicate_of is not None:
            data = originals[spec.duplicate_of]
        else:
            data = render(spec, rng_stream(cfg.seed, 1, spec.index), engine)
            if spec.path in copied:
                originals[spec.path] = data
        target = out / spec.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        records.append(truth_record(spec, data))
    records.sort(key=lambda r: r["path"])
    check_truth(records)
    write_truth(truth_path(out), records)
    return records


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT; with --overwrite replace only an earlier synth corpus
    (recognised by OUT.synth.json beside it), never an arbitrary directory."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"synth: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"synth: {out} is not empty; pass --overwrite to replace it")
        if not config_path(out).is_file():
            raise SystemExit(
                f"synth: {out} is not empty and has no {config_path(out).name} beside it, "
                "so it is not a synth corpus; refusing to delete it"
            )
        shutil.rmtree(out)
    for p in (truth_path(out), config_path(out)):
        p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
