"""How good a kept file is: a speech-band SNR estimate (always) and DNSMOS P.835 (opt-in).

A codec trained on scraped audio learns its noise floor, its room and its MP3 artefacts,
so after "is it intact speech?" (preprocess.policy) a team asks "how clean is it?".
Emilia-style pipelines rank and filter on an SNR estimate and DNSMOS; both land in
files.jsonl and stats.zarr, and `min_snr_db` / `min_dnsmos_ovrl` can reject on them.

SNR: from the per-frame quantities pass 1 already streams (the 80 Hz high-passed 20 ms
frame energies and the speech-activity mask), so it costs O(frames) once per file and no
memory beyond the frame arrays. Error on speech mixed with white and pink noise at known
SNRs is measured in tests/e2e/test_quality.py.

DNSMOS: Microsoft's P.835 ONNX model (Reddy et al. 2022, "DNSMOS P.835: a non-intrusive
perceptual objective speech quality metric to evaluate noise suppressors") shipped inside
the `speechmos` wheel, run with onnxruntime on one CPU thread (deterministic). It costs
~0.6 CPU-s per 9.01 s window, ~15× slower than real time on top of the scan, so it scores
a bounded, deterministic sample of each file's speech: up to `dnsmos_max_windows` windows
centred on evenly spaced quantiles of the active frames, never the whole file.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from preprocess.measure.spool import SampleSpool

# --------------------------------------------------------------------------- speech SNR

# Below 25 frames (0.5 s) of pauses or of speech, a median or a mean over them says little.
MIN_FRAMES = 25
# Where the estimate is clamped: the noise power never counts below −100 dBFS (the
# activity detector's digital-silence floor), so a noise-gated file reads high, not +inf.
SNR_MIN_DB, SNR_MAX_DB = -20.0, 100.0
_NOISE_FLOOR_POWER = 1e-10
_FALLBACK_PERCENTILE = 10.0
# Fluctuating noise (babble, a TV): the quietest 0.5 s of the file, averaged, stands for
# its mean power, up to 1.5 × (1.8 dB) the pauses' median. Measured on real speech in
# babble (tests/e2e/test_noisy_speech.py): p90 |error| 5.1 → 3.4 dB at 5–30 dB; white,
# pink, brown noise and hum unchanged (their quietest half-second is their median).
# Windows of 1.2 s or more hold speech in most files and read white noise 2–3 dB low; a
# cap of 2 × gained 0.05 dB on babble and read a clean (45 dB) file 2.7 dB low, 1.5 × 1.5.
QUIET_WINDOW_SECONDS = 0.5
FLUCTUATION_CAP = 1.5


def speech_snr_db(
    frame_db: np.ndarray, active: np.ndarray, frame_seconds: float = 0.02
) -> float | None:
    """SNR of the speech against its noise floor, in the speech band, from frame energies.

    frame_db: float32[F] energy (dBFS) of 20 ms frames of the 80 Hz high-passed signal;
    active: bool[F] the speech-activity mask (kernels.active_frames); frame_seconds: the
    frames' hop (`frame_ms`) → dB, 0.01 dB steps
    (rounded so a threshold decides the same on the files.jsonl value); None for F = 0.

    Noise power = the *median* of the inactive frames' power: pauses also hold breath,
    word tails and onsets under the detector's 6 dB margin, and a median ignores them
    where a mean would not (mean: −3 dB bias at 10 dB SNR; median: +2 dB). Noise that
    fluctuates (babble) is the other way round: the detector calls its peaks speech, the
    pauses it finds are the noise's troughs and their median reads it several dB low. So
    the noise is raised to the mean power of the file's quietest QUIET_WINDOW_SECONDS of
    frames (a half-second without the talker holds the noise at its mean), at most
    FLUCTUATION_CAP × the median, so a file of continuous speech is never read as noise
    alone. Speech power =
    mean power of the active frames minus that noise (powers add). The SNR is that of
    active speech, as ITU-T P.56 measures a speech level over active speech only, so a
    file's pause fraction does not move it. With under MIN_FRAMES pauses (continuous
    speech, or noise so loud the detector finds no pause) the noise is the 10th
    percentile of all frames, and with too few active frames the speech is all frames:
    at 0 dB SNR the estimate errs by a few dB (measured in tests/e2e/test_quality.py).
    """
    db = np.asarray(frame_db, dtype=np.float64)
    if db.size == 0:
        return None
    act = np.asarray(active, dtype=bool)
    power = 10.0 ** (db / 10.0)
    quiet = power[~act]
    noise = (
        float(np.median(quiet))
        if quiet.size >= MIN_FRAMES
        else float(np.percentile(power, _FALLBACK_PERCENTILE))
    )
    window = max(1, round(QUIET_WINDOW_SECONDS / frame_seconds))
    noise = max(noise, min(_quietest_window_power(power, window), FLUCTUATION_CAP * noise))
    noise = max(noise, _NOISE_FLOOR_POWER)
    loud = power[act] if act.sum() >= MIN_FRAMES else power
    speech = float(loud.mean()) - noise
    if speech <= 0.0:
        return SNR_MIN_DB
    snr = 10.0 * math.log10(speech / noise)
    return round(min(max(snr, SNR_MIN_DB), SNR_MAX_DB), 2)


def _quietest_window_power(power: np.ndarray, window: int) -> float:
    """Least mean power over `window` consecutive frames (the whole file's mean when it
    is shorter), by a running sum: O(frames)."""
    if power.size <= window:
        return float(power.mean())
    sums = np.cumsum(np.concatenate([[0.0], power]))
    return float((sums[window:] - sums[:-window]).min()) / window


# ------------------------------------------------------------------------------ DNSMOS

DNSMOS_SAMPLE_RATE = 16000
DNSMOS_WINDOW = 144160  # 9.01 s, the model's fixed input length (input 'input_1')
DNSMOS_MODEL = ("dnsmos_models", "sig_bak_ovr.onnx")
# Non-personalized P.835 calibration of the raw model outputs (Reddy et al. 2022; the
# DNS Challenge's dnsmos_local.py), numpy.poly1d coefficients, highest power first.
_POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_POLY_OVRL = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


@dataclass(frozen=True)
class DnsmosScores:
    """P.835 MOS (1–5) averaged over the scored windows: speech signal, background, overall."""

    sig: float
    bak: float
    ovrl: float
    windows: int


class DnsmosUnavailable(ValueError):
    """`quality="dnsmos"` without onnxruntime or the speechmos wheel's model file: a config
    this machine cannot run (a ValueError, so the CLI reports it like any bad config)."""


def dnsmos_model_path() -> Path:
    """The ONNX file inside the installed `speechmos` package, found without importing
    `speechmos.dnsmos` (which imports librosa) and without any download."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise DnsmosUnavailable("quality=dnsmos needs the speechmos wheel (pip install speechmos)")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*DNSMOS_MODEL)
        if path.is_file():
            return path
    raise DnsmosUnavailable(f"speechmos is installed but has no {'/'.join(DNSMOS_MODEL)}")


