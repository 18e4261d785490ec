"""Our codec vs Opus at the same bitrates, on the same audio, scored the same way.

Each item is scored on its valid (unpadded) part after lag alignment, with the evaluation
tally every other report uses (`telucodec.evaluate.MetricSums`: masked SNR, SI-SDR, mel
distance, global SNR) plus wideband PESQ (ITU-T P.862.2, `pesq`) and STOI (Taal et al. 2011,
`pystoi`) as extra per-item figures. Pure functions over arrays; telucodec_cli feeds samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from telucodec.evaluate import MetricSums
from telucodec.metrics import PERCEPTUAL, perceptual_scores
from telucodec.model import Codec

MAX_LAG = 2000  # samples (125 ms at 16 kHz): far beyond Opus's 6.5 ms algorithmic delay
EXTRA = PERCEPTUAL  # per-item figures compare adds to the evaluation schema


def align(ref: np.ndarray, est: np.ndarray, max_lag: int = MAX_LAG) -> tuple[np.ndarray, int]:
    """Shift `est` (float[T'] ) by the lag maximizing its cross-correlation with `ref`
    (float[T]) within ±max_lag; returns (est aligned and cut/padded to T, lag)."""
    n = ref.size + est.size
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(xc[lags])])
    shifted = est[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, est.dtype), est])
    out = np.zeros(ref.size, dtype=np.float32)
    out[: min(ref.size, shifted.size)] = shifted[: ref.size]
    return out, lag


def score_item(sums: MetricSums, ref: np.ndarray, est: np.ndarray, sample_rate: int) -> None:
    """Add one item to `sums` (a MetricSums with EXTRA): ref/est float32[T] of real audio
    only, already aligned, so every sample is valid and masked = unmasked figures."""
    r, e = ref[None], est[None]
    sums.add(r, e, np.ones(r.shape, bool), sample_rate=sample_rate)
    p, s = perceptual_scores(ref, est, sample_rate)
    sums.add_values("pesq_wb", [p])
    sums.add_values("stoi", [s])


@torch.inference_mode()
def compare(
    model: Codec,
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    kbps: list[float],
    opus: Callable[[np.ndarray, int, float], np.ndarray] | None,
) -> dict[str, dict[str, Any]]:
    """items of (audio float32[T], mask bool[T]) → {"telucodec": {kbps: figures}, "opus": …},
    figures as `MetricSums.summary()` plus `pesq_wb` and `stoi` (and `n_quantizers` for ours).

    Each codec sees the item's real samples only (padding cut off), so neither is scored on
    silence it never had to code. `opus` None skips Opus.
    """
    model.eval()
    sr = model.cfg.sample_rate
    nqs = {k: model.cfg.n_quantizers_for_kbps(k) for k in kbps}
    codecs = ["telucodec"] + (["opus"] if opus is not None else [])
    sums = {c: {k: MetricSums(EXTRA) for k in kbps} for c in codecs}
    for audio, mask in items:
        ref = audio[mask].astype(np.float32)
        if ref.size < sr // 4:
            continue
        x = torch.from_numpy(ref)[None, None]
        for k in kbps:
            est = model(x, n_quantizers=nqs[k]).audio[0, 0].numpy()
            score_item(sums["telucodec"][k], ref, est, sr)
            if opus is not None:
                aligned, _ = align(ref, opus(ref, sr, k))
                score_item(sums["opus"][k], ref, aligned, sr)
    results = {c: {f"{k:g}": s.summary() for k, s in per.items()} for c, per in sums.items()}
    for k in kbps:
        results["telucodec"][f"{k:g}"] = {"n_quantizers": nqs[k], **results["telucodec"][f"{k:g}"]}
    return results


def plot_comparison(results: dict[str, dict[str, Any]], path: str) -> None:
    """One panel per metric, quality vs kbps, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        ("masked_snr_db", "masked SNR (dB)"),
        ("masked_si_sdr_db", "SI-SDR (dB)"),
        ("masked_mel_distance", "mel distance (lower better)"),
        ("pesq_wb", "PESQ-WB"),
        ("stoi", "STOI"),
    ]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4))
    for ax, (key, label) in zip(axes, names, strict=True):
        for codec, per in results.items():
            ks = sorted(per, key=float)
            ys = [per[k][key] if per[k][key] is not None else np.nan for k in ks]
            ax.plot([float(k) for k in ks], ys, marker="o", label=codec)
        ax.set_xlabel("kbps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
