"""What the quality scores cost, per audio-hour, beside the scan they ride on. One process.

    python benchmarks/quality_bench.py [--seconds 120] [--windows 3] [--repeat 3]

(a) scan: `preprocess.scan.analyze_file` on a PCM_16 WAV (--rate, 48 kHz: resampling
    included, as for most scraped audio) of procedural speech in pink noise (decode, frame
    RMS, K-weighting, high-pass, activity mask, loudness): the pass-1 cost every file
    pays, the SNR estimate included;
(b) SNR estimate: `preprocess.measure.quality.speech_snr_db` alone on that file's frames;
(c) DNSMOS P.835: `preprocess.measure.quality.dnsmos_window` on 9.01 s windows (one ONNX session,
    one thread), per window and per audio-hour. With `dnsmos_max_windows` = N a file scores
    min(N, its speech / 9.01 s) windows, so per corpus hour the cost sits between
    (N windows per long file) and (one window per file of ≤ 9 s): both are printed.
Figures are CPU seconds of this process (`time.process_time`), the best of --repeat runs,
with the load average, since other jobs on the machine stretch wall time, not CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from preprocess.config import PreprocessConfig  # noqa: E402
from preprocess.measure import kernels  # noqa: E402
from preprocess.measure.quality import DNSMOS_WINDOW, dnsmos_window, speech_snr_db  # noqa: E402
from preprocess.measure.scan import analyze_file  # noqa: E402
from preprocess.measure.spool import SampleSpool  # noqa: E402
from preprocess.synth.speech import coloured_noise, speech  # noqa: E402

SR = 16000


def cpu_best(fn, repeat: int) -> float:
    """Least CPU seconds of `repeat` calls (the first call also compiles/loads; not counted
    when repeat > 1)."""
    times = []
    for _ in range(repeat + (1 if repeat > 1 else 0)):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times[1:] if repeat > 1 else times)


def make_audio(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = speech(rng, seconds, SR, engine="procedural", floor_db=-140.0).astype(np.float64)
    x += 10 ** (-25 / 20) * 0.3 * coloured_noise(rng, x.size, 1.0)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="audio length for (a), (b)")
    p.add_argument("--windows", type=int, default=3, help="DNSMOS windows timed in (c)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rate", type=int, default=48000, help="sample rate of the scanned file")
    p.add_argument("--max-windows", type=int, default=PreprocessConfig().dnsmos_max_windows)
    args = p.parse_args(argv)
    cfg = PreprocessConfig()
    hours = args.seconds / 3600.0
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        path = Path(tmp) / "x.wav"
        audio = make_audio(args.seconds)
        rate_audio = soxr.resample(audio, SR, args.rate) if args.rate != SR else audio
        sf.write(path, np.clip(rate_audio, -1, 1), args.rate, subtype="PCM_16")

        def scan() -> None:
            with SampleSpool(tmp) as spool:
                analyze_file(path, cfg, spool)

        scan_cpu = cpu_best(scan, args.repeat)
        x = audio
        hp = kernels.HighPass(SR).process(x)
        n = hp.size // cfg.frame_samples * cfg.frame_samples
        rms, _ = kernels.frame_rms_peak(hp[:n], cfg.frame_samples)
        frame_db = (20 * np.log10(np.maximum(rms.astype(np.float64), 1e-12))).astype(np.float32)
        active = kernels.active_frames(frame_db, frame_seconds=0.02, window_seconds=5.0)
        snr_cpu = cpu_best(lambda: speech_snr_db(frame_db, active), max(args.repeat, 10))
        windows = [x[i * DNSMOS_WINDOW : (i + 1) * DNSMOS_WINDOW] for i in range(args.windows)]
        windows = [w for w in windows if w.size == DNSMOS_WINDOW] or [x]
        dnsmos_window(windows[0])  # load the ONNX session once, as a worker does
        t = time.process_time()
        for w in windows:
            dnsmos_window(w)
        per_window = (time.process_time() - t) / len(windows)
    per_hour_scored = per_window * 3600.0 / (DNSMOS_WINDOW / SR)
    rows = [
        ("scan (pass 1, SNR included)", scan_cpu / hours),
        ("  of which SNR estimate", snr_cpu / hours),
        ("DNSMOS, every second scored", per_hour_scored),
        ("DNSMOS, 9 s files (1 window each)", per_hour_scored),
        (
            f"DNSMOS, 60 s files ({args.max_windows} windows each)",
            per_window * args.max_windows * 3600.0 / 60.0,
        ),
        (
            f"DNSMOS, 10 min files ({args.max_windows} windows each)",
            per_window * args.max_windows * 3600.0 / 600.0,
        ),
    ]
    print(
        f"\n{args.seconds:g} s of audio at {args.rate} Hz; "
        f"DNSMOS {per_window:.3f} CPU-s per 9.01 s window"
    )
    print(f"{'stage':<44}{'CPU-s / audio-hour':>20}{'× scan':>9}")
    for name, cost in rows:
        print(f"{name:<44}{cost:>20.3f}{cost / rows[0][1]:>9.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
