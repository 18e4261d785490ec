"""Where a run's time goes: CPU and wall seconds per worker stage (`StageClock`) and per
driver phase (`PhaseClock`), for the benchmark and `preprocess.run --timings`.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The stages the benchmark prints, in pipeline order; the lap names used in the code.
STAGES = (
    "plan",  # listing, hashing, header probe
    "decode",  # soundfile block reads
    "resample",  # downmix + soxr
    "analysis",  # clipping/non-finite checks, spool
    "meters",  # one pass: moments, frame RMS, speech bands, K-weighted powers
    "loudness",  # BS.1770 gating
    "speech",  # speech-activity mask from the band powers
    "quality",  # speech-band SNR and opt-in DNSMOS
    "silero",  # opt-in Silero VAD (--vad silero), outside the checks' budget
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


class PhaseClock:
    """Wall and CPU seconds of each phase of a run as the driver goes through them (start-up,
    listing, hash + probe, scan, split, shard, assembly's steps, report), exact, from
    inside the run: no observer has to infer phases from progress bars.

    Driver CPU is this thread's (`time.thread_time`): a local Ray stopping in another
    thread of the process during assembly is not charged to it. Workers' CPU is read
    through `workers_cpu` (the actors' process CPU summed; None when they cannot say)
    while they are up, else None.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float | str | None]] = []
        self.workers_cpu: Callable[[], float | None] | None = None
        self._open: tuple[str, float, float, float | None] | None = None

    def begin(self, name: str) -> None:
        """Start phase `name` (for a phase that does not fit a `with` block)."""
        workers = self.workers_cpu() if self.workers_cpu else None
        self._open = (name, time.perf_counter(), time.thread_time(), workers)

    def end(self, failed: bool = False) -> None:
        """End the phase `begin` started and record it. A phase ending in an exception
        does not ask the workers (they may be dead, or restarting): its error must
        reach the user as it is."""
        if self._open is None:
            return
        name, wall, cpu, workers = self._open
        self._open = None
        ask = self.workers_cpu and workers is not None and not failed
        after = self.workers_cpu() if ask else None
        if after is not None and after < workers:  # an actor restarted: its CPU began anew
            after = None
        self.rows.append(
            {
                "phase": name,
                "wall_s": round(time.perf_counter() - wall, 3),
                "driver_cpu_s": round(time.thread_time() - cpu, 3),
                "workers_cpu_s": None if after is None else round(after - workers, 3),
            }
        )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        except BaseException:
            self.end(failed=True)
            raise
        self.end()

    def lines(self) -> list[str]:
        """A short table for people: one line per phase, then the total."""
        out = [f"{'phase':<26}{'wall s':>8}{'driver CPU-s':>14}{'workers CPU-s':>15}"]
        for r in self.rows:
            workers = "" if r["workers_cpu_s"] is None else f"{r['workers_cpu_s']:.1f}"
            out.append(
                f"{r['phase']:<26}{r['wall_s']:>8.1f}{r['driver_cpu_s']:>14.1f}{workers:>15}"
            )
        wall = sum(float(r["wall_s"]) for r in self.rows)
        out.append(f"{'total':<26}{wall:>8.1f}")
        return out
