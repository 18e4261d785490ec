"""What one planned file is (`FileSpec`), where it goes (`Folder`), and the random draws
that fill one in: formats, rates, channels, timing. Shared by every fault class's planner.

Every draw comes from a seeded `numpy.random.Generator` (`rng_stream`), one stream per
purpose and file, so adding a file never reshuffles another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from preprocess.synth.speech import Voice

T = TypeVar("T")

SAMPLE_RATES = (16000, 22050, 44100, 48000)

CLEAN_FORMATS = (
    ("WAV", "PCM_16"),
    ("WAV", "PCM_24"),
    ("WAV", "FLOAT"),
    ("FLAC", "PCM_16"),
    ("FLAC", "PCM_24"),
    ("OGG", "VORBIS"),
)

# Extension spellings, cycled per format so upper- and mixed-case ones always occur.
EXTENSIONS = {"WAV": (".WAV", ".wav", ".wav"), "FLAC": (".Flac", ".flac"), "OGG": (".ogg", ".OGG")}

# Clean files are 2–12 s: under ~2 s, active speech nears the 1 s `short` threshold and
# the truth would hinge on the activity detector's last frame.
CLEAN_SECONDS = (2.0, 12.0)


@dataclass
class FileSpec:
    """One planned file: what to render, where, and what the truth says about it."""

    cls: str
    index: int  # key of this file's own random stream
    format: str | None = None
    subtype: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    seconds: float | None = None
    speech_seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    speaker: str | None = None
    voice: Voice | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Folder:
    """A directory files go into; a speaker folder keeps one voice across its sessions."""

    path: str  # POSIX, relative to OUT
    speaker: str | None
    voice: Voice | None
    telugu_names: bool  # file stems in Telugu script ("వాక్యం 07") instead of "utt_0007"


def rng_stream(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per purpose and file: adding a file never reshuffles another."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One of `options`, uniformly (one integer draw)."""
    return options[int(rng.integers(len(options)))]


def draw_timing(
    rng: np.random.Generator,
    s: FileSpec,
    speech_range: tuple[float, float],
    pads: tuple[float, float] = (0.1, 0.4),
) -> None:
    """Speech of `speech_range` seconds between lead and tail room tone.

    Recordings start before and end after the talker; a file that is speech from its
    first sample to its last gives a speech-activity detector no background to measure.
    """
    lead, tail = (round(float(rng.uniform(*pads)), 3) for _ in range(2))
    s.speech_seconds = round(float(rng.uniform(*speech_range)), 3)
    s.seconds = round(lead + s.speech_seconds + tail, 3)
    s.params["lead"] = lead


def draw_audio_shape(rng: np.random.Generator, s: FileSpec) -> None:
    """Sample rate and channel count (30 % stereo)."""
    s.sample_rate = pick(rng, SAMPLE_RATES)
    s.channels = 2 if rng.random() < 0.3 else 1
