"""Codec configuration as data: one frozen dataclass and the three named configs.

A checkpoint stores `CodecConfig.to_dict()` beside its weights, so a model is always rebuilt
from the exact numbers it was trained with. Training hyperparameters (learning rate, batch)
belong to the training script, not here: this file describes the codec and its losses.

Named configs:
- `tiny`: unit tests; about 84 k parameters (frame arch, 64 channels, 16-dim latent), overfits
  a clip in seconds on one CPU core. Same loss weights as `small`.
- `small`: the CPU demo; a learned frame-pair codec (one strided conv in, one transposed conv
  out) that passes 0 dB validation masked SNR within minutes on 2 cores.
- `base`: GPU recipe, SEANet at the size of DAC-16k (encoder 64, decoder 1536, 12 x 1024)
  trained as DAC is: multi-resolution log-mel x15 + STFT-discriminator adversarial x1 +
  feature matching x2, quantizer dropout 0.5. Codebooks and EMA stay float32 under bf16
  (quantize.py); spectral losses and the critic's STFT run in float32 (losses.py,
  discriminator.py); `torch.compile` (train_ds.py --compile) applies to the encoder and
  decoder, not the quantizer (docs/CODEC.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ARCHS = ("frame", "seanet")
ACTIVATIONS = ("snake", "elu")


@dataclass(frozen=True)
class CodecConfig:
    """Every number that defines a codec model and its training losses."""

    name: str = "custom"
    arch: str = "frame"  # "frame" | "seanet"
    sample_rate: int = 16000
    hop_length: int = 320  # samples per code frame: 16000 / 320 = 50 frames/s
    latent_dim: int = 64
    # Pre-emphasis a before the encoder, de-emphasis after the decoder (emphasis.py); 0 = off.
    emphasis: float = 0.0

    # arch == "frame": Conv1d(1, C, 2*hop, stride=hop) -> C -> latent, mirrored in the decoder.
    frame_channels: int = 512
    frame_residual_layers: int = 0  # optional residual layers on each side, at frame rate
    frame_residual_kernel: int = 1  # their first conv's kernel (frames): 1 = per-frame MLP

    # arch == "seanet": strided conv blocks with dilated residual units (SoundStream / DAC).
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 5, 8)
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 5, 4, 2)
    dilations: tuple[int, ...] = (1, 3, 9)
    activation: str = "snake"  # "snake" (DAC) | "elu" (SoundStream / EnCodec)

    # Residual vector quantizer with EMA codebooks.
    n_codebooks: int = 12
    codebook_size: int = 1024
    codebook_dim: int = 64  # < latent_dim: factorized codes through 1x1 projections (DAC)
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    dead_code_ratio: float = 0.1  # a code is dead below this fraction of the mean usage
    quantizer_dropout: float = 0.5

    # Loss weights; spectral terms use (n_fft, n_mels) pairs with hop n_fft // 4.
    l1_weight: float = 1.0
    l1_pre_emphasis: float = 0.0  # L1 on x[n] - a*x[n-1] (perceptual tilt; 0 = plain L1)
    stft_weight: float = 1.0
    mel_weight: float = 1.0
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    spectral_resolutions: tuple[tuple[int, int], ...] = ((256, 32), (512, 64), (1024, 80))

    # Optional multi-scale STFT discriminator (EnCodec); off by default on CPU.
    use_discriminator: bool = False
    disc_n_ffts: tuple[int, ...] = (1024, 512, 256)
    disc_channels: int = 32
    adv_weight: float = 1.0
    feature_weight: float = 2.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"config {self.name!r}: arch {self.arch!r}, expected one of {ARCHS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"config {self.name!r}: activation {self.activation!r}, expected {ACTIVATIONS}"
            )
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError(
                f"config {self.name!r}: codebook_size {self.codebook_size} must be a power of 2"
            )
        if self.sample_rate % self.hop_length:
            raise ValueError(
                f"config {self.name!r}: hop_length {self.hop_length} must divide "
                f"sample_rate {self.sample_rate}"
            )
        if self.arch == "seanet":
            for rates in (self.encoder_rates, self.decoder_rates):
                if math.prod(rates) != self.hop_length:
                    raise ValueError(
                        f"config {self.name!r}: rates {rates} multiply to {math.prod(rates)}, "
                        f"expected hop_length {self.hop_length}"
                    )
        if not 0.0 <= self.emphasis < 1.0:
            raise ValueError(f"config {self.name!r}: emphasis {self.emphasis} outside [0, 1)")
        if self.arch == "frame" and self.hop_length % 2:
            raise ValueError(f"config {self.name!r}: frame arch needs an even hop_length")
        if not 0 < self.codebook_dim <= self.latent_dim:
            raise ValueError(
                f"config {self.name!r}: codebook_dim {self.codebook_dim} must be in "
                f"1..latent_dim ({self.latent_dim})"
            )

    @property
    def frame_rate(self) -> float:
        """Code frames per second (50.0 at 16 kHz, hop 320)."""
        return self.sample_rate / self.hop_length

    @property
    def codebook_bits(self) -> int:
        """Bits per code index: log2(codebook_size)."""
        return self.codebook_size.bit_length() - 1

    @property
    def kbps_per_codebook(self) -> float:
        """Bitrate one codebook adds: codebook_bits * frame_rate / 1000 (0.5 by default)."""
        return self.codebook_bits * self.frame_rate / 1000.0

    @property
    def max_kbps(self) -> float:
        return self.n_codebooks * self.kbps_per_codebook

    def n_quantizers_for_kbps(self, kbps: float) -> int:
        """Codebooks needed for `kbps`; ValueError unless it is a whole number of codebooks
        between 1 and n_codebooks."""
        n = kbps / self.kbps_per_codebook
        nq = round(n)
        if abs(n - nq) > 1e-6 or not 1 <= nq <= self.n_codebooks:
            raise ValueError(
                f"{kbps} kbps is not a whole number of codebooks for config {self.name!r}: "
                f"expected a multiple of {self.kbps_per_codebook} kbps up to {self.max_kbps}"
            )
        return nq

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """Inverse of to_dict; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown codec config keys {unknown}; expected a subset of {sorted(names)}"
            )
        kwargs = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            kwargs[key] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> CodecConfig:
        return dataclasses.replace(self, **changes)


