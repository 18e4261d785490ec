"""The one-pass meters equal the separate meters they replace in the scan, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.measure import kernels
from preprocess.measure.loudness import LoudnessMeter
from preprocess.measure.meters import Meters

SR, FRAME = 16000, 320


def _signal(seed: int, seconds: float) -> np.ndarray:
    """Noise, a tone, a DC offset and a quiet gap: every filter and frame sees work."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 220 * t) + 0.03
    x[n // 3 : n // 2] *= 1e-4
    return x.astype(np.float32)


def _blocks(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)] + [x[edges[-1] :]]


@pytest.mark.parametrize(
    ("seconds", "sizes"),
    [
        (23.456, []),
        (23.456, [160_000, 160_000]),
        (23.456, [1, 319, 321, 1599, 7, 40_000]),
        (23.456, [0, 1, 0, 7, 313]),  # empty blocks, an empty first one, a few samples
        (100 / SR, [0, 60]),  # shorter than one frame: no frame, no sub-block
    ],
)
def test_meters_equal_the_separate_meters_for_any_blocking(seconds, sizes):
    x = _signal(1, seconds)
    meters, bands, loudness = Meters(SR, FRAME), kernels.SpeechBands(SR, FRAME), LoudnessMeter(SR)
    s = ss = 0.0
    lo, hi = np.inf, -np.inf
    for block in _blocks(x, sizes):
        meters.add(block)
        bands.add(block)
        loudness.add(block)
        bs, bss, blo, bhi = kernels.moments(block)
        s, ss = s + bs, ss + bss
        if block.size:
            lo, hi = min(lo, float(blo)), max(hi, float(bhi))
    rms, _peak = kernels.frame_rms_peak(x, FRAME)
    np.testing.assert_array_equal(meters.frame_rms(), rms)
    np.testing.assert_array_equal(meters.band_db(), bands.db())
    np.testing.assert_array_equal(meters.quarter_powers(), loudness.quarter_powers())
    assert (meters.sum, meters.sumsq, meters.min, meters.max) == (s, ss, lo, hi)
    assert meters.samples == x.size


def test_a_file_that_opens_on_a_dc_offset_starts_without_a_click():
    """The high-pass starts in its steady state for the first sample, as SpeechBands does:
    a constant signal has no speech-band energy at all."""
    meters = Meters(SR, FRAME)
    meters.add(np.full(SR, 0.5, np.float32))
    assert meters.band_db().max() < -200


def test_meters_refuse_a_multichannel_block():
    with pytest.raises(ValueError, match="mono"):
        Meters(SR, FRAME).add(np.zeros((10, 2), np.float32))