def require_dnsmos() -> None:
    """Fail before any work when `quality="dnsmos"` cannot run here, rather than turning
    every file into a per-file error."""
    dnsmos_model_path()
    if importlib.util.find_spec("onnxruntime") is None:
        raise DnsmosUnavailable("quality=dnsmos needs onnxruntime (pip install onnxruntime)")


@functools.cache
def dnsmos_session() -> Any:
    """One ONNX session per process (a Ray actor is one): loaded on first use, reused.

    One intra-op and one inter-op thread: the pipeline already runs one actor per core,
    and a single thread makes the float reductions run in one order, so scores repeat
    bit for bit.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DnsmosUnavailable(
            "quality=dnsmos needs onnxruntime (pip install onnxruntime)"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(dnsmos_model_path()), options, providers=["CPUExecutionProvider"]
    )


def dnsmos_window(audio: np.ndarray) -> tuple[float, float, float]:
    """float32[≤ DNSMOS_WINDOW] 16 kHz → calibrated (SIG, BAK, OVRL) of one window.

    Audio shorter than the window is repeated to fill it, as the reference scorer does.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.size == 0:
        raise ValueError("dnsmos_window: empty audio")
    if x.size < DNSMOS_WINDOW:
        x = np.tile(x, -(-DNSMOS_WINDOW // x.size))
    x = np.ascontiguousarray(x[:DNSMOS_WINDOW]).reshape(1, DNSMOS_WINDOW)
    sig, bak, ovrl = dnsmos_session().run(None, {"input_1": x})[0][0]
    return float(_POLY_SIG(sig)), float(_POLY_BAK(bak)), float(_POLY_OVRL(ovrl))


def window_starts(active: np.ndarray, frame: int, n_samples: int, max_windows: int) -> list[int]:
    """Start samples of the windows DNSMOS scores: a bounded, deterministic speech sample.

    As many windows as the active speech fills (at least one), at most `max_windows`,
    each centred on an evenly spaced quantile of the active frames, so the windows land
    on speech (with its natural pauses) and spread over the file. A file shorter than a
    window is one window from 0.
    """
    if n_samples <= DNSMOS_WINDOW:
        return [0]
    idx = np.flatnonzero(np.asarray(active, dtype=bool))
    if idx.size == 0:
        idx = np.arange(max(1, n_samples // frame))
    k = max(1, min(max_windows, math.ceil(idx.size * frame / DNSMOS_WINDOW)))
    starts = []
    for j in range(k):
        centre = int(idx[int((j + 0.5) / k * idx.size)]) * frame + frame // 2
        starts.append(min(max(centre - DNSMOS_WINDOW // 2, 0), n_samples - DNSMOS_WINDOW))
    return starts


def dnsmos_file(
    spool: SampleSpool, active: np.ndarray, frame: int, max_windows: int
) -> DnsmosScores:
    """DNSMOS of one file's 16 kHz mono samples (pass 1's spool), averaged over windows."""
    scores = [
        dnsmos_window(spool.read(s, s + DNSMOS_WINDOW))
        for s in window_starts(active, frame, spool.length, max_windows)
    ]
    sig, bak, ovrl = (round(float(np.mean(v)), 4) for v in zip(*scores, strict=True))
    return DnsmosScores(sig, bak, ovrl, len(scores))
