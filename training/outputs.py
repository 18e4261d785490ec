"""What a run leaves in CKPT/NAME besides checkpoints: run_config.json (with the --init-from
record), the exported generator (final/), metrics.json and curves.png."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from shards.atomic import atomic_write_json
from telucodec.checkpoint import model_identity, save_codec
from training.checkpoints import TrainState
from training.engines import Engines
from training.report import (
    CRITERION,
    headline,
    opus_line,
    plot_curves,
    run_summary,
    succeeded,
    verdict,
)
from training.setup import Data, Run
from training.validate import compare_with_opus, val_coverage


def write_run_config(run: Run, data: Data, engines: Engines) -> None:
    """Store the resolved configuration with the outputs and summarize it (rank 0)."""
    if run.rank != 0:
        return
    run_config = {
        "args": vars(run.args),
        "world_size": run.world,
        "device": str(run.device),
        "deepspeed": engines.ds_config,
        "model": run.cfg.to_dict(),
        "parameters": sum(p.numel() for p in engines.generator.module.parameters()),
        "data": {
            "train_shards": len(data.index.entries("train")),
            "train_samples": data.index.samples("train"),
            "val_shards": len(data.index.entries("val")),
            "val_samples": data.index.samples("val"),
            "utterance_max_samples": data.index.utterance_max_samples,
            "window_samples": data.window_samples,
            "segment_seconds": data.window_samples / run.cfg.sample_rate,
            "train_windows": data.train_windows,
            "val_windows": data.val_windows,
            "micro_batch": data.micro_batch,
            "batches_per_epoch": data.batches_per_epoch,
        },
        "total_steps": data.total_steps,
        "kbps": run.kbps,
        "n_quantizers": run.n_quantizers,
        "init_from": init_record(run),
    }
    write_json(run.exp_dir / "run_config.json", run_config)
    for line in run_summary(run_config):
        print(line, flush=True)
    print(f"full configuration: {run.exp_dir / 'run_config.json'}", flush=True)


def init_record(run: Run) -> dict[str, Any] | None:
    """The weights a fine-tuning run started from, for run_config.json: the path may be
    overwritten later, the identity (sha256 of config and weights, as .tcq streams carry)
    cannot. A resumed session of such a run did not read --init-from again, so it keeps the
    record its first session wrote."""
    if run.init is None:
        try:
            previous = json.loads((run.exp_dir / "run_config.json").read_text())
        except (OSError, ValueError):
            return None
        return previous.get("init_from") if isinstance(previous, dict) else None
    return {
        "directory": str(run.init.directory),
        "model_id": model_identity(run.init.directory).hex(),
        "step": run.init.extra.get("step"),
        "experiment": run.init.extra.get("experiment"),
    }


def export(
    run: Run,
    data: Data,
    engines: Engines,
    state: TrainState,
    figures: dict,
    speed: dict[str, Any] | None = None,
) -> None:
    """Rank 0: the generator to CKPT/NAME/final (float32, for `python -m telucodec`),
    metrics.json (with `speed`, this session's `throughput`, and Opus beside our codec
    when opus-tools are installed) and curves.png, and the headline: the verdict of
    report.CRITERION (masked SNR and SI-SDR > 0 dB with 95 % confidence). The export's
    `extra` records `segment_seconds`, the window length it was validated on, which
    `telucodec eval` then scores by default."""
    exp_dir, top = run.exp_dir, f"{run.kbps[-1]:g}"
    generator = engines.generator.module
    if engines.dtype != torch.float32:
        # Only its state_dict is saved: with --compile the copy's compiled forward would
        # still call the original bf16 module, so never run this copy.
        generator = copy.deepcopy(generator).float()
    extra = {
        "step": state.step,
        "experiment": run.args.experiment_name,
        "validation": figures,
        "segment_seconds": data.window_samples / run.cfg.sample_rate,
    }
    save_codec(exp_dir / "final", generator, extra=extra)
    opus = compare_with_opus(run, data, engines)
    elapsed = time.time() - run.started
    metrics = {
        "experiment": run.args.experiment_name,
        "step": state.step,
        "total_steps": data.total_steps,
        "world_size": run.world,
        "samples_seen": state.step * data.samples_per_step,
        "elapsed_seconds": elapsed,
        "final": figures,
        "kbps": [f"{k:g}" for k in run.kbps],
        "success": succeeded(figures[top]),
        "verdict": verdict(figures[top]),
        "criterion": CRITERION,
        "opus": opus,
        "throughput": speed,
        "history": state.history,
    }
    write_json(exp_dir / "metrics.json", metrics)
    plot_curves(state.history, exp_dir / "curves.png")
    print(f"exported generator: {exp_dir / 'final'} (telucodec.checkpoint.load_codec)")
    print(f"{state.step} steps in {elapsed:.0f} s; metrics: {exp_dir / 'metrics.json'}")
    if opus is not None and "skipped" in opus:
        print(f"Opus comparison skipped: {opus['skipped']}")
    elif opus is not None:
        print(opus_line(opus["kbps"], opus["telucodec"], opus["opus"]))
    print(headline(top, figures[top]) + val_coverage(data, run.args, figures[top]), flush=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=2, sort_keys=True, default=float)
