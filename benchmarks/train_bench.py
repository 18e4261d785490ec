"""Training throughput with 1 and 2 CPU ranks, measured back to back on the same data.

    python benchmarks/train_bench.py [--data-dir OUT | --minutes 4] [--model-config small]
        [--max-steps 40] [--batch-size 16] [--num-workers 1]

(1) `python train_ds.py …`: one process, no launcher (OMP_NUM_THREADS unset, so
    train_ds.py picks cores − 1 intra-op threads, at least 1);
(2) `OMP_NUM_THREADS=1 deepspeed --num_gpus 2 train_ds.py …`: two gloo ranks on the CPU.
Same model, micro batch per rank, crop, worker count and step count. The steady rate is
read from the progress bar's `steps_s` readings (each is steps / seconds since the loop
started; two readings give the rate between them, so start-up, the first batch and the
final validation are left out); `metrics.json` gives the end-to-end figure beside it.
samples/s counts all ranks (micro batch × world). Scaling = 2-rank / 1-rank samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader_bench import make_data  # noqa: E402

# tqdm's line: " 12/40 [00:03<00:07, …, steps_s=3.91, samples_s=63]"
BAR = re.compile(r"(\d+)/(\d+) \[[^\]]*steps_s=([\d.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def steady_steps_per_s(output: str, skip: int = 2) -> float | None:
    """Steps/s between the first reading past `skip` steps and the last one.

    A reading (k, r) means k steps took k / r seconds since the loop began."""
    readings = sorted({(int(k), float(r)) for k, _, r in BAR.findall(output) if float(r) > 0})
    readings = [(k, r) for k, r in readings if k > skip]
    if len(readings) < 2 or readings[-1][0] == readings[0][0]:
        return None
    (k1, r1), (k2, r2) = readings[0], readings[-1]
    return (k2 - k1) / (k2 / r2 - k1 / r1)


def run(ranks: int, args: argparse.Namespace, data: Path, ckpt: Path) -> dict:
    name = f"bench{ranks}"
    train = [
        str(REPO / "train_ds.py"),
        "--deepspeed-config",
        str(REPO / "ds_config.json"),
        "--data-dir",
        str(data),
        "--checkpoint-dir",
        str(ckpt),
        "--experiment-name",
        name,
        "--model-config",
        args.model_config,
        "--batch-size",
        str(args.batch_size),
        "--max-steps",
        str(args.max_steps),
        "--val-every",
        "0",
        "--save-every",
        "0",
        "--log-every",
        "1",
        "--num-workers",
        str(args.num_workers),
        "--max-val-items",
        "16",
        "--kbps",
        "6",
        "--audio-examples",
        "0",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS"):
        env.pop(var, None)
    if ranks == 1:
        cmd = [sys.executable, *train]
    else:
        env["OMP_NUM_THREADS"] = "1"
        port = str(free_port())
        cmd = [str(BIN / "deepspeed"), "--num_gpus", str(ranks), "--master_port", port, *train]
    shown = ("OMP_NUM_THREADS=1 " if ranks > 1 else "") + " ".join(
        Path(c).name if i == 0 else c for i, c in enumerate(cmd)
    )
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{ranks}-rank run failed with exit code {proc.returncode}")
    metrics = json.loads((ckpt / name / "metrics.json").read_text())
    steps = steady_steps_per_s(proc.stdout + proc.stderr)
    per_step = args.batch_size * metrics["world_size"]
    return {
        "ranks": metrics["world_size"],
        "steps_s": steps,
        "samples_s": steps * per_step if steps else None,
        "end_to_end_samples_s": metrics["samples_seen"] / metrics["elapsed_seconds"],
        "wall_s": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # Spelled as train_ds.py spells the same things; the older names still work.
    p.add_argument(
        "--data-dir", "--data", dest="data_dir", help="preprocess output (default: synthesize)"
    )
    p.add_argument("--minutes", type=float, default=4.0, help="synthetic corpus size")
    p.add_argument(
        "--model-config",
        "--model",
        dest="model_config",
        default="small",
        choices=("tiny", "small", "base"),
    )
    p.add_argument("--max-steps", "--steps", dest="max_steps", type=int, default=40)
    p.add_argument(
        "--batch-size",
        "--batch",
        dest="batch_size",
        type=int,
        default=16,
        help="micro batch per rank",
    )
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per rank")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="tc-train-bench-") as tmp:
        data = Path(args.data_dir) if args.data_dir else make_data(Path(tmp), args.minutes)
        print(
            f"data {data}; model {args.model_config}; micro batch {args.batch_size} x 0.5 s; "
            f"{args.max_steps} steps; {args.num_workers} loader workers/rank; "
            f"{os.cpu_count()} cores"
        )
        results = [run(r, args, data, Path(tmp, "ckpt")) for r in (1, 2)]

    head = f"{'ranks':>5} {'steps/s':>8} {'samples/s':>10} {'end-to-end samples/s':>21}"
    print(f"\n{head} {'wall s':>7}")
    for r in results:
        steps = f"{r['steps_s']:.2f}" if r["steps_s"] else "—"
        samples = f"{r['samples_s']:.1f}" if r["samples_s"] else "—"
        print(
            f"{r['ranks']:>5} {steps:>8} {samples:>10} "
            f"{r['end_to_end_samples_s']:>21.1f} {r['wall_s']:>7.0f}"
        )
    one, two = results
    if one["samples_s"] and two["samples_s"]:
        ratio = two["samples_s"] / one["samples_s"]
        print(f"scaling 1 → 2 ranks: {ratio:.2f}x samples/s (ideal 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
