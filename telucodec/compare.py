"""Our codec vs Opus at the same bitrates, on the same audio, scored the same way.

Each item is scored on its valid (unpadded) part after lag alignment: masked SNR, masked
SI-SDR and mel distance (telucodec.metrics), wideband PESQ (ITU-T P.862.2, `pesq`) and STOI
(Taal et al. 2011, `pystoi`). Pure functions over arrays; the CLI feeds samples and files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from telucodec import metrics
from telucodec.model import Codec

MAX_LAG = 2000  # samples (125 ms at 16 kHz): far beyond Opus's 6.5 ms algorithmic delay


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


def _pesq_stoi(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> tuple[float, float]:
    from pesq import pesq
    from pystoi import stoi

    try:
        p = float(pesq(sample_rate, ref, est, "wb"))
    except Exception:  # too short or silent for PESQ: counted as missing
        p = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns and returns 1e-5 on too few frames
        try:
            s = float(stoi(ref, est, sample_rate, extended=False))
        except Exception:
            s = float("nan")
    if s <= 1e-5:
        s = float("nan")  # too little speech to measure: counted as missing, not as 0
    return p, s


def score_item(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> dict[str, float]:
    """ref/est float32[T] of real audio only (already aligned)."""
    r, e, m = ref[None], est[None], np.ones((1, ref.size), bool)
    snr, _ = metrics.masked_snr_db(r, e, m)
    si, _ = metrics.masked_si_sdr_db(r, e, m)
    mel = metrics.masked_mel_distance(r, e, m, sample_rate)
    p, s = _pesq_stoi(ref, est, sample_rate)
    return {
        "snr_db": float(snr[0]),
        "si_sdr_db": float(si[0]),
        "mel_distance": float(mel[0]),
        "pesq_wb": p,
        "stoi": s,
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, Any]:
    keys = rows[0].keys() if rows else ()
    out: dict[str, Any] = {"items": len(rows)}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        ok = np.isfinite(vals)
        out[k] = float(vals[ok].mean()) if ok.any() else None
        out[f"{k}_missing"] = int((~ok).sum())
    return out


@torch.inference_mode()
def compare(
    model: Codec,
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    kbps: list[float],
    opus: Callable[[np.ndarray, int, float], np.ndarray] | None,
) -> dict[str, dict[str, Any]]:
    """items of (audio float32[T], mask bool[T]) → {"telucodec": {kbps: means}, "opus": …}.

    Each codec sees the item's real samples only (padding cut off), so neither is scored on
    silence it never had to code. `opus` None skips Opus.
    """
    model.eval()
    sr = model.cfg.sample_rate
    rows: dict[str, dict[float, list]] = {"telucodec": {k: [] for k in kbps}}
    if opus is not None:
        rows["opus"] = {k: [] for k in kbps}
    for audio, mask in items:
        ref = audio[mask].astype(np.float32)
        if ref.size < sr // 4:
            continue
        x = torch.from_numpy(ref)[None, None]
        for k in kbps:
            est = model(x, n_quantizers=model.cfg.n_quantizers_for_kbps(k)).audio[0, 0].numpy()
            rows["telucodec"][k].append(score_item(ref, est, sr))
            if opus is not None:
                aligned, _ = align(ref, opus(ref, sr, k))
                rows["opus"][k].append(score_item(ref, aligned, sr))
    return {codec: {f"{k:g}": _mean(r) for k, r in per.items()} for codec, per in rows.items()}


def plot_comparison(results: dict[str, dict[str, Any]], path: str) -> None:
    """One panel per metric, quality vs kbps, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        ("snr_db", "masked SNR (dB)"),
        ("si_sdr_db", "SI-SDR (dB)"),
        ("mel_distance", "mel distance (lower better)"),
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
