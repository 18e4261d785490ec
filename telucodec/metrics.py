"""Evaluation metrics over valid (mask == 1) samples only, accumulated in float64.

Per item: masked SNR = 10 log10(Σ m·ref² / Σ m·(ref − est)²). An item whose valid part is
empty, or whose mean square over valid samples is below `gate_db` dBFS (default −60), has no
meaningful SNR: it is reported as NaN and counted in `n_gated`, never averaged in. Over a
set, `global_snr_db` divides the summed signal energy by the summed error energy, so a few
near-silent items cannot dominate the figure. A perfect reconstruction is capped at
`MAX_DB` rather than +inf, so means stay finite.

Inputs may be numpy arrays or torch tensors, shaped [B x T] or [B x 1 x T]; mask is bool or
0/1 of shape [B x T]. Padding (mask 0) never changes a metric, whatever its samples hold.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from telucodec.mel import frame_mask, magnitude_frames, mel_filterbank

MAX_DB = 200.0  # the reported SNR of an exact reconstruction
DEFAULT_GATE_DB = -60.0
# (n_fft, n_mels) of the masked mel distance, hop n_fft // 4; fixed so numbers stay comparable.
MEL_RESOLUTIONS = ((256, 32), (512, 64), (1024, 80))
MEL_FLOOR = 1e-5


def _as_2d_float64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be [B x T] or [B x 1 x T], got {x.shape}")
        x = x[:, 0]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [B x T] or [B x 1 x T], got {x.shape}")
    return x


def _inputs(ref, est, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref, est = _as_2d_float64(ref, "ref"), _as_2d_float64(est, "est")
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(bool)
    if not ref.shape == est.shape == mask.shape:
        raise ValueError(f"shapes differ: ref {ref.shape}, est {est.shape}, mask {mask.shape}")
    # Zero padding outright: NaN or Inf in padding must not poison the sums.
    return np.where(mask, ref, 0.0), np.where(mask, est, 0.0), mask


def masked_energies(ref, est, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item (signal Σ m·ref², error Σ m·(ref − est)², n_valid Σ m):
    float64[B], float64[B], int64[B]."""
    ref, est, mask = _inputs(ref, est, mask)
    signal = np.sum(ref * ref, axis=1)
    diff = ref - est
    error = np.sum(diff * diff, axis=1)
    return signal, error, mask.sum(axis=1).astype(np.int64)


def _gated(signal: np.ndarray, n_valid: np.ndarray, gate_db: float) -> np.ndarray:
    mean_square = signal / np.maximum(n_valid, 1)
    return (n_valid == 0) | (mean_square < 10.0 ** (gate_db / 10.0))


