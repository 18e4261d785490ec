"""Specification of preprocess.measure.kernels: each kernel against a plain-numpy reference, plus
the behaviour the decision policy relies on (docs/CONTRACTS.md, docs/KERNELS.md)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, lfilter, sosfilt, sosfilt_zi

from preprocess.measure.kernels import (
    ClipState,
    HighPass,
    SpeechBands,
    active_frames,
    count_clipped,
    count_invalid,
    downmix,
    frame_rms_peak,
    moments,
    rms_db,
    segment_pcm,
    speech_regions,
    trim_bounds,
    utterance_plan,
)
from shards.format import to_int16

SR = 16000
FRAME = 320  # 20 ms


# ---------------------------------------------------------------------------------------
# Test signals
# ---------------------------------------------------------------------------------------


def speech_like(seconds: float, seed: int = 0, start_in_speech: bool = False) -> np.ndarray:
    """Clean synthetic speech, float64, peak 0.7: syllables of 120–280 ms (glottal pulses
    through three formants, some with a fricative onset), 1–3 per word, 3–8 words per
    phrase, 30–150 ms between words and 0.3–0.9 s between phrases."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    t = 0 if start_in_speech else int(rng.uniform(0.2, 0.6) * SR)
    while t < n:
        for _word in range(rng.integers(3, 9)):
            for _syllable in range(rng.integers(1, 4)):
                dur = min(int(rng.uniform(0.12, 0.28) * SR), n - t)
                if dur < SR // 20:
                    break
                out[t : t + dur] += _syllable_wave(dur, rng)
                t += dur + int(rng.uniform(0.0, 0.04) * SR)
            t += int(rng.uniform(0.03, 0.15) * SR)
        t += int(rng.uniform(0.3, 0.9) * SR)
    return 0.7 * out / np.abs(out).max()


def _syllable_wave(dur: int, rng: np.random.Generator) -> np.ndarray:
    k = np.arange(dur)
    f0 = rng.uniform(90, 220) * (1 + 0.05 * np.sin(2 * np.pi * 3 * k / SR))
    pulses = (np.diff(np.floor(np.cumsum(f0 / SR)), prepend=0) > 0).astype(float)
    voiced = np.zeros(dur)
    for gain, fc, bw in ((1.0, rng.uniform(300, 800), 80), (0.5, rng.uniform(900, 2200), 120)):
        r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * fc / SR
        voiced += gain * lfilter([1.0], [1, -2 * r * np.cos(th), r * r], pulses)
    voiced /= np.sqrt(np.mean(voiced**2))
    if rng.random() < 0.4:  # fricative onset
        hiss = lfilter([1, -0.95], [1], rng.standard_normal(dur))
        hiss[dur // 3 :] = 0
        voiced += 0.3 * hiss / np.sqrt(np.mean(hiss**2) + 1e-12)
    return voiced * np.sin(np.pi * k / dur) ** 0.7 * rng.uniform(0.3, 1.0)


def white(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def power_law(seconds: float, exponent: float, level: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise with PSD ∝ 1/f^exponent down to the lowest FFT bin (1 = pink, 2 = brown)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    f = np.fft.rfftfreq(n, 1 / SR)
    shape = np.zeros_like(f)
    shape[1:] = f[1:] ** (-exponent / 2)
    x = np.fft.irfft(shape * (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)), n)
    return level * x / x.std()


def random_walk(seconds: float, level: float, seed: int = 0, leak: float = 1.0) -> np.ndarray:
    """Brown noise the common way: (leaky) cumulative sum of white noise."""
    x = lfilter([1.0], [1.0, -leak], np.random.default_rng(seed).standard_normal(int(seconds * SR)))
    x -= x.mean()
    return level * x / x.std()


def hum(seconds: float, level: float, mains: float = 50.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * mains * h * t + h) / h for h in (1, 2, 3, 5))
    return level * x * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t)) / np.abs(x).max()


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def speech_db(x: np.ndarray, block: int = 160_000) -> np.ndarray:
    """Frame dB as the pipeline computes it for the detector (float32[2, F]): 80 Hz
    high-pass, the whole band and its part under 1 kHz, 20 ms frames, 10 s blocks."""
    bands = SpeechBands(SR, FRAME)
    for i in range(0, x.size, block):
        bands.add(f32(x[i : i + block]))
    return bands.db()


