"""The learned frame-pair codec (`small`, `tiny`): one strided conv with a window of two hops
analyses 50%-overlapping frames, its transposed twin overlap-adds them back.

This is a learned lapped transform (in the spirit of the MDCT; cf. TasNet's learned
encoder/decoder basis, Luo & Mesgarani 2018) in front of the residual VQ. On 2 CPU cores it
trains an order of magnitude faster per step than SEANet and passes 0 dB masked SNR in
minutes, which is what the CPU demo needs; `base` uses SEANet.
"""

from __future__ import annotations

import torch
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.layers import wn_conv1d, wn_conv_transpose1d


class PointwiseResidual(nn.Module):
    """x + conv1x1(ELU(conv_k(x))): a per-frame MLP (kernel 1) or one that also sees the
    (k - 1) / 2 frames either side (odd kernel k). Tensor[B x C x F] -> same."""

    def __init__(self, channels: int, kernel: int = 1):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"frame residual kernel must be odd and >= 1, got {kernel}")
        self.block = nn.Sequential(
            wn_conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.ELU(),
            wn_conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class FrameEncoder(nn.Module):
    """Tensor[B x 1 x T] (T a multiple of hop) -> latent Tensor[B x latent_dim x T/hop]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        hop, ch = cfg.hop_length, cfg.frame_channels
        # Window 2*hop, padded hop/2 each side: frame f is centred on samples [f*hop, (f+1)*hop).
        self.analysis = wn_conv1d(1, ch, kernel_size=2 * hop, stride=hop, padding=hop // 2)
        self.mlp = nn.Sequential(
            *[
                PointwiseResidual(ch, cfg.frame_residual_kernel)
                for _ in range(cfg.frame_residual_layers)
            ]
        )
        self.proj = wn_conv1d(ch, cfg.latent_dim, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mlp(self.analysis(audio)))


class FrameDecoder(nn.Module):
    """latent Tensor[B x latent_dim x F] -> Tensor[B x 1 x F*hop] (overlap-add synthesis)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        hop, ch = cfg.hop_length, cfg.frame_channels
        self.proj = wn_conv1d(cfg.latent_dim, ch, 1)
        self.mlp = nn.Sequential(
            *[
                PointwiseResidual(ch, cfg.frame_residual_kernel)
                for _ in range(cfg.frame_residual_layers)
            ]
        )
        self.synthesis = wn_conv_transpose1d(
            ch, 1, kernel_size=2 * hop, stride=hop, padding=hop // 2
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mlp(self.proj(latent)))
