"""A corpus shaped like the mission's, at any size, written in minutes (issue 25).

    python benchmarks/mission_corpus.py OUT --hours 113 [--seed 1] [--folder-files 1000]

The corpus this project exists for is ~113 h of 16 kHz mono PCM16 WAV in ~100,000 scraped
files of a few seconds each. `python -m preprocess.synth` renders every file from scratch
(speech synthesis, many formats), which is right for a demo of faults and far too slow for
100,000 files. Here a small pool of synthesized speech (the same generator,
`preprocess.synth.speech`: espeak-ng Telugu when installed, its procedural stand-in
otherwise) is synthesized once, and every file is a seeded crop of it with its own gain,
edge fades and ±1 LSB TPDF dither, so no two files hash alike (the pipeline dedupes by
sha256) while no file costs more than a few array operations and one write.

Shape:
- lengths lognormal, median 4 s (σ 0.45: mean ≈ 4.4 s, so 113 h ≈ 92,000 files, the
  size of the corpus measured in issue 25), clipped to 0.3–30 s;
- folders of 1,000 files (`f0000/0000000.wav` …), the default split group;
- 5 % planted faults (one of each kind in every 100 files), each with the decision
  the pipeline must make (docs/CONTRACTS.md): `short` (< 0.5 s), `quiet` (speech at a
  peak of ~1e-6, written as 32-bit float WAV: PCM16's smallest step is 3e-5),
  `mostly_silent` (~1.8 s of speech in 10–13 s of −70 dBFS room tone), `truncated` (a
  WAV cut to ~60 % of its bytes, header unchanged: `corrupt`) and `clipped` (speech ×8,
  hard-clipped).

Beside OUT, `OUT.truth.jsonl` has one line per file: path, kind, seconds (as the header
declares them), the expected status and reason. Files are written into `OUT.partial` and
renamed when all are done, so a killed generation never leaves a corpus that looks whole.

Deterministic: the same hours, seed and folder size give the same bytes, whatever the
number of jobs (each file draws from its own `default_rng([seed, 2, index])`), on a machine
with the same speech engine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from preprocess.synth.speech import coloured_noise, resolve_engine, speech  # noqa: E402

SAMPLE_RATE = 16_000
FOLDER_FILES = 1_000
MEDIAN_SECONDS = 4.0
SIGMA = 0.45  # of ln(seconds): mean 4.4 s, 99.9th percentile ≈ 16 s
MIN_SECONDS, MAX_SECONDS = 0.3, 30.0
# The pool: 8 voices × 31 s (> MAX_SECONDS, so every file is one crop). Its size only sets
# how many distinct stretches of speech there are; uniqueness comes from the per-file draws.
POOL_UTTERANCES = 8
POOL_SECONDS = 31.0
FADE_SAMPLES = 160  # 10 ms raised-cosine edges: a crop starts mid-word without a click
# Faults are stratified, not drawn file by file: each block of BLOCK consecutive files
# holds exactly the counts below at seeded positions, so a small corpus (a test, a slice)
# has the same fault share as the whole one.
BLOCK = 100
_BATCH = 40 * BLOCK  # drawn in fixed batches: the plan of N files is a prefix of N + 1's

# kind → (files per block, expected status, expected reason); "good" takes the rest.
KINDS: dict[str, tuple[int, str, str]] = {
    "good": (0, "kept", "ok"),
    "short": (1, "rejected", "short"),
    "quiet": (1, "rejected", "quiet"),
    "mostly_silent": (1, "rejected", "mostly_silent"),
    "truncated": (1, "rejected", "corrupt"),
    "clipped": (1, "rejected", "clipped"),
}
KIND_NAMES = tuple(KINDS)
FAULT_SHARE = sum(v[0] for v in KINDS.values()) / BLOCK


@dataclass(frozen=True)
class Plan:
    """Every file's kind (index into KIND_NAMES) and length in samples, in file order."""

    kinds: np.ndarray  # int8[n]
    samples: np.ndarray  # int64[n]

    @property
    def seconds(self) -> float:
        return float(self.samples.sum()) / SAMPLE_RATE


