"""Fixed pre-emphasis before the encoder and its inverse after the decoder: noise shaping.

Speech coders code a pre-emphasized signal and de-emphasize the decoded one (AMR-WB,
ITU-T G.722.2 §5.2.1, factor 0.68; Opus' CELT layer, 0.85): the coding noise, roughly white
in the coded domain, leaves the decoder tilted like the speech spectrum, so it sits under
the strong low formants instead of filling the quiet band above 4 kHz where ears (and
PESQ) hear it. Measured on `small` (docs/CODEC.md): without it the decoder adds a noise
floor 14 dB above real speech at 4-6 kHz.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TAIL = 1e-4  # de-emphasis impulse response truncated where a^k falls below this


class PreEmphasis(nn.Module):
    """y[n] = x[n] - a·x[n-1] with x[-1] = 0. Tensor[B x 1 x T] -> Tensor[B x 1 x T]."""

    def __init__(self, coefficient: float):
        super().__init__()
        self.coefficient = float(coefficient)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.coefficient == 0.0:
            return audio
        return audio - self.coefficient * F.pad(audio[..., :-1], (1, 0))


class DeEmphasis(nn.Module):
    """The inverse all-pole filter y[n] = x[n] + a·y[n-1], as a causal FIR of a^k truncated
    at TAIL (88 taps for a = 0.9): one conv1d, differentiable, same in every dtype.
    Tensor[B x 1 x T] -> Tensor[B x 1 x T]."""

    def __init__(self, coefficient: float):
        super().__init__()
        self.coefficient = float(coefficient)
        if not 0.0 <= self.coefficient < 1.0:
            raise ValueError(f"emphasis coefficient must be in [0, 1), got {coefficient}")
        taps = 1 if coefficient == 0 else math.ceil(math.log(TAIL) / math.log(coefficient))
        # conv1d correlates, so the kernel is the impulse response reversed.
        kernel = self.coefficient ** torch.arange(taps - 1, -1, -1, dtype=torch.float32)
        self.register_buffer("kernel", kernel.view(1, 1, taps), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.coefficient == 0.0:
            return audio
        taps = self.kernel.shape[-1]
        return F.conv1d(F.pad(audio, (taps - 1, 0)), self.kernel.to(audio.dtype))