# ---------------------------------------------------------------------------------------
# Frame statistics and counters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_downmix_is_the_float64_channel_mean(channels):
    block = np.random.default_rng(channels).standard_normal((4801, channels)).astype(np.float32)
    want = block.mean(axis=1, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(downmix(block), want)
    np.testing.assert_array_equal(downmix(np.asfortranarray(block)), want)  # any layout


def test_downmix_refuses_a_block_without_channels():
    with pytest.raises(ValueError, match="float32\\[n, C\\]"):
        downmix(np.zeros((10, 0), np.float32))
    with pytest.raises(ValueError, match="got shape"):
        downmix(np.zeros(10, np.float32))


def test_frame_rms_peak_matches_numpy_on_full_frames_only():
    x = f32(np.random.default_rng(1).standard_normal(10 * FRAME + 123) * 0.3)
    rms, peak = frame_rms_peak(x, FRAME)
    frames = x[: 10 * FRAME].astype(np.float64).reshape(10, FRAME)
    assert rms.dtype == np.float32 and peak.dtype == np.float32 and rms.shape == (10,)
    np.testing.assert_allclose(rms, np.sqrt((frames**2).mean(axis=1)), rtol=1e-6)
    np.testing.assert_array_equal(peak, np.abs(x[: 10 * FRAME]).reshape(10, FRAME).max(axis=1))
    assert frame_rms_peak(x[: FRAME - 1], FRAME)[0].shape == (0,)


def test_rms_db_maps_zero_to_a_floor_far_below_any_threshold():
    np.testing.assert_allclose(rms_db(np.array([1.0, 0.1, 0.0], np.float32)), [0, -20, -200])


def test_moments_combine_across_blocks_like_numpy():
    x = f32(np.random.default_rng(2).standard_normal(50_001) * 0.2 + 0.05)
    parts = [moments(b) for b in np.array_split(x, 7)]
    s, ss = sum(p[0] for p in parts), sum(p[1] for p in parts)
    lo, hi = min(p[2] for p in parts), max(p[3] for p in parts)
    x64 = x.astype(np.float64)
    assert s == pytest.approx(x64.sum(), rel=1e-12)
    assert ss == pytest.approx((x64**2).sum(), rel=1e-12)
    assert (lo, hi) == (x.min(), x.max())
    assert moments(np.zeros(0, np.float32))[2:] == (np.inf, -np.inf)


def test_count_invalid_counts_nan_and_inf_in_any_shape_without_casting():
    x = np.zeros((100, 2), np.float32)
    x[3, 0], x[50, 1], x[99, 1] = np.nan, np.inf, -np.inf
    assert count_invalid(x) == (3, 0)
    assert count_invalid(x[:, 1]) == (2, 0)
    assert count_invalid(np.array([1e300, np.nan])) == (1, 1)  # float64 1e300 is finite
    assert count_invalid(np.zeros(10, np.int16)) == (0, 0)


def test_count_invalid_tells_nonfinite_from_overflowing_values():
    x = np.array([0.5, np.nan, np.inf, -3.4e38, 1e30, 32767.0, -32768.0, 32768.5], np.float32)
    assert count_invalid(x) == (2, 3)  # ±Inf is non-finite, not overflow; ±32768 fits
    assert count_invalid(x.reshape(4, 2)) == (2, 3)
    assert count_invalid(np.array([1e300])) == (0, 1)
    assert count_invalid(np.full(4, 32767, np.int16)) == (0, 0)


def clipped_reference(x: np.ndarray, level: float, min_run: int) -> int:
    """Samples in runs of ≥ min_run consecutive |x| ≥ level, per channel, whole signal."""
    total = 0
    for ch in np.atleast_2d(x.T):
        hot = np.concatenate([[0], (np.abs(ch) >= level).astype(np.int8), [0]])
        edges = np.diff(hot)
        lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        total += int(lengths[lengths >= min_run].sum())
    return total


def clipped_test_signal() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = np.clip(rng.standard_normal((20_000, 2)) * 0.6, -1, 1)
    x[1000:1002, 0] = 1.0  # a run of 2: too short
    x[5000:5040, 1] = -1.0  # a long run
    x[-5:, 0] = 1.0  # a run open at the end
    return f32(x)


def test_count_clipped_matches_whole_signal_reference():
    x = clipped_test_signal()
    run = np.zeros(2, np.int64)
    assert count_clipped(x, 0.99, 3, run) == clipped_reference(x, 0.99, 3)
    assert run[0] == 5


@pytest.mark.parametrize("seed", range(4))
def test_count_clipped_is_independent_of_block_splitting(seed):
    x = clipped_test_signal()
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, x.shape[0]), 40, False))
    cuts = np.concatenate([cuts, [5001, 5002, 5003]])  # split inside the long run
    state = ClipState(channels=2)
    for block in np.split(x, np.unique(cuts)):
        state.add(block)
    assert state.clipped == clipped_reference(x, 0.99, 3)
    assert state.fraction == pytest.approx(state.clipped / x.size)


