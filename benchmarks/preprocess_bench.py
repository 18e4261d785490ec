"""Preprocessing throughput, measured side by side in one run on the same corpus and cores.

    python benchmarks/preprocess_bench.py [--corpus DIR | --minutes 60] [--workers 1 2]

(a) the original script's serial loop: load each file, its three checks, nothing written;
(b) a bare serial loop doing only the irreducible work of our output: decode, downmix,
    resample to 16 kHz, cut 1 s segments and FLAC-encode them (not written);
(c) our pipeline (Ray actors, Numba kernels, shards written) with 1 and 2 workers.
Prints audio-hours/s, the ratios c/a and c/b, scaling 1→2 workers, peak worker RSS and the
projected wall time for 113 h on a 16-core node. Ratios are what to read; absolute times
depend on the machine.

--lhotse adds (d): Lhotse (`pip install -e ".[bench]"`) doing the nearest like-for-like job:
recordings → cuts → 16 kHz mono → 1 s windows → Shar with FLAC audio, num_jobs = cores.
It has no quality checks, loudness normalization, masks or dedup; its files are listed one
by one (RecordingSet.from_dir stops at the first corrupt file, and this corpus has some).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from preprocess.measure.audio_io import audio_extensions  # noqa: E402


def audio_files(root: Path) -> list[Path]:
    exts = audio_extensions()
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def original_loop(files: list[Path]) -> tuple[float, float]:
    """The original filter: load, duration ≥ 1 s, RMS > 0.001, peak > 0.01 (bare except)."""
    t0, seconds = time.perf_counter(), 0.0
    for f in files:
        try:
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
            x = x.T
            duration = x.shape[1] / sr
            rms = float(np.sqrt(np.mean(x**2)))
            peak = float(np.max(np.abs(x)))
            _good = duration >= 1.0 and rms > 0.001 and peak > 0.01
            seconds += duration
        except Exception:  # the original's bare except, kept for a like-for-like loop
            pass
    return time.perf_counter() - t0, seconds


def bare_loop(files: list[Path]) -> tuple[float, float]:
    """Only what our output needs: decode, downmix, resample, cut, FLAC-encode."""
    t0, seconds = time.perf_counter(), 0.0
    for f in files:
        try:
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
        except Exception:
            continue
        if not np.isfinite(x).all() or x.shape[0] == 0:
            continue
        mono = x.mean(axis=1)
        if sr != 16000:
            mono = soxr.resample(mono, sr, 16000, quality="HQ")
        seconds += x.shape[0] / sr
        peak = max(float(np.max(np.abs(mono))), 1e-9)
        mono = np.clip(mono / peak * 0.5, -1, 1)
        for i in range(0, mono.size - 8000, 16000):
            seg = np.zeros(16000, np.int16)
            part = np.round(mono[i : i + 16000] * 32767).astype(np.int16)
            seg[: part.size] = part
            buf = io.BytesIO()
            sf.write(buf, seg, 16000, format="FLAC", subtype="PCM_16")
    return time.perf_counter() - t0, seconds


def lhotse_shar(files: list[Path], root: Path, jobs: int) -> tuple[float, float, int]:
    """(seconds, audio seconds in, cuts written): Lhotse recordings → 1 s windows → FLAC Shar."""
    import logging

    from lhotse import CutSet, Recording, RecordingSet

    # fault_tolerant to_shar logs a multi-line warning per unreadable window (the truncated
    # files); the count of cuts written says how many were skipped.
    logging.getLogger().setLevel(logging.ERROR)
    t0 = time.perf_counter()
    recordings = []
    for f in files:
        rec_id = f.relative_to(root).as_posix().replace("/", "__")
        try:
            recordings.append(Recording.from_file(f, recording_id=rec_id))
        except Exception:  # unreadable: Lhotse has no reject list, so it is just left out
            continue
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings))
    # First channel of multi-channel files: Lhotse's downmix makes in-memory audio that
    # to_shar's job split cannot serialize.
    cuts = CutSet.from_cuts(
        c.to_mono(mono_downmix=False)[0] if c.num_channels > 1 else c for c in cuts
    ).resample(16000)
    windows = cuts.cut_into_windows(duration=1.0).to_eager()
    with tempfile.TemporaryDirectory(prefix="tcbench-shar-") as tmp:
        written = windows.to_shar(
            tmp, fields={"recording": "flac"}, num_jobs=jobs, fault_tolerant=True
        )
        elapsed = time.perf_counter() - t0
        n_written = sum(len(CutSet.from_file(p)) for p in written.get("cuts", []))
    seconds_in = float(sum(r.duration for r in recordings))
    return elapsed, seconds_in, n_written


def pipeline_run(corpus: Path, workers: int, shard_mb: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="tcbench-") as tmp:
        out = Path(tmp) / "out"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        t0 = time.perf_counter()
        code = (
            "import json,sys;from preprocess.pipeline import run_pipeline;"
            "from preprocess.config import load_config;"
            f"i=run_pipeline({str(corpus)!r},{str(out)!r},load_config(shard_mb={shard_mb}),"
            f"workers={workers});"
            "print('BENCH'+json.dumps({k:i[k] for k in ('_elapsed_s','_worker_peak_rss_mb')}"
            "|{'hours':i['totals']['input_hours']}))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH"))
    res = json.loads(line[5:])
    res["wall_s"] = wall
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, help="an existing corpus (default: generate one)")
    p.add_argument("--minutes", type=float, default=60.0, help="size of the generated corpus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shard-mb", type=float, default=8.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--lhotse", action="store_true", help="also time Lhotse → Shar (extra bench)")
    args = p.parse_args()
    corpus = args.corpus
    if corpus is None:
        corpus = Path(tempfile.gettempdir()) / f"tcbench-corpus-{args.minutes:g}m-s{args.seed}"
        if not corpus.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "preprocess.synth",
                    str(corpus),
                    "--minutes",
                    str(args.minutes),
                    "--seed",
                    str(args.seed),
                ],
                cwd=REPO,
                check=True,
            )
    files = audio_files(corpus)
    print(f"corpus {corpus}: {len(files)} audio files; cores: {os.cpu_count()}")
    ta, sa = original_loop(files)
    tb, sb = bare_loop(files)
    rss_loops = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = {w: pipeline_run(corpus, w, args.shard_mb) for w in args.workers}
    hours = sa / 3600
    rows = [
        ("(a) original loop (checks only)", ta, rss_loops),
        ("(b) bare loop (decode+resample+encode)", tb, rss_loops),
    ]
    rows += [
        (f"(c) pipeline, {w} worker(s)", r["_elapsed_s"], r["_worker_peak_rss_mb"])
        for w, r in runs.items()
    ]
    td = None
    if args.lhotse:
        jobs = os.cpu_count() or 1
        td, _, n_cuts = lhotse_shar(files, corpus, jobs)
        # Its peak RSS is spread over Lhotse's job processes: not measured, shown as nan.
        rows.append((f"(d) Lhotse → Shar FLAC, num_jobs {jobs}", td, float("nan")))
    print(f"\naudio: {hours:.3f} h\n{'':<42}{'seconds':>9}{'audio-h/s':>11}{'peak RSS MB':>13}")
    for name, t, rss in rows:
        print(f"{name:<42}{t:>9.1f}{hours / t:>11.4f}{rss:>13.0f}")
    print(
        "(pipeline time excludes Ray start-up; wall time with it: "
        + ", ".join(f"{w} worker(s) {r['wall_s']:.1f} s" for w, r in runs.items())
        + ")"
    )
    c1 = runs[min(runs)]["_elapsed_s"]
    print(f"\nc/a (1 worker vs original loop, time ratio): {c1 / ta:.2f}")
    print(
        f"c/b (1 worker vs bare loop, time ratio):     {c1 / tb:.2f}  "
        f"(overhead {100 * (c1 / tb - 1):+.0f} %, target ≤ +30 %)"
    )
    if len(runs) >= 2:
        w_lo, w_hi = sorted(runs)[:2]
        scaling = runs[w_lo]["_elapsed_s"] / runs[w_hi]["_elapsed_s"]
        print(f"scaling {w_lo}→{w_hi} workers: {scaling:.2f}x (target ≥ 1.8x on idle cores)")
    if td is not None:
        c_all = runs[max(runs)]["_elapsed_s"]
        print(
            f"c/d (pipeline, {max(runs)} workers vs Lhotse, time ratio): {c_all / td:.2f}  "
            f"(Lhotse wrote {n_cuts} cuts of ≤ 1 s)"
        )
    per_worker = hours / c1
    print(
        f"projected 113 h on a 16-core node: {113 / (per_worker * 16) / 60:.1f} min "
        "(assumes linear scaling and input storage that keeps up)"
    )


if __name__ == "__main__":
    main()
