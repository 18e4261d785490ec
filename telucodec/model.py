"""The codec: encoder -> residual VQ -> decoder, for any waveform length.

`cfg.arch` picks the encoder/decoder pair (`frame`: learned lapped transform; `seanet`: SEANet).
The model pads the waveform to a hop multiple and crops the output back, so callers never
think about frame alignment: F = ceil(T / hop) code frames for T samples. `decode_blocks`
decodes a stream of any length in chunks of frames, overlapped by the decoder's receptive
field and trimmed, so memory is bounded by a chunk, not by the stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.emphasis import DeEmphasis, PreEmphasis
from telucodec.frame_codec import FrameDecoder, FrameEncoder
from telucodec.quantize import ResidualVectorQuantize
from telucodec.seanet import SeanetDecoder, SeanetEncoder

# Frames per chunk in `Codec.decode_blocks`: 10 s at 50 frames/s. Peak memory is that of
# decoding 10 s at once (a few MB for `tiny`/`small`); the overlap (4 frames each side for
# them, 14 for `base`: `decode_context`) costs a few percent of the time.
DECODE_CHUNK_FRAMES = 500


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

    def decode_context(self) -> tuple[int, int]:
        """(left, right): code frames either side of a chunk that can change its audio; decoding
        a chunk with that much context and trimming it gives what the whole decode gives.

        The decoders are convolutions and pointwise activations (residual branches reach no
        further than their convolutions), so the receptive field is bounded by the sum of each
        conv's reach, taken in frames at the rate it runs at, plus one frame for rounding at
        the strided layers; de-emphasis, a causal FIR, adds its taps on the left."""
        frames, scale = 0.0, 1  # scale: samples per code frame at the current layer
        for layer in self.decoder.modules():
            if isinstance(layer, nn.ConvTranspose1d | nn.Conv1d):
                span = (layer.kernel_size[0] - 1) * layer.dilation[0]
                pad = span if isinstance(layer.padding, str) else layer.padding[0]
                reach = max(pad, span - pad)  # inputs either side of one output
                if isinstance(layer, nn.ConvTranspose1d):
                    stride = layer.stride[0]
                    frames += (math.ceil(reach / stride) + 1) / scale
                    scale *= stride
                elif layer.stride[0] != 1:  # no strided conv upsamples: not a decoder layer
                    raise ValueError(f"decoder has a strided Conv1d ({layer}); cannot chunk it")
                else:
                    frames += reach / scale
        side = math.ceil(frames) + 1
        taps = self.de_emphasis.kernel.shape[-1] if self.de_emphasis.coefficient else 1
        return side + math.ceil((taps - 1) / self.cfg.hop_length), side

    def decode_blocks(
        self,
        codes_of: Callable[[int, int], torch.Tensor],
        length: int,
        chunk_frames: int = DECODE_CHUNK_FRAMES,
    ) -> Iterator[torch.Tensor]:
        """Decode a stream of any length a chunk at a time: memory is bounded by
        `chunk_frames` plus the context, not by `length`.

        codes_of(start, stop) -> LongTensor[B x Nq x (stop - start)], the codes of frames
        [start, stop) (e.g. unpacked from a bitstream on demand); it is asked for at most
        `chunk_frames + sum(decode_context())` frames at a time.
        length: samples of the whole stream (ceil(length / hop) frames).
        Yields audio Tensor[B x 1 x n] blocks of at most `chunk_frames * hop` samples whose
        concatenation is `decode(all codes, length)`: each chunk is decoded with
        `decode_context()` frames either side and trimmed. On CPU the result is bit-identical
        whatever `chunk_frames` (convolutions on ATen's path, `aten_convolutions`), and
        bit-identical to `decode` for `tiny` and `small`; `decode` on oneDNN rounds SEANet
        (`base`) differently, by under 1e-6 (6e-7 measured; tests/e2e/test_codec_cli.py).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if length < 1:
            raise ValueError(f"length must be >= 1 sample, got {length}")
        hop, n_frames = self.cfg.hop_length, self.n_frames(length)
        left, right = self.decode_context()
        for start in range(0, n_frames, chunk_frames):
            stop = min(start + chunk_frames, n_frames)
            lo, hi = max(0, start - left), min(n_frames, stop + right)
            codes = codes_of(lo, hi)
            if codes.dim() != 3 or codes.shape[-1] != hi - lo:
                raise ValueError(
                    f"codes_of({lo}, {hi}) gave shape {tuple(codes.shape)}, expected "
                    f"LongTensor[B x Nq x {hi - lo}]"
                )
            with aten_convolutions():
                audio = self.de_emphasis(self.decoder(self.quantizer.decode(codes)))
            yield audio[..., (start - lo) * hop : min(stop * hop, length) - lo * hop]


@contextmanager
def aten_convolutions() -> Iterator[None]:
    """Run CPU convolutions on ATen's own im2col + GEMM path, not oneDNN's: oneDNN picks its
    kernels by input length, so a window and the whole stream round differently (6e-7 on
    a SEANet), while ATen rounds each output sample the same whatever the length
    (measured: chunked decodes bit-identical for every chunk size, at the same speed). The
    flag is process-wide, so it is held only while a chunk is computed."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
