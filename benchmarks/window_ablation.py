"""Random windows vs fixed segments: `small` trained twice, alike but for the phase rule.

    python benchmarks/window_ablation.py [--data-dir demo/out] [--steps 1500]
        [--val-every 250] [--out DIR] [--speech-cache DIR] [--alsa-dir DIR] [--reuse]

Issue 23 item 5. The training loader cuts windows of `--segment-seconds` from whole
utterances at a phase drawn per (seed, epoch, utterance) (`shards.loader.window_phase`), so
each epoch sees other cuts. Format 1's fixed segments are the same windows at phase 0 every
epoch: the grid validation uses. Both runs are `python train_ds.py … --model-config small`
with the same data, seed, steps and flags; the "fixed" one runs the same entry under a
launcher that replaces `window_phase` by phase 0 before training starts (no training flag
exists for it). The DataLoader workers fork from the patched process, so they cut on the
grid too: a check before training reads two epochs through `train_loader` with and without
the patch, and the fixed run's workers record their pids when they first call it.

Both exports are then scored alike: `python -m telucodec eval` on the val split of
`--data-dir` (masked SNR with its 95 % CI, SI-SDR, PESQ-WB and STOI on every window) and
`python -m telucodec compare --audio` on the real-speech set of
`benchmarks/codec_real_speech.py` (17 recordings, written here as 16 kHz WAVs; its docstring
says where they come from; `--alsa-dir` points at `usr/share/sounds/alsa` of an unpacked
`apt-get download alsa-utils` where the package is not installed). Beside the two summaries,
the paired difference fixed − random per item (same items, both models) with its 95 % CI
says which gaps are beyond noise. Prints a side-by-side table and writes
OUT/window_ablation.json, OUT/val_curves.png, each run in OUT/runs/NAME and its logs and
reports in OUT/NAME/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

VARIANTS = ("random", "fixed")
LABELS = {"random": "random windows", "fixed": "fixed segments"}
KBPS = (1.5, 3.0, 6.0)
MARKER_ENV = "WINDOW_ABLATION_MARKER"

# `python -c FIXED_PHASE_LAUNCHER train_ds.py ARGS…`: train_ds.py as `python train_ds.py
# ARGS…` runs it, with every training window at phase 0. Each process that cuts windows (the
# DataLoader workers, forked from this one) appends its pid to $WINDOW_ABLATION_MARKER once.
FIXED_PHASE_LAUNCHER = """
import os, runpy, sys
import shards.loader

def fixed_phase(seed, epoch, key, samples, window, _seen=set()):
    if os.getpid() not in _seen:
        _seen.add(os.getpid())
        with open(os.environ["WINDOW_ABLATION_MARKER"], "a") as f:
            f.write(f"{os.getpid()}\\n")
    return 0

shards.loader.window_phase = fixed_phase
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------- the patch


def window_starts_by_epoch(data_dir: str, seed: int, epochs: int = 2) -> dict[int, list[int]]:
    """Start offsets of the windows in the first batches of `epochs` epochs of a training
    stream over `data_dir`, read through `train_loader` with 2 forked workers (one batch
    per worker and epoch), as the training loop reads it."""
    from shards import Index, loader

    stream = loader.TrainStream(
        Index.load(data_dir).entries("train"),
        batch_size=8,
        batches_per_epoch=2,
        shuffle_buffer=4,
        seed=seed,
    )
    starts: dict[int, list[int]] = {}
    batches = iter(loader.train_loader(stream, num_workers=2))
    for _ in range(2 * epochs):
        batch = next(batches)
        starts.setdefault(batch["epoch"], []).extend(int(k.rsplit("@", 1)[1]) for k in batch["key"])
    del batches  # stops the workers
    return starts


