"""telucodec.metrics against independent numpy formulas: masked SNR, power-summed global SNR,
masked SI-SDR and the masked multi-resolution mel distance.

The properties that matter for validation: padding (mask 0) never changes a figure whatever
it holds, and an item with no real audio (all padding, or below the gate) is excluded and
counted, never averaged in as -inf or NaN.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from telucodec import metrics
from telucodec.evaluate import MOMENTS, MetricSums, ci95
from telucodec.mel import hz_to_mel, mel_filterbank

# ------------------------------------------------------------------------------ references

# The masked figures that padding must not move (the mission's bug was padding counted).
PADDING_INVARIANT_FIGURES = (
    "masked_snr_db",
    "masked_snr_db_ci95",
    "masked_global_snr_db",
    "masked_si_sdr_db",
    "masked_mel_distance",
)


def ref_snr_db(ref: np.ndarray, est: np.ndarray, mask: np.ndarray) -> float:
    r, e = ref[mask].astype(np.float64), est[mask].astype(np.float64)
    return 10 * math.log10(math.fsum(r * r) / math.fsum((r - e) ** 2))


def ref_si_sdr_db(ref: np.ndarray, est: np.ndarray, mask: np.ndarray) -> float:
    r, e = ref[mask].astype(np.float64), est[mask].astype(np.float64)
    alpha = np.dot(e, r) / np.dot(r, r)
    target = alpha * r
    return 10 * math.log10(np.dot(target, target) / np.dot(e - target, e - target))


def ref_mel_bank(n_fft: int, n_mels: int, sr: int) -> np.ndarray:
    """HTK triangles with unit peaks, written as a loop over filters and bins."""
    top = 2595 * math.log10(1 + (sr / 2) / 700)
    edges = [700 * (10 ** (top * i / (n_mels + 1) / 2595) - 1) for i in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= mid:
                bank[m, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[m, k] = (hi - f) / (hi - mid)
    return bank


def ref_mel_distance(ref: np.ndarray, est: np.ndarray, mask: np.ndarray, sr: int = 16000) -> float:
    """Per-frame numpy rfft of the masked signal zero-padded by n_fft/2; a frame counts when
    more than half of its window is valid; mean |Δ log10 mel| over counted frames and bins,
    averaged over the resolutions."""
    total = 0.0
    for n_fft, n_mels in metrics.MEL_RESOLUTIONS:
        hop = n_fft // 4
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        bank = ref_mel_bank(n_fft, n_mels, sr)
        pad = np.zeros(n_fft // 2)
        r = np.concatenate([pad, np.where(mask, ref, 0.0), pad])
        e = np.concatenate([pad, np.where(mask, est, 0.0), pad])
        m = np.concatenate([pad, mask.astype(float), pad])
        diffs = []
        for f in range(len(ref) // hop + 1):
            span = slice(f * hop, f * hop + n_fft)
            if m[span].sum() / n_fft <= 0.5:
                continue
            mels = []
            for x in (r, e):
                spec = np.fft.rfft(x[span] * window)
                mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-12)
                mels.append(np.log10(np.maximum(bank @ mag, metrics.MEL_FLOOR)))
            diffs.append(np.abs(mels[0] - mels[1]))
        total += float(np.mean(diffs))
    return total / len(metrics.MEL_RESOLUTIONS)


def batch(rng: np.random.Generator, n: int = 3, length: int = 4000):
    """Reference, a noisy estimate, and masks with leading/trailing padding and inner gaps."""
    ref = 0.1 * rng.standard_normal((n, length))
    est = ref + rng.uniform(0.005, 0.05, (n, 1)) * rng.standard_normal((n, length))
    mask = np.ones((n, length), dtype=bool)
    mask[0, 3100:] = False  # trailing padding
    mask[1, :500] = False  # leading padding
    mask[1, 2000:2300] = False  # a gap
    return ref, est, mask


# ------------------------------------------------------------------------------ formulas


def test_masked_snr_is_the_ratio_of_masked_energies_per_item():
    ref, est, mask = batch(np.random.default_rng(0))
    snr, gated = metrics.masked_snr_db(ref, est, mask)
    assert gated == 0 and snr.dtype == np.float64
    for i in range(len(ref)):
        assert snr[i] == pytest.approx(ref_snr_db(ref[i], est[i], mask[i]), rel=1e-12)


def test_metrics_accept_torch_b1t_and_numpy_bt_alike():
    ref, est, mask = batch(np.random.default_rng(1))
    ref32, est32 = ref.astype(np.float32), est.astype(np.float32)
    a, _ = metrics.masked_snr_db(ref32, est32, mask)
    b, _ = metrics.masked_snr_db(
        torch.from_numpy(ref32)[:, None], torch.from_numpy(est32)[:, None], torch.from_numpy(mask)
    )
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.masked_snr_db(ref, est[:, :-1], mask)


def test_energies_accumulate_in_float64_even_for_float32_input():
    rng = np.random.default_rng(2)
    ref = (0.3 * rng.standard_normal((1, 200_000))).astype(np.float32)
    est = (ref + 1e-3 * rng.standard_normal(ref.shape)).astype(np.float32)
    mask = np.ones(ref.shape, dtype=bool)
    signal, error, n_valid = metrics.masked_energies(ref, est, mask)
    r, e = ref[0].astype(np.float64), est[0].astype(np.float64)
    # A float32 accumulator is off by ~1e-7 relative here; float64 agrees with fsum to 1e-12.
    assert signal[0] == pytest.approx(math.fsum(r * r), rel=1e-12)
    assert error[0] == pytest.approx(math.fsum((r - e) ** 2), rel=1e-12)
    assert n_valid[0] == ref.shape[1]


def test_global_snr_is_power_summed_over_the_set_not_a_mean_of_items():
    rng = np.random.default_rng(3)
    ref = np.stack([0.3 * rng.standard_normal(2000), 0.003 * rng.standard_normal(2000)])
    est = ref + 0.01 * rng.standard_normal(ref.shape)  # same noise: the quiet item scores low
    mask = np.ones(ref.shape, dtype=bool)
    signal, error, _ = metrics.masked_energies(ref, est, mask)
    per_item, _ = metrics.masked_snr_db(ref, est, mask)
    figure = metrics.global_snr_db(signal.sum(), error.sum())
    expected = 10 * math.log10(math.fsum((ref**2).ravel()) / math.fsum(((ref - est) ** 2).ravel()))
    assert figure == pytest.approx(expected, rel=1e-12)
    assert per_item[1] < 0 < figure - 25  # the quiet item cannot drag the global figure down
    assert figure > per_item.mean() + 10


def test_masked_si_sdr_matches_formula_and_ignores_gain():
    ref, est, mask = batch(np.random.default_rng(4))
    sdr, gated = metrics.masked_si_sdr_db(ref, est, mask)
    assert gated == 0
    for i in range(len(ref)):
        assert sdr[i] == pytest.approx(ref_si_sdr_db(ref[i], est[i], mask[i]), rel=1e-10)
    louder, _ = metrics.masked_si_sdr_db(ref, 3.0 * est, mask)
    np.testing.assert_allclose(louder, sdr, rtol=1e-10)
    snr_louder, _ = metrics.masked_snr_db(ref, 3.0 * est, mask)
    assert np.all(snr_louder < metrics.masked_snr_db(ref, est, mask)[0] - 5)


def test_masked_mel_distance_matches_an_independent_numpy_stft():
    rng = np.random.default_rng(5)
    ref, est, mask = batch(rng, n=2, length=3000)
    got = metrics.masked_mel_distance(ref, est, mask)
    for i in range(len(ref)):
        assert got[i] == pytest.approx(ref_mel_distance(ref[i], est[i], mask[i]), rel=1e-9)
    assert metrics.masked_mel_distance(ref, ref, mask) == pytest.approx([0.0, 0.0], abs=1e-12)


def test_mel_filterbank_has_unit_peaks_on_htk_centres():
    for n_fft, n_mels in metrics.MEL_RESOLUTIONS:
        bank = mel_filterbank(n_fft, n_mels, 16000)
        np.testing.assert_allclose(bank, ref_mel_bank(n_fft, n_mels, 16000), atol=1e-12)
        assert bank.shape == (n_mels, n_fft // 2 + 1) and bank.min() >= 0 and bank.max() <= 1
    centres = np.linspace(0, hz_to_mel(8000.0), 66)[1:-1]
    peaks = hz_to_mel(np.argmax(mel_filterbank(4096, 64, 16000), axis=1) * 16000 / 4096)
    assert np.abs(peaks - centres).max() < 3.0  # within a bin of 3.9 Hz, in mel


# ------------------------------------------------------------------------------ padding


@pytest.mark.parametrize("filler", ["noise", "nan", "inf"])
def test_appending_masked_padding_changes_no_metric(filler):
    rng = np.random.default_rng(6)
    ref, est, mask = batch(rng)
    extra = 2500
    junk = {
        "noise": 5.0 * rng.standard_normal((len(ref), extra)),
        "nan": np.full((len(ref), extra), np.nan),
        "inf": np.full((len(ref), extra), np.inf),
    }[filler]
    ref2 = np.concatenate([ref, rng.standard_normal((len(ref), extra))], axis=1)
    est2 = np.concatenate([est, junk], axis=1)
    mask2 = np.concatenate([mask, np.zeros((len(ref), extra), dtype=bool)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (metrics.masked_snr_db, metrics.masked_si_sdr_db):
            np.testing.assert_allclose(fn(ref2, est2, mask2)[0], fn(ref, est, mask)[0], rtol=1e-12)
        np.testing.assert_allclose(
            metrics.masked_mel_distance(ref2, est2, mask2),
            metrics.masked_mel_distance(ref, est, mask),
            rtol=1e-9,
        )
        for a, b in zip(
            metrics.masked_energies(ref2, est2, mask2),
            metrics.masked_energies(ref, est, mask),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_evaluation_figures_masked_ignore_padding_unmasked_do_not():
    rng = np.random.default_rng(7)
    ref, est, mask = batch(rng)
    extra = 4000
    ref2 = np.concatenate([ref, np.zeros((len(ref), extra))], axis=1)
    est2 = np.concatenate([est, 0.05 * rng.standard_normal((len(ref), extra))], axis=1)
    mask2 = np.concatenate([mask, np.zeros((len(ref), extra), dtype=bool)], axis=1)
    bare, padded = MetricSums(), MetricSums()
    bare.add(ref, est, mask)
    padded.add(ref2, est2, mask2)
    a, b = bare.summary(), padded.summary()
    for name in PADDING_INVARIANT_FIGURES:
        assert b[name] == pytest.approx(a[name], rel=1e-9), name
    # Scored over the whole row, the decoder's output in the padding counts as error.
    assert b["unmasked_snr_db"] < a["unmasked_snr_db"] - 3
    assert b["unmasked_snr_db"] < b["masked_snr_db"] - 3
    assert b["padding_fraction"] > a["padding_fraction"]


def test_tallies_of_parts_add_up_to_the_tally_of_the_whole():
    """What lets ranks all-reduce one vector: sum of parts' vectors = the whole's vector."""
    ref, est, mask = batch(np.random.default_rng(11), n=6)
    whole, first, second = MetricSums(), MetricSums(), MetricSums()
    whole.add(ref, est, mask)
    first.add(ref[:2], est[:2], mask[:2])
    second.add(ref[2:], est[2:], mask[2:])
    np.testing.assert_allclose(first.vector() + second.vector(), whole.vector(), rtol=1e-12)
    assert (first + second).summary() == pytest.approx(whole.summary(), rel=1e-12)
    summed = MetricSums.from_vector(first.vector() + second.vector())
    assert summed.summary() == pytest.approx(whole.summary(), rel=1e-12)
    assert whole.vector().dtype == np.float64 and whole.vector().shape == (len(whole.fields),)
    with pytest.raises(ValueError, match="do not add"):
        whole += MetricSums(extra=("pesq_wb",))


def test_ci95_is_the_student_t_interval_of_the_mean_per_item_figure():
    from scipy import stats

    ref, est, mask = batch(np.random.default_rng(12), n=7)
    tally = MetricSums()
    for i in range(0, 7, 3):  # several batches: the interval comes from the summed moments
        tally.add(ref[i : i + 3], est[i : i + 3], mask[i : i + 3])
    figures = tally.summary()
    for name, per_item in (
        ("masked_snr_db", metrics.masked_snr_db(ref, est, mask)[0]),
        ("masked_si_sdr_db", metrics.masked_si_sdr_db(ref, est, mask)[0]),
    ):
        lo, hi = stats.t.interval(0.95, 6, loc=per_item.mean(), scale=stats.sem(per_item))
        assert figures[name] == pytest.approx(per_item.mean(), rel=1e-12)
        assert figures[f"{name}_ci95"] == pytest.approx((hi - lo) / 2, rel=1e-9)
        assert figures[f"{name}_ci95_lo"] == pytest.approx(lo, rel=1e-9)
        assert figures[f"{name}_ci95_hi"] == pytest.approx(hi, rel=1e-9)
        assert figures[f"{name}_items"] == 7
    one = MetricSums()
    one.add(ref[:1], est[:1], mask[:1])
    figures = one.summary()
    assert figures["masked_snr_db_ci95"] is None  # no interval from a single item
    assert figures["masked_snr_db_ci95_lo"] is None and figures["masked_snr_db_ci95_hi"] is None


def _interval(tally: MetricSums, name: str = "masked_snr_db") -> tuple[float, float] | None:
    return ci95(*(tally.sums[f"{name}.{k}"] for k in MOMENTS))


def test_ci95_covers_the_true_mean_at_the_nominal_rate_for_skewed_items():
    """2000 validation sets of 20 items drawn from a right-skewed law with known mean
    (gamma, shape 4: skewness 1, mean 4·1.5 − 3 = 3 dB): the interval from the tally's
    summed moments holds the true mean in about 95 % of sets."""
    rng = np.random.default_rng(2024)
    shape, scale, shift = 4.0, 1.5, -3.0
    true_mean = shape * scale + shift
    covered = 0
    for _ in range(2000):
        tally = MetricSums()
        tally.add_values("masked_snr_db", rng.gamma(shape, scale, size=20) + shift)
        lo, hi = _interval(tally)
        covered += lo <= true_mean <= hi
    assert 0.93 <= covered / 2000 <= 0.97, covered / 2000


def test_ci95_of_two_halves_all_reduced_is_the_interval_of_all_items_at_once():
    """Two ranks each tally half the items; the summed vectors give the same interval."""
    values = np.random.default_rng(3).normal(1.0, 4.0, size=31)
    whole, first, second = MetricSums(), MetricSums(), MetricSums()
    whole.add_values("masked_snr_db", values)
    first.add_values("masked_snr_db", values[:12])
    second.add_values("masked_snr_db", values[12:])
    reduced = MetricSums.from_vector(first.vector() + second.vector())
    assert _interval(reduced) == pytest.approx(_interval(whole), rel=1e-12)
    figures = reduced.summary()
    assert (figures["masked_snr_db_ci95_lo"], figures["masked_snr_db_ci95_hi"]) == pytest.approx(
        _interval(whole), rel=1e-12
    )
    assert _interval(first) != pytest.approx(_interval(whole))  # a half alone is not enough


# ------------------------------------------------------------------------------ gating


def test_all_padding_and_near_silent_items_are_gated_and_counted_never_inf():
    rng = np.random.default_rng(8)
    length = 3000
    ref = np.zeros((5, length))
    ref[0] = 0.1 * rng.standard_normal(length)  # scored
    ref[1] = 0.1 * rng.standard_normal(length)  # all padding
    ref[2] = 1e-4 * rng.standard_normal(length)  # -80 dBFS: below the -60 dB gate
    ref[3] = 0.0  # digital silence, every sample valid
    ref[4, :1000] = 0.1 * rng.standard_normal(1000)  # scored on its valid third
    est = ref + 0.01 * rng.standard_normal(ref.shape)
    mask = np.ones(ref.shape, dtype=bool)
    mask[1] = False
    mask[4, 1000:] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or log10(0) on the way
        snr, n_snr = metrics.masked_snr_db(ref, est, mask)
        sdr, n_sdr = metrics.masked_si_sdr_db(ref, est, mask)
        mel = metrics.masked_mel_distance(ref, est, mask)
    assert n_snr == n_sdr == 3
    # NaN is the per-item marker of a gated item (never -inf); scored items are finite.
    assert np.isnan(snr[1:4]).all() and np.isnan(sdr[1:4]).all()
    assert np.isfinite(snr[[0, 4]]).all() and np.isfinite(sdr[[0, 4]]).all()
    assert not np.isinf(snr).any() and not np.isinf(sdr).any() and not np.isinf(mel).any()
    assert np.isnan(mel[1])  # no valid frame at all: nothing to measure

    acc = MetricSums()
    acc.add(ref, est, mask)
    result = acc.summary()
    assert result["items"] == 5 and result["gated_items"] == 3
    assert result["masked_snr_db_items"] == result["masked_si_sdr_db_items"] == 2
    assert result["masked_snr_db"] == pytest.approx(np.mean(snr[[0, 4]]), rel=1e-12)
    assert result["masked_si_sdr_db"] == pytest.approx(np.mean(sdr[[0, 4]]), rel=1e-12)
    for name, value in result.items():
        assert value is not None and np.isfinite(value), name


def test_gate_is_the_mean_square_over_valid_samples_in_dbfs():
    length = 4000
    t = np.arange(length)
    # Sines with mean square -59 dBFS and -61 dBFS (amplitude sqrt(2) * rms).
    rms = 10 ** (np.array([-59.0, -61.0]) / 20)
    ref = np.sqrt(2) * rms[:, None] * np.sin(2 * np.pi * 0.01 * t)[None]
    est = 0.5 * ref
    mask = np.ones(ref.shape, dtype=bool)
    snr, gated = metrics.masked_snr_db(ref, est, mask)
    assert gated == 1 and snr[0] == pytest.approx(10 * math.log10(4), rel=1e-9)
    assert np.isnan(snr[1])
    _, gated_lower = metrics.masked_snr_db(ref, est, mask, gate_db=-70.0)
    assert gated_lower == 0


def test_set_with_nothing_to_score_reports_none_not_nan():
    ref = np.zeros((2, 1000))
    mask = np.zeros((2, 1000), dtype=bool)
    assert math.isnan(metrics.global_snr_db(0.0, 0.0))
    acc = MetricSums()
    acc.add(ref, ref, mask)
    figures = acc.summary()
    assert figures["gated_items"] == 2 and figures["masked_snr_db_items"] == 0
    assert figures["masked_snr_db"] is None and figures["masked_global_snr_db"] is None
    assert figures["masked_snr_db_ci95"] is None and figures["padding_fraction"] == 1.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in figures.values())


def test_exact_reconstruction_is_capped_not_infinite():
    ref, _, mask = batch(np.random.default_rng(9))
    snr, _ = metrics.masked_snr_db(ref, ref, mask)
    assert np.all(snr == metrics.MAX_DB)
    assert metrics.global_snr_db(1.0, 0.0) == metrics.MAX_DB
    sdr, _ = metrics.masked_si_sdr_db(ref, np.zeros_like(ref), mask)  # no target energy
    assert np.all(sdr == -metrics.MAX_DB)


# ------------------------------------------------------------------------- perceptual subset


def test_perceptual_subset_is_fixed_spread_over_the_set_and_capped():
    from telucodec.evaluate import perceptual_subset

    subset = perceptual_subset(100, 16)
    assert len(subset) == 16 and min(subset) == 0 and max(subset) >= 90
    assert subset == perceptual_subset(100, 16)  # the same items at every validation
    gaps = np.diff(sorted(subset))
    assert gaps.min() >= 6 and gaps.max() <= 7  # even spacing, not the first shard only
    assert perceptual_subset(5, 16) == frozenset(range(5))
    assert perceptual_subset(100, 0) == perceptual_subset(0, 16) == frozenset()


def test_perceptual_figures_score_only_the_chosen_items_on_their_valid_samples():
    """PESQ-WB / STOI of a padded item equal those of its real samples alone: padding (zeros
    in ref, decoder output in est) is cut off before scoring; items outside the subset and
    items too short to score add no value."""
    from telucodec.evaluate import add_perceptual

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )
    ref = np.stack([voiced, voiced, voiced])
    est = ref + 0.005 * rng.standard_normal(ref.shape).astype(np.float32)
    mask = np.ones(ref.shape, bool)
    mask[1, 20000:] = False  # item 1: 1.25 s of audio, then padding
    ref[1, 20000:] = 0.0
    est[1, 20000:] = rng.standard_normal(12000).astype(np.float32)  # noise in the padding
    mask[2, 2000:] = False  # item 2: 0.125 s, too short for either measure
    sums = MetricSums(metrics.PERCEPTUAL)
    tensors = [torch.from_numpy(a) for a in (ref[:, None], est[:, None], mask)]
    add_perceptual(sums, *tensors, rows=[1, 2], sample_rate=16000)
    expected = metrics.perceptual_scores(ref[1, :20000], est[1, :20000], 16000)
    summary = sums.summary()
    assert summary["pesq_wb_items"] == summary["stoi_items"] == 1  # item 2 counted missing
    assert (summary["pesq_wb"], summary["stoi"]) == pytest.approx(expected)
    assert 1.0 <= expected[0] <= 4.65 and 0.0 < expected[1] <= 1.0
    # Scored with its padding, the same item gets another PESQ: the cut is what the equality
    # above checks (STOI alone would not tell: it drops frames silent in the reference).
    assert metrics.perceptual_scores(ref[1], est[1], 16000)[0] != pytest.approx(expected[0])
