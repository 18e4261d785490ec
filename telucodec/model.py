"""The codec: encoder -> residual VQ -> decoder, for any waveform length.

`cfg.arch` picks the encoder/decoder pair (`frame`: learned lapped transform; `seanet`: SEANet).
The model pads the waveform to a hop multiple and crops the output back, so callers never
think about frame alignment: F = ceil(T / hop) code frames for T samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.emphasis import DeEmphasis, PreEmphasis
from telucodec.frame_codec import FrameDecoder, FrameEncoder
from telucodec.quantize import ResidualVectorQuantize
from telucodec.seanet import SeanetDecoder, SeanetEncoder


@dataclass
class CodecOutput:
    """What `Codec.forward` returns.

    audio: Tensor[B x 1 x T] reconstruction, same T as the input.
    codes: LongTensor[B x Nq x F] code indices (F = ceil(T / hop)).
    commitment_loss, codebook_loss: scalar Tensors (VQ terms; see quantize.py).
    n_quantizers: LongTensor[B] codebooks each item's reconstruction used.
    """

    audio: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    n_quantizers: torch.Tensor


class Codec(nn.Module):
    """Neural speech codec built from a CodecConfig."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "seanet":
            self.encoder, self.decoder = SeanetEncoder(cfg), SeanetDecoder(cfg)
        else:
            self.encoder, self.decoder = FrameEncoder(cfg), FrameDecoder(cfg)
        self.quantizer = ResidualVectorQuantize(cfg)
        self.pre_emphasis = PreEmphasis(cfg.emphasis)
        self.de_emphasis = DeEmphasis(cfg.emphasis)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    def n_frames(self, length: int) -> int:
        """Code frames for `length` samples: ceil(length / hop)."""
        return -(-length // self.cfg.hop_length)

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be Tensor[B x 1 x T], got shape {tuple(audio.shape)}")
        length = audio.shape[-1]
        if length == 0:
            raise ValueError("audio has no samples")
        audio = self.pre_emphasis(audio)  # before padding: the padding stays zeros
        return F.pad(audio, (0, self.n_frames(length) * self.cfg.hop_length - length))

    def _synthesize(self, z_q: torch.Tensor, length: int) -> torch.Tensor:
        audio = self.de_emphasis(self.decoder(z_q))
        return audio[..., :length]

    def forward(self, audio: torch.Tensor, n_quantizers: int | None = None) -> CodecOutput:
        """audio Tensor[B x 1 x T] -> CodecOutput with audio Tensor[B x 1 x T].

        n_quantizers: codebooks to use; None means all in eval() mode and quantizer dropout
        in train() mode (see ResidualVectorQuantize.forward).
        """
        length = audio.shape[-1]
        z = self.encoder(self._pad(audio))
        q = self.quantizer(z, n_quantizers)
        return CodecOutput(
            audio=self._synthesize(q.z_q, length),
            codes=q.codes,
            commitment_loss=q.commitment_loss,
            codebook_loss=q.codebook_loss,
            n_quantizers=q.n_quantizers,
        )

    def encode(self, audio: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        """audio Tensor[B x 1 x T] -> codes LongTensor[B x Nq x ceil(T / hop)]."""
        return self.quantizer.encode(self.encoder(self._pad(audio)), n_quantizers)

    def decode(self, codes: torch.Tensor, length: int) -> torch.Tensor:
        """codes LongTensor[B x Nq x F] -> audio Tensor[B x 1 x length];
        `length` must need exactly F frames (ceil(length / hop) == F)."""
        if codes.dim() != 3:
            raise ValueError(
                f"codes must be LongTensor[B x Nq x F], got shape {tuple(codes.shape)}"
            )
        if self.n_frames(length) != codes.shape[-1]:
            raise ValueError(
                f"length {length} needs {self.n_frames(length)} frames at hop "
                f"{self.cfg.hop_length}, codes have {codes.shape[-1]}"
            )
        return self._synthesize(self.quantizer.decode(codes), length)
