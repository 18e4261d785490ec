"""Streaming ITU-R BS.1770-4 integrated loudness, for loudness normalisation of kept files.

The scan sees a file once, in blocks, and must not hold it: so the K-weighted signal is
reduced on the fly to one mean square per 100 ms sub-block (10 floats per second of audio),
which is all the gating needs — a 400 ms gating block with 75 % overlap is the mean of four
consecutive sub-blocks. The pipeline then gates on its own speech-activity mask instead of
the −70 LUFS absolute gate (docs/CONTRACTS.md), so very quiet speech is measured on its
speech and can be rescued. Mono only: the pipeline downmixes first, and a mono channel's
BS.1770 weight is 1.0. Verified against pyloudnorm (tests/unit/test_loudness.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from preprocess.measure.kernels import sos_filter, sos_step

__all__ = [
    "KWeighting",
    "LoudnessMeter",
    "active_blocks",
    "block_powers",
    "gated_loudness",
    "integrated_loudness",
    "kweighting_sos",
    "normalize_loudness",
]

# BS.1770-4 eq. 2: L = −0.691 + 10·log10(Σ G_i·z_i); the offset makes a 997 Hz sine at
# 0 dBFS read −3.01 LKFS after K-weighting.
LOUDNESS_OFFSET = -0.691
SUBBLOCK_PER_SECOND = 10  # 100 ms sub-blocks
SUBBLOCKS_PER_BLOCK = 4  # 400 ms gating blocks, 75 % overlap (BS.1770-4 §2.1)


def _rbj_high_shelf(sample_rate: int, fc: float, gain_db: float, q: float) -> list[float]:
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * fc / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    cw = math.cos(w0)
    sa = 2.0 * math.sqrt(a) * alpha
    return [
        a * ((a + 1) + (a - 1) * cw + sa),
        -2 * a * ((a - 1) + (a + 1) * cw),
        a * ((a + 1) + (a - 1) * cw - sa),
        (a + 1) - (a - 1) * cw + sa,
        2 * ((a - 1) - (a + 1) * cw),
        (a + 1) - (a - 1) * cw - sa,
    ]


def _rbj_high_pass(sample_rate: int, fc: float, q: float) -> list[float]:
    w0 = 2.0 * math.pi * fc / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    cw = math.cos(w0)
    return [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2, 1 + alpha, -2 * cw, 1 - alpha]


def kweighting_sos(sample_rate: int) -> np.ndarray:
    """float64[2, 6] K-weighting biquads for any sample rate, rows (b0, b1, b2, 1, a1, a2).

    BS.1770-4 gives the two stages only as 48 kHz coefficients; like pyloudnorm's default
    'K-weighting' we derive them at any rate from their analog prototypes with the RBJ
    cookbook (bilinear transform, pre-warped): stage 1, the head's acoustic effect, a
    +4 dB high shelf at 1500 Hz, Q = 1/√2; stage 2, the RLB curve, a high-pass at 38 Hz,
    Q = 0.5. At 48 kHz the response is within 0.05 dB of the standard's table above 20 Hz.
    """
    if sample_rate <= 3000:
        raise ValueError(
            f"kweighting_sos: sample_rate {sample_rate} Hz puts the 1500 Hz shelf "
            "above Nyquist; expected > 3000 Hz"
        )
    stages = [
        _rbj_high_shelf(sample_rate, 1500.0, 4.0, 1.0 / math.sqrt(2.0)),
        _rbj_high_pass(sample_rate, 38.0, 0.5),
    ]
    return np.array([np.array(s) / s[3] for s in stages], dtype=np.float64)


class KWeighting:
    """Streaming K-weighting filter: state carries across calls (one call ≡ many)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = int(sample_rate)
        self.sos = kweighting_sos(self.sample_rate)
        self.zi = np.zeros((2, 2), np.float64)

    def process(self, block: np.ndarray) -> np.ndarray:
        """float32[n] → float64[n] K-weighted samples."""
        x = _mono_f32(block, "KWeighting.process block")
        out = np.empty(x.size, np.float64)
        sos_filter(x, self.sos, self.zi, out)
        return out


@njit(cache=True)
def _kweighted_subblocks(x, sos, zi, acc, pos, sample_rate, out):
    """K-weight x and close 100 ms sub-blocks as they complete.

    acc[0]: running Σy² of the open sub-block; pos[0]: samples in it; pos[1]: its index k.
    Sub-block k spans samples [⌊k·fs/10⌋, ⌊(k+1)·fs/10⌋), exact for any integer rate.
    Writes mean squares into out and returns how many were written.
    """
    written = 0
    length = (pos[1] + 1) * sample_rate // 10 - pos[1] * sample_rate // 10
    for n in range(x.size):
        v = sos_step(np.float64(x[n]), sos, zi)
        acc[0] += v * v
        pos[0] += 1
        if pos[0] == length:
            out[written] = acc[0] / length
            written += 1
            acc[0] = 0.0
            pos[0] = 0
            pos[1] += 1
            length = (pos[1] + 1) * sample_rate // 10 - pos[1] * sample_rate // 10
    return written


