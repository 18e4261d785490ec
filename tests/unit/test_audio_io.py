"""Streaming decode: 16-bit PCM read as int16 gives libsndfile's own float32 samples."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from preprocess.measure import audio_io, kernels
from preprocess.measure.audio_io import DecodeResult, stream_mono_16k

SR = 16000


def _streamed(path, seen: list, expect_int16: bool):
    """stream_mono_16k's items, checking which read it took (int16, or float32)."""
    reads = []
    real = audio_io._read_pcm16

    def spy(f, frames):
        reads.append(frames)
        return real(f, frames)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audio_io, "_read_pcm16", spy)
        items = list(stream_mono_16k(path, 4000, lambda block: seen.append(block) or True))
    assert bool(reads) == expect_int16
    return items


def test_float_files_are_read_as_float(tmp_path):
    path = tmp_path / "f.wav"
    x = np.linspace(-1.5, 1.5, SR, dtype=np.float32)  # beyond full scale: float headroom
    sf.write(path, x, SR, subtype="FLOAT")
    seen: list[np.ndarray] = []
    blocks = [b for b in _streamed(path, seen, expect_int16=False) if isinstance(b, np.ndarray)]
    np.testing.assert_array_equal(np.concatenate(blocks), x)


def _pcm16_formats() -> list[str]:
    """Containers libsndfile writes 16-bit PCM into and detects on reading."""
    return [
        fmt
        for fmt in sorted(sf.available_formats())
        if "PCM_16" in sf.available_subtypes(fmt) and fmt not in ("RAW", "HTK")
    ]


@pytest.mark.parametrize("fmt", _pcm16_formats())
def test_pcm16_blocks_equal_libsndfiles_float_samples(tmp_path, fmt):
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, size=(SR + 123, 2), dtype=np.int16)
    pcm[:50] = [-32768, 32767]  # both extremes
    path = tmp_path / f"x.{fmt.lower()}"
    try:
        sf.write(path, pcm, SR, format=fmt, subtype="PCM_16")
    except sf.LibsndfileError:
        pytest.skip(f"libsndfile cannot write {fmt} here")
    if sf.info(path).subtype != "PCM_16":
        pytest.skip(f"{fmt} reads back as {sf.info(path).subtype}")
    expected = kernels.downmix(sf.read(path, dtype="float32", always_2d=True)[0])
    seen: list[np.ndarray] = []
    items = list(_streamed(path, seen, expect_int16=True))
    blocks = [b for b in items if not isinstance(b, DecodeResult)]
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    source = np.concatenate(seen)
    assert source.dtype == np.float32
    np.testing.assert_array_equal(source, sf.read(path, dtype="float32", always_2d=True)[0])
