"""SEANet encoder/decoder (Tagliasacchi et al. 2020; SoundStream, EnCodec, DAC): strided
convolutions between stacks of dilated residual units. The GPU-scale architecture (`base`).

Both sides assume the waveform length is a multiple of the hop (the product of the rates);
`telucodec.model.Codec` pads to that and crops back.
"""

from __future__ import annotations

import torch
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.layers import ResidualUnit, activation, wn_conv1d, wn_conv_transpose1d


class EncoderBlock(nn.Module):
    """Residual units at `channels // 2`, then a strided conv doubling the channels.
    Tensor[B x C/2 x T] -> Tensor[B x C x T/stride]."""

    def __init__(self, channels: int, stride: int, dilations: tuple[int, ...], kind: str):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            *[ResidualUnit(half, d, kind) for d in dilations],
            activation(kind, half),
            # kernel 2*stride with padding ceil(stride/2) gives exactly T/stride frames.
            wn_conv1d(
                half, channels, kernel_size=2 * stride, stride=stride, padding=(stride + 1) // 2
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """A transposed strided conv halving the channels, then residual units.
    Tensor[B x C x T] -> Tensor[B x C/2 x T*stride]."""

    def __init__(self, channels: int, stride: int, dilations: tuple[int, ...], kind: str):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            activation(kind, channels),
            wn_conv_transpose1d(
                channels,
                half,
                kernel_size=2 * stride,
                stride=stride,
                padding=(stride + 1) // 2,
                output_padding=stride % 2,
            ),
            *[ResidualUnit(half, d, kind) for d in dilations],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SeanetEncoder(nn.Module):
    """Tensor[B x 1 x T] (T a multiple of hop) -> latent Tensor[B x latent_dim x T/hop]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        dim = cfg.encoder_dim
        layers: list[nn.Module] = [wn_conv1d(1, dim, kernel_size=7, padding=3)]
        for stride in cfg.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride, cfg.dilations, cfg.activation))
        layers += [activation(cfg.activation, dim), wn_conv1d(dim, cfg.latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio)


class SeanetDecoder(nn.Module):
    """latent Tensor[B x latent_dim x F] -> Tensor[B x 1 x F*hop] in (-1, 1) (tanh output)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        dim = cfg.decoder_dim
        layers: list[nn.Module] = [wn_conv1d(cfg.latent_dim, dim, kernel_size=7, padding=3)]
        for stride in cfg.decoder_rates:
            layers.append(DecoderBlock(dim, stride, cfg.dilations, cfg.activation))
            dim //= 2
        layers += [activation(cfg.activation, dim), wn_conv1d(dim, 1, 7, padding=3), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)