class LoudnessMeter:
    """Accumulates the K-weighted mean square of each complete 100 ms sub-block of a mono
    stream; the open sub-block carries over to the next `add`. Memory: 8 bytes per 100 ms.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = int(sample_rate)
        self.sos = kweighting_sos(self.sample_rate)
        self._zi = np.zeros((2, 2), np.float64)
        self._acc = np.zeros(1, np.float64)
        self._pos = np.zeros(2, np.int64)
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    def add(self, block: np.ndarray) -> None:
        """Feed float32[n] mono samples (any n, including 0)."""
        x = _mono_f32(block, "LoudnessMeter.add block")
        out = np.empty(x.size // (self.sample_rate // SUBBLOCK_PER_SECOND) + 1, np.float64)
        k = _kweighted_subblocks(x, self.sos, self._zi, self._acc, self._pos, self.sample_rate, out)
        if k:
            self._chunks.append(out[:k].copy())
        self.samples += x.size

    def quarter_powers(self) -> np.ndarray:
        """float64[Q]: K-weighted mean square of each complete 100 ms sub-block so far."""
        if not self._chunks:
            return np.zeros(0, np.float64)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0].copy()


def _mono_f32(block: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(block, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected mono float32[n] (downmix first), got {x.shape}")
    return x


def block_powers(quarter_powers: np.ndarray) -> np.ndarray:
    """float64[Q] sub-block powers → float64[B] powers z_j of the 400 ms gating blocks
    with 75 % overlap, B = max(Q − 3, 0): block j is sub-blocks j..j+3 (BS.1770-4 eq. 1)."""
    q = np.asarray(quarter_powers, dtype=np.float64)
    n_blocks = q.size - SUBBLOCKS_PER_BLOCK + 1
    if n_blocks <= 0:
        return np.zeros(0, np.float64)
    return (q[:-3] + q[1:-2] + q[2:-1] + q[3:]) / SUBBLOCKS_PER_BLOCK


def _lufs(power: float) -> float:
    return LOUDNESS_OFFSET + 10.0 * math.log10(power) if power > 0 else -math.inf


def gated_loudness(
    quarter_powers: np.ndarray,
    select: np.ndarray | None = None,
    absolute_gate_lufs: float = -70.0,
    relative_gate_lu: float = -10.0,
) -> float:
    """Gated integrated loudness (LUFS) from 100 ms sub-block powers, BS.1770-4 §2.1–2.8.

    quarter_powers: float64[Q] from `LoudnessMeter`. select: bool[B] (B = Q − 3), one per
    400 ms block, or None. Blocks are gated first by the absolute gate (block loudness
    > −70 LUFS) — or, when `select` is given, by `select` instead (the pipeline's "mostly
    active frames", so quiet speech below −70 LUFS is still measured) — then by the relative
    gate: loudness > (loudness of the mean power of the first-gated blocks) − 10 LU. The
    result is the loudness of the mean power of the blocks that pass both; −inf if none.
    """
    z = block_powers(quarter_powers)
    if select is None:
        first = z > 10.0 ** ((absolute_gate_lufs - LOUDNESS_OFFSET) / 10.0)
    else:
        first = np.asarray(select, dtype=np.bool_)
        if first.shape != z.shape:
            raise ValueError(
                f"gated_loudness: select has shape {first.shape}, expected ({z.size},): one "
                f"per 400 ms block of {np.size(quarter_powers)} sub-blocks"
            )
    if not first.any():
        return -math.inf
    relative_power = float(z[first].mean()) * 10.0 ** (relative_gate_lu / 10.0)
    passed = first & (z > relative_power)
    if not passed.any():
        return -math.inf
    return _lufs(float(z[passed].mean()))


def active_blocks(
    active: np.ndarray,
    frames_per_quarter: int,
    n_blocks: int,
    min_active_fraction: float = 0.5,
) -> np.ndarray:
    """bool[F] frame activity → bool[n_blocks]: does 400 ms block j have more than
    `min_active_fraction` of its frames (frames j·fpq … (j+4)·fpq) active? Frames past
    the end of `active` count as inactive. frames_per_quarter: 5 for 20 ms frames."""
    a = np.asarray(active, dtype=np.bool_)
    per_block = SUBBLOCKS_PER_BLOCK * frames_per_quarter
    need = (n_blocks + SUBBLOCKS_PER_BLOCK - 1) * frames_per_quarter
    padded = np.zeros(max(need, 0), np.int64)
    m = min(a.size, padded.size)
    padded[:m] = a[:m]
    csum = np.concatenate([[0], np.cumsum(padded)])
    starts = np.arange(n_blocks) * frames_per_quarter
    counts = csum[starts + per_block] - csum[starts]
    return counts > min_active_fraction * per_block


def integrated_loudness(x: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of mono float32[N]; −inf for silence or < 400 ms."""
    meter = LoudnessMeter(sample_rate)
    meter.add(x)
    return gated_loudness(meter.quarter_powers())


def normalize_loudness(
    x: np.ndarray,
    sample_rate: int,
    target_lufs: float = -23.0,
    peak_limit_dbfs: float = -1.0,
    lufs: float | None = None,
) -> np.ndarray | None:
    """Mono float32[N] scaled to `target_lufs` (BS.1770-4 integrated loudness, absolute gate),
    then down to a `peak_limit_dbfs` sample peak if that made it louder: how recordings that
    never went through the pipeline are brought to the level of the training corpus before
    a codec scores them (the defaults are PreprocessConfig's target_lufs and
    peak_limit_dbfs). None when no 400 ms block passes the gates (silence, or shorter than
    400 ms): such audio has no loudness to normalize to. `lufs`: its integrated loudness,
    when the caller has measured it already."""
    if lufs is None:
        lufs = integrated_loudness(x, sample_rate)
    if not math.isfinite(lufs):
        return None
    out = np.asarray(x, dtype=np.float32) * np.float32(10.0 ** ((target_lufs - lufs) / 20.0))
    peak, limit = float(np.abs(out).max()), 10.0 ** (peak_limit_dbfs / 20.0)
    return out * np.float32(limit / peak) if peak > limit else out
