"""Where a worker's time goes: CPU and wall seconds per pipeline stage, for the benchmark.

A lap clock, not a profiler: `lap("decode")` charges the time since the previous lap to
"decode". One line per stage boundary reaches inside generators (the decoder's blocks) and
callbacks without threading a timer through every signature and without re-indenting the
code it measures. Each lap costs two clock reads (≈3 µs measured here; a 1 h corpus takes
≈20 000 laps, ≈0.06 s, under 1 % of its CPU time).

The clock is per process: a Ray actor runs one method at a time on one thread, so laps
never interleave. Totals travel with a unit's return value to the driver, which sums them
for the benchmark; they are never written into OUT's byte-identical files.
"""

from __future__ import annotations

import time
from collections import defaultdict

# The stages the benchmark prints, in pipeline order; the lap names used in the code.
STAGES = (
    "plan",  # listing, hashing, header probe
    "decode",  # soundfile block reads
    "resample",  # downmix + soxr
    "analysis",  # moments, frame RMS, clipping/non-finite checks, high-pass, spool
    "loudness",  # BS.1770 K-weighting meter and gating
    "speech",  # speech-activity mask
    "quality",  # speech-band SNR and opt-in DNSMOS
    "silero",  # opt-in Silero VAD (--vad silero), outside the four checks' budget
    "segment",  # cut, DC/gain, pad, FLAC/npy encode
    "tar",  # shard part write (tar, sha256, fsync)
    "unit_io",  # unit stats, done.json, commit
    "assemble",  # driver: rename parts, files.jsonl, stats.zarr, index.json
    "report",  # diagnosis report
)


class StageClock:
    """Accumulates CPU (this thread) and wall seconds per stage between `lap` calls."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.restart()

    def restart(self) -> None:
        """Start a new lap now (time before this is not charged to any stage)."""
        self._cpu = time.thread_time()
        self._wall = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or restart) to `stage`."""
        cpu, wall = time.thread_time(), time.perf_counter()
        self.cpu[stage] += cpu - self._cpu
        self.wall[stage] += wall - self._wall
        self._cpu, self._wall = cpu, wall

    def take(self) -> dict[str, dict[str, float]]:
        """The totals so far as {"cpu": {stage: s}, "wall": {stage: s}}, then reset."""
        out = {"cpu": dict(self.cpu), "wall": dict(self.wall)}
        self.cpu.clear()
        self.wall.clear()
        self.restart()
        return out


CLOCK = StageClock()


def lap(stage: str) -> None:
    """`CLOCK.lap(stage)`: the one call the measured code makes."""
    CLOCK.lap(stage)


def add_times(total: dict[str, dict[str, float]], part: dict[str, dict[str, float]]) -> None:
    """Sum `part` (a `StageClock.take()` result) into `total` in place."""
    for kind, stages in part.items():
        slot = total.setdefault(kind, {})
        for stage, seconds in stages.items():
            slot[stage] = slot.get(stage, 0.0) + seconds
