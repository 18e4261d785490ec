"""Every streaming measurement of a file's 16 kHz mono samples in one Numba pass per block.

The scan measures each block four ways: moments (Σx, Σx², min, max), each 20 ms frame's
RMS, the speech-activity band powers (`kernels.SpeechBands`: an 80 Hz high-pass
and its part under 1 kHz) and the K-weighted 100 ms powers of BS.1770
(`loudness.LoudnessMeter`). The two filters are biquad cascades whose per-sample
recurrence is latency-bound (each output waits on the previous one), so one loop
that runs both lets the CPU overlap their dependency chains, and the moments and frame
RMS ride along for free. Measured on 10 min of noise in 10 s blocks: bands
0.31 + loudness 0.29 CPU-s per audio-hour apart, 0.32 together; on the mission-shaped WAV
corpus the check stages went from 1.0 to 0.56 CPU-s/h (docs/BENCHMARKS.md §4).

The results are bit-identical to the separate meters (the same float64 operations in the
same order; tests/unit/test_meters.py), which stay the reference and the API for one
measurement alone.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from preprocess.measure import kernels
from preprocess.measure.loudness import SUBBLOCK_PER_SECOND, kweighting_sos

# The carried state, float64[_STATE]: filter memories, then the open frame's and the open
# 100 ms sub-block's partial sums.
_HP0, _HP1, _LP0, _LP1, _KA0, _KA1, _KB0, _KB1 = range(8)
_FRAME_SQ, _BAND_HI, _BAND_LO, _FRAME_N = range(8, 12)
_SUB_SQ, _SUB_N, _SUB_K = range(12, 15)
_STATE = 15


@njit(cache=True, inline="always")
def _sub_block_length(k, sample_rate):
    """Samples in 100 ms sub-block k: [⌊k·fs/10⌋, ⌊(k+1)·fs/10⌋), exact for any rate."""
    return (k + 1) * sample_rate // SUBBLOCK_PER_SECOND - k * sample_rate // SUBBLOCK_PER_SECOND


@njit(cache=True)
def _one_pass(x, frame, hp, lp, kw, sample_rate, st, frames_out, sub_out):
    """x: float32[n]; hp, lp: float64[1, 6] and kw: float64[2, 6] biquad rows (b0, b1, b2,
    1, a1, a2); st: float64[_STATE], updated; frames_out: float64[3, ≥ frames closed]
    rows (RMS, speech-band power, low-band power); sub_out: float64[≥ sub-blocks
    closed]. Returns (frames, sub-blocks, Σx, Σx², min, max)."""
    c_hp, c_lp = kernels.biquad_row(hp, 0), kernels.biquad_row(lp, 0)
    c_ka, c_kb = kernels.biquad_row(kw, 0), kernels.biquad_row(kw, 1)
    hz0, hz1, lz0, lz1 = st[_HP0], st[_HP1], st[_LP0], st[_LP1]
    ka0, ka1, kb0, kb1 = st[_KA0], st[_KA1], st[_KB0], st[_KB1]
    f_sq = st[_FRAME_SQ]
    s_hi, s_lo, f_n = st[_BAND_HI], st[_BAND_LO], np.int64(st[_FRAME_N])
    q_sq, q_n, q_k = st[_SUB_SQ], np.int64(st[_SUB_N]), np.int64(st[_SUB_K])
    q_len = _sub_block_length(q_k, sample_rate)
    s, ss = 0.0, 0.0
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    n_frames, n_subs = 0, 0
    for i in range(x.size):
        v32 = x[i]
        v = np.float64(v32)
        # moments and the raw frame's RMS (kernels.moments, kernels.frame_rms_peak)
        s, ss, lo, hi = kernels.moments_step(v32, s, ss, lo, hi)
        f_sq += v * v
        # speech bands (kernels._band_powers): 80 Hz high-pass, then its low band
        y, hz0, hz1 = kernels.biquad_step(v, c_hp, hz0, hz1)
        w, lz0, lz1 = kernels.biquad_step(y, c_lp, lz0, lz1)
        s_hi += y * y
        s_lo += w * w
        # K-weighting, two stages (loudness._kweighted_subblocks)
        k, ka0, ka1 = kernels.biquad_step(v, c_ka, ka0, ka1)
        kk, kb0, kb1 = kernels.biquad_step(k, c_kb, kb0, kb1)
        q_sq += kk * kk
        f_n += 1
        if f_n == frame:
            frames_out[0, n_frames] = math.sqrt(f_sq / frame)
            frames_out[1, n_frames] = s_hi / frame
            frames_out[2, n_frames] = s_lo / frame
            n_frames += 1
            f_sq, s_hi, s_lo, f_n = 0.0, 0.0, 0.0, 0
        q_n += 1
        if q_n == q_len:
            sub_out[n_subs] = q_sq / q_len
            n_subs += 1
            q_sq, q_n, q_k = 0.0, 0, q_k + 1
            q_len = _sub_block_length(q_k, sample_rate)
    st[_HP0], st[_HP1], st[_LP0], st[_LP1] = hz0, hz1, lz0, lz1
    st[_KA0], st[_KA1], st[_KB0], st[_KB1] = ka0, ka1, kb0, kb1
    st[_FRAME_SQ] = f_sq
    st[_BAND_HI], st[_BAND_LO], st[_FRAME_N] = s_hi, s_lo, f_n
    st[_SUB_SQ], st[_SUB_N], st[_SUB_K] = q_sq, q_n, q_k
    return n_frames, n_subs, s, ss, lo, hi


class Meters:
    """Feed blocks with `add`; read the file's figures when it is done. State carries
    over between blocks, so any split of a file into blocks gives the same figures."""

    def __init__(self, sample_rate: int = 16000, frame: int = 320):
        self.bands = kernels.SpeechBands(sample_rate, frame)  # coefficients and the dB rule
        self.sample_rate = int(sample_rate)
        self.frame = int(frame)
        self.kw = kweighting_sos(self.sample_rate)
        self.state = np.zeros(_STATE, np.float64)
        self.samples = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._frames: list[np.ndarray] = []
        self._subs: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Feed float32[n] 16 kHz mono samples (any n, including 0)."""
        x = np.ascontiguousarray(block, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"Meters.add: expected mono float32[n], got {x.shape}")
        if x.size == 0:
            return
        if self.samples == 0:  # the high-pass starts as if x[0] had always been there
            self.state[[_HP0, _HP1]] = kernels.steady_state(self.bands.hp, x[0])[0]
        open_n = int(self.state[_FRAME_N])
        frames = np.empty((3, (open_n + x.size) // self.frame), np.float64)
        per_sub = self.sample_rate // SUBBLOCK_PER_SECOND
        subs = np.empty(x.size // per_sub + 1, np.float64)
        nf, nq, s, ss, lo, hi = _one_pass(
            x,
            self.frame,
            self.bands.hp,
            self.bands.lp,
            self.kw,
            self.sample_rate,
            self.state,
            frames,
            subs,
        )
        if nf:
            self._frames.append(frames[:, :nf])
        if nq:
            self._subs.append(subs[:nq])
        self.samples += x.size
        self.sum += float(s)
        self.sumsq += float(ss)
        self.min = min(self.min, float(lo))
        self.max = max(self.max, float(hi))

    def _frame_rows(self) -> np.ndarray:
        if not self._frames:
            return np.zeros((3, 0), np.float64)
        if len(self._frames) > 1:
            self._frames = [np.concatenate(self._frames, axis=1)]
        return self._frames[0]

    def frame_rms(self) -> np.ndarray:
        """float32[F] RMS of each complete frame (as `kernels.frame_rms_peak`)."""
        return self._frame_rows()[0].astype(np.float32)

    def band_db(self) -> np.ndarray:
        """float32[2, F] speech-band and low-band power in dBFS (as `SpeechBands.db`)."""
        return kernels.SpeechBands.power_db(self._frame_rows()[1:])

    def quarter_powers(self) -> np.ndarray:
        """float64[Q] K-weighted mean square of each complete 100 ms sub-block (as
        `LoudnessMeter.quarter_powers`)."""
        return np.concatenate(self._subs) if self._subs else np.zeros(0, np.float64)