def check_fixed_phase_reaches_workers(data_dir: str, seed: int) -> dict[str, Any]:
    """Check that replacing `shards.loader.window_phase` before the DataLoader starts puts
    every window its forked workers cut on the grid (start % S == 0), in every epoch, and
    that without the patch they are not (so the check can fail)."""
    from shards import SAMPLE_RATE, loader

    window = SAMPLE_RATE  # the default --segment-seconds 1.0
    random_starts = window_starts_by_epoch(data_dir, seed)
    original = loader.window_phase
    loader.window_phase = lambda seed, epoch, key, samples, window: 0
    try:
        fixed_starts = window_starts_by_epoch(data_dir, seed)
    finally:
        loader.window_phase = original

    def off_grid(starts: dict[int, list[int]]) -> int:
        return sum(s % window != 0 for per_epoch in starts.values() for s in per_epoch)

    result = {
        "epochs": sorted(fixed_starts),
        "windows": sum(len(v) for v in fixed_starts.values()),
        "off_grid_random": off_grid(random_starts),
        "off_grid_fixed": off_grid(fixed_starts),
    }
    if result["off_grid_fixed"] or not result["off_grid_random"]:
        sys.exit(f"window_ablation: the phase-0 patch does not reach the workers: {result}")
    return result


# ---------------------------------------------------------------------- training