@dataclass(frozen=True)
class MissionCorpus:
    """What `generate` wrote: the corpus folder, its truth file and its totals."""

    root: Path
    truth: Path
    files: int
    seconds: float
    faults: dict[str, int]
    engine: str
    wall_s: float


def plan_files(hours: float, seed: int) -> Plan:
    """Draw kinds and lengths until the files add up to `hours` of audio."""
    rng = np.random.default_rng([seed, 1])
    block_kinds = np.repeat(np.arange(len(KIND_NAMES)), [KINDS[k][0] for k in KIND_NAMES])
    rows = np.arange(_BATCH // BLOCK)[:, None]
    target = hours * 3600.0 * SAMPLE_RATE
    kinds: list[np.ndarray] = []
    samples: list[np.ndarray] = []
    total = 0.0
    while total < target:
        kind = np.zeros((_BATCH // BLOCK, BLOCK), np.int64)
        positions = np.argsort(rng.random(kind.shape), axis=1)[:, : block_kinds.size]
        kind[rows, positions] = block_kinds
        kind = kind.reshape(-1)
        typical = np.clip(
            MEDIAN_SECONDS * np.exp(SIGMA * rng.standard_normal(_BATCH)), MIN_SECONDS, MAX_SECONDS
        )
        short = rng.uniform(0.15, 0.5, _BATCH)
        mostly_silent = rng.uniform(11.6, 15.0, _BATCH)
        seconds = np.where(kind == KIND_NAMES.index("short"), short, typical)
        seconds = np.where(kind == KIND_NAMES.index("mostly_silent"), mostly_silent, seconds)
        n = np.round(seconds * SAMPLE_RATE).astype(np.int64)
        take = _BATCH
        if total + n.sum() >= target:
            take = int(np.searchsorted(np.cumsum(n), target - total, side="left")) + 1
        kinds.append(kind[:take].astype(np.int8))
        samples.append(n[:take])
        total += float(n[:take].sum())
    return Plan(np.concatenate(kinds), np.concatenate(samples))


def file_path(index: int, folder_files: int = FOLDER_FILES) -> str:
    """The path of file `index` relative to the corpus root."""
    return f"f{index // folder_files:04d}/{index:07d}.wav"


def make_pool(seed: int, engine: str, jobs: int) -> tuple[np.ndarray, np.ndarray]:
    """(speech float32[POOL_UTTERANCES, n] at peak 1, room tone float32[n] at RMS 1)."""
    draws = [(seed, i, engine) for i in range(POOL_UTTERANCES)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as procs:
            utterances = procs.starmap(_pool_utterance, draws)
    else:
        utterances = [_pool_utterance(*d) for d in draws]
    n = utterances[0].size
    tone = coloured_noise(np.random.default_rng([seed, 0, POOL_UTTERANCES]), n, 1.0)
    return np.stack(utterances), tone.astype(np.float32)


def _pool_utterance(seed: int, i: int, engine: str) -> np.ndarray:
    rng = np.random.default_rng([seed, 0, i])
    return speech(rng, POOL_SECONDS, SAMPLE_RATE, engine=engine)


def render(index: int, kind: str, n: int, seed: int, pool: np.ndarray, tone: np.ndarray) -> bytes:
    """The bytes of file `index`: a crop of the pool shaped by its kind, as a WAV file."""
    rng = np.random.default_rng([seed, 2, index])
    if kind == "mostly_silent":
        n_speech = int(rng.uniform(1.6, 2.0) * SAMPLE_RATE)
        words = _crop(rng, pool, n_speech) * _from_db(rng.uniform(-6.0, -2.0))
        start = int(rng.integers(0, tone.size - (n - n_speech) + 1))
        room = tone[start : start + n - n_speech] * _from_db(rng.uniform(-72.0, -68.0))
        return _wav_pcm16(np.concatenate([words, room]), rng)
    x = _crop(rng, pool, n)
    if kind == "quiet":
        x = x * np.float32(1e-6 * rng.uniform(0.8, 1.25))
        x = x + np.float32(1e-9) * rng.standard_normal(n, dtype=np.float32)  # unique bytes
        return _wav_float32(x)
    if kind == "clipped":
        return _wav_pcm16(np.clip(x * np.float32(8.0), -1.0, 1.0), rng)
    data = _wav_pcm16(x * _from_db(rng.uniform(-12.0, -1.0)), rng)
    if kind == "truncated":
        return data[: int(len(data) * rng.uniform(0.55, 0.65))]
    return data


def _crop(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """`n` samples of one pool utterance from a random offset, faded in and out, peak 1."""
    row = int(rng.integers(pool.shape[0]))
    start = int(rng.integers(0, pool.shape[1] - n + 1))
    x = pool[row, start : start + n].copy()
    fade = min(FADE_SAMPLES, n // 2)
    if fade:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))).astype(np.float32)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    peak = float(np.max(np.abs(x)))
    return x / np.float32(peak) if peak > 0 else x


def _from_db(db: float) -> np.float32:
    return np.float32(10.0 ** (db / 20.0))


def _wav_pcm16(x: np.ndarray, rng: np.random.Generator) -> bytes:
    """float in [-1, 1] → a canonical 44-byte-header PCM16 WAV, with ±1 LSB TPDF dither
    (tiny noise that makes every file's bytes its own)."""
    dither = rng.random(x.size, dtype=np.float32) - rng.random(x.size, dtype=np.float32)
    pcm = np.clip(np.round(x * np.float32(32767.0) + dither), -32768, 32767).astype("<i2")
    data = pcm.tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
    return _riff([(b"fmt ", fmt), (b"data", data)])


def _wav_float32(x: np.ndarray) -> bytes:
    """float32 samples → an IEEE-float WAV (format 3, with the `fact` chunk it requires)."""
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, SAMPLE_RATE, 4 * SAMPLE_RATE, 4, 32, 0)
    return _riff([(b"fmt ", fmt), (b"fact", struct.pack("<I", x.size)), (b"data", data)])


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(tag + struct.pack("<I", len(d)) + d + b"\0" * (len(d) % 2) for tag, d in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


# Set in the parent before the writer processes fork, so the pool is shared, not pickled.
_SHARED: dict[str, object] = {}


def _write_range(start: int, stop: int) -> None:
    s = _SHARED
    root, plan, seed = s["root"], s["plan"], s["seed"]
    pool, tone, folder_files = s["pool"], s["tone"], s["folder_files"]
    for i in range(start, stop):
        kind = KIND_NAMES[int(plan.kinds[i])]  # type: ignore[attr-defined]
        data = render(i, kind, int(plan.samples[i]), seed, pool, tone)  # type: ignore[arg-type, attr-defined]
        with open(root / file_path(i, folder_files), "wb") as f:  # type: ignore[operator]
            f.write(data)


def generate(
    out: str | Path,
    hours: float,
    seed: int = 1,
    folder_files: int = FOLDER_FILES,
    jobs: int | None = None,
    engine: str = "auto",
) -> MissionCorpus:
    """Write the corpus to `out` (which must not exist) and `out.truth.jsonl` beside it."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it or choose another OUT")
    if hours <= 0 or folder_files < 1:
        raise ValueError(f"hours {hours} and folder_files {folder_files} must be positive")
    jobs = jobs or len(os.sched_getaffinity(0))
    engine = resolve_engine(engine)
    plan = plan_files(hours, seed)
    pool, tone = make_pool(seed, engine, jobs)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    n = plan.kinds.size
    for folder in range((n + folder_files - 1) // folder_files):
        (partial / f"f{folder:04d}").mkdir(parents=True)
    _SHARED.update(
        root=partial, plan=plan, seed=seed, pool=pool, tone=tone, folder_files=folder_files
    )
    step = 250  # small enough to balance two cores, large enough to amortize a task
    ranges = [(a, min(a + step, n)) for a in range(0, n, step)]
    try:
        if jobs > 1 and len(ranges) > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as procs:
                procs.starmap(_write_range, ranges, chunksize=1)
        else:
            for a, b in ranges:
                _write_range(a, b)
    finally:
        _SHARED.clear()
    truth = out.with_name(out.name + ".truth.jsonl")
    _write_truth(truth, plan, folder_files)
    partial.rename(out)
    faults = {k: int((plan.kinds == i).sum()) for i, k in enumerate(KIND_NAMES) if i}
    return MissionCorpus(out, truth, n, plan.seconds, faults, engine, time.perf_counter() - t0)


def _write_truth(path: Path, plan: Plan, folder_files: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, (k, n) in enumerate(zip(plan.kinds.tolist(), plan.samples.tolist(), strict=True)):
            kind = KIND_NAMES[k]
            _, status, reason = KINDS[kind]
            rec = {
                "path": file_path(i, folder_files),
                "kind": kind,
                "seconds": round(n / SAMPLE_RATE, 6),
                "expect_status": status,
                "expect_reason": reason,
            }
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)


def read_truth(corpus: Path) -> list[dict]:
    """`corpus.truth.jsonl`'s records, in file order."""
    path = corpus.with_name(corpus.name + ".truth.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def ensure(
    cache: Path, hours: float, seed: int = 1, folder_files: int = FOLDER_FILES
) -> tuple[Path, MissionCorpus | None]:
    """The corpus for these parameters under `cache`, generated unless a whole one is
    there: (its folder, the generation's result or None when it was reused)."""
    root = cache / f"mission-{hours:g}h-s{seed}-f{folder_files}"
    if root.is_dir() and root.with_name(root.name + ".truth.jsonl").is_file():
        return root, None
    shutil.rmtree(root, ignore_errors=True)  # a folder without its truth is not whole
    cache.mkdir(parents=True, exist_ok=True)
    return root, generate(root, hours, seed, folder_files)


def slice_of(corpus: Path, hours: float, dest: Path) -> tuple[Path, float, int]:
    """The first files of `corpus` (path order) adding up to `hours`, hard-linked (copied
    where links fail) into `dest` with their truth beside it: (dest, seconds, files).
    Reused when `dest` and its truth exist."""
    truth_path = dest.with_name(dest.name + ".truth.jsonl")
    records = read_truth(corpus)
    chosen, seconds = [], 0.0
    for rec in records:
        if seconds >= hours * 3600.0:
            break
        chosen.append(rec)
        seconds += rec["seconds"]
    if dest.is_dir() and truth_path.is_file():
        return dest, seconds, len(chosen)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    for rec in chosen:
        target = partial / rec["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(corpus / rec["path"], target)
        except OSError:
            shutil.copyfile(corpus / rec["path"], target)
    tmp = truth_path.with_name(truth_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    tmp.replace(truth_path)
    partial.rename(dest)
    return dest, seconds, len(chosen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="corpus folder to create (must not exist)")
    p.add_argument("--hours", type=float, required=True, help="audio hours, faults included")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--folder-files", type=int, default=FOLDER_FILES, help="files per folder")
    p.add_argument("--jobs", type=int, default=None, help="writer processes (default: cores)")
    p.add_argument(
        "--engine", choices=("auto", "espeak", "procedural"), default="auto", help="pool speech"
    )
    args = p.parse_args(argv)
    try:
        c = generate(args.out, args.hours, args.seed, args.folder_files, args.jobs, args.engine)
    except (FileExistsError, ValueError, RuntimeError) as exc:
        print(f"mission_corpus: error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in c.root.rglob("*.wav"))
    faults = ", ".join(f"{k} {v}" for k, v in c.faults.items())
    print(
        f"{c.root}: {c.files} files, {c.seconds / 3600:.3f} h, {size / 1e9:.2f} GB in "
        f"{c.wall_s:.1f} s ({c.engine} speech pool); planted: {faults} "
        f"({100 * sum(c.faults.values()) / max(c.files, 1):.1f} %); truth: {c.truth}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