def _ratio_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.maximum(np.asarray(den, dtype=np.float64), num * 10.0 ** (-MAX_DB / 10.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(num / den)


def snr_from_energies(
    signal, error, n_valid, gate_db: float = DEFAULT_GATE_DB
) -> tuple[np.ndarray, int]:
    """(per-item SNR dB float64[B], NaN where gated; number gated). Gated: n_valid == 0 or
    mean square over valid samples below gate_db dBFS."""
    signal = np.asarray(signal, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    n_valid = np.asarray(n_valid)
    gated = _gated(signal, n_valid, gate_db)
    snr = np.where(gated, np.nan, _ratio_db(np.where(gated, 1.0, signal), error))
    return snr, int(gated.sum())


def masked_snr_db(ref, est, mask, gate_db: float = DEFAULT_GATE_DB) -> tuple[np.ndarray, int]:
    """Per-item masked SNR: (float64[B] with NaN for gated items, n_gated)."""
    return snr_from_energies(*masked_energies(ref, est, mask), gate_db=gate_db)


def global_snr_db(signal_sum: float, error_sum: float) -> float:
    """SNR of a whole set from summed energies (power-summed); NaN when there is no signal."""
    if not signal_sum > 0:
        return float("nan")
    return float(_ratio_db(signal_sum, error_sum))


def masked_si_sdr_db(ref, est, mask, gate_db: float = DEFAULT_GATE_DB) -> tuple[np.ndarray, int]:
    """Scale-invariant SDR over valid samples (Le Roux et al. 2019, without mean removal):
    α = Σ m·est·ref / Σ m·ref², SI-SDR = 10 log10(Σ m·(α ref)² / Σ m·(est − α ref)²).
    Returns (float64[B] with NaN for gated items, n_gated); gating as for masked_snr_db."""
    ref, est, mask = _inputs(ref, est, mask)
    signal = np.sum(ref * ref, axis=1)
    n_valid = mask.sum(axis=1)
    gated = _gated(signal, n_valid, gate_db)
    safe = np.where(gated, 1.0, signal)
    alpha = np.sum(est * ref, axis=1) / safe
    target = alpha[:, None] * ref
    noise = est - target
    sdr = _ratio_db(np.sum(target * target, axis=1), np.sum(noise * noise, axis=1))
    # alpha == 0 (est orthogonal to ref) has no target energy: report -MAX_DB, not -inf.
    sdr = np.where(np.isfinite(sdr), sdr, -MAX_DB)
    return np.where(gated, np.nan, sdr), int(gated.sum())


def masked_mel_distance(ref, est, mask, sample_rate: int = 16000) -> np.ndarray:
    """Multi-resolution log-mel distance: mean |log10 mel(ref) − log10 mel(est)| over
    mel bins and mostly-valid frames, averaged over MEL_RESOLUTIONS (n_fft 256/512/1024,
    hop n_fft/4, mels floored at 1e-5). float64[B]; NaN for an item with no valid frame
    at some resolution."""
    ref, est, mask = _inputs(ref, est, mask)
    ref_t, est_t, mask_t = torch.from_numpy(ref), torch.from_numpy(est), torch.from_numpy(mask)
    total = np.zeros(ref.shape[0])
    for n_fft, n_mels in MEL_RESOLUTIONS:
        hop = n_fft // 4
        bank = torch.from_numpy(np.array(mel_filterbank(n_fft, n_mels, sample_rate)))
        frames = frame_mask(mask_t, n_fft, hop).to(torch.float64)[:, None]
        m_ref = (bank @ magnitude_frames(ref_t, mask_t, n_fft, hop)).clamp(min=MEL_FLOOR).log10()
        m_est = (bank @ magnitude_frames(est_t, mask_t, n_fft, hop)).clamp(min=MEL_FLOOR).log10()
        num = ((m_ref - m_est).abs() * frames).sum(dim=(1, 2)).numpy()
        den = frames.sum(dim=(1, 2)).numpy() * n_mels
        with np.errstate(divide="ignore", invalid="ignore"):
            total += np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return total / len(MEL_RESOLUTIONS)


# Perceptual per-item figures: wideband PESQ (ITU-T P.862.2) and STOI (Taal et al. 2011).
PERCEPTUAL = ("pesq_wb", "stoi")
PESQ_RATE = 16000  # P.862.2 is defined at 16 kHz only
MIN_PERCEPTUAL_SECONDS = 0.25  # below this neither measure has enough frames


def perceptual_scores(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(PESQ-WB, STOI) of one item, ref/est float[T] holding real audio only (padding cut
    off, est aligned to ref). NaN where a measure cannot score it (too short, silent, no
    utterance found): counted as missing by MetricSums, never as a bad score. Audio at
    another rate is resampled to 16 kHz for PESQ (soxr HQ); STOI resamples internally."""
    from pesq import pesq
    from pystoi import stoi

    ref = np.asarray(ref, dtype=np.float32)
    est = np.asarray(est, dtype=np.float32)
    if ref.size < MIN_PERCEPTUAL_SECONDS * sample_rate or not np.isfinite(est).all():
        return float("nan"), float("nan")
    r16, e16 = ref, est
    if sample_rate != PESQ_RATE:
        import soxr

        r16 = soxr.resample(ref, sample_rate, PESQ_RATE, quality="HQ")
        e16 = soxr.resample(est, sample_rate, PESQ_RATE, quality="HQ")
    try:
        p = float(pesq(PESQ_RATE, r16, e16, "wb"))
    except Exception:  # pesq raises for "no utterance detected" and too-short input
        p = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns and returns 1e-5 on too few frames
        try:
            s = float(stoi(ref, est, sample_rate, extended=False))
        except Exception:
            s = float("nan")
    if s <= 1e-5:
        s = float("nan")
    return p, s
