"""Numba kernels for the preprocessing scan: per-frame statistics, fault counters, speech
activity, trimming and utterance cutting.

The scan touches every sample of the corpus once, in blocks (~10 s), so these loops run in
compiled code with float64 accumulation and never allocate more than their block. Each
kernel is a plain loop (`_name`, `@njit(cache=True)`) behind a small typed Python wrapper
that checks shapes and dtypes, so a caller's mistake fails with a message instead of a
silent recompile for a new dtype or a wrong answer. The rules behind the defaults are in
docs/KERNELS.md; every kernel has a pure-numpy reference in tests/unit/test_kernels.py.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from shards.format import INT16_SCALE

__all__ = [
    "ClipState",
    "HighPass",
    "SpeechBands",
    "active_frames",
    "count_clipped",
    "count_invalid",
    "downmix",
    "frame_rms_peak",
    "moments",
    "rms_db",
    "segment_pcm",
    "speech_regions",
    "trim_bounds",
    "utterance_plan",
]

# Frames whose energy is below this are "no signal" for rms_db (−200 dBFS, far under any floor).
_RMS_DB_FLOOR = -200.0


def _f32_1d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D float32 array, got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------------------
# Downmix (decoded source-rate blocks → mono)
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _downmix(block, out):
    channels = block.shape[1]
    for i in range(block.shape[0]):
        acc = 0.0
        for c in range(channels):
            acc += np.float64(block[i, c])
        out[i] = np.float32(acc / channels)


def downmix(block: np.ndarray) -> np.ndarray:
    """float32[n, C] → float32[n]: the channel mean (BS.1770 weights L/R/C 1.0), summed in
    float64.

    The same values as `block.mean(axis=1, dtype=np.float64)` cast to float32 (up to the
    last bit past 8 channels, where numpy sums pairwise), 9× faster: numpy reduces a
    [n, 2] array along its short axis one strided step at a time (12.7 vs 1.4 ms for 10 s
    of 48 kHz stereo), which made downmixing cost more than soxr on stereo corpora.
    """
    a = np.ascontiguousarray(block, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"downmix: expected float32[n, C] with C ≥ 1, got shape {a.shape}")
    if a.shape[1] == 1:
        return a[:, 0].copy()
    out = np.empty(a.shape[0], dtype=np.float32)
    _downmix(a, out)
    return out


# ---------------------------------------------------------------------------------------
# Frame statistics
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _frame_rms_peak(x, frame, rms, peak):
    for f in range(rms.size):
        acc = 0.0
        top = np.float32(0.0)
        base = f * frame
        for i in range(base, base + frame):
            v = x[i]
            acc += np.float64(v) * np.float64(v)
            a = abs(v)
            if a > top:
                top = a
        rms[f] = math.sqrt(acc / frame)
        peak[f] = top


def frame_rms_peak(x: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """RMS and sample peak of each complete frame.

    x: float32[N]; frame: samples per frame (320 = 20 ms at 16 kHz).
    Returns (rms float32[F], peak float32[F]) with F = N // frame: only full frames, the
    caller carries the remainder into the next block so frames never straddle calls.
    NaN samples are skipped by the peak (files with them are rejected earlier).
    """
    x = _f32_1d(x, "frame_rms_peak x")
    if frame <= 0:
        raise ValueError(f"frame_rms_peak: frame must be positive, got {frame}")
    n_frames = x.size // frame
    rms = np.empty(n_frames, np.float32)
    peak = np.empty(n_frames, np.float32)
    _frame_rms_peak(x, int(frame), rms, peak)
    return rms, peak


def rms_db(rms: np.ndarray) -> np.ndarray:
    """float32[F] frame RMS → float32[F] dBFS (20·log10), zero RMS → −200 dB (never active)."""
    r = np.asarray(rms, dtype=np.float64)
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(r)
    return np.maximum(db, _RMS_DB_FLOOR).astype(np.float32)


@njit(cache=True, inline="always")
def moments_step(v, s, ss, lo, hi):
    """One float32 sample into the running (Σx, Σx², min, max): sums in float64, the
    extremes in float32 (a NaN moves neither); shared with `meters._one_pass`."""
    d = np.float64(v)
    if v < lo:
        lo = v
    if v > hi:
        hi = v
    return s + d, ss + d * d, lo, hi


@njit(cache=True)
def _moments(x):
    s, ss = 0.0, 0.0
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    for i in range(x.size):
        s, ss, lo, hi = moments_step(x[i], s, ss, lo, hi)
    return s, ss, lo, hi


def moments(x: np.ndarray) -> tuple[float, float, np.float32, np.float32]:
    """(Σx, Σx², min, max) of float32[N], sums in float64, so blocks combine by addition.

    For the file: mean = Σx/N (the DC removed from kept files), RMS = sqrt(Σx²/N), and the
    post-DC peak = max(max − mean, mean − min). An empty block gives (0, 0, +inf, −inf).
    """
    s, ss, lo, hi = _moments(_f32_1d(x, "moments x"))
    return float(s), float(ss), np.float32(lo), np.float32(hi)


# ---------------------------------------------------------------------------------------
# Fault counters (run on decoded source-rate samples)
# ---------------------------------------------------------------------------------------


# No audio lies 90 dB over full scale: float samples beyond this are overflowed or corrupt
# data (float WAVs written at int16 scale, ±32767, stay under it), and they would turn the
# resampler's and the meters' sums into Inf or hide the speech under a one-sample peak.
OVERFLOW_LIMIT = 32768.0


@njit(cache=True)
def _count_invalid(x, limit):
    bad = 0
    over = 0
    for i in range(x.size):
        v = x[i]
        d = v - v  # 0 for finite values, NaN for NaN and ±Inf
        finite = d == d
        bad += not finite
        over += finite and abs(v) > limit
    return bad, over


def count_invalid(block: np.ndarray) -> tuple[int, int]:
    """(NaN/±Inf values, finite values beyond ±OVERFLOW_LIMIT) in float[n] or float[n, C],
    any float dtype, not cast (casting float64 to float32 could itself create
    infinities). Integer PCM holds neither."""
    a = np.asarray(block)
    if a.dtype.kind != "f":
        return 0, 0
    bad, over = _count_invalid(np.ascontiguousarray(a).reshape(-1), OVERFLOW_LIMIT)
    return int(bad), int(over)


@njit(cache=True)
def _count_clipped(block, level, ceiling, min_run, run_len):
    counted = 0
    for c in range(block.shape[1]):
        run = run_len[c]
        for i in range(block.shape[0]):
            v = abs(block[i, c])
            if v >= level and v <= ceiling:
                run += 1
                if run == min_run:
                    counted += run  # the run just qualified: count it from its start
                elif run > min_run:
                    counted += 1
            else:
                run = 0
        run_len[c] = run
    return counted


def count_clipped(
    block: np.ndarray,
    level: float,
    min_run: int,
    run_len: np.ndarray,
    ceiling: float = math.inf,
) -> int:
    """Samples in runs of ≥ `min_run` consecutive `level` ≤ |x| ≤ `ceiling`, streaming
    across blocks.

    `ceiling` 1.0 for float PCM files: their samples above full scale are headroom (an
    intact float WAV peaking at 8.0 read as 12.8 % clipped), not a flat top. Lossy
    decoders overshoot a clipped source past 1.0 (27–31 % of its samples, measured on
    MP3/Vorbis), so for them and for integer PCM there is no ceiling.

    block: float32[n, C] (or [n] for mono); run_len: int64[C], the open run length per
    channel, updated in place. A run straddling blocks is counted exactly once and whole:
    when it reaches `min_run` all its samples so far are counted, then one per sample.
    Counts are of sample values (n·C per block); divide by frames·channels for a fraction.
    NaN never counts as clipped (it fails |x| ≥ level).
    """
    b = np.ascontiguousarray(block, dtype=np.float32)
    if b.ndim == 1:
        b = b.reshape(-1, 1)
    if b.ndim != 2:
        raise ValueError(f"count_clipped: expected block [n, C], got shape {b.shape}")
    if run_len.dtype != np.int64 or run_len.shape != (b.shape[1],):
        raise ValueError(
            f"count_clipped: run_len must be int64[{b.shape[1]}], got "
            f"{run_len.dtype}{list(run_len.shape)}"
        )
    if min_run < 1:
        raise ValueError(f"count_clipped: min_run must be ≥ 1, got {min_run}")
    return int(_count_clipped(b, np.float32(level), np.float32(ceiling), int(min_run), run_len))


class ClipState:
    """Streaming clip detector for one file: feed decoded blocks, read `clipped` at the end.

    Default rule (docs/CONTRACTS.md): a sample is clipped when it is part of a run of ≥ 3
    consecutive samples at |x| ≥ 0.99 on the same channel; isolated full-scale peaks are not.
    """

    def __init__(self, channels: int, level: float = 0.99, min_run: int = 3):
        self.level = float(level)
        self.min_run = int(min_run)
        self.run_len = np.zeros(int(channels), np.int64)
        self.clipped = 0  # sample values in qualifying runs
        self.samples = 0  # sample values seen (frames · channels)

    def add(self, block: np.ndarray) -> int:
        """Count one float32[n, C] block; returns the clipped samples it added."""
        added = count_clipped(block, self.level, self.min_run, self.run_len)
        self.clipped += added
        self.samples += int(np.asarray(block).size)
        return added

    @property
    def fraction(self) -> float:
        return self.clipped / self.samples if self.samples else 0.0


# ---------------------------------------------------------------------------------------
# Rumble high-pass for the activity detector's energy
# ---------------------------------------------------------------------------------------


def highpass_sos(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """float64[1, 6] second-order Butterworth high-pass (RBJ cookbook, Q = 1/√2, the
    bilinear transform with pre-warping: same as scipy.signal.butter(2, ..., 'high'))."""
    w0 = 2.0 * math.pi * cutoff_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * (1.0 / math.sqrt(2.0)))
    cw = math.cos(w0)
    a0 = 1.0 + alpha
    sos = [(1.0 + cw) / 2.0, -(1.0 + cw), (1.0 + cw) / 2.0, a0, -2.0 * cw, 1.0 - alpha]
    return (np.array(sos, np.float64) / a0).reshape(1, 6)


@njit(cache=True, inline="always")
def biquad_row(sos, s):
    """Biquad row s of sos (b0, b1, b2, 1, a1, a2) as the tuple (b0, b1, b2, a1, a2)
    `biquad_step` takes."""
    return sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]


@njit(cache=True, inline="always")
def biquad_step(v, c, z0, z1):
    """One sample through one biquad, transposed direct form II (as scipy's sosfilt):
    coefficients c from `biquad_row`, state (z0, z1) → (output, z0, z1). Callers that
    keep the state in locals keep it in registers (`meters._one_pass`)."""
    y = c[0] * v + z0
    return y, c[1] * v - c[3] * y + z1, c[2] * v - c[4] * y


@njit(cache=True, inline="always")
def sos_step(v, sos, zi):
    """One sample through a biquad cascade (transposed direct form II), float64 state
    zi[S, 2] updated in place; shared by `sos_filter` and the loudness meter."""
    for s in range(sos.shape[0]):
        v, zi[s, 0], zi[s, 1] = biquad_step(v, biquad_row(sos, s), zi[s, 0], zi[s, 1])
    return v


@njit(cache=True)
def sos_filter(x, sos, zi, out):
    """Cascade of biquads, transposed direct form II (as scipy's sosfilt), float64 state.

    x: float[n]; sos: float64[S, 6] rows (b0, b1, b2, 1, a1, a2); zi: float64[S, 2] state,
    updated in place so consecutive calls equal one call on the concatenation; out: [n].
    """
    for n in range(x.size):
        out[n] = sos_step(np.float64(x[n]), sos, zi)


def steady_state(sos: np.ndarray, x0: float) -> np.ndarray:
    """float64[S, 2] state of `sos_filter` after a constant input x0 forever (the same as
    scipy's sosfilt_zi(sos) · x0), so a filter starts without a step transient."""
    zi = np.empty((sos.shape[0], 2), np.float64)
    v = float(x0)
    for s, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        y = v * (b0 + b1 + b2) / (1.0 + a1 + a2)  # DC gain
        zi[s, 1] = b2 * v - a2 * y
        zi[s, 0] = b1 * v - a1 * y + zi[s, 1]
        v = y
    return zi


class HighPass:
    """Streaming 2nd-order Butterworth high-pass (default 80 Hz) for the activity energy.

    Speech carries no information below ~80 Hz (G.729 Annex B and the WebRTC VAD also
    discard it), while rumble, drift and brown noise put most of their energy there: a
    random walk's frame energy swings by 20–30 dB as it wanders through zero, which an
    energy detector would take for speech. Filter the 16 kHz mono signal with this before
    the frame RMS that feeds `active_frames`; keep the unfiltered RMS/peak for the stats.
    The state starts as if the first sample had always been there, so a file that opens
    on a DC offset does not start with a click.
    """

    def __init__(self, sample_rate: int = 16000, cutoff_hz: float = 80.0):
        if not 0 < cutoff_hz < sample_rate / 2:
            raise ValueError(f"HighPass: cutoff {cutoff_hz} Hz must lie in (0, {sample_rate / 2})")
        self.sos = highpass_sos(sample_rate, cutoff_hz)
        self.zi: np.ndarray | None = None

    def process(self, block: np.ndarray) -> np.ndarray:
        """float32[n] → float32[n] filtered; state carries over to the next call."""
        x = _f32_1d(block, "HighPass.process block")
        out = np.empty_like(x)
        if x.size == 0:
            return out
        if self.zi is None:
            self.zi = steady_state(self.sos, x[0])
        sos_filter(x, self.sos, self.zi, out)
        return out


def lowpass_sos(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """float64[1, 6] second-order Butterworth low-pass (RBJ cookbook, Q = 1/√2; the same as
    scipy.signal.butter(2, ..., 'low'))."""
    w0 = 2.0 * math.pi * cutoff_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * (1.0 / math.sqrt(2.0)))
    cw = math.cos(w0)
    a0 = 1.0 + alpha
    sos = [(1.0 - cw) / 2.0, 1.0 - cw, (1.0 - cw) / 2.0, a0, -2.0 * cw, 1.0 - alpha]
    return (np.array(sos, np.float64) / a0).reshape(1, 6)


@njit(cache=True)
def _band_powers(x, hp, lp, zi_hp, zi_lp, acc, frame, out, start):
    """High-pass each sample, split off its low band, and sum both powers per frame.

    acc: float64[3] (speech-band sum, low-band sum, samples so far) of the open frame,
    carried across calls; out: float64[2, ≥ start + frames]; returns the frames written.
    """
    f = start
    for i in range(x.size):
        y = sos_step(np.float64(x[i]), hp, zi_hp)
        lo = sos_step(y, lp, zi_lp)
        acc[0] += y * y
        acc[1] += lo * lo
        acc[2] += 1.0
        if acc[2] == frame:
            out[0, f] = acc[0] / frame
            out[1, f] = acc[1] / frame
            f += 1
            acc[0] = 0.0
            acc[1] = 0.0
            acc[2] = 0.0
    return f - start


class SpeechBands:
    """Streaming frame energies for `active_frames`: the 80 Hz high-passed speech band and
    its part under `split_hz` (1 kHz), in one pass over the samples.

    Speech carries no information below ~80 Hz (G.729 Annex B and the WebRTC VAD also
    discard it), while rumble, drift and brown noise put most of their energy there: a
    random walk's frame energy swings by 20–30 dB as it wanders through zero, which an
    energy detector would take for speech. The low band is where voiced speech (its
    fundamental and first formant) stands highest over white, pink and babble-like noise.
    One Numba loop filters, splits and sums, carrying partial frames across blocks, so the
    second band costs less than the separate high-pass, copy and frame RMS it replaced
    (measured in docs/PREPROCESS.md "Speech activity"). The high-pass starts as if the
    first sample had always been there, so a file that opens on a DC offset has no click.
    """

    BANDS = 2

    def __init__(
        self,
        sample_rate: int = 16000,
        frame: int = 320,
        highpass_hz: float = 80.0,
        split_hz: float = 1000.0,
    ):
        if not 0 < highpass_hz < split_hz < sample_rate / 2:
            raise ValueError(
                f"SpeechBands: need 0 < high-pass {highpass_hz} < split {split_hz} < "
                f"{sample_rate / 2} Hz"
            )
        if frame <= 0:
            raise ValueError(f"SpeechBands: frame must be positive, got {frame}")
        self.frame = int(frame)
        self.hp = highpass_sos(sample_rate, highpass_hz)
        self.lp = lowpass_sos(sample_rate, split_hz)
        self.zi_hp: np.ndarray | None = None
        self.zi_lp = np.zeros((1, 2), np.float64)
        self.acc = np.zeros(3, np.float64)
        self.parts: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Feed float32[n] 16 kHz mono samples; state carries over to the next call."""
        x = _f32_1d(block, "SpeechBands.add block")
        if x.size == 0:
            return
        if self.zi_hp is None:
            self.zi_hp = steady_state(self.hp, x[0])
        out = np.empty((2, (int(self.acc[2]) + x.size) // self.frame), np.float64)
        n = _band_powers(x, self.hp, self.lp, self.zi_hp, self.zi_lp, self.acc, self.frame, out, 0)
        if n:
            self.parts.append(out[:, :n])

    def powers(self) -> np.ndarray:
        """float64[2, F] mean power per complete frame: [speech band, low band]."""
        if not self.parts:
            return np.zeros((2, 0), np.float64)
        return np.concatenate(self.parts, axis=1)

    def db(self) -> np.ndarray:
        """float32[2, F] the same in dBFS (10·log10, power floored at 1e-24: −240 dB)."""
        return self.power_db(self.powers())

    @staticmethod
    def power_db(powers: np.ndarray) -> np.ndarray:
        """float64[2, F] band powers → float32[2, F] dBFS, as `db` gives them."""
        return (10.0 * np.log10(np.maximum(powers, 1e-24))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Speech activity: energy against an adaptive noise floor (minimum statistics)
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _smoothed_power(db, gate_db, abs_floor_db, half):
    """Mean power within ±half frames (edges truncated); frames whose speech-band energy
    `gate_db` is at or below the absolute floor (or NaN) count as the floor itself: they are
    evidence of a quiet background (digital silence)."""
    n = db.size
    floor_power = 10.0 ** (abs_floor_db / 10.0)
    power = np.empty(n, np.float64)
    for t in range(n):
        power[t] = 10.0 ** (np.float64(db[t]) / 10.0) if gate_db[t] > abs_floor_db else floor_power
    out = np.empty(n, np.float64)
    for t in range(n):
        acc = 0.0
        lo = max(0, t - half)
        hi = min(n, t + half + 1)
        for j in range(lo, hi):
            acc += power[j]
        out[t] = acc / (hi - lo)
    return out


@njit(cache=True)
def _sliding_min(x, half):
    """min(x[t−half : t+half+1]) for every t (edges truncated), monotonic deque, O(n)
    (Lemire 2006)."""
    n = x.size
    out = np.empty(n, np.float64)
    dq = np.empty(n, np.int64)  # indices with increasing values
    head = 0
    tail = 0
    for i in range(n + half):
        if i < n:
            while tail > head and x[dq[tail - 1]] >= x[i]:
                tail -= 1
            dq[tail] = i
            tail += 1
        t = i - half
        if t >= 0:
            while dq[head] < t - half:
                head += 1
            out[t] = x[dq[head]]
    return out


@njit(cache=True)
def _fill_gaps(active, max_gap):
    """Set gaps of ≤ max_gap inactive frames between two active frames (hangover)."""
    last = -1  # last active frame seen
    for t in range(active.size):
        if active[t]:
            if last >= 0 and 0 < t - last - 1 <= max_gap:
                for j in range(last + 1, t):
                    active[j] = True
            last = t


@njit(cache=True)
def _drop_short_runs(active, min_len):
    """Clear active runs shorter than min_len frames (isolated clicks and bursts)."""
    n = active.size
    t = 0
    while t < n:
        if active[t]:
            start = t
            while t < n and active[t]:
                t += 1
            if t - start < min_len:
                for j in range(start, t):
                    active[j] = False
        else:
            t += 1


@njit(cache=True)
def _active_frames(db, margin_db, abs_floor_db, smooth_half, window_half, max_gap, min_burst):
    """db: float32[B, F], band 0 the whole speech band. A frame is active when, in some band,
    both its own power and its smoothed power clear that band's floor by the margin."""
    n = db.shape[1]
    active = np.zeros(n, np.bool_)
    ratio = 10.0 ** (margin_db / 10.0)
    for b in range(db.shape[0]):
        smoothed = _smoothed_power(db[b], db[0], abs_floor_db, smooth_half)
        floor = _sliding_min(smoothed, window_half)
        for t in range(n):
            if db[0, t] > abs_floor_db:
                limit = floor[t] * ratio
                power = 10.0 ** (np.float64(db[b, t]) / 10.0)
                if power > limit and smoothed[t] > limit:
                    active[t] = True
    _fill_gaps(active, max_gap)
    _drop_short_runs(active, min_burst)
    return active


def _frames(seconds: float, frame_seconds: float) -> int:
    return max(0, int(round(seconds / frame_seconds)))


def active_frames(
    frame_db: np.ndarray,
    margin_db: float = 6.0,
    abs_floor_db: float = -100.0,
    *,
    frame_seconds: float = 0.02,
    window_seconds: float = 1.5,
    smooth_seconds: float = 0.1,
    fill_gap_seconds: float = 0.1,
    min_burst_seconds: float = 0.04,
) -> np.ndarray:
    """Speech-activity mask of one file from its frame energies → bool[F].

    frame_db: float32[F] (one band) or float32[B, F] (`SpeechBands`: row 0 the 80 Hz–8 kHz
    speech band, row 1 its 80 Hz–1 kHz part), dBFS.

    Noise floor per band by minimum statistics (Martin 2001, "Noise power spectral density
    estimation based on optimal smoothing and minimum statistics"):
      1. smooth frame power over `smooth_seconds` (centred) so a noise floor's estimate has
         little variance; frames at or below `abs_floor_db` (digital silence, a noise
         gate's zeros) count as that floor, so the floor never sinks below it;
      2. the floor at frame t is the minimum of that over a centred `window_seconds` window:
         a window that long nearly always holds a pause between words, so the floor follows
         noise that drifts, and a file that starts mid-speech still finds its floor ahead;
      3. a frame is active if, in any band, both its power and its smoothed power exceed
         the band's floor by `margin_db`, and its speech-band energy is > `abs_floor_db`
         (the absolute floor gates frames by row 0 only: a low band of faint white noise
         may sit under it while the whole band does not);
      4. hangover: gaps ≤ `fill_gap_seconds` between active frames are filled, then active
         bursts shorter than `min_burst_seconds` are dropped.
    Why bands and a 6 dB margin (measured on real speech in noise, tests/e2e/test_noisy_speech.py
    and docs/PREPROCESS.md "Speech activity"): voiced speech puts most of its power under
    1 kHz, white or pink noise mostly above, so the low band holds speech 3–8 dB further
    over its floor than the whole band does (Sohn et al. 1999 and the WebRTC VAD decide
    per band for the same reason). A smoothed 100 ms power of stationary noise stays
    within ~3 dB of its own minimum (brown noise after the 80 Hz high-pass, the most
    variable, reads ≤ 3 dB), so 6 dB is enough where the old broadband 12 dB margin lost
    most speech frames at 10 dB SNR; requiring the frame's own power too keeps a lone
    click (smoothed into a 100 ms bump) out. Everything is relative, so scaling the file
    changes nothing while frames stay above `abs_floor_db`. Feed it the energies of
    high-passed audio (`SpeechBands`), or infrasonic noise looks active. O(B·F).
    """
    db = np.asarray(frame_db, dtype=np.float32)
    if db.ndim == 1:
        db = db.reshape(1, -1)
    if db.ndim != 2 or db.shape[0] < 1:
        raise ValueError(f"active_frames: expected float32[F] or [B, F], got shape {db.shape}")
    db = np.ascontiguousarray(db)
    if frame_seconds <= 0 or window_seconds <= 0 or smooth_seconds < 0:
        raise ValueError("active_frames: frame, window and smoothing durations must be > 0")
    return _active_frames(
        db,
        float(margin_db),
        float(abs_floor_db),
        _frames(smooth_seconds, frame_seconds) // 2,
        _frames(window_seconds, frame_seconds) // 2,
        _frames(fill_gap_seconds, frame_seconds),
        _frames(min_burst_seconds, frame_seconds),
    )


# ---------------------------------------------------------------------------------------
# Trimming, speech regions and utterance cutting
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _first_last(active):
    first = -1
    last = -1
    for t in range(active.size):
        if active[t]:
            if first < 0:
                first = t
            last = t
    return first, last


def trim_bounds(active: np.ndarray, margin_frames: int) -> tuple[int, int]:
    """Half-open frame range [start, end) to keep: first active frame − margin to last
    active frame + 1 + margin, clamped to [0, F]; (0, 0) when no frame is active."""
    a = np.ascontiguousarray(active, dtype=np.bool_)
    first, last = _first_last(a)
    if first < 0:
        return 0, 0
    return max(0, int(first) - margin_frames), min(a.size, int(last) + 1 + margin_frames)


def speech_regions(active: np.ndarray, margin_frames: int, min_pause_frames: int) -> np.ndarray:
    """Frame ranges of speech, one per utterance-to-be: int64[K, 2] half-open [start, end).

    Active runs separated by fewer than `min_pause_frames` inactive frames stay one region
    (a short pause is part of the speech); a longer pause ends one region and starts the
    next. Each region is widened by `margin_frames` on both sides, clamped to [0, F], and
    where two widened neighbours would overlap they meet at the middle of their pause, so
    no frame is in two regions. Empty when no frame is active. Vectorised numpy, O(F).
    """
    if margin_frames < 0 or min_pause_frames < 1:
        raise ValueError(
            f"speech_regions: need margin ≥ 0 and pause ≥ 1 frame, got {margin_frames}, "
            f"{min_pause_frames}"
        )
    a = np.ascontiguousarray(active, dtype=np.bool_)
    edges = np.diff(np.concatenate([[0], a.view(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1).astype(np.int64)
    ends = np.flatnonzero(edges == -1).astype(np.int64)
    if starts.size == 0:
        return np.zeros((0, 2), np.int64)
    split = starts[1:] - ends[:-1] >= min_pause_frames  # the pause after run i ends region
    first = starts[np.concatenate([[True], split])]
    last = ends[np.concatenate([split, [True]])]
    mid = (last[:-1] + first[1:]) // 2  # the middle of each splitting pause
    lo = np.maximum(first - margin_frames, 0)
    hi = np.minimum(last + margin_frames, a.size)
    lo[1:] = np.maximum(lo[1:], mid)  # changes only where the margins would overlap
    hi[:-1] = np.minimum(hi[:-1], mid)
    return np.stack([lo, hi], axis=1)


def utterance_plan(regions: np.ndarray, max_len: int, min_len: int) -> np.ndarray:
    """Sample ranges [start, end) → utterances: int64[U, 2] rows (offset, n).

    A region longer than `max_len` is cut into ceil(len / max_len) near-equal pieces (each
    ≤ max_len, lengths differing by at most one sample), so no piece is a sliver; pieces
    shorter than `min_len` are dropped. Rows in order of offset. Vectorised numpy.
    """
    if max_len <= 0 or min_len < 0:
        raise ValueError(f"utterance_plan: need max_len > 0, min_len ≥ 0, got {max_len}, {min_len}")
    r = np.asarray(regions, dtype=np.int64).reshape(-1, 2)
    length = np.maximum(r[:, 1] - r[:, 0], 0)
    pieces = -(-length // max_len)
    which = np.repeat(np.arange(r.shape[0]), pieces)
    j = np.arange(which.size, dtype=np.int64) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    n_len, k = length[which], pieces[which]
    lo = r[which, 0] + j * n_len // k
    hi = r[which, 0] + (j + 1) * n_len // k
    keep = hi - lo >= max(min_len, 1)
    return np.stack([lo[keep], (hi - lo)[keep]], axis=1).reshape(-1, 2)


@njit(cache=True)
def _segment_pcm(src, dc, gain, scale, out):
    """0 when done, 1 at a non-finite sample (out is then partly written)."""
    n = src.shape[0]
    for i in range(n):
        v = (src[i] - dc) * gain  # float32, as numpy computes it on float32 arrays
        if not math.isfinite(v):
            return 1
        if v > 1.0:
            v = np.float32(1.0)
        elif v < -1.0:
            v = np.float32(-1.0)
        out[i] = np.int16(np.rint(np.float64(v) * scale))
    for i in range(n, out.shape[0]):
        out[i] = 0
    return 0


def segment_pcm(src: np.ndarray, dc: float, gain: float, segment: int) -> np.ndarray:
    """float32[n_valid] → int16[segment]: DC removed, gain applied, clipped to full scale,
    rounded to 16-bit PCM and zero-padded; the validity run is [0, n_valid). An utterance
    is cut with `segment = n_valid`: no padding.

    One pass where numpy took five (subtract, multiply, clip, pad, then float64 round):
    ≈0.1 of ≈0.55 ms per 1 s segment. Bit-identical to that numpy chain, float32
    arithmetic and round-half-even included (tests/unit/test_kernels.py). A non-finite sample
    raises ValueError.
    """
    src = _f32_1d(src, "segment_pcm src")
    if src.shape[0] > segment:
        raise ValueError(f"segment_pcm: {src.shape[0]} samples do not fit a {segment} segment")
    out = np.empty(segment, np.int16)
    # The scale is an argument, not a global: Numba's cache would keep a stale global.
    if _segment_pcm(src, np.float32(dc), np.float32(gain), np.float64(INT16_SCALE), out):
        raise ValueError("segment_pcm: non-finite sample")
    return out