def test_a_ceiling_keeps_float_headroom_out_of_the_clip_count():
    """An intact float WAV peaking at 8.0: with the float files' ceiling of 1 its loud
    stretches are headroom (12.8 % clipped before); a run at exactly full scale still
    counts. Without a ceiling (integer PCM, lossy decoders that overshoot a clipped
    source past 1) every run at ≥ 0.99 counts."""
    loud = f32(8.0 * np.sin(np.arange(48000) * 2 * np.pi * 220 / 48000)).reshape(-1, 1)
    assert count_clipped(loud, 0.99, 3, np.zeros(1, np.int64), ceiling=1.0) == 0
    assert count_clipped(loud, 0.99, 3, np.zeros(1, np.int64)) == clipped_reference(loud, 0.99, 3)
    flat = f32([0.5, 1.0, 1.0, 1.0, 1.0, 0.2, -1.0, -1.0, -1.0]).reshape(-1, 1)
    assert count_clipped(flat, 0.99, 3, np.zeros(1, np.int64), ceiling=1.0) == 7


def test_clip_state_counts_one_sample_blocks_like_one_block():
    x = f32(np.tile([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0], 10))
    state = ClipState(channels=1)
    for v in x:
        state.add(v.reshape(1, 1))
    assert state.clipped == clipped_reference(x, 0.99, 3) == 40


# ---------------------------------------------------------------------------------------
# Rumble high-pass
# ---------------------------------------------------------------------------------------


def test_highpass_is_butterworth_and_streams_like_one_call():
    x = f32(np.random.default_rng(4).standard_normal(48_000) + 0.5)
    sos = butter(2, 80.0, "high", fs=SR, output="sos")
    expected, _ = sosfilt(sos, x.astype(np.float64), zi=sosfilt_zi(sos) * x[0])
    hp = HighPass(SR, 80.0)
    streamed = np.concatenate([hp.process(b) for b in np.array_split(x, 13)])
    np.testing.assert_allclose(streamed, expected, atol=2e-6)
    np.testing.assert_array_equal(streamed, HighPass(SR, 80.0).process(x))


def test_highpass_starts_a_dc_offset_without_a_click():
    y = HighPass(SR).process(np.full(1000, 0.5, np.float32))
    assert np.abs(y).max() < 1e-6


def test_speech_bands_are_the_scipy_filters_frame_powers_and_stream_like_one_call():
    x = white(3.0, 0.2, seed=3) + hum(3.0, 0.1)
    hp = butter(2, 80, "high", fs=SR, output="sos")
    lp = butter(2, 1000, "low", fs=SR, output="sos")
    y = sosfilt(hp, x, zi=sosfilt_zi(hp) * f32(x)[0])[0]
    lo = sosfilt(lp, y)
    n = x.size // FRAME
    want = np.stack([(v[: n * FRAME].reshape(n, FRAME) ** 2).mean(1) for v in (y, lo)])
    one = SpeechBands(SR, FRAME)
    one.add(f32(x))
    np.testing.assert_allclose(one.powers(), want, rtol=1e-4, atol=1e-12)
    parts = SpeechBands(SR, FRAME)
    for a, b in ((0, 1), (1, 700), (700, 701), (701, 30_000), (30_000, x.size)):
        parts.add(f32(x[a:b]))  # frames straddle the calls
    np.testing.assert_array_equal(parts.powers(), one.powers())


