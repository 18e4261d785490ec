"""Does the training loader keep up with training? Loader supply vs step demand, one run.

    python benchmarks/loader_bench.py [--data-dir OUT | --minutes 4] [--num-workers 0 1 2]
        [--models small base] [--batch-size 16] [--segment-seconds 1.0]

(a) supply: windows/s out of the training loader exactly as train_ds.py builds it
    (`shards.loader.TrainStream` + `train_loader` over a format-2 OUT of utterances: shuffle
    utterances, decode, cut windows of --segment-seconds at a seeded phase, shuffle
    windows), with 0, 1 and 2 DataLoader workers; the first batch (worker start-up, buffer
    fill) is timed separately and left out of the rate.
(b) demand: windows/s that one training step consumes: forward + CodecLoss + backward +
    AdamW on a real loader batch, for each model config, with the intra-op thread count
    train_ds.py picks for one rank (cores − 1, at least 1) unless --threads is given
    (`--models` with no names skips it).
Headroom = supply / demand: above 1 the loader is not the bottleneck. Both are measured
alone, in the same process and on the same cores; during training the workers and the step
share those cores, so headroom on a 2-core machine is an upper bound.
Without --data-dir, a small corpus is synthesized and preprocessed into a temp dir first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shards import Index, loader  # noqa: E402
from telucodec.configs import get_config  # noqa: E402
from telucodec.losses import CodecLoss  # noqa: E402
from telucodec.model import Codec  # noqa: E402


def make_data(tmp: Path, minutes: float) -> Path:
    """`preprocess.synth` + `preprocess.run` into tmp; returns OUT."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    corpus, out = tmp / "corpus", tmp / "out"
    py = sys.executable
    synth = [py, "-m", "preprocess.synth", str(corpus), "--minutes", f"{minutes:g}", "--seed", "0"]
    subprocess.run(synth + ["--no-progress"], cwd=REPO, env=env, check=True, capture_output=True)
    run = [py, "-m", "preprocess.run", "--input", str(corpus), "--output", str(out)]
    subprocess.run(run + ["--workers", "2"], cwd=REPO, env=env, check=True, capture_output=True)
    return out


def make_stream(data: Path, batch: int, window: int) -> loader.TrainStream:
    """The training stream as train_ds.py builds it for one rank (its default
    --shuffle-buffer; epochs as long as the manifest's windows make them)."""
    index = Index.load(data)
    windows = loader.count_windows(index.manifest("train"), window, grid=False)
    return loader.TrainStream(
        index.entries("train"),
        batch_size=batch,
        batches_per_epoch=loader.batches_per_epoch(windows, batch, 1),
        window_samples=window,
        shuffle_buffer=100,
        seed=0,
    )


def loader_rate(stream: loader.TrainStream, workers: int, n_batches: int) -> tuple[float, float]:
    """(windows/s after the first batch, seconds to the first batch)."""
    t0 = time.perf_counter()
    batches = iter(loader.train_loader(stream, workers))
    first = next(batches)
    t1 = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    t2 = time.perf_counter()
    del batches  # stops the workers
    return n_batches * first["audio"].shape[0] / (t2 - t1), t1 - t0


def step_rate(model_name: str, batch: dict, n_steps: int, warmup: int = 2) -> tuple[float, int]:
    """(windows/s one fwd+bwd+AdamW step consumes, parameter count)."""
    torch.manual_seed(0)
    cfg = get_config(model_name)
    model = Codec(cfg).train()
    loss_fn = CodecLoss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    audio, mask = batch["audio"][:, None], batch["mask"]

    def step() -> None:
        out = model(audio)
        terms = loss_fn(audio, out.audio, mask, out)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    rate = n_steps * audio.shape[0] / (time.perf_counter() - t0)
    return rate, sum(p.numel() for p in model.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # Spelled as train_ds.py spells the same things; the older names still work.
    p.add_argument(
        "--data-dir", "--data", dest="data_dir", help="preprocess output (default: synthesize)"
    )
    p.add_argument("--minutes", type=float, default=4.0, help="synthetic corpus size")
    p.add_argument(
        "--num-workers", "--workers", dest="num_workers", type=int, nargs="+", default=[0, 1, 2]
    )
    p.add_argument("--models", nargs="*", default=["small", "base"])
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=16)
    p.add_argument(
        "--segment-seconds",
        "--seconds",
        dest="segment_seconds",
        type=float,
        default=1.0,
        help="training window length",
    )
    p.add_argument("--loader-batches", type=int, default=60)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="0: train_ds.py's choice for 1 rank")
    args = p.parse_args()
    threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory(prefix="tc-loader-bench-") as tmp:
        data = Path(args.data_dir) if args.data_dir else make_data(Path(tmp), args.minutes)
        window = int(round(args.segment_seconds * 16000))
        stream = make_stream(data, args.batch_size, window)
        print(
            f"data {data}: {len(stream.urls)} train shards, {stream.batches_per_epoch} batches "
            f"an epoch; batch {args.batch_size} x "
            f"{args.segment_seconds:g} s; {os.cpu_count()} cores; step uses {threads} torch threads"
        )
        supply = {}
        for w in args.num_workers:
            supply[w], startup = loader_rate(stream, w, args.loader_batches)
            print(f"loader  {w} workers: {supply[w]:8.0f} windows/s (first batch {startup:.2f} s)")
        batch = next(iter(loader.train_loader(stream, 0)))
        demand = {}
        for name in args.models:
            demand[name], params = step_rate(name, batch, args.steps)
            millions = params / 1e6
            print(f"step    {name:<5} ({millions:.2f} M params): {demand[name]:8.2f} windows/s")

    if not demand:
        return 0
    print("\nheadroom = loader windows/s ÷ step windows/s")
    print(f"{'workers':>8}" + "".join(f"{m:>10}" for m in args.models))
    for w in args.num_workers:
        print(f"{w:>8}" + "".join(f"{supply[w] / demand[m]:>9.1f}x" for m in args.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
