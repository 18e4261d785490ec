"""Building blocks shared by the encoders and decoders: weight-normed convs, Snake, residual units.

Weight normalization (Salimans & Kingma 2016) as in MelGAN, SoundStream and DAC; it keeps the
early steps of GAN-style codec training stable without batch statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def wn_conv1d(*args, **kwargs) -> nn.Module:
    """nn.Conv1d with weight normalization; same arguments as nn.Conv1d."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    """nn.ConvTranspose1d with weight normalization; same arguments."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class Snake1d(nn.Module):
    """Snake activation x + sin²(αx)/α with a learned α per channel (Ziyin et al. 2020),
    the periodic inductive bias BigVGAN and DAC use for waveforms. Tensor[B x C x T] -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


def activation(kind: str, channels: int) -> nn.Module:
    """`snake` (DAC) or `elu` (SoundStream / EnCodec)."""
    if kind == "snake":
        return Snake1d(channels)
    if kind == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {kind!r}; expected 'snake' or 'elu'")


class ResidualUnit(nn.Module):
    """act -> dilated conv(k=7) -> act -> conv(k=1), added to the input (SoundStream §3.2).
    Tensor[B x C x T] -> Tensor[B x C x T]; 'same' padding keeps T."""

    def __init__(self, channels: int, dilation: int, kind: str = "snake"):
        super().__init__()
        self.block = nn.Sequential(
            activation(kind, channels),
            wn_conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation),
            activation(kind, channels),
            wn_conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