# The fields that fix parameter shapes or what a code means (signal path, rates, quantizer
# layout, emphasis): a run that starts from another's weights (train_ds.py --init-from) must
# match its source on every one. The others are the recipe (loss weights and resolutions,
# EMA decay, k-means, dead-code revival, quantizer dropout, the critic, the name) and may
# change between a run and its fine-tuning; the critic is built fresh either way. Every
# field is in exactly one of the two lists (tests/e2e/test_train.py), so a new field must be
# classified when it is added.
ARCHITECTURE_FIELDS = (
    "arch",
    "sample_rate",
    "hop_length",
    "latent_dim",
    "emphasis",
    "frame_channels",
    "frame_residual_layers",
    "frame_residual_kernel",
    "encoder_dim",
    "encoder_rates",
    "decoder_dim",
    "decoder_rates",
    "dilations",
    "activation",
    "n_codebooks",
    "codebook_size",
    "codebook_dim",
)
RECIPE_FIELDS = (
    "name",
    "ema_decay",
    "kmeans_iters",
    "dead_code_ratio",
    "quantizer_dropout",
    "l1_weight",
    "l1_pre_emphasis",
    "stft_weight",
    "mel_weight",
    "commitment_weight",
    "codebook_weight",
    "spectral_resolutions",
    "use_discriminator",
    "disc_n_ffts",
    "disc_channels",
    "adv_weight",
    "feature_weight",
)


