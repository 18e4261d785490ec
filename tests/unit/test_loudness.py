"""Specification of preprocess.measure.loudness: BS.1770-4 integrated loudness, streamed, equal to
pyloudnorm's; and the activity-selected gating the pipeline normalises with."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import lfilter

from preprocess.measure.kernels import HighPass, active_frames, frame_rms_peak, rms_db
from preprocess.measure.loudness import (
    KWeighting,
    LoudnessMeter,
    active_blocks,
    block_powers,
    gated_loudness,
    integrated_loudness,
    kweighting_sos,
    normalize_loudness,
)

RATES = (16000, 22050, 44100, 48000)


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def tone(sr: int, freq: float, seconds: float = 5.0, amp: float = 0.5) -> np.ndarray:
    return f32(amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr))


def noise(sr: int, seconds: float = 5.0, pink: bool = False, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(seconds * sr))
    if pink:  # Kellet's economy 1/f filter
        x = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                    [1, -2.494956002, 2.017265875, -0.522189400], x)  # fmt: skip
    return f32(0.1 * x / x.std())


def speech_like(sr: int, seconds: float = 8.0, seed: int = 0) -> np.ndarray:
    """Pink noise with a 4 Hz syllabic envelope of random depth, in phrases of 1–2.5 s
    separated by 0.4–1 s pauses of −60 dB noise; peak 0 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    env = np.zeros(n)
    start = rng.uniform(0.2, 0.5)
    while start < seconds:
        stop = start + rng.uniform(1.0, 2.5)
        env[(t >= start) & (t < stop)] = 1.0
        start = stop + rng.uniform(0.4, 1.0)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) ** 2
    x = noise(sr, seconds, pink=True, seed=seed) * env * syllables
    x = x / np.abs(x).max() + 1e-3 * rng.standard_normal(n)
    return f32(x / np.abs(x).max())


def reference(x: np.ndarray, sr: int) -> float:
    return pyloudnorm.Meter(sr).integrated_loudness(x)


# ---------------------------------------------------------------------------------------
# K-weighting
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", (*RATES, 8000, 11025, 96000))
def test_kweighting_coefficients_are_pyloudnorms(sr):
    filters = pyloudnorm.Meter(sr)._filters  # default 'K-weighting'
    ours = kweighting_sos(sr)
    for row, stage in zip(ours, (filters["high_shelf"], filters["high_pass"]), strict=True):
        np.testing.assert_allclose(row[:3], stage.b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(row[3:], stage.a, rtol=1e-12, atol=1e-15)


def test_kweighting_streams_like_one_lfilter_pass():
    x = noise(48000, 2.0, seed=1)
    expected = x.astype(np.float64)
    for b0, b1, b2, a0, a1, a2 in kweighting_sos(48000):
        expected = lfilter([b0, b1, b2], [a0, a1, a2], expected)
    kw = KWeighting(48000)
    streamed = np.concatenate([kw.process(b) for b in np.array_split(x, 17)])
    np.testing.assert_allclose(streamed, expected, rtol=1e-9, atol=1e-12)


def test_full_scale_997_hz_sine_reads_minus_3_01_lufs():
    """BS.1770-4 §2.1 calibration: 0 dBFS 997 Hz sine in one channel → −3.01 LKFS."""
    assert integrated_loudness(tone(48000, 997.0, amp=1.0), 48000) == pytest.approx(-3.01, abs=0.05)


# ---------------------------------------------------------------------------------------
# Integrated loudness against pyloudnorm
# ---------------------------------------------------------------------------------------

SIGNALS = {
    "white": lambda sr: noise(sr),
    "pink": lambda sr: noise(sr, pink=True, seed=2),
    "tone 1 kHz": lambda sr: tone(sr, 1000.0),
    "tone 60 Hz": lambda sr: tone(sr, 60.0, amp=0.9),
    "tone 6 kHz quiet": lambda sr: tone(sr, 6000.0, amp=0.003),
    "speech-like": lambda sr: speech_like(sr),
    "speech-like, odd length": lambda sr: speech_like(sr, 6.37, seed=3),
}


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("name", SIGNALS)
def test_integrated_loudness_matches_pyloudnorm(name, sr):
    x = SIGNALS[name](sr)
    assert integrated_loudness(x, sr) == pytest.approx(reference(x, sr), abs=0.1)


def test_rate_with_fractional_100ms_sub_blocks_matches_pyloudnorm():
    x = speech_like(11025, seed=4)  # 1102.5 samples per 100 ms
    assert integrated_loudness(x, 11025) == pytest.approx(reference(x, 11025), abs=0.1)


@pytest.mark.parametrize("seed", range(3))
def test_streaming_equals_one_shot_whatever_the_block_sizes(seed):
    sr = 44100
    x = speech_like(sr, 5.0, seed=seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 30, replace=False))
    cuts = np.concatenate([cuts, cuts[:3], [4410, 4411]])  # empty and 1-sample blocks
    meter = LoudnessMeter(sr)
    for block in np.split(x, np.sort(cuts)):
        meter.add(block)
    whole = LoudnessMeter(sr)
    whole.add(x)
    assert meter.samples == whole.samples == x.size
    np.testing.assert_array_equal(meter.quarter_powers(), whole.quarter_powers())
    assert meter.quarter_powers().size == 50
    assert gated_loudness(meter.quarter_powers()) == integrated_loudness(x, sr)


