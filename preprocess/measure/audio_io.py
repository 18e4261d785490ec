"""Bounded-memory decoding: soundfile blocks → mono → streaming soxr resampling to 16 kHz.

Memory is bounded by the block size whatever the file length: blocks are decoded,
downmixed and pushed through a streaming resampler one at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from preprocess.measure import kernels
from preprocess.measure.stage_times import lap

# Extensions we treat as audio even when libsndfile is too old to list them.
_BASE_AUDIO_EXTENSIONS = {
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".aif",
    ".aiff",
    ".aifc",
    ".au",
    ".snd",
    ".w64",
    ".rf64",
    ".caf",
    ".sph",
    ".nist",
    ".wv",
    ".voc",
    ".mat",
    ".sd2",
}


# Audio that libsndfile cannot decode: rejected as `unsupported_format`, not `not_audio`,
# so the user knows to convert rather than that the file is junk.
UNSUPPORTED_AUDIO_EXTENSIONS = {
    ".m4a",
    ".aac",
    ".mp4",
    ".m4b",
    ".wma",
    ".amr",
    ".awb",
    ".webm",
    ".3gp",
    ".ape",
    ".ra",
    ".ac3",
    ".mka",
    ".mkv",
    ".spx",
}


def audio_extensions(extra: tuple[str, ...] = ()) -> set[str]:
    """Lower-case extensions that are audio: libsndfile's formats, common ones and `extra`."""
    exts = set(_BASE_AUDIO_EXTENSIONS)
    exts.update("." + fmt.lower() for fmt in sf.available_formats())
    exts.update(e.lower() if e.startswith(".") else "." + e.lower() for e in extra)
    return exts


class DecodeError(Exception):
    """The decoder could not read the file; the message is what it said."""


@dataclass(frozen=True)
class AudioHeader:
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


# libsndfile refuses a path of SF_FILENAME_LEN (1024) bytes or more ("Supplied filename too
# long"), which ~340 Telugu characters reach; such files are opened by descriptor instead
# (libsndfile then has no extension to guess a format from: an MP3 with junk before its
# first frame, readable by path, is corrupt under such a path).
_SNDFILE_MAX_PATH_BYTES = 1000


def _sndfile_source(path: str | Path) -> str | int:
    """What to hand soundfile for `path`: the path, or an open descriptor (closed by
    soundfile, closefd) when libsndfile would refuse the path's length."""
    if len(os.fsencode(path)) < _SNDFILE_MAX_PATH_BYTES:
        return str(path)
    return os.open(path, os.O_RDONLY)


def probe(path: str | Path) -> AudioHeader:
    """Read the header only; raises DecodeError with the decoder's message."""
    source = _sndfile_source(path)
    try:
        info = sf.info(source)
    except Exception as exc:  # libsndfile raises LibsndfileError, RuntimeError, TypeError…
        raise DecodeError(_decoder_message(exc, source, path)) from exc
    return AudioHeader(info.samplerate, info.channels, info.frames, info.format, info.subtype)


def _decoder_message(exc: Exception, source: str | int = "", path: str | Path = "") -> str:
    """The decoder's message on one line; an open by descriptor names the path, not the
    descriptor's number (which depends on the process)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(source, int):
        text = text.replace(f"Error opening {source}:", f"Error opening {str(path)!r}:")
    return " ".join(text.split())


@dataclass
class DecodeResult:
    """What streaming decode learned about the file beyond the samples themselves."""

    header: AudioHeader
    frames_read: int = 0
    truncated: str | None = None


# Streaming writers put these in a data chunk's size field when they cannot seek back.
_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)
_DATA_SIZE = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def truncation_detail(extra_info: str) -> str | None:
    """A truncated WAV/AIFF: libsndfile clamps the frame count to the bytes present, so
    only its log tells that the data chunk declared more than the file holds."""
    m = _DATA_SIZE.search(extra_info or "")
    if not m:
        return None
    declared, present = int(m.group(1)), int(m.group(2))
    if declared in _PLACEHOLDER_SIZES or declared <= present:
        return None
    return f"truncated: data chunk declares {declared} bytes, file holds {present}"


# Under 1 kHz a header is damaged, not audio (speech needs a few kHz): a 12 KB WAV
# claiming 1 Hz was upsampled 16 000× into 3 000 s of samples.
MIN_SOURCE_RATE = 1000


def _read_float32(f: sf.SoundFile, frames: int) -> np.ndarray:
    return f.read(frames, dtype="float32", always_2d=True)


_PCM16_SCALE = np.float32(1.0 / 32768.0)


def _read_pcm16(f: sf.SoundFile, frames: int) -> np.ndarray:
    """16-bit PCM read as int16 and scaled here: the same float32 values libsndfile gives
    (it multiplies by 1/32768 too; tests/unit/test_audio_io.py checks every container),
    for half its read cost (0.19 → 0.09 CPU-s per 1.25 h of 16 kHz WAV)."""
    block = f.read(frames, dtype="int16", always_2d=True).astype(np.float32)
    block *= _PCM16_SCALE
    return block


def stream_mono_16k(
    path: str | Path,
    block_frames: int,
    on_source_block: Callable[[np.ndarray], bool] | None = None,
    target_rate: int = 16000,
    on_open: Callable[[AudioHeader], None] | None = None,
) -> Iterator[np.ndarray | DecodeResult]:
    """Yield float32 mono blocks at `target_rate`, then one final DecodeResult.

    `on_source_block(block)` sees every decoded source-rate block (float32[n, C]) before
    downmixing — for checks that must run on the original samples (clipping, NaN). If it
    returns False, decoding stops early (e.g. after NaN, which a resampler would smear).
    `on_open(header)` sees the header before the first block.
    Raises DecodeError when the file cannot be opened or a block cannot be decoded.
    """
    source = _sndfile_source(path)
    try:
        f = sf.SoundFile(source)
    except Exception as exc:
        raise DecodeError(_decoder_message(exc, source, path)) from exc
    with f:
        header = AudioHeader(f.samplerate, f.channels, f.frames, f.format, f.subtype)
        result = DecodeResult(header, truncated=truncation_detail(f.extra_info))
        if header.sample_rate < MIN_SOURCE_RATE or header.channels <= 0:
            raise DecodeError(f"invalid header: {header.sample_rate} Hz, {header.channels} ch")
        if on_open is not None:
            on_open(header)
        resampler = None
        if header.sample_rate != target_rate:
            resampler = soxr.ResampleStream(
                header.sample_rate, target_rate, 1, dtype="float32", quality="HQ"
            )
        src_block = max(1, int(round(block_frames * header.sample_rate / target_rate)))
        read = _read_pcm16 if header.subtype == "PCM_16" else _read_float32
        while True:
            try:
                block = read(f, src_block)
            except Exception as exc:
                raise DecodeError(
                    f"decode failed after {result.frames_read} frames: {_decoder_message(exc)}"
                ) from exc
            lap("decode")
            if block.shape[0] == 0:
                break
            result.frames_read += block.shape[0]
            if on_source_block is not None and on_source_block(block) is False:
                yield result
                return
            mono = kernels.downmix(block)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=False)
            lap("resample")
            if mono.size:
                yield mono
            if block.shape[0] < src_block:
                break
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            lap("resample")
            if tail.size:
                yield tail
        yield result