def architecture_differences(source: CodecConfig, target: CodecConfig) -> list[str]:
    """ARCHITECTURE_FIELDS on which two configs differ, as "name source vs target" (e.g.
    "n_codebooks 8 vs 12"); empty when weights of one fit the other and mean the same."""
    return [
        f"{name} {getattr(source, name)} vs {getattr(target, name)}"
        for name in ARCHITECTURE_FIELDS
        if getattr(source, name) != getattr(target, name)
    ]


CONFIGS: dict[str, CodecConfig] = {
    "tiny": CodecConfig(
        name="tiny",
        arch="frame",
        latent_dim=16,
        frame_channels=64,
        codebook_dim=16,
        n_codebooks=12,
        kmeans_iters=5,
        # As `small` (below): with unit spectral weights masked SNR stays near 0 dB even when
        # overfitting one clip; waveform L1 lifts it above 10 dB within 100 steps.
        stft_weight=0.0,
        mel_weight=0.01,
        spectral_resolutions=((256, 32), (512, 48)),
        disc_n_ffts=(256, 128),
        disc_channels=8,
    ),
    "small": CodecConfig(
        name="small",
        arch="frame",
        latent_dim=64,
        frame_channels=512,
        codebook_dim=64,
        n_codebooks=12,
        # Waveform L1 dominates: magnitude-only spectral terms leave phase free (val SNR
        # -0.3 dB at unit weights, 7.4 dB at 0); a tiny mel term keeps a spectral signal.
        # Larger spectral weights cost up to 8 dB SNR for no real-speech PESQ-WB gain
        # (docs/CODEC.md "Losses", docs/notes/2026-11-codec-screens.md).
        stft_weight=0.0,
        mel_weight=0.01,
    ),
    "base": CodecConfig(
        name="base",
        arch="seanet",
        latent_dim=1024,
        encoder_dim=64,
        encoder_rates=(2, 4, 5, 8),
        decoder_dim=1536,
        decoder_rates=(8, 5, 4, 2),
        codebook_dim=8,
        n_codebooks=12,
        # DAC's balance (Kumar et al. 2023 §3.4 and its released base.yml): no waveform L1 and
        # no linear-magnitude STFT term; log-mel L1 x15 over seven windows 32 ... 2048 with
        # 5 ... 320 mels, adversarial x1, feature matching x2, commitment 0.25, codebook 1.
        # GPU-scale only: on `small`, mel weights >= 0.1 cost 2-8 dB of SNR (docs/CODEC.md,
        # docs/notes/2026-11-codec-screens.md).
        l1_weight=0.0,
        stft_weight=0.0,
        mel_weight=15.0,
        spectral_resolutions=(
            (32, 5),
            (64, 10),
            (128, 20),
            (256, 40),
            (512, 80),
            (1024, 160),
            (2048, 320),
        ),
        # EnCodec's multi-scale STFT discriminator (Defossez et al. 2022 §3.4: five scales,
        # 32 filters, hinge loss, relative feature matching) in place of DAC's MPD + MRD.
        use_discriminator=True,
        disc_n_ffts=(2048, 1024, 512, 256, 128),
        disc_channels=32,
        adv_weight=1.0,
        feature_weight=2.0,
        # DAC §3.3: dropout p = 1 (SoundStream) costs full-rate quality, p = 0.5 keeps most.
        quantizer_dropout=0.5,
    ),
}


def get_config(name: str) -> CodecConfig:
    """The named config `tiny`, `small` or `base`."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown codec config {name!r}; expected one of {sorted(CONFIGS)}"
        ) from None


# The bitrate ladder every command scores by default (train_ds.py, eval, compare).
DEFAULT_KBPS = (1.5, 3.0, 6.0)


def kbps_values(text: str) -> list[float]:
    """One `--kbps` token as a list of bitrates: "6" → [6.0], and the older comma form
    "1.5,3,6" → [1.5, 3.0, 6.0], so `--kbps 1.5 3 6` and `--kbps 1.5,3,6` mean the same
    (an argparse `type` with nargs="+"; flatten the lists it gives)."""
    return [float(part) for part in text.split(",") if part.strip()]
