"""Codec evaluation: one summable float64 tally of masked and unmasked figures per bitrate.

Training validation (train_ds.py), `eval` and `compare` (telucodec_cli) all score with
`MetricSums`, so metrics.json, eval.json and compare.json share one schema (docs/CODEC.md).
Everything in a tally is a sum — item counts, the count, Σx and Σx² of each per-item figure,
signal and error energies, sample counts — so tallies of batches, workers or ranks add up
exactly: a rank exports `vector()`, one all-reduce sums the vectors, `from_vector` reads the
total back, and `summary()` derives means, 95 % intervals and the power-summed global SNR.

Pure model + metrics on tensors and arrays; it never reads a corpus.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from telucodec import metrics

Array = np.ndarray | torch.Tensor  # metrics accept either, [B x T] or [B x 1 x T]

# Per-item figures: each contributes (items with a value, Σx, Σx²); NaN marks "no value"
# (a gated item, or an item without a mostly-valid mel frame) and is counted, not averaged.
PER_ITEM = ("masked_snr_db", "masked_si_sdr_db", "masked_mel_distance", "unmasked_snr_db")
MOMENTS = ("items", "sum", "sumsq")
# Plain totals.
TOTALS = (
    "items",  # items evaluated
    "gated_items",  # items without a masked SNR (no valid audio, or below the gate)
    "unmasked_gated_items",  # the same over the whole segment
    "masked_signal",  # Σ m·ref²
    "masked_error",  # Σ m·(ref − est)²
    "unmasked_signal",  # Σ ref²
    "unmasked_error",  # Σ (ref − est)²
    "valid_samples",  # Σ m
    "samples",  # Σ segment length
)


class MetricSums:
    """Float64 sums of one bitrate over any number of items; `a + b` is the tally of both.

    `extra` names per-item figures computed outside `add` (compare's `pesq_wb`, `stoi`) and
    fed with `add_values`; tallies add only when their fields match.
    """

    def __init__(self, extra: Sequence[str] = ()):
        self.per_item = PER_ITEM + tuple(extra)
        self.fields = TOTALS + tuple(f"{m}.{k}" for m in self.per_item for k in MOMENTS)
        self.sums = dict.fromkeys(self.fields, 0.0)

    # --------------------------------------------------------------------------- adding

    def add(self, ref: Array, est: Array, mask: Array, sample_rate: int = 16000) -> np.ndarray:
        """Score one batch. ref, est Tensor or array [B x T] or [B x 1 x T]; mask bool [B x T].

        Masked figures see only mask == 1; the unmasked ones score the whole segment,
        padding and all, as the original validation did, to show what padding does.
        Returns the per-item masked SNR dB float64[B] (NaN where gated)."""
        signal, error, n_valid = metrics.masked_energies(ref, est, mask)
        snr, gated = metrics.snr_from_energies(signal, error, n_valid)
        si_sdr, _ = metrics.masked_si_sdr_db(ref, est, mask)
        mel = metrics.masked_mel_distance(ref, est, mask, sample_rate=sample_rate)
        everything = np.ones(np.shape(mask), dtype=bool)
        u_signal, u_error, u_n = metrics.masked_energies(ref, est, everything)
        u_snr, u_gated = metrics.snr_from_energies(u_signal, u_error, u_n)
        for name, value in (
            ("items", len(snr)),
            ("gated_items", gated),
            ("unmasked_gated_items", u_gated),
            ("masked_signal", signal.sum()),
            ("masked_error", error.sum()),
            ("unmasked_signal", u_signal.sum()),
            ("unmasked_error", u_error.sum()),
            ("valid_samples", n_valid.sum()),
            ("samples", u_n.sum()),
        ):
            self.sums[name] += float(value)
        self.add_values("masked_snr_db", snr)
        self.add_values("masked_si_sdr_db", si_sdr)
        self.add_values("masked_mel_distance", mel)
        self.add_values("unmasked_snr_db", u_snr)
        return snr

    def add_values(self, name: str, values: Array | Sequence[float]) -> None:
        """Per-item values float[B] of figure `name`; NaN (or ±inf) means "no value"."""
        if name not in self.per_item:
            raise KeyError(f"{name!r} is not a per-item figure of this tally: {self.per_item}")
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        self.sums[f"{name}.items"] += v.size
        self.sums[f"{name}.sum"] += float(v.sum())
        self.sums[f"{name}.sumsq"] += float(np.dot(v, v))

    @property
    def extra(self) -> tuple[str, ...]:
        return self.per_item[len(PER_ITEM) :]

    def __iadd__(self, other: MetricSums) -> MetricSums:
        if other.fields != self.fields:
            raise ValueError(
                f"tallies of different figures do not add: {other.extra} vs {self.extra}"
            )
        for name in self.fields:
            self.sums[name] += other.sums[name]
        return self

    def __add__(self, other: MetricSums) -> MetricSums:
        total = MetricSums(self.extra)
        total += self
        total += other
        return total

    # ------------------------------------------------------------------- as a vector

    def vector(self) -> np.ndarray:
        """float64[len(fields)]: what ranks all-reduce (a sum of vectors is a sum of tallies)."""
        return np.array([self.sums[name] for name in self.fields], dtype=np.float64)

    @classmethod
    def from_vector(cls, vector: Array, extra: Sequence[str] = ()) -> MetricSums:
        tally = cls(extra)
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (len(tally.fields),):
            raise ValueError(f"vector of shape {vector.shape}, expected ({len(tally.fields)},)")
        tally.sums = dict(zip(tally.fields, (float(v) for v in vector), strict=True))
        return tally

    # ----------------------------------------------------------------------- summary

    def summary(self) -> dict[str, float | int | None]:
        """The reported figures; None where nothing could be scored (never NaN, not JSON).

        Per-item figure M: `M` = mean over the items that have a value, `M_items` = how many,
        and the 95 % Student-t confidence interval of that mean over items, `M ± M_ci95`
        = [`M_ci95_lo`, `M_ci95_hi`] (None below 2 items; see `ci95`). Every value is a
        number or None, so the schema stays flat. Global SNRs are power-summed:
        Σ signal / Σ error over the whole set."""
        s = self.sums
        out: dict[str, float | int | None] = {
            "items": int(s["items"]),
            "gated_items": int(s["gated_items"]),
            "unmasked_gated_items": int(s["unmasked_gated_items"]),
            "padding_fraction": 1.0 - s["valid_samples"] / s["samples"] if s["samples"] else None,
            "masked_global_snr_db": _finite(
                metrics.global_snr_db(s["masked_signal"], s["masked_error"])
            ),
            "unmasked_global_snr_db": _finite(
                metrics.global_snr_db(s["unmasked_signal"], s["unmasked_error"])
            ),
        }
        for name in self.per_item:
            n, total, total_sq = (s[f"{name}.{k}"] for k in MOMENTS)
            out[name] = total / n if n else None
            out[f"{name}_ci95"] = ci95_half_width(n, total, total_sq)
            lo, hi = ci95(n, total, total_sq) or (None, None)
            out[f"{name}_ci95_lo"], out[f"{name}_ci95_hi"] = lo, hi
            out[f"{name}_items"] = int(n)
        return out


def ci95(n: float, total: float, total_sq: float) -> tuple[float, float] | None:
    """The 95 % Student-t confidence interval (lo, hi) of the mean of n items, from their
    count n, Σx and Σx²: mean ± t₀.₉₇₅,ₙ₋₁ · s / √n with s² = (Σx² − (Σx)²/n) / (n − 1).

    Only the three sums are needed, so the interval of a tally whose vector was summed
    over ranks (one all-reduce) is exactly the interval of all items at once. None for
    n < 2, where no spread can be estimated."""
    half = ci95_half_width(n, total, total_sq)
    if half is None:
        return None
    mean = total / n
    return mean - half, mean + half


def ci95_half_width(n: float, total: float, total_sq: float) -> float | None:
    """Half width t₀.₉₇₅,ₙ₋₁ · s / √n of the 95 % Student-t interval of a mean from
    (n, Σx, Σx²); None for n < 2."""
    if n < 2:
        return None
    from scipy.stats import t

    variance = max(0.0, (total_sq - total * total / n) / (n - 1))  # rounding can dip below 0
    return float(t.ppf(0.975, n - 1) * math.sqrt(variance / n))


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# ------------------------------------------------------------------ a model over a set


@dataclass
class ScoredItem:
    """One validation item at one bitrate, kept for the debug block: float arrays [T]."""

    snr_db: float  # masked SNR; -inf for a gated item, so it ranks worst
    key: str
    kbps: float
    ref: np.ndarray
    est: np.ndarray
    mask: np.ndarray


@dataclass
class Example:
    """An item for listening: the input and the decoded audio per bitrate, Tensor[T]."""

    key: str
    ref: torch.Tensor
    est: dict[float, torch.Tensor]


@dataclass
class Evaluation:
    """One pass of a model over (one rank's share of) a set, per bitrate."""

    kbps: list[float]
    n_quantizers: list[int]
    sums: list[MetricSums]
    worst: list[ScoredItem] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)

    def vector(self) -> np.ndarray:
        """All bitrates' tallies as one float64 vector, for a single all-reduce."""
        return np.concatenate([s.vector() for s in self.sums])

    def load_vector(self, vector: Array) -> None:
        """Replace the tallies by those in `vector` (e.g. the sum over ranks)."""
        parts = np.split(np.asarray(vector, dtype=np.float64), len(self.sums))
        self.sums = [
            MetricSums.from_vector(p, s.extra) for p, s in zip(parts, self.sums, strict=True)
        ]

    def figures(self) -> dict[str, dict[str, Any]]:
        """{"<kbps>": {"n_quantizers", **MetricSums.summary()}}: the eval/metrics schema."""
        return {
            f"{k:g}": {"n_quantizers": nq, **s.summary()}
            for k, nq, s in zip(self.kbps, self.n_quantizers, self.sums, strict=True)
        }


def perceptual_subset(listed: int, n: int) -> frozenset[int]:
    """The ordinals of n val items spread evenly over the `listed` ones (item ⌊j·listed/n⌋
    for j < n): a fixed subset, the same at every validation and for any world size, that
    reaches past the first shard's few source files. All items when n ≥ listed; none for
    n ≤ 0."""
    if n <= 0 or listed <= 0:
        return frozenset()
    n = min(n, listed)
    return frozenset(j * listed // n for j in range(n))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    kbps: Sequence[float],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_worst: int = 0,
    n_examples: int = 0,
    perceptual_items: Collection[int] = (),
) -> Evaluation:
    """Run `model` (a Codec: `.cfg`, `forward(Tensor[B x 1 x T], n_quantizers)`) over
    `batches` at every bitrate and tally the figures.

    A batch is `{"audio": Tensor[B x T] float32, "mask": BoolTensor[B x T], "key": [B]}`,
    as the shards loader yields. The model runs in eval() mode, so the EMA codebooks stay
    put and no collective runs inside forward (ranks may have different batch counts).
    `n_worst` keeps the items with the lowest masked SNR at the highest bitrate (gated ones
    first), `n_examples` the first items with their decoded audio.

    `perceptual_items` (ordinals from the batches' `"item"`, e.g. `perceptual_subset`) are
    also scored with PESQ-WB and STOI on their valid samples (padding cut off); the tallies
    then carry `pesq_wb` and `stoi`. At ~85 ms per item and bitrate on one core, a fixed
    subset keeps this to seconds, shared over ranks like the items themselves."""
    was_training = model.training
    model.eval()
    kbps = sorted(kbps)
    nqs = [model.cfg.n_quantizers_for_kbps(k) for k in kbps]
    extra = metrics.PERCEPTUAL if perceptual_items else ()
    result = Evaluation(list(kbps), nqs, [MetricSums(extra) for _ in kbps])
    sr = model.cfg.sample_rate
    for batch in batches:
        ref = torch.as_tensor(batch["audio"])[:, None]
        mask = torch.as_tensor(batch["mask"])
        keys = batch.get("key") or [str(i) for i in range(ref.shape[0])]
        chosen = [j for j, i in enumerate(batch.get("item", ())) if i in perceptual_items]
        x, ests = ref.to(device, dtype), {}
        for k, nq, sums in zip(kbps, nqs, result.sums, strict=True):
            est = model(x, n_quantizers=nq).audio.float().cpu()
            snr = sums.add(ref, est, mask, sample_rate=sr)
            ests[k] = est
            if extra:
                add_perceptual(sums, ref, est, mask, chosen, sr)
        if n_worst:  # `snr` is the highest bitrate's
            for j, key in enumerate(keys):
                value = float(snr[j]) if np.isfinite(snr[j]) else -math.inf
                top = ests[kbps[-1]]
                arrays = (ref[j, 0].numpy(), top[j, 0].numpy(), mask[j].numpy())
                result.worst.append(ScoredItem(value, key, kbps[-1], *arrays))
            result.worst = sorted(result.worst, key=lambda w: w.snr_db)[:n_worst]
        for j, key in enumerate(keys[: max(0, n_examples - len(result.examples))]):
            result.examples.append(Example(key, ref[j, 0], {k: v[j, 0] for k, v in ests.items()}))
    model.train(was_training)
    return result


def add_perceptual(
    sums: MetricSums,
    ref: torch.Tensor,
    est: torch.Tensor,
    mask: torch.Tensor,
    rows: Sequence[int],
    sample_rate: int,
) -> None:
    """PESQ-WB and STOI of batch rows `rows` into `sums`; ref, est float Tensor[B x 1 x T],
    mask bool Tensor[B x T]. Each item is scored on its valid samples only."""
    pesq, stoi = [], []
    for j in rows:
        valid = mask[j].numpy()
        p, s = metrics.perceptual_scores(
            ref[j, 0].numpy()[valid], est[j, 0].numpy()[valid], sample_rate
        )
        pesq.append(p)
        stoi.append(s)
    sums.add_values("pesq_wb", pesq)
    sums.add_values("stoi", stoi)


def debug_block(item: ScoredItem) -> str:
    """The original train_codec.py debug print for one item, with the masked figures beside
    the unmasked ones it used to show."""
    ref, est, mask = item.ref, item.est, item.mask

    def power(x: np.ndarray) -> float:
        return float(np.mean(np.square(x, dtype=np.float64))) if x.size else float("nan")

    def db(a: float, b: float) -> float:
        return 10 * math.log10(a / b) if a > 0 and b > 0 else float("nan")

    noise = ref - est
    m_sig, m_noise = power(ref[mask]), power(noise[mask])
    u_sig, u_noise = power(ref), power(noise)
    return "\n".join(
        [
            f"=== VALIDATION SNR DEBUG === {item.key} @ {item.kbps:g} kbps",
            f"Input  range: [{ref.min():.6f}, {ref.max():.6f}], "
            f"mean={ref.mean():.6f}, std={ref.std():.6f}",
            f"Output range: [{est.min():.6f}, {est.max():.6f}], "
            f"mean={est.mean():.6f}, std={est.std():.6f}",
            f"Padding: {100 * (1 - mask.mean()):.1f}% of {mask.size} samples",
            f"Signal power: {u_sig:.8f} (masked {m_sig:.8f})",
            f"Noise power:  {u_noise:.8f} (masked {m_noise:.8f})",
            f"SNR: {db(u_sig, u_noise):.2f} dB unmasked, {db(m_sig, m_noise):.2f} dB masked",
        ]
    )
