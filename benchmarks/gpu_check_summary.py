"""The closing lines of benchmarks/gpu_check.sh, read from a run's metrics.json and
run_config.json: what ran where, speed, peak GPU memory, the final losses, validation per
bitrate and the verdict. Short lines, so the summary survives a terminal's last screen.

    python benchmarks/gpu_check_summary.py CKPT/NAME
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GIB = 1024**3


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def setup_line(run_config: dict[str, Any], speed: dict[str, Any]) -> str:
    """`gpu_check: base (74.2 M parameters) on NVIDIA H200, bf16, compile off, …`."""
    args, ds = run_config["args"], run_config["deepspeed"]
    precision = "bf16" if ds.get("bf16", {}).get("enabled") else "fp32"
    data = run_config["data"]  # window_samples; crop_samples in runs before format 2
    crop = data.get("window_samples", data.get("crop_samples")) / run_config["model"]["sample_rate"]
    return (
        f"gpu_check: {args['model_config']} ({run_config['parameters'] / 1e6:.1f} M parameters) "
        f"on {speed['device']}, {precision}, compile {'on' if args.get('compile') else 'off'}, "
        f"micro batch {run_config['data']['micro_batch']} x {crop:.2f} s, "
        f"{run_config['world_size']} rank{'s' if run_config['world_size'] > 1 else ''}"
    )


def speed_lines(speed: dict[str, Any]) -> list[str]:
    """Steps/s and samples/s over the whole loop and after its first step; peak memory."""
    lines = [
        f"speed: {speed['steps']} steps in {speed['seconds']:.0f} s: "
        f"{speed['steps_per_s']:.2f} steps/s, {speed['samples_per_s']:.1f} samples/s"
    ]
    if speed.get("steady_steps_per_s") is not None:
        lines.append(
            f"after the first step ({speed['first_step_seconds']:.1f} s): "
            f"{speed['steady_steps_per_s']:.2f} steps/s, "
            f"{speed['steady_samples_per_s']:.1f} samples/s"
        )
    peak = speed.get("peak_gpu_memory_bytes")
    memory = "n/a on CPU" if peak is None else f"{peak / GIB:.2f} GiB (allocated, rank 0)"
    lines.append(f"peak GPU memory: {memory}")
    return lines


def loss_lines(history: dict[str, list]) -> list[str]:
    """The last logged losses (means over ranks): the total with the grad norm, then its
    terms."""
    if not history["train"]:
        return ["final loss: none logged"]
    row = history["train"][-1]
    terms = sorted(k for k in row if k not in ("step", "loss", "lr", "grad_norm"))
    grad = f", grad norm {row['grad_norm']:.3g}" if "grad_norm" in row else ""
    return [
        f"final loss (step {row['step']}): {row['loss']:.4g}{grad}, lr {row['lr']:.3g}",
        "loss terms: " + ", ".join(f"{name} {row[name]:.3g}" for name in terms),
    ]


def validation_lines(final: dict[str, dict]) -> list[str]:
    """One line per bitrate: masked SNR, SI-SDR, mel distance (and PESQ-WB / STOI when the
    validation scores them)."""
    lines = []
    for kbps in sorted(final, key=float):
        fig = final[kbps]
        line = (
            f"val {kbps} kbps: masked SNR {_num(fig['masked_snr_db'])} dB, "
            f"SI-SDR {_num(fig['masked_si_sdr_db'])} dB, "
            f"mel {_num(fig['masked_mel_distance'], '.3f')}"
        )
        for name, label, digits in (("pesq_wb", "PESQ-WB", ".2f"), ("stoi", "STOI", ".3f")):
            if name in fig:
                line += f", {label} {_num(fig[name], digits)}"
        lines.append(line + f" ({fig['items']} items)")
    return lines


def verdict_line(metrics: dict[str, Any]) -> str:
    """The run's verdict at its top bitrate with the interval it rests on."""
    top = metrics["kbps"][-1]
    fig = metrics["final"][top]
    lo, hi = fig.get("masked_snr_db_ci95_lo"), fig.get("masked_snr_db_ci95_hi")
    interval = "n/a" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]"
    snr = _num(fig["masked_snr_db"], ".1f")
    n = fig.get("masked_snr_db_items", 0)
    figures = f"masked SNR {snr} dB, 95 % CI {interval}, n = {n}"
    return f"verdict: {metrics['verdict']} at {top} kbps: {figures}"


def summary(run_dir: Path) -> list[str]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run_config = json.loads((run_dir / "run_config.json").read_text())
    speed = metrics["throughput"]
    return [
        setup_line(run_config, speed),
        *speed_lines(speed),
        *loss_lines(metrics["history"]),
        *validation_lines(metrics["final"]),
        verdict_line(metrics),
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/gpu_check_summary.py CKPT/NAME", file=sys.stderr)
        return 2
    try:
        lines = summary(Path(argv[0]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"gpu_check_summary: error: {argv[0]}: unreadable run ({exc!r})", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