def test_multi_band_activity_matches_numpy_reference():
    _, x = noisy_speech(seed=4, noise_db=-30.0)
    db = speech_db(x)
    assert db.shape[0] == 2
    np.testing.assert_array_equal(active_frames(db), active_frames_reference(db))


# ---------------------------------------------------------------------------------------
# Speech activity
# ---------------------------------------------------------------------------------------


def active_frames_reference(db, margin_db=6.0, abs_floor_db=-100.0, smooth=5, window=75,
                            fill_gap=5, min_burst=2):  # fmt: skip
    """Numpy statement of the detector (docs/KERNELS.md): per band, a frame clears the
    band's minimum-statistics floor by the margin in its own and its smoothed power."""
    db = np.atleast_2d(np.asarray(db, np.float64))
    h, w = smooth // 2, window // 2
    active = np.zeros(db.shape[1], bool)
    for band in db:
        valid = db[0] > abs_floor_db
        power = np.where(valid, 10.0 ** (band / 10.0), 10.0 ** (abs_floor_db / 10))
        sums = sliding_window_view(np.pad(power, h), 2 * h + 1).sum(axis=1)
        counts = sliding_window_view(np.pad(np.ones(band.size), h), 2 * h + 1).sum(axis=1)
        smoothed = sums / counts
        floor = sliding_window_view(np.pad(smoothed, w, constant_values=np.inf), 2 * w + 1)
        limit = floor.min(1) * 10.0 ** (margin_db / 10.0)
        active |= valid & (power > limit) & (smoothed > limit)
    on = np.flatnonzero(active)
    for a, b in zip(on[:-1], on[1:], strict=True):
        if 1 < b - a <= fill_gap + 1:
            active[a:b] = True
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if b - a < min_burst:
            active[a:b] = False
    return active


def noisy_speech(seconds=20.0, seed=0, noise_db=-50.0, start_in_speech=False):
    clean = speech_like(seconds, seed, start_in_speech)
    return clean, clean + white(seconds, 10 ** (noise_db / 20), seed + 100)


@pytest.mark.parametrize("seed", range(3))
def test_active_frames_matches_numpy_reference(seed):
    _, x = noisy_speech(seed=seed, noise_db=-40.0 - 10 * seed)
    db = speech_db(x)
    db[100:140] = -200.0  # a stretch of digital silence
    np.testing.assert_array_equal(active_frames(db), active_frames_reference(db))
    db = rms_db(frame_rms_peak(f32(random_walk(10, 0.1, seed)), FRAME)[0])
    np.testing.assert_array_equal(active_frames(db), active_frames_reference(db))


