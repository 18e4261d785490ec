"""Preprocessing throughput, measured side by side in one run on the same corpus and cores.

    python benchmarks/preprocess_bench.py [--corpus DIR | --minutes 60] [--workers 1 2]

(a) the original script's serial loop: load each file, its three checks, nothing written;
(b) a bare serial loop doing only the irreducible work of our output: decode, downmix,
    resample to 16 kHz, cut each file into utterance-sized pieces (near-equal, at most the
    20 s utterance cap, as `kernels.utterance_plan` cuts a long region; no speech
    detection, so no trimming or pause splits) and FLAC-encode them (not written);
(c) our pipeline (Ray actors, Numba kernels, shards written) with 1 and 2 workers.
Prints audio-hours/s, the ratios c/a and c/b, scaling 1→2 workers, peak worker RSS and the
projected wall time for 113 h on a 16-core node. Ratios are what to read; absolute times
depend on the machine.

--lhotse adds (d): Lhotse (`pip install -e ".[bench]"`) doing the nearest like-for-like job:
recordings → cuts → 16 kHz mono → windows of at most 20 s (our utterance cap) → Shar with
FLAC audio, num_jobs = cores.
It has no quality checks, loudness normalization, masks or dedup; its files are listed one
by one (RecordingSet.from_dir stops at the first corrupt file, and this corpus has some).

The mission's size (issue 25), in one command for a quiet machine (~15–25 min on 2 cores,
13 GB for the corpus plus the run's OUT under --cache, default $TMPDIR/tcbench-mission):

    RAY_AUTH_MODE=disabled python benchmarks/preprocess_bench.py --mission-hours 113

1. makes (or reuses) a 113 h mission-shaped corpus, benchmarks/mission_corpus.py: 16 kHz
   mono PCM16 WAV, lognormal lengths around 4 s, folders of 1,000 files, 5 % planted faults;
2. runs the default command, `python -m preprocess.run --input IN --output OUT`, as a user
   would, and prints wall and CPU seconds per phase (start-up with listing, hash + probe,
   dedupe/units, scan, split, shard, assembly: files.jsonl / stats.zarr / index.json,
   report, exit) for the driver, Ray's workers and Ray's daemons, seen from outside
   (benchmarks/phase_watch.py), then the pipeline's own phase clock (`--timings`, a
   print-only flag), with peak RSS, the decisions against the planted truth and a
   projection to one and four 16-core nodes;
3. runs the side-by-side above, (a)–(d), on the first --slice-hours (10) of that corpus,
   Lhotse included when it is installed.
Small check: `--mission-hours 0.3 --slice-hours 0.1 --folder-files 25`.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mission_corpus import FOLDER_FILES, ensure, read_truth, slice_of  # noqa: E402
from phase_watch import ROLES, Watched, phases, watch  # noqa: E402

from preprocess.config import PreprocessConfig  # noqa: E402
from preprocess.measure.audio_io import audio_extensions  # noqa: E402

# The default config's utterance bounds (max_utterance_seconds, min_utterance_seconds) in
# 16 kHz samples: the pieces the baselines cut are the size our shards hold.
UTTERANCE_CAP = PreprocessConfig().utterance_max_samples
UTTERANCE_MIN = PreprocessConfig().utterance_min_samples


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
            with warnings.catch_warnings():  # an empty file's mean: the original's NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                rms = float(np.sqrt(np.mean(x**2)))
            peak = float(np.max(np.abs(x)))
            _good = duration >= 1.0 and rms > 0.001 and peak > 0.01
            seconds += duration
        except Exception:  # the original's bare except, kept for a like-for-like loop
            pass
    return time.perf_counter() - t0, seconds


def bare_loop(files: list[Path]) -> tuple[float, float]:
    """Only what our output needs: decode, downmix, resample, cut utterance-sized pieces
    (the cap's near-equal split, `UTTERANCE_CAP` samples at most), FLAC-encode."""
    t0, seconds = time.perf_counter(), 0.0
    for f in files:
        try:
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
        except Exception:
            continue
        if not np.isfinite(x).all() or x.shape[0] == 0:
            continue
        # Column sums, not x.mean(axis=1): numpy reduces [n, 2] along the short axis one
        # strided step at a time, 17× slower; the baseline should not be handicapped.
        mono = sum(x[:, c] for c in range(x.shape[1])) / np.float32(x.shape[1])
        if sr != 16000:
            mono = soxr.resample(mono, sr, 16000, quality="HQ")
        seconds += x.shape[0] / sr
        peak = max(float(np.max(np.abs(mono))), 1e-9)
        mono = np.clip(mono / peak * 0.5, -1, 1)
        pieces = -(-mono.size // UTTERANCE_CAP)
        for j in range(pieces):
            lo, hi = j * mono.size // pieces, (j + 1) * mono.size // pieces
            if hi - lo < UTTERANCE_MIN:
                continue
            pcm = np.round(mono[lo:hi] * 32767).astype(np.int16)
            buf = io.BytesIO()
            sf.write(buf, pcm, 16000, format="FLAC", subtype="PCM_16")
    return time.perf_counter() - t0, seconds


def lhotse_shar(files: list[Path], root: Path, jobs: int) -> tuple[float, float, int]:
    """(seconds, audio seconds in, cuts written): Lhotse recordings → windows of at most
    20 s (our utterance cap) → FLAC Shar."""
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
    windows = cuts.cut_into_windows(duration=UTTERANCE_CAP / 16000).to_eager()
    with tempfile.TemporaryDirectory(prefix="tcbench-shar-") as tmp:
        written = windows.to_shar(
            tmp, fields={"recording": "flac"}, num_jobs=jobs, fault_tolerant=True
        )
        elapsed = time.perf_counter() - t0
        n_written = sum(len(CutSet.from_file(p)) for p in written.get("cuts", []))
    seconds_in = float(sum(r.duration for r in recordings))
    return elapsed, seconds_in, n_written


class MachineLoad:
    """What else ran during a measurement: 1-min load average (start, end) and the whole
    machine's busy CPU-seconds from /proc/stat, to set against our own CPU-seconds."""

    def __enter__(self) -> MachineLoad:
        self.load_start = os.getloadavg()[0]
        self.busy_start = _busy_cpu_s()
        self.children_start = _children_cpu_s()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.load_end = os.getloadavg()[0]
        self.busy = _busy_cpu_s() - self.busy_start
        self.children = _children_cpu_s() - self.children_start

    def describe(self, own_cpu_s: float) -> str:
        others = max(0.0, self.busy - own_cpu_s)
        return (
            f"load {self.load_start:.2f}→{self.load_end:.2f}; machine busy {self.busy:.1f} "
            f"CPU-s in {self.wall:.1f} s, others' ≈{others:.1f} CPU-s"
        )


def _busy_cpu_s() -> float:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


_PIPELINE_CODE = """
import json, sys, time
from preprocess.pipeline import run_pipeline
from preprocess.config import load_config
t0 = time.perf_counter()
cfg = load_config(shard_mb={shard_mb})
i = run_pipeline({corpus!r}, {out!r}, cfg, workers={workers})
t_report, c_report = time.perf_counter(), time.process_time()
from preprocess.diagnose.report import report_for_output
report_for_output(__import__("pathlib").Path({out!r}))
times = i["_stage_times"]
times["cpu"]["report"] = time.process_time() - c_report
times["wall"]["report"] = time.perf_counter() - t_report
keys = ("_elapsed_s", "_worker_peak_rss_mb", "_stage_times", "_worker_cpu_s",
        "_worker_startup_cpu_s", "_driver_cpu_s", "_utilization")
res = {{k: i[k] for k in keys}} | {{"hours": i["totals"]["input_hours"]}}
res["session_s"] = time.perf_counter() - t0
print("BENCH" + json.dumps(res))
"""


def pipeline_run(corpus: Path, workers: int, shard_mb: float) -> dict:
    """One `run_pipeline` + report in a fresh interpreter (its own local Ray), timed."""
    with tempfile.TemporaryDirectory(prefix="tcbench-") as tmp:
        out = Path(tmp) / "out"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        code = _PIPELINE_CODE.format(
            shard_mb=shard_mb, corpus=str(corpus), out=str(out), workers=workers
        )
        for _attempt in range(2):  # an overloaded machine can time Ray's start-up out once
            with MachineLoad() as load:
                proc = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if proc.returncode == 0 or "timed out during startup" not in proc.stderr:
                break
            shutil.rmtree(out, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pipeline run failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH"))
    res = json.loads(line[5:])
    res["wall_s"] = load.wall
    res["load"] = load
    return res


def timed_loop(fn, *args) -> tuple[float, float, float, MachineLoad]:
    """(wall s, CPU s of this process, audio seconds, load) for a serial loop."""
    c0 = _self_cpu_s()
    with MachineLoad() as load:
        wall, seconds = fn(*args)
    return wall, _self_cpu_s() - c0, seconds, load


def print_breakdown(runs: dict[int, dict], hours: float) -> None:
    """Per-stage CPU seconds per audio-hour and share, one column per worker count."""
    from preprocess.measure.stage_times import STAGES

    ws = sorted(runs)
    head = "".join(f"{f'{w}w CPU-s/h':>13}{'share':>7}" for w in ws)
    print(f"\nper-stage CPU (all workers + driver), per audio-hour:\n{'stage':<34}{head}")
    totals = {w: sum(runs[w]["_stage_times"]["cpu"].values()) for w in ws}
    for stage in STAGES:
        row = ""
        for w in ws:
            cpu = runs[w]["_stage_times"]["cpu"].get(stage, 0.0)
            row += f"{cpu / hours:>13.1f}{100 * cpu / max(totals[w], 1e-9):>6.1f}%"
        print(f"{stage:<34}{row}")
    print(f"{'sum of stages':<34}" + "".join(f"{totals[w] / hours:>13.1f}{'':>7}" for w in ws))
    for label, key in (
        ("worker processes (getrusage)", "_worker_cpu_s"),
        ("driver process", "_driver_cpu_s"),
    ):
        print(f"{label:<34}" + "".join(f"{runs[w][key] / hours:>13.1f}{'':>7}" for w in ws))
    print(
        f"{'worker start-up, CPU-s per worker':<34}"
        + "".join(f"{runs[w]['_worker_startup_cpu_s'] / w:>13.1f}{'':>7}" for w in ws)
    )
    print(
        f"{'workers busy, units + group writes':<34}"
        + "".join(f"{100 * runs[w]['_utilization']['busy']:>12.0f}%{'':>7}" for w in ws)
    )
    print(
        f"{'idle tail, worker-seconds':<34}"
        + "".join(f"{runs[w]['_utilization']['tail_idle_s']:>13.2f}{'':>7}" for w in ws)
    )
    print(
        "(stages are thread CPU time inside the laps; worker processes add their start-up —\n"
        " Ray's worker, imports, Numba's start in `unit.warm_up` — and Ray's own threads; the\n"
        " driver's share includes assembly)"
    )


def side_by_side(corpus: Path, workers: list[int], shard_mb: float | None, lhotse: bool) -> None:
    """The loops, our pipeline at each worker count and (with `lhotse`) Lhotse, on the
    same corpus one after the other, with the machine's load beside each row."""
    files = audio_files(corpus)
    print(f"corpus {corpus}: {len(files)} audio files; cores: {os.cpu_count()}")
    ta, ca, sa, load_a = timed_loop(original_loop, files)
    tb, cb, sb, load_b = timed_loop(bare_loop, files)
    rss_loops = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = {w: pipeline_run(corpus, w, shard_mb) for w in workers}
    hours = sa / 3600
    rows = [
        ("(a) original loop (checks only)", ta, ca, rss_loops, load_a),
        ("(b) bare loop (decode+resample+encode)", tb, cb, rss_loops, load_b),
    ]
    rows += [
        (
            f"(c) pipeline, {w} worker(s)",
            r["_elapsed_s"],
            r["_worker_cpu_s"] + r["_driver_cpu_s"],
            r["_worker_peak_rss_mb"],
            r["load"],
        )
        for w, r in runs.items()
    ]
    lhotse_s: dict[int, float] = {}
    if lhotse:
        for jobs in workers:
            c0 = _children_cpu_s() + _self_cpu_s()
            with MachineLoad() as load_d:
                td, _, n_cuts = lhotse_shar(files, corpus, jobs)
            cd = _children_cpu_s() + _self_cpu_s() - c0
            lhotse_s[jobs] = td
            # Its peak RSS is spread over Lhotse's job processes: not measured, shown as nan.
            rows.append((f"(d) Lhotse → Shar FLAC, num_jobs {jobs}", td, cd, float("nan"), load_d))
    print(
        f"\naudio: {hours:.3f} h\n{'':<42}{'seconds':>9}{'CPU-s':>8}{'CPU-s/h':>9}"
        f"{'audio-h/s':>11}{'peak RSS MB':>13}  machine during the run"
    )
    for name, t, cpu, rss, load in rows:
        print(
            f"{name:<42}{t:>9.1f}{cpu:>8.1f}{cpu / hours:>9.1f}{hours / t:>11.4f}{rss:>13.0f}  "
            + load.describe(cpu)
        )
    print(
        "(pipeline seconds exclude Ray start-up; wall time with Ray start and the report: "
        + ", ".join(f"{w} worker(s) {r['wall_s']:.1f} s" for w, r in runs.items())
        + "; Lhotse CPU-s include its job processes)"
    )
    print_breakdown(runs, hours)
    w1 = min(runs)
    c1 = runs[w1]["_elapsed_s"]
    cpu1 = runs[w1]["_worker_cpu_s"] + runs[w1]["_driver_cpu_s"]
    print(f"\nc/a (1 worker vs original loop, time ratio): {c1 / ta:.2f}")
    print(
        f"per-worker throughput vs bare loop: {tb / c1:.2f}x by wall time, "
        f"{cb / cpu1:.2f}x by CPU-s per audio-hour (issue 25: ≥ 0.67x)"
    )
    if len(runs) >= 2:
        w_lo, w_hi = sorted(runs)[:2]
        lo, hi = runs[w_lo], runs[w_hi]
        scaling = lo["_elapsed_s"] / hi["_elapsed_s"]
        cpu_lo = (lo["_worker_cpu_s"] + lo["_driver_cpu_s"]) / hours
        cpu_hi = (hi["_worker_cpu_s"] + hi["_driver_cpu_s"]) / hours
        per_h_lo = per_hour_after_startup(lo, hours)
        per_h_hi = per_hour_after_startup(hi, hours)
        print(
            f"scaling {w_lo}→{w_hi} workers: {scaling:.2f}x by wall time"
            + (" (issue 25: ≥ 1.85x)" if (w_lo, w_hi) == (1, 2) else "")
            + f"; CPU-s per audio-hour {cpu_lo:.1f} → {cpu_hi:.1f}, of which after each "
            f"worker's start-up {per_h_lo:.1f} → {per_h_hi:.1f} (should stay flat)"
        )
        # The part that can scale: from the first unit's start to the last group's end,
        # without Ray's worker start, the warm-up, the plan and the assembly.
        win_lo, win_hi = lo["_utilization"]["window_s"], hi["_utilization"]["window_s"]
        if win_hi > 0:
            print(
                f"  units-and-groups window {win_lo:.1f} → {win_hi:.1f} s: "
                f"{win_lo / win_hi:.2f}x (the scalable part; the rest is fixed per run)"
            )
    for w, td in lhotse_s.items():
        if w in runs:
            print(
                f"Lhotse num_jobs {w} / pipeline {w} worker(s), time ratio: "
                f"{td / runs[w]['_elapsed_s']:.2f}x" + (" (issue 25: ≥ 2x)" if w == 2 else "")
            )
    project(runs[w1], hours, w1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, help="an existing corpus (default: generate one)")
    p.add_argument("--minutes", type=float, default=60.0, help="size of the generated corpus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--shard-mb",
        type=float,
        default=None,
        help="shard size of the side-by-side runs (default 8; with --mission-hours the "
        "config's default, as the default command uses)",
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--lhotse", action="store_true", help="also time Lhotse → Shar (extra bench)")
    p.add_argument(
        "--mission-hours",
        type=float,
        help="run on a mission-shaped corpus of this many hours (benchmarks/mission_corpus.py, "
        "generated under --cache unless there): the default command end to end by phase, "
        "then the side-by-side on a --slice-hours slice",
    )
    p.add_argument("--slice-hours", type=float, default=10.0, help="side-by-side slice size")
    p.add_argument(
        "--folder-files", type=int, default=FOLDER_FILES, help="mission corpus folder size"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tcbench-mission",
        help="where mission corpora and slices are kept between runs",
    )
    args = p.parse_args()
    if args.mission_hours is not None:
        mission(args)
        return
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
    shard_mb = 8.0 if args.shard_mb is None else args.shard_mb
    side_by_side(corpus, args.workers, shard_mb, args.lhotse)


def mission(args: argparse.Namespace) -> None:
    """The default command end to end on a mission-shaped corpus, phase by phase, then
    the side-by-side on a slice of it, in one run."""
    print(f"cores: {os.cpu_count()}; load {os.getloadavg()[0]:.2f}; cache {args.cache}")
    with MachineLoad() as gen_load:
        corpus, made = ensure(args.cache, args.mission_hours, args.seed, args.folder_files)
    if made is None:
        print(f"mission corpus {corpus}: reused")
    else:
        faults = ", ".join(f"{k} {v}" for k, v in made.faults.items())
        print(
            f"mission corpus {corpus}: generated {made.files} files, {made.seconds / 3600:.2f} h "
            f"in {made.wall_s:.1f} s ({made.engine} speech pool; {faults}); "
            + gen_load.describe(gen_load.children)
        )
    truth = read_truth(corpus)
    hours = sum(r["seconds"] for r in truth) / 3600
    size_gb = sum(p.stat().st_size for p in corpus.rglob("*.wav")) / 1e9
    print(f"{len(truth)} files, {hours:.3f} h, {size_gb:.2f} GB")
    listing = time_listing(corpus)
    with tempfile.TemporaryDirectory(prefix="tcbench-mission-out-", dir=args.cache) as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "preprocess.run", "--input", str(corpus), "--output", str(out)]
        cmd.append("--timings")  # print-only: the run's own phase table
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        print(f"\n$ {' '.join(cmd[1:])}  (python = {sys.executable})")
        w = watch(cmd, REPO, env, out)
        if w.returncode != 0:
            tail = "\n".join((w.stdout + w.stderr)[-40:])
            raise SystemExit(f"the default command failed ({w.returncode}):\n{tail}")
        print_phases(w, hours, listing)
        print_mission_targets(w)
        print_own_phases(w)
        print_run_log(out / ".work" / "run-log.jsonl")
        print_decisions(out / "files.jsonl", truth)
        report_mb = sum(p.stat().st_size for p in (out / "report").rglob("*") if p.is_file())
        print(f"report folder {report_mb / 1e6:.1f} MB")
        project_mission(w, hours)
    cut, seconds, n = slice_of(
        corpus, args.slice_hours, args.cache / f"{corpus.name}-slice-{args.slice_hours:g}h"
    )
    print(f"\n== side by side on a {seconds / 3600:.2f} h slice ({n} files): {cut}")
    lhotse = args.lhotse or importlib.util.find_spec("lhotse") is not None
    if not lhotse:
        print('(Lhotse not installed: `pip install -e ".[bench]"` adds its rows)')
    side_by_side(cut, args.workers, args.shard_mb, lhotse)


def time_listing(corpus: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, entries) of the pipeline's own listing, run here: the CLI's first
    bar appears only after Ray's start, the actors' start and the listing together."""
    from preprocess.plan.planner import list_inputs

    t0, c0 = time.perf_counter(), time.process_time()
    listing = list_inputs(corpus)
    return time.perf_counter() - t0, time.process_time() - c0, len(listing.files)


def print_phases(w: Watched, hours: float, listing: tuple[float, float, int]) -> None:
    """Wall and CPU seconds per phase and process role, with the machine's load."""
    cols = "".join(f"{r + ' CPU-s':>14}" for r in ROLES)
    print(f"\n{'phase (seen from outside)':<34}{'wall s':>8}{cols}  load; others' CPU-s")
    total = dict.fromkeys(ROLES, 0.0)
    for ph in phases(w):
        ours = sum(ph.cpu.values())
        others = max(0.0, ph.busy - ours)
        row = "".join(f"{ph.cpu[r]:>14.1f}" for r in ROLES)
        print(
            f"{ph.name:<34}{ph.end - ph.start:>8.1f}{row}  "
            f"{ph.load[0]:.2f}→{ph.load[1]:.2f}; ≈{others:.1f}"
        )
        for r in ROLES:
            total[r] += ph.cpu[r]
    wall = w.t_exit - w.t0
    print(f"{'total':<34}{wall:>8.1f}" + "".join(f"{total[r]:>14.1f}" for r in ROLES))
    print(
        f"  of which listing (list_inputs timed in this process, warm cache): "
        f"{listing[0]:.1f} s wall, {listing[1]:.1f} CPU-s, {listing[2]} files"
    )
    print(
        f"CPU-s sampled {sum(total.values()):.1f} (wait4 of what the driver reaped: "
        f"{w.rusage_cpu_s:.1f}; Ray's daemons and workers are not its to reap); "
        f"{sum(total.values()) / hours:.1f} CPU-s per audio-hour; "
        f"{hours * 3600 / wall:.0f} audio-seconds/s end to end"
    )
    peaks = ", ".join(f"{r} {w.peak_rss_mb[r]:.0f} MB ({w.processes[r]} processes)" for r in ROLES)
    print(f"peak RSS (VmHWM, the largest process of each role): {peaks}")
    said = [ln for ln in w.stdout if ln.startswith(("elapsed ", "peak worker RSS"))]
    print("the command's own figures: " + "; ".join(said))


def print_mission_targets(w: Watched) -> None:
    """Issue 25's end-to-end targets, met or not, from the outside view of this run."""
    wall = w.t_exit - w.t0
    tail = sum(ph.end - ph.start for ph in phases(w) if ph.name.startswith(("assembly", "report")))
    rss = w.peak_rss_mb["driver"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"issue 25 targets: end to end {wall:.1f} s (≤ 240 s: {verdict(wall <= 240)}); "
        f"report + assembly {100 * tail / wall:.1f} % (≤ 10 %: {verdict(tail <= 0.1 * wall)}); "
        f"driver peak RSS {rss:.0f} MB (≤ 1500 MB: {verdict(rss <= 1500)})"
    )


def print_own_phases(w: Watched) -> None:
    """The table `preprocess.run --timings` printed: the pipeline's own phase clock (driver
    thread CPU, workers' process CPU), exact where the outside view interpolates."""
    lines = [*w.stdout]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("phase ")), None)
    if start is None:
        print("(the command printed no phase table)")
        return
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("total"))
    print("\nthe pipeline's own phase clock (--timings):")
    print("\n".join(lines[start : end + 1]))


