"""Multi-scale STFT discriminator (EnCodec, Défossez et al. 2022 §3.4): one 2-D conv net per
STFT resolution over the real and imaginary parts. Optional; off by default on CPU.

The waveforms are multiplied by the validity mask before the STFT, so padding is the same
silence for real and generated audio and carries no signal the critic could use.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from telucodec.configs import CodecConfig

DiscriminatorOutput = list[tuple[torch.Tensor, list[torch.Tensor]]]


class STFTDiscriminator(nn.Module):
    """One resolution. Tensor[B x 1 x T] -> (logits Tensor[B x 1 x frames x bins'],
    feature maps list[Tensor[B x C x frames x bins']])."""

    def __init__(self, n_fft: int, channels: int = 32):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

        def conv(cin: int, cout: int, kernel, stride=(1, 1), dilation=(1, 1)) -> nn.Module:
            padding = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation, strict=True))
            return weight_norm(nn.Conv2d(cin, cout, kernel, stride, padding, dilation))

        # (frames, bins) kernels; time dilations 1, 2, 4 and frequency stride 2 as in EnCodec.
        self.convs = nn.ModuleList(
            [
                conv(2, channels, (3, 9)),
                conv(channels, channels, (3, 9), stride=(1, 2), dilation=(1, 1)),
                conv(channels, channels, (3, 9), stride=(1, 2), dilation=(2, 1)),
                conv(channels, channels, (3, 9), stride=(1, 2), dilation=(4, 1)),
                conv(channels, channels, (3, 3)),
            ]
        )
        self.post = conv(channels, 1, (3, 3))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The STFT runs in float32 whatever the caller's dtype or autocast (cuFFT and MKL
        # have no bf16 FFT); the convs after it may run in bf16 under autocast.
        with torch.autocast(audio.device.type, enabled=False):
            spec = torch.stft(
                audio[:, 0].float(),
                self.n_fft,
                hop_length=self.hop,
                window=self.window.float(),
                return_complex=True,
            )
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # B x 2 x frames x bins
        features = []
        for conv in self.convs:
            x = self.act(conv(x))
            features.append(x)
        return self.post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFTDiscriminator per n_fft in cfg.disc_n_ffts.
    audio Tensor[B x 1 x T], mask BoolTensor[B x T] -> list of (logits, features) per scale."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, cfg.disc_channels) for n in cfg.disc_n_ffts
        )

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> DiscriminatorOutput:
        if mask is not None:
            audio = audio * mask[:, None].to(audio.dtype)
        return [d(audio) for d in self.discriminators]
