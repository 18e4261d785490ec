"""Checkpoints: what one restores besides weights (`TrainState`), saving it so a kill
mid-save leaves the previous one intact, and --resume checking it before loading."""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

from shards.atomic import atomic_write_bytes, atomic_write_json
from training.checkpoint_files import rng_state, set_rng_state, verify_manifest, write_manifest
from training.distributed import print0
from training.engines import Engines
from training.setup import Run


@dataclass
class TrainState:
    """What a checkpoint restores besides weights, optimizer and RNG: the position in the
    run and in the data stream, and everything logged so far."""

    step: int = 0  # optimizer steps done
    batches: int = 0  # micro-batches consumed: the training stream's position
    history: dict[str, list] = field(
        default_factory=lambda: {"train": [], "val": [], "data_errors": [], "nonfinite": []}
    )


def save_checkpoint(run: Run, engines: Engines, state: TrainState) -> None:
    """DeepSpeed checkpoint `stepNNNNNNNN` with `state` as client state, plus each rank's RNG
    state as JSON (rng_rankNNN.json), then a sha256 manifest of all its files, then `latest`:
    a kill mid-save leaves the previous checkpoint as the one --resume takes. Keeps the
    newest --keep-checkpoints."""
    ckpt_dir, tag = run.ckpt_dir, f"step{state.step:08d}"
    (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
    rng_file = ckpt_dir / tag / f"rng_rank{run.rank:03d}.json"
    atomic_write_json(rng_file, rng_state())
    if engines.discriminator is not None:
        engines.discriminator.save_checkpoint(
            str(ckpt_dir / "discriminator"), tag=tag, save_latest=False
        )
    engines.generator.save_checkpoint(
        str(ckpt_dir), tag=tag, client_state={"train_state": asdict(state)}, save_latest=False
    )
    dist.barrier()
    if run.rank == 0:  # every rank's files are written: hash them, then point `latest` here
        write_manifest(ckpt_dir, tag)
        atomic_write_bytes(ckpt_dir / "latest", tag.encode())
    dist.barrier()
    keep = run.args.keep_checkpoints
    if run.rank == 0 and keep > 0:
        old = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir())[:-keep]
        for name in old:
            shutil.rmtree(ckpt_dir / name, ignore_errors=True)
            shutil.rmtree(ckpt_dir / "discriminator" / name, ignore_errors=True)
    print0(f"checkpoint saved: {ckpt_dir / tag}")


def resume(run: Run, engines: Engines) -> TrainState:
    """Load the latest checkpoint into the engines and this rank's RNG → its TrainState; a
    fresh state when there is none yet. Its files are checked against the manifest first
    (DeepSpeed's .pt files are pickles: a modified one could run code when loaded)."""
    ckpt_dir = run.ckpt_dir
    path, client = None, None
    if (ckpt_dir / "latest").is_file():
        tag = (ckpt_dir / "latest").read_text().strip()
        verify_manifest(ckpt_dir, tag)
        path, client = engines.generator.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        print0(f"--resume: no checkpoint in {ckpt_dir} yet, starting fresh")
        return TrainState()
    if engines.discriminator is not None:
        engines.discriminator.load_checkpoint(str(ckpt_dir / "discriminator"), tag=tag)
    rng_file = ckpt_dir / tag / f"rng_rank{run.rank:03d}.json"
    if rng_file.is_file():
        set_rng_state(json.loads(rng_file.read_text()))
    else:  # e.g. resumed on more ranks than saved: a fresh but deterministic stream
        torch.manual_seed(zlib.crc32(f"{tag}/{run.rank}".encode()))
        print(f"[rank {run.rank}] no {rng_file.name} in {tag}; RNG reseeded", flush=True)
    state = TrainState(**client["train_state"])
    print0(f"resumed {ckpt_dir} at step {state.step}")
    return state
