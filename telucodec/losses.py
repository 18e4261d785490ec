"""Training losses, all restricted to valid (mask == 1) audio.

- `l1`: masked mean absolute waveform error (what keeps the phase, hence SNR, honest).
- `stft`: multi-resolution STFT loss (Yamamoto et al. 2020 Parallel WaveGAN; the DAC form:
  L1 of log10 magnitudes plus L1 of magnitudes) over frames that are mostly valid.
- `mel`: multi-resolution log-mel L1 (DAC §3.4) on the same frames, our own filterbank.
- `commitment`, `codebook`: the VQ terms from the model output.
- optional `adv`, `feature`: hinge GAN loss and relative feature matching against the
  multi-scale STFT discriminator (EnCodec §3.4), when one is passed in.
Spectral terms are averaged over resolutions; `loss` is the weighted sum with cfg's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.discriminator import MultiScaleSTFTDiscriminator
from telucodec.mel import frame_mask, magnitude_frames, mel_filterbank
from telucodec.model import CodecOutput

CLAMP = 1e-5  # floor before log10 (DAC's clamp_eps)


def pre_emphasis(audio: torch.Tensor, coefficient: float) -> torch.Tensor:
    """y[n] = x[n] - a·x[n-1] (x[-1] = 0). Tensor[B x 1 x T] -> Tensor[B x 1 x T].

    The first-order high-pass of speech coders (AMR-WB's 0.68, ITU-T G.722.2 §5.2): an
    error weighted by it costs more at high frequencies, where speech has little energy
    and noise is heard, and less under the strong low formants, where it is masked."""
    if coefficient == 0.0:
        return audio
    return audio - coefficient * torch.nn.functional.pad(audio[..., :-1], (1, 0))


def masked_l1(
    ref: torch.Tensor, est: torch.Tensor, mask: torch.Tensor, emphasis: float = 0.0
) -> torch.Tensor:
    """ref, est Tensor[B x 1 x T], mask Tensor[B x T] -> scalar mean |ref - est| over valid
    samples (0 when none is valid), of the pre-emphasized error when `emphasis` > 0."""
    m = mask[:, None].to(ref.dtype)
    err = pre_emphasis(ref - est, emphasis)  # linear: emphasis of the difference
    return (err.abs() * m).sum() / m.sum().clamp(min=1.0)


class SpectralLoss(nn.Module):
    """Multi-resolution STFT and log-mel L1 on masked frames, sharing one STFT per resolution.
    ref, est Tensor[B x 1 x T], mask Tensor[B x T] -> (stft scalar, mel scalar)."""

    def __init__(self, resolutions: tuple[tuple[int, int], ...], sample_rate: int):
        super().__init__()
        self.resolutions = tuple(resolutions)
        for n_fft, n_mels in self.resolutions:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)
            bank = torch.tensor(mel_filterbank(n_fft, n_mels, sample_rate), dtype=torch.float32)
            self.register_buffer(f"mel_{n_fft}", bank, persistent=False)

    def forward(
        self, ref: torch.Tensor, est: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 whatever the caller's dtype or autocast: cuFFT and MKL have no bf16 FFT,
        # and log10 of bf16 magnitudes (8-bit mantissa) would quantize the loss.
        with torch.autocast(ref.device.type, enabled=False):
            return self._forward(ref.float(), est.float(), mask)

    def _forward(
        self, ref: torch.Tensor, est: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stft_total, mel_total = ref.new_zeros(()), ref.new_zeros(())
        for n_fft, _ in self.resolutions:
            hop = n_fft // 4
            window, bank = getattr(self, f"window_{n_fft}"), getattr(self, f"mel_{n_fft}")
            frames = frame_mask(mask, n_fft, hop)[:, None].to(ref.dtype)  # B x 1 x frames
            s_ref = magnitude_frames(ref[:, 0], mask, n_fft, hop, window)
            s_est = magnitude_frames(est[:, 0], mask, n_fft, hop, window)
            log_err = (s_ref.clamp(min=CLAMP).log10() - s_est.clamp(min=CLAMP).log10()).abs()
            mag_err = (s_ref - s_est).abs()
            denom = (frames.sum() * s_ref.shape[1]).clamp(min=1.0)
            stft_total = stft_total + ((log_err + mag_err) * frames).sum() / denom
            m_ref = (bank @ s_ref).clamp(min=CLAMP).log10()
            m_est = (bank @ s_est).clamp(min=CLAMP).log10()
            mel_denom = (frames.sum() * bank.shape[0]).clamp(min=1.0)
            mel_total = mel_total + ((m_ref - m_est).abs() * frames).sum() / mel_denom
        n = len(self.resolutions)
        return stft_total / n, mel_total / n


def discriminator_loss(
    discriminator: MultiScaleSTFTDiscriminator,
    ref: torch.Tensor,
    est: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Hinge loss for the critic (est is detached). ref, est Tensor[B x 1 x T],
    mask Tensor[B x T] -> scalar, mean over scales."""
    real = discriminator(ref, mask)
    fake = discriminator(est.detach(), mask)
    total = ref.new_zeros(())
    for (logit_real, _), (logit_fake, _) in zip(real, fake, strict=True):
        total = total + torch.relu(1 - logit_real).mean() + torch.relu(1 + logit_fake).mean()
    return total / len(real)


def generator_adversarial_loss(
    discriminator: MultiScaleSTFTDiscriminator,
    ref: torch.Tensor,
    est: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge adversarial loss, relative feature-matching L1) for the generator, means over
    scales and layers. Features of real audio are targets (no gradient)."""
    with torch.no_grad():
        real = discriminator(ref, mask)
    fake = discriminator(est, mask)
    adv, feat, n_feat = ref.new_zeros(()), ref.new_zeros(()), 0
    for (_, f_real), (logit_fake, f_fake) in zip(real, fake, strict=True):
        adv = adv + torch.relu(1 - logit_fake).mean()
        for a, b in zip(f_real, f_fake, strict=True):
            # EnCodec's relative feature loss: L1 scaled by the mean magnitude of the target.
            feat = feat + (a - b).abs().mean() / (a.abs().mean() + 1e-8)
            n_feat += 1
    return adv / len(fake), feat / max(n_feat, 1)


class CodecLoss(nn.Module):
    """All generator terms with cfg's weights.

    forward(ref, est, mask, out, discriminator=None):
      ref, est Tensor[B x 1 x T]; mask BoolTensor[B x T]; out CodecOutput (VQ terms).
    Returns dict[str, Tensor] of scalars: "loss" (weighted total), "l1", "stft", "mel",
    "commitment", "codebook", and "adv", "feature" when a discriminator is given.
    """

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.spectral = SpectralLoss(cfg.spectral_resolutions, cfg.sample_rate)

    def forward(
        self,
        ref: torch.Tensor,
        est: torch.Tensor,
        mask: torch.Tensor,
        out: CodecOutput,
        discriminator: MultiScaleSTFTDiscriminator | None = None,
    ) -> dict[str, torch.Tensor]:
        if ref.shape != est.shape or ref.dim() != 3 or mask.shape != (ref.shape[0], ref.shape[2]):
            raise ValueError(
                f"expected ref, est Tensor[B x 1 x T] and mask [B x T], got "
                f"{tuple(ref.shape)}, {tuple(est.shape)}, {tuple(mask.shape)}"
            )
        cfg = self.cfg
        stft, mel = self.spectral(ref, est, mask)
        terms = {
            "l1": masked_l1(ref.float(), est.float(), mask, cfg.l1_pre_emphasis),
            "stft": stft,
            "mel": mel,
            "commitment": out.commitment_loss,
            "codebook": out.codebook_loss,
        }
        loss = (
            cfg.l1_weight * terms["l1"]
            + cfg.stft_weight * stft
            + cfg.mel_weight * mel
            + cfg.commitment_weight * terms["commitment"]
            + cfg.codebook_weight * terms["codebook"]
        )
        if discriminator is not None:
            terms["adv"], terms["feature"] = generator_adversarial_loss(
                discriminator, ref, est, mask
            )
            loss = loss + cfg.adv_weight * terms["adv"] + cfg.feature_weight * terms["feature"]
        terms["loss"] = loss
        return terms
