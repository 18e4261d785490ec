"""Validation during and after training: every val window (the training window length, on
the fixed grid `telucodec eval` uses too) once over all ranks, scored at every bitrate by
`telucodec.evaluate`, logged on rank 0."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from shards import loader
from telucodec.compare import compare
from telucodec.evaluate import debug_block, evaluate, perceptual_subset
from telucodec.model import Codec
from telucodec.opus import missing_opus, opus_round_trip
from training.checkpoints import TrainState
from training.distributed import all_reduce_sum, print0
from training.engines import Engines
from training.report import plot_curves, validation_line
from training.setup import Data, Run


def val_coverage(data: Data, args: argparse.Namespace, figures: dict[str, Any]) -> str:
    """How many val windows were scored of those the manifest lists (capped at
    --max-val-items), appended to the final line: `; scored 35 of 55 listed val items (20
    unreadable)`."""
    listed = loader.listed_items(data.val_windows, args.max_val_items)
    scored = figures["items"]
    missing = f" ({listed - scored} unreadable)" if scored < listed else ""
    return f"; scored {scored} of {listed} listed val items{missing}"


def progress(batches: Iterator[dict], run: Run, listed: int, batch_size: int) -> Iterable[dict]:
    """Rank 0's validation batches with a progress bar, one tick per batch (each scored at
    every bitrate): a whole val split can take minutes (19,712 items x 3 bitrates ran 310 s
    on CPU, silent). Rank 0 has batches 0, world, 2 world, … of ceil(listed / batch)."""
    total = len(range(run.rank, -(-listed // batch_size), run.world))
    return tqdm(
        batches,
        total=total,
        disable=run.rank != 0,
        desc=f"validating {listed} items x {len(run.kbps)} bitrates",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stdout,
    )


def validate(run: Run, data: Data, engines: Engines, state: TrainState, tb) -> dict[str, dict]:
    """Every val window exactly once over all ranks (loader.val_batches), scored at every
    bitrate (telucodec.evaluate); one all-reduce of the tallies gives the figures of the
    whole set, the same for any world size. Appends to the history; returns the figures."""
    args = run.args
    tally = loader.ErrorTally()
    batches = loader.val_batches(
        data.index.entries("val"),
        data.val_batch_size,
        data.window_samples,
        run.rank,
        run.world,
        args.max_val_items,
        tally,
    )
    listed = loader.listed_items(data.val_windows, args.max_val_items)
    result = evaluate(
        engines.generator.module,
        progress(batches, run, listed, data.val_batch_size),
        run.kbps,
        run.device,
        engines.dtype,
        n_worst=5 if args.debug_validation else 0,
        n_examples=args.audio_examples if run.rank == 0 else 0,
        perceptual_items=perceptual_subset(listed, args.perceptual_items),
    )
    result.load_vector(all_reduce_sum(torch.from_numpy(result.vector())).numpy())
    errors = all_reduce_sum(
        torch.tensor([tally.bad_samples, tally.bad_shards], dtype=torch.float64)
    )
    figures = result.figures()
    record = {
        "step": state.step,
        "kbps": figures,
        "bad_samples": int(errors[0]),
        "bad_shards": int(errors[1]),
    }
    state.history["val"].append(record)
    if args.debug_validation:
        worst = [None] * run.world
        dist.all_gather_object(worst, result.worst)
        for item in sorted(sum(worst, []), key=lambda w: w.snr_db)[:5]:
            print0(debug_block(item))
    if run.rank == 0:
        log_validation(run, state, record, result.examples, tb)
    return figures


def log_validation(run: Run, state: TrainState, record: dict, examples: list, tb) -> None:
    """Rank 0: one line per bitrate, TensorBoard scalars and audio, curves.png."""
    step = record["step"]
    for kbps, fig in record["kbps"].items():
        print(validation_line(step, kbps, fig), flush=True)
        for name, value in fig.items():
            if value is not None:
                tb.add_scalar(f"val_{kbps}kbps/{name}", value, step)
    if record["bad_samples"] or record["bad_shards"]:
        print(
            f"step {step} val: skipped {record['bad_samples']} corrupt samples, "
            f"{record['bad_shards']} unreadable shards",
            flush=True,
        )
    sr = run.cfg.sample_rate
    for ex in examples:
        tb.add_audio(f"audio/{ex.key}/input", ex.ref[None], step, sr)
        for kbps, est in ex.est.items():
            tb.add_audio(f"audio/{ex.key}/{kbps:g}kbps", est.clamp(-1, 1)[None], step, sr)
    tb.flush()
    plot_curves(state.history, run.exp_dir / "curves.png")


def compare_with_opus(run: Run, data: Data, engines: Engines) -> dict[str, Any] | None:
    """Our codec beside Opus at the headline bitrate on the first --perceptual-items val
    windows, both scored the same way (telucodec.compare, as `python -m telucodec compare
    --max-items N` does): the verdict's figures next to a codec people know. Run on rank 0
    at the end, on a float32 CPU copy of the generator. None with --perceptual-items 0;
    {"skipped": why} when opusenc/opusdec are not on PATH or fail; else {"kbps", "items",
    "telucodec": figures, "opus": figures}."""
    n = run.args.perceptual_items
    if n == 0:
        return None
    why_not = missing_opus()
    if why_not:
        return {"skipped": why_not}
    kbps = run.kbps[-1]
    model = Codec(run.cfg)
    weights = engines.generator.module.state_dict()  # eager keys, also under --compile
    model.load_state_dict({k: v.detach().float().cpu() for k, v in weights.items()})
    tally = loader.ErrorTally(quiet=True)  # validation has reported the val split's faults
    batches = loader.val_batches(
        data.index.entries("val"), 1, data.window_samples, max_items=n, tally=tally
    )
    items = ((b["audio"][0].numpy(), b["mask"][0].numpy()) for b in batches)
    try:
        results = compare(model, items, [kbps], opus_round_trip)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        return {"skipped": f"opusenc/opusdec failed at {kbps:g} kbps: {exc}"}
    top = f"{kbps:g}"
    ours, opus = results["telucodec"][top], results["opus"][top]
    return {"kbps": top, "items": opus["items"], "telucodec": ours, "opus": opus}
