"""Silero VAD as an opt-in second opinion on speech activity (`--vad silero`, issue 24).

Our detector (kernels.SpeechBands) calls a frame speech when its energy clears a
minimum-statistics noise floor; babble, music or a TV in the background clear it too.
Silero VAD (Silero Team 2024, github.com/snakers4/silero-vad) is a small neural model
trained to tell speech from such sounds. With `vad = "silero"` the policy's speech-amount
rules (`no_speech`, `short`, `mostly_silent`) read its figure instead of ours.

The model runs from the ONNX files inside the `silero-vad` wheel through onnxruntime:
the `silero_vad` package itself is never imported, because its `__init__` imports torch,
which pipeline workers must not load (seconds of start-up and hundreds of MB per worker).
We use `silero_vad_16k_sequence.onnx`, the batched export of the same network
(silero-vad PR #784): one call scores up to BLOCK_FRAMES frames with the LSTM state
carried inside the graph, where the streaming `silero_vad.onnx` needs one call per
32 ms frame. On this machine the two give bit-identical probabilities (tests/unit/
test_silero_vad.py checks it) and the batched one costs a third of the CPU.

Nothing here is loaded unless `vad = "silero"`: onnxruntime is imported and the session
made on first use, once per process (a Ray actor is one).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from preprocess.config import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME = 512  # samples per speech probability at 16 kHz (32 ms), fixed by the model
CONTEXT = 64  # samples of the previous frame each frame is scored with (input = 576)
STATE = (1, 1, 128)  # LSTM hidden and cell state of the sequence export
BLOCK_FRAMES = 512  # frames per ONNX call (16.4 s, 1.2 MB of input): memory stays bounded
# The wheel's data folder: the batched model we run, and the streaming one it equals.
MODEL = ("data", "silero_vad_16k_sequence.onnx")
STREAMING_MODEL = ("data", "silero_vad.onnx")
INSTALL = "pip install silero-vad==6.2.3 onnxruntime"

# Silero's own defaults (silero_vad.utils_vad.get_speech_timestamps, v6.2.3):
# threshold 0.5, neg_threshold = threshold − 0.15, min_speech_duration_ms 250,
# min_silence_duration_ms 100. Its speech_pad_ms (30) only widens regions for cutting
# audio; a measure of how much speech a file holds leaves it out.
THRESHOLD = 0.5
NEG_THRESHOLD = THRESHOLD - 0.15
MIN_SPEECH_SAMPLES = SAMPLE_RATE * 250 // 1000
MIN_SILENCE_SAMPLES = SAMPLE_RATE * 100 // 1000


class SileroUnavailable(ConfigError):
    """`vad="silero"` on a machine without onnxruntime or the silero-vad wheel's model: a
    config this machine cannot run, refused at start like any bad config (exit 2)."""

    def __init__(self, message: str):
        super().__init__(message, key="vad")


class SampleSource(Protocol):
    """What the VAD reads: a SampleSpool (pass 1's 16 kHz samples), read in blocks."""

    length: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class SileroSpeech:
    """Silero's verdict on one signal: its speech regions and the probabilities behind them.

    regions: int64[K, 2] `[start, end)` runs of speech in 16 kHz samples, in order;
    probabilities: float32[ceil(N / FRAME)] speech probability of each 32 ms frame.
    """

    regions: np.ndarray
    probabilities: np.ndarray

    @property
    def samples(self) -> int:
        return int((self.regions[:, 1] - self.regions[:, 0]).sum()) if self.regions.size else 0

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


def model_path(parts: tuple[str, str] = MODEL) -> Path:
    """The ONNX file inside the installed `silero_vad` package, found without running its
    `__init__` (find_spec locates a package without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise SileroUnavailable(f"vad=silero needs the silero-vad wheel ({INSTALL})")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    raise SileroUnavailable(
        f"silero-vad is installed but has no {'/'.join(parts)}: vad=silero needs "
        f"silero-vad 6.2.3 ({INSTALL})"
    )


def require_silero() -> None:
    """Fail at start, in one line, when `vad="silero"` cannot run here: otherwise every
    file would fail in its worker and be rejected `corrupt`."""
    model_path()
    if importlib.util.find_spec("onnxruntime") is None:
        raise SileroUnavailable(f"vad=silero needs onnxruntime ({INSTALL})")


@functools.cache
def session() -> Any:
    """One onnxruntime session per process, made on first use and reused.

    One intra-op and one inter-op thread: the pipeline runs one actor per core already,
    and one thread sums in one order, so probabilities repeat bit for bit.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SileroUnavailable(f"vad=silero needs onnxruntime ({INSTALL})") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    path = model_path()
    log.debug("loading Silero VAD from %s", path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def speech_probabilities(source: SampleSource | np.ndarray) -> np.ndarray:
    """16 kHz mono float32[N] → float32[ceil(N / FRAME)] speech probability per 32 ms frame.

    The whole signal in one pass, read BLOCK_FRAMES frames at a time: each frame is scored
    with the CONTEXT samples before it (zeros before the first) and the LSTM state of all
    frames before it, as the streaming model runs; the last frame is zero-padded.
    """
    if isinstance(source, np.ndarray):
        source = _ArraySource(source)
    n = source.length
    frames = -(-n // FRAME)
    probs = np.empty(frames, dtype=np.float32)
    h = np.zeros(STATE, dtype=np.float32)
    c = np.zeros(STATE, dtype=np.float32)
    context = np.zeros(CONTEXT, dtype=np.float32)
    sess = session()
    for first in range(0, frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, frames - first)
        flat = np.zeros((count + 1) * FRAME, dtype=np.float32)  # one spare frame: context
        start = first * FRAME
        block = source.read(start, min(n, start + count * FRAME))
        flat[FRAME - CONTEXT : FRAME] = context
        flat[FRAME : FRAME + block.size] = block
        # Row i = the CONTEXT samples before frame i, then frame i: a strided view, no copy.
        step = flat.itemsize
        rows = np.lib.stride_tricks.as_strided(
            flat[FRAME - CONTEXT :], shape=(count, CONTEXT + FRAME), strides=(FRAME * step, step)
        )
        p, h, c = sess.run(
            ["speech_probs", "hn", "cn"], {"input": np.ascontiguousarray(rows), "h": h, "c": c}
        )
        probs[first : first + count] = p
        context = flat[-CONTEXT:].copy()
    return probs


def speech_regions(probs: np.ndarray, n_samples: int) -> np.ndarray:
    """Per-frame probabilities → int64[K, 2] `[start, end)` speech runs in samples.

    Silero's hysteresis (get_speech_timestamps with no length cap and no padding): speech
    starts at a frame ≥ THRESHOLD; it ends where the probability fell under NEG_THRESHOLD,
    once a frame under NEG_THRESHOLD starts MIN_SILENCE_SAMPLES or more after that point
    with no frame ≥ THRESHOLD between; a run of MIN_SPEECH_SAMPLES or less is dropped.
    Speech still on at the end runs to `n_samples`.
    """
    runs: list[tuple[int, int]] = []
    start: int | None = None
    silence_from = 0  # where the current dip under NEG_THRESHOLD began; 0 = none
    for i, p in enumerate(np.asarray(probs, dtype=np.float64).tolist()):
        here = i * FRAME
        if p >= THRESHOLD:
            silence_from = 0
            if start is None:
                start = here
            continue
        if start is None or p >= NEG_THRESHOLD:
            continue
        if not silence_from:
            silence_from = here
        if here - silence_from >= MIN_SILENCE_SAMPLES:
            if silence_from - start > MIN_SPEECH_SAMPLES:
                runs.append((start, silence_from))
            start, silence_from = None, 0
    if start is not None and n_samples - start > MIN_SPEECH_SAMPLES:
        runs.append((start, n_samples))
    return np.array(runs, dtype=np.int64).reshape(-1, 2)


def silero_speech(source: SampleSource | np.ndarray) -> SileroSpeech:
    """Silero's speech regions of a whole 16 kHz mono signal (an array or pass 1's spool)."""
    n = source.size if isinstance(source, np.ndarray) else source.length
    probs = speech_probabilities(source)
    return SileroSpeech(speech_regions(probs, n), probs)


class _ArraySource:
    def __init__(self, x: np.ndarray):
        self._x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        self.length = self._x.size

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._x[start:stop]