def train(variant: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train `small` through train_ds.py (under the phase-0 launcher for "fixed"); its log
    goes to OUT/VARIANT/train.log. Returns the run directory, wall time and, for "fixed",
    the pids that cut windows at phase 0."""
    run_dir = out / "runs" / variant
    logs = out / variant
    logs.mkdir(parents=True, exist_ok=True)
    marker = logs / "fixed_phase_pids.txt"
    if args.reuse and (run_dir / "final").is_dir() and (run_dir / "metrics.json").is_file():
        print(f"{variant}: reusing {run_dir}", flush=True)
        return {"run_dir": str(run_dir), "reused": True, **phase_pids(marker, None)}
    flags = [
        "train_ds.py",
        "--data-dir",
        args.data_dir,
        "--checkpoint-dir",
        str(out / "runs"),
        "--experiment-name",
        variant,
        "--model-config",
        "small",
        "--max-steps",
        str(args.steps),
        "--val-every",
        str(args.val_every),
        "--seed",
        str(args.seed),
    ]
    cmd = [sys.executable, *flags]
    if variant == "fixed":
        cmd = [sys.executable, "-c", FIXED_PHASE_LAUNCHER, *flags]
        marker.unlink(missing_ok=True)
    print(f"{variant}: training {args.steps} steps, log {logs / 'train.log'}", flush=True)
    started = time.time()
    with open(logs / "train.log", "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, MARKER_ENV: str(marker)},
        )
        rc = proc.wait()
    seconds = time.time() - started
    if rc != 0:
        sys.exit(
            f"window_ablation: {variant} training failed (exit {rc}); see {logs / 'train.log'}"
        )
    print(f"{variant}: trained in {seconds:.0f} s (load {load_average()})", flush=True)
    result = {"run_dir": str(run_dir), "seconds": round(seconds, 1), "reused": False}
    if variant == "fixed":
        result.update(phase_pids(marker, proc.pid))
    return result


def phase_pids(marker: Path, trainer_pid: int | None) -> dict[str, Any]:
    """The pids that cut windows at phase 0 (none for the random run). For a fresh fixed
    run, check that some did and that all are DataLoader workers, not the trainer."""
    if trainer_pid is None and not marker.is_file():
        return {}
    pids = [int(p) for p in marker.read_text().split()] if marker.is_file() else []
    if trainer_pid is not None and (not pids or trainer_pid in pids):
        sys.exit(f"window_ablation: phase-0 cuts by pids {pids}, trainer {trainer_pid}")
    return {"phase0_worker_pids": pids, "trainer_pid": trainer_pid}


# ---------------------------------------------------------------------- scoring


def write_real_speech(folder: Path, cache: Path, alsa_dir: Path | None) -> list[str]:
    """The real-speech items of benchmarks/codec_real_speech.py as 16 kHz float WAVs in
    `folder` (`alsa/Front_Left` → alsa__Front_Left.wav); their names."""
    import codec_real_speech as real
    import soundfile as sf

    if alsa_dir is not None:
        real.ALSA_DIR = alsa_dir
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, audio in real.real_speech_items(cache):
        names.append(name)
        sf.write(folder / f"{name.replace('/', '__')}.wav", audio, real.SAMPLE_RATE, "FLOAT")
    return names


def run_cli(cmd: list[str], log: Path) -> None:
    """Run a scoring command from the repository root; its output to `log` (and stdout)."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"window_ablation: {' '.join(cmd[1:4])} … failed:\n{proc.stderr}")


def score(variant: str, args: argparse.Namespace, out: Path, real_dir: Path) -> dict:
    """`telucodec eval` on the val split and `telucodec compare --audio` on the real
    speech of the variant's export; their JSON reports."""
    ckpt = str(out / "runs" / variant / "final")
    kbps = [f"{k:g}" for k in KBPS]
    eval_json = out / variant / "eval_val.json"
    print(f"{variant}: telucodec eval on the val split of {args.data_dir}", flush=True)
    cli = [sys.executable, "-m", "telucodec"]
    scoring = ["--checkpoint", ckpt, "--kbps", *kbps]
    every_window = ["--perceptual-items", "1000000"]  # PESQ-WB and STOI on all, not 16
    run_cli(
        [
            *cli,
            "eval",
            *scoring,
            "--data-dir",
            args.data_dir,
            *every_window,
            "--out",
            str(eval_json),
        ],
        out / variant / "eval_val.log",
    )
    compare_dir = out / variant / "compare_real"
    print(f"{variant}: telucodec compare --audio {real_dir}", flush=True)
    run_cli(
        [*cli, "compare", *scoring, "--audio", str(real_dir), "--out", str(compare_dir)],
        out / variant / "compare_real.log",
    )
    real = json.loads((compare_dir / "compare.json").read_text())
    return {
        "val": json.loads(eval_json.read_text())["bitrates"],
        "real_speech": real["codecs"]["telucodec"],
    }


def item_scores(model, audio, mask, nq: int) -> np.ndarray:
    """Per item of one batch (audio float32[B x T], mask bool[B x T]): masked SNR, SI-SDR
    (dB; NaN when gated), PESQ-WB and STOI on the valid samples, as float64[B x 4]. The
    model sees the whole item, padding included, as `telucodec eval` gives it."""
    import torch

    from telucodec import metrics

    with torch.inference_mode():
        est = model(torch.from_numpy(audio)[:, None], n_quantizers=nq).audio[:, 0].numpy()
    snr, _ = metrics.masked_snr_db(audio, est, mask)
    sdr, _ = metrics.masked_si_sdr_db(audio, est, mask)
    sr = model.cfg.sample_rate
    ear = [
        metrics.perceptual_scores(a[m], e[m], sr) for a, e, m in zip(audio, est, mask, strict=True)
    ]
    return np.column_stack([snr, sdr, np.array(ear).reshape(-1, 2)])


def paired_differences(out: Path, args: argparse.Namespace, real_dir: Path) -> dict:
    """Fixed − random per item at the top bitrate, on the val windows (as eval cuts them)
    and the real-speech items (as compare --audio reads them): mean and 95 % CI of the
    difference, and each model's mean, per figure."""
    from shards import Index, loader
    from telucodec.checkpoint import load_codec
    from telucodec.evaluate import ci95
    from telucodec_cli.audio_files import Recordings, list_recordings

    models = {v: load_codec(out / "runs" / v / "final").eval() for v in VARIANTS}
    cfg = models["random"].cfg
    nq = cfg.n_quantizers_for_kbps(max(KBPS))
    seconds = json.loads((out / "random" / "eval_val.json").read_text())["segment_seconds"]
    window = int(round(seconds * cfg.sample_rate))  # the windows eval scored
    entries = Index.load(args.data_dir).entries("val")
    val = ((b["audio"].numpy(), b["mask"].numpy()) for b in loader.val_batches(entries, 16, window))
    recordings = Recordings(real_dir, list_recordings(real_dir), cfg.sample_rate, 10.0, True)
    real = ((a[None], m[None]) for a, m in recordings.items())
    result = {"kbps": f"{max(KBPS):g}", "n_quantizers": nq}
    for name, batches in (("val", val), ("real_speech", real)):
        scores = {v: [] for v in VARIANTS}
        for audio, mask in batches:
            for v in VARIANTS:
                scores[v].append(item_scores(models[v], audio, mask, nq))
        per = {v: np.concatenate(s) for v, s in scores.items()}
        figures = {}
        for j, fig in enumerate(("masked_snr_db", "masked_si_sdr_db", "pesq_wb", "stoi")):
            diff = per["fixed"][:, j] - per["random"][:, j]
            ok = np.isfinite(diff)
            d = diff[ok]
            lo, hi = ci95(d.size, d.sum(), (d * d).sum()) or (math.nan, math.nan)
            figures[fig] = {
                "items": int(ok.sum()),
                "random": float(per["random"][ok, j].mean()),
                "fixed": float(per["fixed"][ok, j].mean()),
                "diff": float(d.mean()),
                "diff_ci95_lo": lo,
                "diff_ci95_hi": hi,
                "fixed_better_items": int((d > 0).sum()),
            }
        result[name] = figures
    return result


# ---------------------------------------------------------------------- report


def final_train_loss(history: dict, fraction: float = 0.1) -> float | None:
    """Mean logged training loss over the last `fraction` of the logged steps."""
    train = history.get("train", [])
    if not train:
        return None
    tail = train[-max(1, int(len(train) * fraction)) :]
    return float(np.mean([r["loss"] for r in tail]))


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> str:
    """Side by side: val figures at 6 kbps (every val window), real speech at 6 kbps, the
    paired difference fixed − random with its 95 % CI, and the final training loss."""
    k = f"{max(KBPS):g}"
    rows = [("", *(LABELS[v] for v in VARIANTS), "fixed − random (95 % CI, paired)")]
    paired = results["paired"]

    def diff(split: str, fig: str, digits: int) -> str:
        p = paired[split][fig]
        return (
            f"{p['diff']:+.{digits}f} [{p['diff_ci95_lo']:+.{digits}f}, "
            f"{p['diff_ci95_hi']:+.{digits}f}] (n = {p['items']})"
        )

    for split, label in (("val", "val"), ("real_speech", "real speech")):
        figs = {v: results["variants"][v][split][k] for v in VARIANTS}
        snr = [
            f"{fmt(f['masked_snr_db'])} [{fmt(f['masked_snr_db_ci95_lo'])}, "
            f"{fmt(f['masked_snr_db_ci95_hi'])}]"
            for f in figs.values()
        ]
        rows.append((f"{label} {k} kbps: masked SNR dB", *snr, diff(split, "masked_snr_db", 2)))
        for fig, name, digits in (
            ("masked_si_sdr_db", "SI-SDR dB", 2),
            ("pesq_wb", "PESQ-WB", 2),
            ("stoi", "STOI", 3),
        ):
            rows.append(
                (
                    f"{label} {k} kbps: {name}",
                    *(fmt(f.get(fig), digits) for f in figs.values()),
                    diff(split, fig, digits),
                )
            )
    rows.append(
        (
            "final training loss",
            *(fmt(results["variants"][v]["final_train_loss"], 3) for v in VARIANTS),
            "",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def plot_curves(histories: dict[str, dict], path: Path) -> None:
    """Both runs' training loss and validation curves (masked SNR at the top bitrate with
    its 95 % CI band, PESQ-WB and STOI of the perceptual subset) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = f"{max(KBPS):g}"
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for v, history in histories.items():
        train = history["train"]
        axes[0].plot(
            [r["step"] for r in train], [r["loss"] for r in train], label=LABELS[v], alpha=0.7
        )
        val = [r for r in history["val"] if k in r["kbps"]]
        steps = [r["step"] for r in val]

        def series(name: str, val=val) -> list[float]:
            return [math.nan if r["kbps"][k].get(name) is None else r["kbps"][k][name] for r in val]

        (line,) = axes[1].plot(steps, series("masked_snr_db"), "o-", label=LABELS[v])
        lo, hi = series("masked_snr_db_ci95_lo"), series("masked_snr_db_ci95_hi")
        axes[1].fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        axes[2].plot(steps, series("pesq_wb"), "o-", label=LABELS[v])
        axes[3].plot(steps, series("stoi"), "o-", label=LABELS[v])
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[1].set(title=f"val masked SNR {k} kbps (95 % CI)", xlabel="step", ylabel="dB")
    axes[2].set(title=f"val PESQ-WB {k} kbps (perceptual subset)", xlabel="step")
    axes[3].set(title=f"val STOI {k} kbps (perceptual subset)", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default="demo/out", help="preprocess OUT (format 2)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps of each run")
    p.add_argument("--val-every", type=int, default=250, help="steps between validations")
    p.add_argument("--seed", type=int, default=0, help="train_ds.py --seed of both runs")
    p.add_argument("--out", default="/tmp/window_ablation", help="folder for runs and results")
    p.add_argument(
        "--speech-cache",
        default=str(Path.home() / ".cache" / "telucodec" / "speech"),
        help="codec_real_speech.py's download cache (pysptk sdist, pyannote.audio wheel)",
    )
    p.add_argument(
        "--alsa-dir",
        default=None,
        help="the alsa-utils channel WAVs (default /usr/share/sounds/alsa)",
    )
    p.add_argument("--reuse", action="store_true", help="keep a run whose export exists")
    args = p.parse_args(argv)
    if not (Path(args.data_dir) / "index.json").is_file():
        p.error(f"--data-dir {args.data_dir}: no index.json (make demo writes demo/out)")
    args.data_dir = str(Path(args.data_dir).resolve())  # the scoring commands run in REPO

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/window_ablation.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data_dir": args.data_dir,
        "steps": args.steps,
        "val_every": args.val_every,
        "seed": args.seed,
        "model_config": "small",
        "load_average": {"start": load_average()},
    }
    print(f"load average at start: {results['load_average']['start']}", flush=True)
    results["patch_check"] = check_fixed_phase_reaches_workers(args.data_dir, args.seed)
    print(f"patch check: {results['patch_check']}", flush=True)
    real_dir = out / "real_speech"
    alsa = Path(args.alsa_dir) if args.alsa_dir else None
    results["real_speech_items"] = write_real_speech(real_dir, Path(args.speech_cache), alsa)
    if len(results["real_speech_items"]) != 17:
        n = len(results["real_speech_items"])
        print(f"warning: {n} real-speech items, not 17 (--alsa-dir?)", file=sys.stderr)

    runs = {v: train(v, args, out) for v in VARIANTS}
    results["load_average"]["after_training"] = load_average()
    results["variants"] = {}
    histories = {}
    for v in VARIANTS:
        metrics = json.loads((out / "runs" / v / "metrics.json").read_text())
        histories[v] = metrics["history"]
        results["variants"][v] = {
            **runs[v],
            **score(v, args, out, real_dir),
            "final_train_loss": final_train_loss(metrics["history"]),
            "history_val": metrics["history"]["val"],
        }
    print("paired differences fixed − random per item", flush=True)
    results["paired"] = paired_differences(out, args, real_dir)
    results["load_average"]["end"] = load_average()
    results["wall_seconds"] = round(time.time() - started, 1)
    (out / "window_ablation.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(histories, out / "val_curves.png")
    print(table(results))
    print(
        f"load average: start {results['load_average']['start']}, "
        f"end {results['load_average']['end']}; wall {results['wall_seconds']:.0f} s"
    )
    print(f"wrote {out / 'window_ablation.json'} and {out / 'val_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
