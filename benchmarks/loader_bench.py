"""Does the training loader keep up with training? Loader supply vs step demand, one run.

    python benchmarks/loader_bench.py [--data-dir OUT | --minutes 4] [--num-workers 0 1 2]
        [--models small base] [--batch-size 16] [--segment-seconds 1.0 [0.5 …]]
        [--loader-batches 60] [--repeats 1] [--baseline DIR] [--epoch-batches N]

(a) supply: windows/s out of the training loader exactly as train_ds.py builds it
    (`shards.loader.TrainStream` + `train_loader` over a format-2 OUT of utterances: shuffle
    utterances, decode, cut windows of --segment-seconds at a seeded phase, shuffle
    windows), with 0, 1 and 2 DataLoader workers; the first batch (worker start-up, buffer
    fill) is timed separately and left out of the rate. Each figure comes from a fresh
    process, with the CPU time a window costs (µs, the main process and its workers, over
    the same batches), which depends less on what else the shared cores run than
    windows/s does: c cores free for the loader supply at most c × 10⁶ / CPU-µs windows/s.
    --baseline DIR times another checkout's loader (e.g. `git worktree add /tmp/before
    HEAD`) in the same run, alternating with this one's, so both columns see the same load;
    --repeats N alternates N times and prints each figure's range. Epochs are as long as
    train_ds.py makes them (the manifest's windows); each epoch's pipeline fills its
    shuffle buffers afresh and leaves them unread at its end, which costs a small corpus
    (a few dozen batches an epoch) much more than a real one: --epoch-batches N sets the
    epoch length instead, to see the loader without that.
(b) demand: windows/s that one training step consumes: forward + CodecLoss + backward +
    AdamW on a real loader batch, for each model config, with the intra-op thread count
    train_ds.py picks for one rank (cores − 1, at least 1) unless --threads is given
    (`--models` with no names skips it).
Headroom = supply / demand: above 1 the loader is not the bottleneck. Both are measured
alone, on the same cores; during training the workers and the step share those cores, so
headroom on a 2-core machine is an upper bound. The load average is printed at the start
and the end of the supply runs.
Without --data-dir, a small corpus is synthesized and preprocessed into a temp dir first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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


def import_loader(code: Path) -> Any:
    """The `shards` package (Index, loader) of checkout `code`: its path goes first on
    sys.path before `shards` is first imported (telucodec never imports it), so a child
    process times that checkout's loader."""
    sys.path.insert(0, str(code))
    import shards
    import shards.loader

    return shards


def make_stream(shards: Any, data: Path, batch: int, window: int, epoch_batches: int = 0) -> Any:
    """The training stream as train_ds.py builds it for one rank (its default
    --shuffle-buffer; epochs as long as the manifest's windows make them, or
    `epoch_batches`)."""
    index = shards.Index.load(data)
    loader = shards.loader
    windows = loader.count_windows(index.manifest("train"), window, grid=False)
    return loader.TrainStream(
        index.entries("train"),
        batch_size=batch,
        batches_per_epoch=epoch_batches or loader.batches_per_epoch(windows, batch, 1),
        window_samples=window,
        shuffle_buffer=100,
        seed=0,
    )


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes `pids` have used, from /proc (Linux);
    0.0 where it cannot be read."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def loader_rate(shards: Any, stream: Any, workers: int, n_batches: int) -> dict[str, float]:
    """windows/s after the first batch, seconds to the first batch, and the CPU-µs a
    window after it: this process plus its DataLoader workers (read from /proc), so with
    workers it counts their work and the hand-over of batches too."""
    t0 = time.perf_counter()
    batches = iter(shards.loader.train_loader(stream, workers))
    first = next(batches)
    # The worker processes of a multi-process DataLoader iterator (a private attribute).
    pids = [w.pid for w in getattr(batches, "_workers", [])]
    t1, c1, w1 = time.perf_counter(), time.process_time(), process_cpu(pids)
    for _ in range(n_batches):
        next(batches)
    t2, c2, w2 = time.perf_counter(), time.process_time(), process_cpu(pids)
    del batches  # stops the workers
    windows = n_batches * first["audio"].shape[0]
    return {
        "rate": windows / (t2 - t1),
        "first": t1 - t0,
        "cpu_us": 1e6 * (c2 - c1 + w2 - w1) / windows,
        "main_cpu_us": 1e6 * (c2 - c1) / windows,
        "batches_per_epoch": stream.batches_per_epoch,
        "shards": len(stream.urls),
    }


