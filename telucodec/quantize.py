"""Residual vector quantization with EMA codebooks (SoundStream / EnCodec), k-means seeding,
dead-code replacement, straight-through gradients and quantizer dropout (DAC).

`VectorQuantize` is one codebook; `ResidualVectorQuantize` chains `n_codebooks` of them, each
coding what the previous ones left. With 1024 entries a code is 10 bits, so at 50 frames/s
every codebook adds 0.5 kbps and one model serves 1.5 / 3 / 6 kbps with 3 / 6 / 12 codebooks.

The codebooks are buffers updated by exponential moving averages, not by gradients, so they
live in float32 and sync across data-parallel ranks with all-reduce when torch.distributed is
initialized (the EMA then sees the global batch, as in EnCodec's distributed training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from telucodec.configs import CodecConfig
from telucodec.layers import wn_conv1d


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.all_reduce(tensor)
    return tensor


def _broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's value everywhere, so random choices (k-means seeds, code revivals) agree."""
    if _distributed():
        torch.distributed.broadcast(tensor, src=0)
    return tensor


def _sample_vectors(vectors: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of Tensor[N x D], without replacement when N >= n (global torch RNG)."""
    count = vectors.shape[0]
    if count >= n:
        index = torch.randperm(count, device=vectors.device)[:n]
    else:
        index = torch.randint(0, count, (n,), device=vectors.device)
    return vectors[index]


def nearest_code(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (Euclidean) for each row. Tensor[N x D], Tensor[K x D] ->
    LongTensor[N]. argmin ||x - c||² = argmin (||c||² - 2 x·c): one addmm, no N x K x D."""
    scores = torch.addmm(codebook.pow(2).sum(1)[None], vectors, codebook.t(), alpha=-2.0)
    return scores.argmin(dim=1)


def kmeans(vectors: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means. vectors Tensor[N x D] -> (centroids Tensor[k x D], counts Tensor[k]).

    Seeds from k sampled vectors; an empty cluster keeps its seed. Deterministic given the
    torch seed."""
    centroids = _sample_vectors(vectors, k).clone()
    counts = torch.zeros(k, device=vectors.device)
    for _ in range(max(iters, 1)):
        assign = nearest_code(vectors, centroids)
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, counts


@dataclass
class QuantizerOutput:
    """What `ResidualVectorQuantize.forward` returns.

    z_q: Tensor[B x D x F] quantized latent with straight-through gradients.
    codes: LongTensor[B x Nq x F] code indices of the stages computed.
    commitment_loss, codebook_loss: scalar Tensors, summed over stages; each stage's term is
      the batch mean with items that dropped the stage counting 0 (as in DAC).
    n_quantizers: LongTensor[B] stages each item used (quantizer dropout).
    """

    z_q: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    n_quantizers: torch.Tensor


class VectorQuantize(nn.Module):
    """One EMA codebook of `codebook_size` vectors of `codebook_dim`, with optional 1x1
    projections in and out when codebook_dim < input_dim ("factorized codes", DAC §3.2 after
    Yu et al. 2022 ViT-VQGAN)."""

    def __init__(
        self,
        input_dim: int,
        codebook_size: int,
        codebook_dim: int,
        decay: float = 0.99,
        kmeans_iters: int = 10,
        dead_code_ratio: float = 0.1,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.decay = decay
        self.kmeans_iters = kmeans_iters
        self.dead_code_ratio = dead_code_ratio
        self.eps = eps
        factorized = codebook_dim != input_dim
        self.in_proj = wn_conv1d(input_dim, codebook_dim, 1) if factorized else nn.Identity()
        self.out_proj = wn_conv1d(codebook_dim, input_dim, 1) if factorized else nn.Identity()
        self.register_buffer("codebook", torch.randn(codebook_size, codebook_dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros(1))

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Projected latent Tensor[B x D x F] -> nearest code indices LongTensor[B x F]."""
        flat = z_e.detach().transpose(1, 2).reshape(-1, z_e.shape[1]).float()
        return nearest_code(flat, self.codebook.float()).view(z_e.shape[0], z_e.shape[2])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[B x F] -> codebook vectors Tensor[B x codebook_dim x F]."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[B x F] -> this stage's contribution Tensor[B x input_dim x F]."""
        return self.out_proj(self.lookup(codes))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Tensor[B x input_dim x F] -> LongTensor[B x F]; never updates the codebook."""
        return self.nearest(self.in_proj(z))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Quantize one stage; in train() mode also update the EMA codebook.

        z: Tensor[B x input_dim x F].
        Returns z_q Tensor[B x input_dim x F] (straight-through), codes LongTensor[B x F],
        commitment loss Tensor[B] and codebook loss Tensor[B] (per item, for dropout masks).
        """
        z_e = self.in_proj(z)
        if self.training:
            self._initialize(z_e)
        codes = self.nearest(z_e)
        q = self.lookup(codes).to(z_e.dtype)
        if self.training:
            self._update(z_e, codes)
        # VQ-VAE (van den Oord et al. 2017): commit the encoder to its code; the codebook term
        # carries no gradient because EMA moves the codes (Razavi et al. 2019), it is a gauge.
        commitment = F.mse_loss(z_e, q.detach(), reduction="none").mean(dim=(1, 2))
        codebook = commitment.detach()  # same value as mse(q, sg(z_e)); no gradient to give
        # Straight-through estimator (Bengio et al. 2013): forward q, backward identity.
        z_q = z_e + (q - z_e).detach()
        return self.out_proj(z_q), codes, commitment, codebook

    @torch.no_grad()
    def _initialize(self, z_e: torch.Tensor) -> None:
        # k-means seeding of the codebook from the first batch (SoundStream §3.3).
        if self.initialized.item():
            return
        flat = z_e.detach().transpose(1, 2).reshape(-1, z_e.shape[1]).float()
        centroids, counts = kmeans(flat, self.codebook_size, self.kmeans_iters)
        self.codebook.copy_(_broadcast_(centroids))
        self.cluster_size.copy_(_broadcast_(counts))
        self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def _update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z_e.detach().transpose(1, 2).reshape(-1, z_e.shape[1]).float()
        index = codes.reshape(-1)
        counts = torch.bincount(index, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, index, flat)
        _all_reduce_sum_(counts)
        _all_reduce_sum_(sums)
        # EMA codebook update (van den Oord et al. 2017, appendix A.1).
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self._revive_dead_codes(flat)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    def _revive_dead_codes(self, flat: torch.Tensor) -> None:
        # Dead-code replacement (Zeghidour et al. 2021 SoundStream; Dhariwal et al. 2020
        # Jukebox): a code used far below the mean rate is moved onto a vector of this batch.
        threshold = self.dead_code_ratio * self.cluster_size.mean()
        dead = self.cluster_size < threshold
        dead_any = _all_reduce_sum_(dead.any().float().reshape(1))
        if dead_any.item() == 0:
            return
        dead = _broadcast_(dead.float()).bool()
        replacement = _broadcast_(_sample_vectors(flat, int(dead.sum().item())))
        self.cluster_size[dead] = threshold
        self.embed_sum[dead] = replacement * threshold


class ResidualVectorQuantize(nn.Module):
    """`n_codebooks` VectorQuantize stages, each quantizing the previous stages' residual
    (SoundStream, Zeghidour et al. 2021, algorithm 1)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.n_codebooks = cfg.n_codebooks
        self.quantizer_dropout = cfg.quantizer_dropout
        self.quantizers = nn.ModuleList(
            VectorQuantize(
                cfg.latent_dim,
                cfg.codebook_size,
                cfg.codebook_dim,
                decay=cfg.ema_decay,
                kmeans_iters=cfg.kmeans_iters,
                dead_code_ratio=cfg.dead_code_ratio,
            )
            for _ in range(cfg.n_codebooks)
        )

    def _check(self, n_quantizers: int) -> int:
        if not 1 <= n_quantizers <= self.n_codebooks:
            raise ValueError(f"n_quantizers {n_quantizers} outside 1..{self.n_codebooks}")
        return int(n_quantizers)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        """z: Tensor[B x D x F] latent.

        n_quantizers: stages to use for every item. None means all of them in eval() mode;
        in train() mode it means quantizer dropout (DAC, Kumar et al. 2023 §3.3; SoundStream's
        "quantizer dropout"): each item independently, with probability `quantizer_dropout`,
        uses a uniform random number of stages in 1..n_codebooks. All stages still run (and
        their EMA codebooks learn) on every item; the dropout masks what each item's
        reconstruction and commitment loss see.
        """
        batch = z.shape[0]
        if n_quantizers is not None:
            n_run = self._check(n_quantizers)
            per_item = torch.full((batch,), n_run, device=z.device, dtype=torch.long)
        else:
            n_run = self.n_codebooks
            per_item = torch.full((batch,), n_run, device=z.device, dtype=torch.long)
            if self.training and self.quantizer_dropout > 0:
                dropped = torch.randint(1, n_run + 1, (batch,), device=z.device)
                use = torch.rand(batch, device=z.device) < self.quantizer_dropout
                per_item = torch.where(use, dropped, per_item)
        z_q = torch.zeros_like(z)
        residual = z
        codes, commitment, codebook = [], z.new_zeros(()), z.new_zeros(())
        for i, quantizer in enumerate(self.quantizers[:n_run]):
            z_q_i, codes_i, commitment_i, codebook_i = quantizer(residual)
            active = (per_item > i).to(z.dtype)
            z_q = z_q + z_q_i * active[:, None, None]
            residual = residual - z_q_i
            commitment = commitment + (commitment_i * active).mean()
            codebook = codebook + (codebook_i * active).mean()
            codes.append(codes_i)
        return QuantizerOutput(z_q, torch.stack(codes, dim=1), commitment, codebook, per_item)

    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        """Tensor[B x D x F] -> LongTensor[B x Nq x F]; never updates codebooks."""
        n_run = self._check(self.n_codebooks if n_quantizers is None else n_quantizers)
        codes, residual = [], z
        for quantizer in self.quantizers[:n_run]:
            codes_i = quantizer.encode(residual)
            residual = residual - quantizer.decode(codes_i)
            codes.append(codes_i)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[B x Nq x F] (Nq <= n_codebooks, the first Nq stages) ->
        latent Tensor[B x D x F], the sum of the stages' codebook vectors."""
        n_run = self._check(codes.shape[1])
        if codes.min() < 0 or codes.max() >= self.quantizers[0].codebook_size:
            raise ValueError(f"codes outside 0..{self.quantizers[0].codebook_size - 1}")
        return sum(q.decode(codes[:, i]) for i, q in enumerate(self.quantizers[:n_run]))
