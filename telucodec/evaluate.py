"""Codec evaluation over batches of (reference, mask): masked and unmasked figures per bitrate.

Pure model + metrics: it takes arrays, never reads a corpus (the CLI feeds it samples).
Sums are accumulated in float64 so the global SNR is power-summed over the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from telucodec import metrics
from telucodec.model import Codec


class Accumulator:
    """Running float64 sums for one bitrate: per-item SNR/SI-SDR/mel and global energies."""

    def __init__(self) -> None:
        self.items = 0
        self.masked_snr: list[float] = []
        self.unmasked_snr: list[float] = []
        self.si_sdr: list[float] = []
        self.mel: list[float] = []
        self.gated = 0
        self.gated_unmasked = 0
        self.sums = {"signal": 0.0, "error": 0.0, "signal_all": 0.0, "error_all": 0.0}

    def add(self, ref: np.ndarray, est: np.ndarray, mask: np.ndarray) -> None:
        """ref, est float[B x T]; mask bool[B x T]."""
        sig, err, n = metrics.masked_energies(ref, est, mask)
        per, gated = metrics.snr_from_energies(sig, err, n)
        full = np.ones_like(mask, dtype=bool)
        sig_a, err_a, n_a = metrics.masked_energies(ref, est, full)
        per_a, gated_a = metrics.snr_from_energies(sig_a, err_a, n_a)
        si, _ = metrics.masked_si_sdr_db(ref, est, mask)
        mel = metrics.masked_mel_distance(ref, est, mask)
        self.items += ref.shape[0]
        self.gated += gated
        self.gated_unmasked += gated_a
        self.masked_snr += [float(v) for v in per if np.isfinite(v)]
        self.unmasked_snr += [float(v) for v in per_a if np.isfinite(v)]
        self.si_sdr += [float(v) for v in si if np.isfinite(v)]
        self.mel += [float(v) for v in mel if np.isfinite(v)]
        self.sums["signal"] += float(sig.sum())
        self.sums["error"] += float(err.sum())
        self.sums["signal_all"] += float(sig_a.sum())
        self.sums["error_all"] += float(err_a.sum())

    def result(self) -> dict[str, Any]:
        """Figures for JSON: None where nothing could be scored (never NaN, which is not JSON)."""

        def mean(xs: list[float]) -> float | None:
            return float(np.mean(xs)) if xs else None

        def finite(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "items": self.items,
            "masked": {
                "snr_db": mean(self.masked_snr),
                "global_snr_db": finite(
                    metrics.global_snr_db(self.sums["signal"], self.sums["error"])
                ),
                "si_sdr_db": mean(self.si_sdr),
                "mel_distance": mean(self.mel),
                "gated_items": self.gated,
            },
            "unmasked": {
                "snr_db": mean(self.unmasked_snr),
                "global_snr_db": finite(
                    metrics.global_snr_db(self.sums["signal_all"], self.sums["error_all"])
                ),
                "gated_items": self.gated_unmasked,
            },
        }


@torch.inference_mode()
def evaluate(
    model: Codec,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    kbps: list[float],
) -> dict[str, dict[str, Any]]:
    """batches of (audio float32[B x T], mask bool[B x T]) -> {"<kbps>": figures}.

    Masked figures count only real samples; unmasked ones treat padding as signal, which is
    what the original validation did.
    """
    model.eval()
    nqs = {k: model.cfg.n_quantizers_for_kbps(k) for k in kbps}
    accs = {k: Accumulator() for k in kbps}
    for audio, mask in batches:
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[:, None]
        for k, nq in nqs.items():
            est = model(x, n_quantizers=nq).audio[:, 0].numpy()
            accs[k].add(audio, est, mask)
    return {f"{k:g}": {"n_quantizers": nqs[k], **accs[k].result()} for k in kbps}
