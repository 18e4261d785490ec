"""Our own mel filterbank and the masked STFT framing the losses and metrics share.

No torchaudio: a mel filterbank is a few lines of numpy. The framing is chosen so that padding
cannot leak into any frame that counts: masked-out samples are zeroed, the signal is
zero-padded by n_fft/2 on both sides (no reflection, which would mirror padding back in),
and a frame counts only when more than half of its window is valid. Appending padding to an
item therefore changes no counted frame, which the metrics' padding-invariance relies on.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=64)
def _mel_filterbank_np(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float
) -> np.ndarray:
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (center - lower)
    falling = (upper - freqs[None]) / (upper - center)
    bank = np.clip(np.minimum(rising, falling), 0.0, None)
    bank.setflags(write=False)
    return bank


def mel_filterbank(
    n_fft: int,
    n_mels: int,
    sample_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Triangular filters with unit peak on the HTK mel scale between f_min and f_max
    (default Nyquist). Returns float64[n_mels x n_fft//2 + 1], read-only."""
    return _mel_filterbank_np(
        n_fft,
        n_mels,
        sample_rate,
        float(f_min),
        float(f_max if f_max is not None else sample_rate / 2),
    )


def frame_mask(mask: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """mask Tensor[B x T] (bool or 0/1) -> BoolTensor[B x T // hop + 1]: frames whose
    n_fft window (centred on sample f*hop) is more than half valid."""
    padded = F.pad(mask.to(torch.float64)[:, None], (n_fft // 2, n_fft // 2))
    coverage = F.avg_pool1d(padded, kernel_size=n_fft, stride=hop)[:, 0]
    return coverage > 0.5


def magnitude_frames(
    audio: torch.Tensor,
    mask: torch.Tensor,
    n_fft: int,
    hop: int,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """STFT magnitudes of the masked signal. audio Tensor[B x T], mask Tensor[B x T] ->
    Tensor[B x n_fft//2 + 1 x T // hop + 1] (frames aligned with `frame_mask`)."""
    if window is None:
        window = torch.hann_window(n_fft, dtype=audio.dtype, device=audio.device)
    x = F.pad(audio * mask.to(audio.dtype), (n_fft // 2, n_fft // 2))
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=False, return_complex=True)
    # sqrt(power + tiny) keeps the gradient finite at exact zeros (padding, silence).
    return (spec.real.pow(2) + spec.imag.pow(2) + 1e-12).sqrt()
