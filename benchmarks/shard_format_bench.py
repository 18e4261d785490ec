"""FLAC PCM_16 vs int16 .npy for shard audio: bytes per segment and decode speed.

    python benchmarks/shard_format_bench.py [--segments 2000]

Both encodings are written with the real `ShardWriter` and read back with the real
`read_samples`, side by side in one run on the same speech-like segments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shards import ShardWriter, read_samples  # noqa: E402


def speech_segments(n: int, seed: int = 0) -> list[np.ndarray]:
    """Speech-like 1 s segments from the demo corpus's procedural generator."""
    from preprocess.synth.speech import speech

    rng = np.random.default_rng(seed)
    audio = speech(rng, n * 1.0 + 1.0, 16000, engine="procedural")
    audio = 0.5 * audio / max(1e-9, float(np.max(np.abs(audio))))
    return [audio[i * 16000 : (i + 1) * 16000].astype(np.float32) for i in range(n)]


def bench(encoding: str, segs: list[np.ndarray], root: Path) -> dict[str, float]:
    path = root / f"bench-{encoding}.tar"
    meta = {"source": "x", "offset": 0, "gain_db": 0.0, "sample_rate": 16000, "split": "train"}
    t0 = time.perf_counter()
    with ShardWriter(path, encoding=encoding) as w:
        for i, s in enumerate(segs):
            w.write(f"f-{i:05d}", s, [[0, s.size]], meta)
    t_write = time.perf_counter() - t0
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(1 for _ in read_samples(path))
        best = min(best, time.perf_counter() - t0)
    assert n == len(segs)
    return {
        "bytes_per_segment": path.stat().st_size / n,
        "write_per_s": n / t_write,
        "read_per_s": n / best,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segments", type=int, default=2000)
    args = p.parse_args()
    segs = speech_segments(args.segments)
    with tempfile.TemporaryDirectory() as tmp:
        res = {enc: bench(enc, segs, Path(tmp)) for enc in ("flac", "npy")}
    print(f"{'encoding':<10}{'KB/segment':>12}{'write seg/s':>14}{'read+decode seg/s':>20}")
    for enc, r in res.items():
        print(
            f"{enc:<10}{r['bytes_per_segment'] / 1e3:>12.1f}{r['write_per_s']:>14.0f}"
            f"{r['read_per_s']:>20.0f}"
        )
    f, n = res["flac"], res["npy"]
    print(
        f"flac/npy size ratio {f['bytes_per_segment'] / n['bytes_per_segment']:.2f}, "
        f"decode speed ratio {f['read_per_s'] / n['read_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
