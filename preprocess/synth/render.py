"""Rendering a FileSpec's audio: speech in room tone at a peak, channels, and encoding to
reproducible file bytes. The building blocks every fault class's renderer uses.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import soundfile as sf

from preprocess.synth.sndfile_bytes import reproducible
from preprocess.synth.spec import FileSpec
from preprocess.synth.speech import coloured_noise, speech

# A fault class's renderer: (spec, the file's own random stream, speech engine) → bytes.
Renderer = Callable[[FileSpec, np.random.Generator, str], bytes]
# A signal: the same arguments → float[frames, channels], encoded by `encoded`.
Signal = Callable[[FileSpec, np.random.Generator, str], np.ndarray]


def encode(audio: np.ndarray, spec: FileSpec, rng: np.random.Generator) -> bytes:
    """float[frames, channels] → file bytes in the spec's format, made reproducible."""
    buf = io.BytesIO()
    sf.write(buf, audio, spec.sample_rate, format=spec.format, subtype=spec.subtype)
    return reproducible(buf.getvalue(), spec.format or "", int(rng.integers(1, 2**31)))


def encoded(signal: Signal) -> Renderer:
    """A renderer that encodes `signal`'s audio in the spec's format."""

    def render(spec: FileSpec, rng: np.random.Generator, engine: str) -> bytes:
        return encode(signal(spec, rng, engine), spec, rng)

    return render


def spoken(
    spec: FileSpec,
    rng: np.random.Generator,
    engine: str,
    seconds: float,
    floor_db: float | None = None,
) -> np.ndarray:
    """`seconds` of speech in the spec's voice and rate, peak 1, as float64."""
    return speech(
        rng, seconds, spec.sample_rate or 16000, engine=engine, voice=spec.voice, floor_db=floor_db
    ).astype(np.float64)


def to_channels(rng: np.random.Generator, mono: np.ndarray, channels: int) -> np.ndarray:
    """float[n] → float[n, channels]; a second channel is a delayed, weaker mic."""
    if channels == 1:
        return mono[:, None]
    delay = int(rng.integers(1, 24))
    other = float(rng.uniform(0.7, 0.95)) * np.concatenate([np.zeros(delay), mono[:-delay]])
    return np.stack([mono, other], axis=1)


def at_peak(x: np.ndarray, peak: float) -> np.ndarray:
    """`x` scaled so its sample peak is `peak` (all-zero `x` unchanged)."""
    p = float(np.max(np.abs(x)))
    return x * (peak / p) if p > 0 else x


def from_db(v: float) -> float:
    """dB → linear amplitude."""
    return 10.0 ** (v / 20.0)


def speech_in_room_tone(spec: FileSpec, rng: np.random.Generator, engine: str) -> np.ndarray:
    """Speech in room tone at the spec's peak: clean, short, quiet_speech, dead, and the
    base of clipped, dc_offset, nonfinite and truncated."""
    floor_db = spec.params.get("floor_db", float(rng.uniform(-70.0, -55.0)))
    words = spoken(spec, rng, engine, spec.speech_seconds or 0.0, floor_db)
    mono = with_room_tone(rng, words, spec, floor_db, spec.params["lead"])
    peak = spec.params.get("peak", from_db(spec.params.get("peak_dbfs", -3.0)))
    return at_peak(to_channels(rng, mono, spec.channels or 1), peak)


def with_room_tone(
    rng: np.random.Generator,
    words: np.ndarray,
    spec: FileSpec,
    floor_db: float,
    lead_seconds: float,
) -> np.ndarray:
    """Pad `words` (peak 1) with room tone at its own floor level to spec.seconds."""
    sr = spec.sample_rate or 16000
    n = int(round((spec.seconds or 0.0) * sr))
    lead = min(int(round(lead_seconds * sr)), n - words.size)
    out = from_db(floor_db) * coloured_noise(rng, n, 1.0)
    out[lead : lead + words.size] = words
    return out