def long_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    """The frames of `mask` that lie in runs of at least min_len frames."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    out = np.zeros_like(mask)
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        out[a:b] = b - a >= min_len
    return out


@pytest.mark.parametrize("seed", range(3))
def test_speech_with_pauses_is_mostly_active_and_pauses_are_not(seed):
    clean, x = noisy_speech(seed=seed)
    active = active_frames(speech_db(x))
    clean_db = rms_db(frame_rms_peak(f32(clean), FRAME)[0])
    speech = clean_db > clean_db.max() - 30  # frames where the talker clearly speaks
    pauses = long_runs(clean_db < -120, 15)  # pauses of ≥ 300 ms between phrases
    assert 0.6 <= active.mean() <= 0.95
    assert active[speech].mean() > 0.9
    assert active[pauses].mean() < 0.05


@pytest.mark.parametrize(
    "name, noise",
    [
        ("white loud", white(20, 0.3)),
        ("white quiet", white(20, 1e-4)),
        ("pink", power_law(20, 1.0, 0.05)),
        ("brown (1/f²)", power_law(20, 2.0, 0.05, seed=1)),
        ("brown (random walk)", random_walk(20, 0.1, seed=2)),
        ("brown (random walk) quiet", random_walk(20, 1e-4, seed=3)),
        ("brown (leaky walk)", random_walk(20, 0.1, seed=4, leak=0.999)),
        ("hum 50 Hz", hum(20, 0.2)),
        ("hum 60 Hz", hum(20, 0.01, mains=60.0)),
        ("hum plus noise", hum(20, 0.05) + white(20, 1e-3)),
    ],
)
def test_stationary_noise_and_hum_are_not_speech(name, noise):
    assert active_frames(speech_db(noise)).mean() < 0.02, name


def test_speech_45_db_quieter_gives_the_same_mask():
    _, x = noisy_speech(seed=5)
    loud = active_frames(speech_db(x))
    quiet = active_frames(speech_db(x * 10 ** (-45 / 20)))
    assert np.mean(loud != quiet) < 0.002
    assert quiet.mean() > 0.6


def test_speech_between_digital_silence_is_active():
    clean = speech_like(20.0, seed=8)  # exact zeros between words, as after a noise gate
    for gain_db in (0.0, -45.0):
        active = active_frames(speech_db(clean * 10 ** (gain_db / 20)))
        assert 0.6 <= active.mean() <= 0.95


def test_file_starting_mid_speech_is_active_from_the_first_frame():
    clean, x = noisy_speech(seed=6, start_in_speech=True)
    active = active_frames(speech_db(x))
    clean_db = rms_db(frame_rms_peak(f32(clean), FRAME)[0])
    assert active[0]
    head = slice(0, 50)  # first second
    assert active[head][clean_db[head] > clean_db.max() - 30].mean() > 0.95


def test_frames_at_or_below_the_absolute_floor_are_never_active():
    _, x = noisy_speech(seed=7)
    quiet = x * 10 ** (-110 / 20)  # speech peaks near −113 dBFS
    assert not active_frames(speech_db(quiet)).any()
    assert not active_frames(np.full(500, -200.0, np.float32)).any()
    assert active_frames(np.zeros(0, np.float32)).shape == (0,)


def test_hangover_fills_short_gaps_and_drops_lone_frames():
    db = np.full(400, -60.0, np.float32)
    db[100:120] = -20.0
    db[124:140] = -20.0  # 4-frame (80 ms) gap: filled
    db[200:210] = -20.0
    db[220:230] = -20.0  # 10-frame gap: kept
    db[300] = -20.0  # a lone 20 ms click: dropped
    active = active_frames(db)
    assert active[100:140].all()
    assert not active[210:220].any() and active[200:210].all() and active[220:230].all()
    assert not active[295:305].any()
    np.testing.assert_array_equal(active, active_frames_reference(db))


# ---------------------------------------------------------------------------------------
# Trimming, speech regions, utterances and segments
# ---------------------------------------------------------------------------------------


def test_trim_bounds_pads_the_active_span_and_clamps():
    active = np.zeros(100, bool)
    assert trim_bounds(active, 10) == (0, 0)
    active[[30, 60]] = True
    assert trim_bounds(active, 10) == (20, 71)
    assert trim_bounds(active, 50) == (0, 100)
    assert trim_bounds(active, 0) == (30, 61)


def _speech_regions_reference(active, margin, pause):
    """Plain loops: runs of active frames, merged across pauses < `pause`, widened by
    `margin`, neighbours that would overlap meeting at the middle of their pause."""
    runs, t = [], 0
    while t < active.size:
        if active[t]:
            start = t
            while t < active.size and active[t]:
                t += 1
            if runs and start - runs[-1][1] < pause:
                runs[-1][1] = t
            else:
                runs.append([start, t])
        else:
            t += 1
    out = []
    for i, (start, end) in enumerate(runs):
        lo, hi = max(0, start - margin), min(active.size, end + margin)
        if i > 0:
            lo = max(lo, (runs[i - 1][1] + start) // 2)
        if i + 1 < len(runs):
            hi = min(hi, (end + runs[i + 1][0]) // 2)
        out.append([lo, hi])
    return np.array(out, np.int64).reshape(-1, 2)


def test_speech_regions_split_only_at_long_pauses_and_keep_the_margin():
    active = np.zeros(200, bool)
    active[20:40] = True  # a 19-frame pause (< 20) keeps the next run in this region
    active[59:80] = True
    active[130:150] = True  # a 50-frame pause: a new region
    np.testing.assert_array_equal(speech_regions(active, 10, 20), [[10, 90], [120, 160]])
    active[190:200] = True  # at the end: clamped to the mask
    np.testing.assert_array_equal(speech_regions(active, 10, 20)[-1], [180, 200])
    empty = speech_regions(np.zeros(50, bool), 10, 20)
    assert empty.shape == (0, 2) and empty.dtype == np.int64


def test_speech_regions_never_share_a_frame_when_margins_overlap():
    active = np.zeros(100, bool)
    active[10:20] = True
    active[45:60] = True  # a 25-frame pause splits (pause 20), but margins of 15 overlap
    np.testing.assert_array_equal(speech_regions(active, 15, 20), [[0, 32], [32, 75]])


def test_speech_regions_match_the_loop_reference_on_random_masks():
    rng = np.random.default_rng(11)
    for _ in range(200):
        active = rng.random(int(rng.integers(1, 400))) < rng.uniform(0.05, 0.95)
        margin, pause = int(rng.integers(0, 20)), int(rng.integers(1, 60))
        np.testing.assert_array_equal(
            speech_regions(active, margin, pause),
            _speech_regions_reference(active, margin, pause),
        )


def test_utterance_plan_caps_with_near_equal_pieces_and_drops_short_ones():
    regions = np.array([[100, 100 + 45_000], [50_000, 50_000 + 7_999], [60_000, 70_000]])
    plan = utterance_plan(regions, 20_000, 8_000)
    # 45,000 samples over a 20,000 cap: three pieces of 15,000, not 20,000 + 20,000 + 5,000.
    np.testing.assert_array_equal(
        plan, [[100, 15_000], [15_100, 15_000], [30_100, 15_000], [60_000, 10_000]]
    )
    assert plan.dtype == np.int64
    assert utterance_plan(np.zeros((0, 2), np.int64), 20_000, 8_000).shape == (0, 2)


def test_utterance_plan_pieces_tile_their_region_within_the_cap():
    rng = np.random.default_rng(5)
    starts = np.cumsum(rng.integers(1_000_000, 2_000_000, 300))  # regions never overlap
    regions = np.stack([starts, starts + rng.integers(1, 1_000_000, 300)], axis=1)
    plan = utterance_plan(regions, 320_000, 1)
    assert plan[:, 1].max() <= 320_000
    assert plan[:, 1].sum() == (regions[:, 1] - regions[:, 0]).sum()
    ends = plan[:, 0] + plan[:, 1]
    for lo, hi in regions:  # each region tiled exactly, lengths within one sample
        inside = (plan[:, 0] >= lo) & (ends <= hi)
        lengths = plan[inside, 1]
        assert plan[inside, 0][0] == lo and ends[inside][-1] == hi
        assert lengths.max() - lengths.min() <= 1


def _segment_pcm_reference(src, dc, gain, segment):
    """The numpy chain segment_pcm replaces: float32 DC and gain, clip, pad, to_int16."""
    real = (f32(src) - np.float32(dc)) * np.float32(gain)
    np.clip(real, -1.0, 1.0, out=real)
    audio = np.zeros(segment, np.float32)
    audio[: real.size] = real
    return to_int16(audio)


@pytest.mark.parametrize("gain", [1.0, 0.37, 3.9, 1000.0])
def test_segment_pcm_is_bit_identical_to_the_numpy_chain(gain):
    rng = np.random.default_rng(8)
    src = f32(rng.uniform(-1, 1, 9000) * rng.uniform(0, 1, 9000) ** 3)
    src[:6] = [-0.0, 0.5, -0.5, 1.0, -1.0, 1.5 / gain]  # zero's sign, full scale, a clip
    for dc in (0.0, 0.0013):
        got = segment_pcm(src, dc, gain, 16000)
        assert got.dtype == np.int16 and got.shape == (16000,)
        np.testing.assert_array_equal(got, _segment_pcm_reference(src, dc, gain, 16000))
    assert not got[9000:].any()  # the padding is silence


def test_segment_pcm_refuses_what_does_not_fit_or_is_not_finite():
    with pytest.raises(ValueError, match="do not fit"):
        segment_pcm(np.zeros(16001, np.float32), 0.0, 1.0, 16000)
    bad = np.zeros(100, np.float32)
    bad[50] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        segment_pcm(bad, 0.0, 1.0, 160)
    assert segment_pcm(np.zeros(0, np.float32), 0.0, 1.0, 4).tolist() == [0, 0, 0, 0]


def test_segment_pcm_of_an_utterance_is_its_length_without_padding():
    src = f32(np.random.default_rng(2).uniform(-0.5, 0.5, 12_345))
    got = segment_pcm(src, 0.01, 1.5, src.size)
    np.testing.assert_array_equal(got, _segment_pcm_reference(src, 0.01, 1.5, src.size))
