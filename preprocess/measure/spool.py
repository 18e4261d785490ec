"""A file's 16 kHz mono samples kept for the second pass, in memory or spilled to disk.

The scan must see a whole file before deciding its gain and trim points, then cut it.
Short files stay in memory; long ones spill to a raw float32 file so that memory stays
bounded by the block size, not by file length.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

_FLOAT32 = np.dtype("<f4")


class SampleSpool:
    """Append-only float32 sample store with random-access reads."""

    def __init__(self, directory: str | Path, max_memory_samples: int = 1_000_000):
        self._dir = Path(directory)
        self._max_mem = max_memory_samples
        self._chunks: list[np.ndarray] = []
        self._mem_len = 0
        self._file = None
        self._path: Path | None = None
        self.length = 0

    def append(self, samples: np.ndarray) -> None:
        samples = np.ascontiguousarray(samples, dtype=_FLOAT32)
        if self._file is None and self._mem_len + samples.size > self._max_mem:
            self._spill()
        if self._file is not None:
            self._file.write(samples.tobytes())
        else:
            self._chunks.append(samples.copy())
            self._mem_len += samples.size
        self.length += samples.size

    def _spill(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="spool-", suffix=".f32", dir=self._dir)
        self._path = Path(name)
        self._file = os.fdopen(fd, "w+b")
        for chunk in self._chunks:
            self._file.write(chunk.tobytes())
        self._chunks, self._mem_len = [], 0

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as float32."""
        start, stop = max(0, start), min(self.length, stop)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        if self._file is None:
            if len(self._chunks) > 1:
                self._chunks = [np.concatenate(self._chunks)]
            return self._chunks[0][start:stop]
        self._file.flush()
        self._file.seek(start * _FLOAT32.itemsize)
        data = self._file.read((stop - start) * _FLOAT32.itemsize)
        return np.frombuffer(data, dtype=_FLOAT32).astype(np.float32)

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> SampleSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