def test_blocks_are_400_ms_with_75_percent_overlap():
    q = np.arange(1.0, 8.0)
    np.testing.assert_allclose(block_powers(q), [2.5, 3.5, 4.5, 5.5])
    assert block_powers(q[:3]).size == 0


# ---------------------------------------------------------------------------------------
# Silence, short input, and gating on the active part
# ---------------------------------------------------------------------------------------


def test_silence_and_too_short_input_give_minus_inf_not_an_error():
    assert integrated_loudness(np.zeros(48000, np.float32), 48000) == -math.inf
    assert integrated_loudness(noise(16000, 0.39), 16000) == -math.inf
    assert integrated_loudness(np.zeros(0, np.float32), 16000) == -math.inf
    assert gated_loudness(np.zeros(10), select=np.ones(7, bool)) == -math.inf
    assert gated_loudness(np.ones(10), select=np.zeros(7, bool)) == -math.inf


def activity_select(x: np.ndarray, n_blocks: int) -> np.ndarray:
    """The pipeline's block selection: 400 ms blocks with mostly active 20 ms frames."""
    rms, _ = frame_rms_peak(HighPass(16000).process(x), 320)
    return active_blocks(active_frames(rms_db(rms)), 5, n_blocks)


def selected_loudness(x: np.ndarray) -> tuple[float, float]:
    """(loudness gated on activity-selected blocks, with the −70 LUFS gate) at 16 kHz."""
    meter = LoudnessMeter(16000)
    meter.add(x)
    q = meter.quarter_powers()
    select = activity_select(x, q.size - 3)
    assert 0.4 < select.mean() < 0.95
    return gated_loudness(q, select), gated_loudness(q)


@pytest.mark.parametrize("drop_db", [45.0, 60.0])
def test_quiet_speech_measured_on_its_active_part_is_the_loud_one_minus_the_drop(drop_db):
    loud = speech_like(16000, 12.0, seed=5)
    loud_selected, loud_standard = selected_loudness(loud)
    quiet_selected, quiet_standard = selected_loudness(f32(loud * 10 ** (-drop_db / 20)))
    assert quiet_selected == pytest.approx(loud_selected - drop_db, abs=0.1)
    # Selecting blocks by activity stays close to the standard's gating on loud speech…
    assert loud_selected == pytest.approx(loud_standard, abs=1.0)
    # …whereas below ~−60 LUFS the −70 LUFS absolute gate starts eating the speech itself.
    if drop_db >= 60.0:
        assert quiet_standard > loud_standard - drop_db + 0.3 or quiet_standard == -math.inf


def test_select_must_have_one_flag_per_block():
    with pytest.raises(ValueError, match=r"expected \(7,\)"):
        gated_loudness(np.ones(10), select=np.ones(10, bool))


def test_active_blocks_needs_most_of_a_blocks_frames_active():
    active = np.zeros(40, bool)
    active[:11] = True  # block 0 (frames 0–19): 11/20 active
    np.testing.assert_array_equal(active_blocks(active, 5, 4), [True, False, False, False])
    assert active_blocks(active, 5, 10).shape == (10,)  # frames past the end are inactive


def test_normalize_loudness_reaches_the_pipeline_target_within_its_peak_limit():
    from preprocess.config import PreprocessConfig

    quiet = f32(speech_like(16000, 6.0, seed=2) * 0.01)
    out = normalize_loudness(quiet, 16000)
    assert out.dtype == np.float32
    assert integrated_loudness(out, 16000) == pytest.approx(PreprocessConfig.target_lufs, abs=0.05)
    # A crest factor too high for -23 LUFS under -1 dBFS: the peak limit wins.
    spiky = np.zeros(32000, np.float32)
    spiky[::4000] = 0.5
    limited = normalize_loudness(spiky + f32(noise(16000, 2.0) * 1e-4), 16000)
    assert np.abs(limited).max() == pytest.approx(10 ** (PreprocessConfig.peak_limit_dbfs / 20))
    assert normalize_loudness(np.zeros(16000, np.float32), 16000) is None  # silence
    assert normalize_loudness(noise(16000, 0.39), 16000) is None  # under one 400 ms block