def supply(code: Path, data: Path, workers: int, seconds: float, args: Any) -> dict[str, float]:
    """One supply measurement of checkout `code`'s loader, in a fresh process."""
    cmd = [sys.executable, __file__, "--child", str(code), "--data-dir", str(data)]
    cmd += ["--num-workers", str(workers), "--segment-seconds", str(seconds)]
    cmd += ["--batch-size", str(args.batch_size), "--loader-batches", str(args.loader_batches)]
    cmd += ["--epoch-batches", str(args.epoch_batches)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"loader_bench: the run of {code} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(args: Any) -> int:
    """--child CODE: one supply figure of CODE's loader, printed as JSON."""
    shards = import_loader(Path(args.child))
    window = int(round(args.segment_seconds[0] * 16000))
    stream = make_stream(shards, Path(args.data_dir), args.batch_size, window, args.epoch_batches)
    print(json.dumps(loader_rate(shards, stream, args.num_workers[0], args.loader_batches)))
    return 0


def span(values: list[float], fmt: str = "{:,.0f}") -> str:
    """`lo–hi` of `values` in `fmt`, or one figure when both print the same."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (Linux), printed beside the figures."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


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
        nargs="+",
        default=[1.0],
        help="training window lengths (the step demand uses the first)",
    )
    p.add_argument("--loader-batches", type=int, default=60)
    p.add_argument(
        "--epoch-batches", type=int, default=0, help="epoch length (0: from the manifest)"
    )
    p.add_argument("--repeats", type=int, default=1, help="supply runs per figure, alternated")
    p.add_argument("--baseline", help="another checkout whose loader is timed alongside")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="0: train_ds.py's choice for 1 rank")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(threads)
    codes = {"this checkout": REPO}
    if args.baseline:
        codes = {f"baseline {args.baseline}": Path(args.baseline).resolve(), **codes}

    with tempfile.TemporaryDirectory(prefix="tc-loader-bench-") as tmp:
        data = Path(args.data_dir) if args.data_dir else make_data(Path(tmp), args.minutes)
        print(
            f"data {data}; batch {args.batch_size}; {args.loader_batches} batches timed after "
            f"the first; {os.cpu_count()} cores; load average {loadavg()}"
        )
        runs: dict[tuple[str, float, int], list[dict[str, float]]] = {}
        for _ in range(args.repeats):
            for seconds in args.segment_seconds:
                for w in args.num_workers:
                    for name, code in codes.items():
                        got = supply(code, data, w, seconds, args)
                        runs.setdefault((name, seconds, w), []).append(got)
        print(f"load average after the supply runs: {loadavg()}")
        any_run = next(iter(runs.values()))[0]
        epoch = any_run["batches_per_epoch"]
        print(f"{any_run['shards']} train shards; {epoch} batches an epoch at the first S")
        header = f"{'S':>6} {'workers':>7}" + "".join(f"  {name:>34}" for name in codes)
        print("\nsupply, windows/s (CPU-µs a window, all processes; first batch s)\n" + header)
        for seconds in args.segment_seconds:
            for w in args.num_workers:
                cells = []
                for name in codes:
                    got = runs[(name, seconds, w)]
                    cell = span([g["rate"] for g in got])
                    cell += f" ({span([g['cpu_us'] for g in got])} µs)"
                    cell += f" {span([g['first'] for g in got], '{:.2f}')} s"
                    cells.append(f"  {cell:>34}")
                print(f"{seconds:>5g}s {w:>7}" + "".join(cells))

        supplied = {
            (seconds, w): max(g["rate"] for g in runs[(next(reversed(codes)), seconds, w)])
            for seconds in args.segment_seconds
            for w in args.num_workers
        }
        if not args.models:
            return 0
        shards = import_loader(REPO)
        window = int(round(args.segment_seconds[0] * 16000))
        stream = make_stream(shards, data, args.batch_size, window)
        batch = next(iter(shards.loader.train_loader(stream, 0)))
        print(f"\nstep uses {threads} torch threads, batch {args.batch_size} x {window} samples")
        demand = {}
        for name in args.models:
            demand[name], params = step_rate(name, batch, args.steps)
            millions = params / 1e6
            print(f"step    {name:<5} ({millions:.2f} M params): {demand[name]:8.2f} windows/s")

    print("\nheadroom = loader windows/s (this checkout, best run) ÷ step windows/s")
    print(f"{'workers':>8}" + "".join(f"{m:>10}" for m in args.models))
    seconds = args.segment_seconds[0]
    for w in args.num_workers:
        row = "".join(f"{supplied[(seconds, w)] / demand[m]:>9.1f}x" for m in args.models)
        print(f"{w:>8}" + row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
