"""Checkpoints: what one restores besides weights (`TrainState`), saving it so a kill
mid-save leaves the previous one intact, and --resume checking it before loading."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from shards.atomic import DISK_FULL_ERRNOS, atomic_write_bytes, atomic_write_json
from training.args import experiment_dir, fail
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
    newest --keep-checkpoints. A write that fails (a full disk, a quota) is one line naming
    the folder, exit 1 (`SaveFailed`); the previous checkpoint stays `latest`."""
    ckpt_dir, tag = run.ckpt_dir, f"step{state.step:08d}"
    try:
        write_checkpoint(run, engines, state, tag)
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        if run.world == 1:  # with several ranks, others may still be writing into it
            discard_partial(ckpt_dir, tag)
        raise SaveFailed(save_failure(ckpt_dir / tag, exc)) from None
    keep = run.args.keep_checkpoints
    if run.rank == 0 and keep > 0:
        old = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir())[:-keep]
        for name in old:
            shutil.rmtree(ckpt_dir / name, ignore_errors=True)
            shutil.rmtree(ckpt_dir / "discriminator" / name, ignore_errors=True)
    print0(f"checkpoint saved: {ckpt_dir / tag}")


def write_checkpoint(run: Run, engines: Engines, state: TrainState, tag: str) -> None:
    """Every file of checkpoint `tag`, `latest` last (see save_checkpoint)."""
    ckpt_dir = run.ckpt_dir
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


class SaveFailed(SystemExit):
    """A checkpoint that could not be written: its one-line message, exit status 1."""


# torch.save's C++ zip writer raises RuntimeError without an errno when a write fails:
# "PytorchStreamWriter failed writing file data/0: file write failed", then "unexpected
# pos N vs M" or "basic_ios::clear: iostream error" (seen writing to /dev/full).
WRITE_FAILURE_TEXT = (
    "No space left on device",
    "Disk quota exceeded",
    "file write failed",
    "failed writing",
    "unexpected pos",
    "iostream error",
)
FULL_BELOW_BYTES = 64 << 20  # less free than this after a failed write: the disk is full


def is_write_failure(exc: BaseException) -> bool:
    """Whether `exc` is a checkpoint write that failed (a full disk, a quota, an I/O error)
    rather than a bug, which keeps its traceback."""
    if isinstance(exc, OSError):
        return exc.errno is not None
    return any(text in str(exc) for text in WRITE_FAILURE_TEXT)


def free_bytes(path: Path) -> int | None:
    """Bytes free to this user on the file system of `path` (None when it cannot be told)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def save_failure(tag_dir: Path, exc: BaseException) -> str:
    """The one line for a failed checkpoint write: the folder, "no space left on device"
    when it was (by errno, message, or the free space left), and what to do."""
    free = free_bytes(tag_dir.parent)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        what = "no space left on device" + (
            " (disk quota exceeded)" if exc.errno == errno.EDQUOT else ""
        )
    elif "No space left" in message or "Disk quota" in message:
        what = "no space left on device"
    elif free is not None and free < FULL_BELOW_BYTES:
        what = f"no space left on device ({free >> 20} MiB free)"
    else:
        what = f"write failed ({message})"
    latest = tag_dir.parent / "latest"
    kept = latest.read_text().strip() if latest.is_file() else None
    after = f"--resume continues from {kept}" if kept else "no earlier checkpoint to resume"
    return f"train_ds.py: error: checkpoint {tag_dir}: {what}; free space there, then {after}"


def discard_partial(ckpt_dir: Path, tag: str) -> None:
    """Remove what a failed save of `tag` wrote (frees the space it took), unless `latest`
    points at it: then it is a complete, earlier checkpoint."""
    latest = ckpt_dir / "latest"
    if latest.is_file() and latest.read_text().strip() == tag:
        return
    shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    shutil.rmtree(ckpt_dir / "discriminator" / tag, ignore_errors=True)


# DeepSpeed's ZeRO (stage >= 1) optimizer state: one file per data-parallel rank.
ZERO_OPTIM_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt")


def partitioned_over(tag_dir: Path) -> int | None:
    """How many ranks a checkpoint's optimizer state is split over (its ZeRO files); None
    for ZeRO stage 0, whose one model file holds the whole state and loads on any world."""
    ranks = {
        int(m[1]) for f in tag_dir.glob("zero_pp_rank_*") if (m := ZERO_OPTIM_FILE.match(f.name))
    }
    return len(ranks) or None


# The tags save_checkpoint writes; `latest` naming anything else (`../x`, an absolute path)
# would send --resume outside the checkpoint folder.
TAG = re.compile(r"step\d{8}")


def latest_tag(ckpt_dir: Path) -> str | None:
    """The tag `ckpt_dir/latest` names, None without one; anything but `stepNNNNNNNN` is one
    line, exit 2 (`fail`)."""
    latest = ckpt_dir / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not TAG.fullmatch(tag):
        fail(f"--resume: {latest} names {tag[:80]!r}; expected a tag like step00000004")
    return tag


def check_resume_world(args: argparse.Namespace) -> None:
    """--resume on another number of ranks than a ZeRO stage >= 1 checkpoint was saved with
    is one line naming both and what to do, exit 2, before any process group starts: ZeRO
    splits the optimizer state over the saving ranks, and DeepSpeed's load is a traceback on
    any other world size. ZeRO 0 checkpoints resume on any world size (the data stream then
    differs from an uninterrupted run's). The world is the launcher's WORLD_SIZE (1 under
    plain `python`)."""
    ckpt_dir = experiment_dir(args) / "checkpoints"
    tag = latest_tag(ckpt_dir) if args.resume else None
    if tag is None:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for tag_dir in (ckpt_dir / tag, ckpt_dir / "discriminator" / tag):
        saved = partitioned_over(tag_dir)
        if saved is not None and saved != world:
            fail(
                f"--resume: {tag_dir} was saved by {saved} ranks with ZeRO, which splits the "
                f"optimizer state {saved} ways; this run has {world}: resume on {saved} ranks "
                f"(deepspeed --num_gpus {saved}, torchrun --nproc_per_node {saved}), or start "
                f"a new run from its exported weights (--init-from {ckpt_dir.parent / 'final'})"
            )


def resume(run: Run, engines: Engines) -> TrainState:
    """Load the latest checkpoint into the engines and this rank's RNG → its TrainState; a
    fresh state when there is none yet. Its files are checked against the manifest first
    (integrity: a corrupted or partial file is refused before DeepSpeed loads it)."""
    ckpt_dir = run.ckpt_dir
    path, client = None, None
    tag = latest_tag(ckpt_dir)
    if tag is not None:
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