def print_run_log(path: Path) -> None:
    """Units and shard groups from the pipeline's run log (OUT/.work/run-log.jsonl)."""
    if not path.is_file():
        print(f"(no run log at {path})")
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    units = [r for r in rows if "unit_id" in r]
    if not units:
        return
    window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    print(
        f"run log: {len(units)} units ({sum(r['cpu_s'] for r in units):.1f} CPU-s in their "
        f"stage laps), {len(rows) - len(units)} shard-group writes, over {window:.1f} s"
    )


def print_decisions(files_jsonl: Path, truth: list[dict]) -> None:
    """The pipeline's decisions against the corpus's planted truth, per kind."""
    got = {}
    with open(files_jsonl, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            got[r["path"]] = (r["status"], r["reason"])
    by_kind: dict[str, dict[str, int]] = {}
    for t in truth:
        status, reason = got.get(t["path"], ("missing", "missing"))
        slot = by_kind.setdefault(t["kind"], {"files": 0, "expected": 0})
        slot["files"] += 1
        right = status == t["expect_status"] and (status == "kept" or reason == t["expect_reason"])
        slot["expected"] += right
        if not right:
            slot[f"{status}:{reason}"] = slot.get(f"{status}:{reason}", 0) + 1
    print("decisions vs planted truth:")
    for kind, slot in by_kind.items():
        other = {k: v for k, v in slot.items() if k not in ("files", "expected")}
        share = 100 * slot["expected"] / slot["files"]
        print(
            f"  {kind:<14}{slot['files']:>7} files, {share:5.1f} % as expected"
            + (f"; otherwise {other}" if other else "")
        )


def project_mission(w: Watched, hours: float) -> None:
    """113 h on one and on four 16-core nodes from this run's phases: the workers' CPU
    in hash + probe, scan and shard spread over the cores; every other phase (the
    driver's, serial) scaled by files; Ray's start-up fixed."""
    parallel, serial, fixed = 0.0, 0.0, 0.0
    for ph in phases(w):
        if ph.name.startswith(("hash + probe", "scan", "shard")):
            parallel += ph.cpu["workers"]
        elif ph.name.startswith(("start-up", "exit")):
            fixed += ph.end - ph.start
        else:
            serial += ph.end - ph.start
    scale = 113.0 / hours
    for nodes in (1, 4):
        t = fixed + scale * (serial + parallel / (16 * nodes))
        print(
            f"projected 113 h on {nodes} × 16-core node(s): {t / 60:.1f} min ({parallel:.0f} "
            f"worker CPU-s × {scale:.1f} over {16 * nodes} cores + {serial:.0f} s serial × "
            f"{scale:.1f} + {fixed:.0f} s start and stop; assumes storage keeps up)"
        )


def per_hour_after_startup(run: dict, hours: float) -> float:
    """CPU-s per audio-hour of the workers and the driver, less the workers' start-up (a
    fixed cost per worker, not per hour)."""
    cpu = run["_worker_cpu_s"] - run["_worker_startup_cpu_s"] + run["_driver_cpu_s"]
    return cpu / hours


def project(run: dict, hours: float, workers: int) -> None:
    """113 h on one and on four 16-core nodes, from this run's CPU-s per audio-hour.

    Worker CPU after start-up scales out; the driver's (listing, assembly, zarr) does not;
    Ray's start and each worker's start-up (paid in parallel) are fixed costs, taken from
    this run's wall time outside the pipeline and its per-worker start-up CPU.
    """
    worker_per_h = (run["_worker_cpu_s"] - run["_worker_startup_cpu_s"]) / hours
    driver_per_h = run["_driver_cpu_s"] / hours
    fixed = max(0.0, run["wall_s"] - run["_elapsed_s"]) + run["_worker_startup_cpu_s"] / workers
    for nodes in (1, 4):
        cores = 16 * nodes
        t = fixed + 113 * worker_per_h / cores + 113 * driver_per_h
        print(
            f"projected 113 h on {nodes} × 16-core node(s): {t / 60:.1f} min "
            f"({worker_per_h:.0f} worker CPU-s/h over {cores} workers + {driver_per_h:.0f} "
            f"driver CPU-s/h serial + {fixed:.0f} s start; assumes storage keeps up)"
        )


if __name__ == "__main__":
    main()
