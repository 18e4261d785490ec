"""The training loop: micro-batches to optimizer steps, skipped NaN/Inf losses, logged
losses, the per-epoch data-error report, in-loop validation and checkpoints, the time budget
and the session's throughput."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from shards import loader
from telucodec.losses import discriminator_loss
from training.checkpoints import TrainState, save_checkpoint
from training.distributed import all_reduce_sum, print0
from training.engines import Engines
from training.setup import Data, Run
from training.validate import validate


@dataclass
class Session:
    """Bookkeeping of this process's part of the run (a resumed run is a new session)."""

    started: float = field(default_factory=time.time)
    first_step_done: float | None = None  # time.time() after this session's first step
    steps: int = 0  # optimizer steps this session
    last_val: int = -1  # step of the last validation
    last_save: int = -1  # step of the last checkpoint


def train(run: Run, data: Data, engines: Engines, state: TrainState, tb) -> Session:
    """Micro-batches until --max-steps or the time budget; losses logged every --log-every
    steps, data errors reported per epoch, validation every --val-every, a checkpoint every
    --save-every. The stream starts at the saved batch index, so a resumed run replays the
    batches an uninterrupted one would have seen."""
    args, session = run.args, Session()
    bar = tqdm(
        total=data.total_steps,
        initial=state.step,
        disable=run.rank != 0,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stdout,
    )
    epoch_errors = loader.EpochErrors()
    guard = NonFiniteGuard(args.max_nonfinite_steps)
    data.stream.start = state.batches
    on_gpu = run.device.type == "cuda"
    batches = iter(loader.train_loader(data.stream, args.num_workers, on_gpu))
    engines.generator.train()
    try:
        while state.step < data.total_steps:
            epoch = state.batches // data.batches_per_epoch
            batch = next(batches)
            assert batch["epoch"] == epoch, (batch["epoch"], epoch)
            epoch_errors.update(batch)
            before = optimizer_steps(engines)
            terms = train_step(engines, batch, run.device, guard)
            state.batches += 1
            stepped = optimizer_steps(engines) != before
            state.step += stepped
            guard.count(run, state, terms)
            if state.batches % data.batches_per_epoch == 0:
                report_epoch(run, state, epoch, epoch_errors)
            if not stepped:
                continue  # accumulating gradients, or a skipped micro-batch: no step yet
            session.steps += 1
            if session.steps == 1:
                session.first_step_done = time.time()
            logged = state.step % args.log_every == 0 or state.step == data.total_steps
            if logged and terms is not None:
                log_losses(run, data, engines, state, session, terms, bar, tb)
            bar.update(1)
            if state.step >= data.total_steps or time_is_up(run):
                if state.batches % data.batches_per_epoch:
                    report_epoch(run, state, epoch, epoch_errors)  # the part this session ran
                break
            if args.val_every and state.step % args.val_every == 0:
                validate(run, data, engines, state, tb)
                session.last_val = state.step
            if args.save_every and state.step % args.save_every == 0:
                save_checkpoint(run, engines, state)
                session.last_save = state.step
    finally:  # also on an interrupt or error: no worker may outlive the run
        stop_workers(batches)
        bar.close()
    return session


def optimizer_steps(engines: Engines) -> int:
    """The generator engine's optimizer step counter (DeepSpeed's `global_steps`; the loop
    reads only how it moves). A step counts when the engine takes one, not every
    `accumulation` micro-batches: a skipped non-finite micro-batch never reaches the
    engine, so with accumulation > 1 the engine's step comes one micro-batch later, and
    counting micro-batches would let the step number run ahead of the optimizer's (and
    end the run a step short)."""
    return int(engines.generator.global_steps)


def stop_workers(batches) -> None:
    """Stop the DataLoader's worker processes and wait for them (each gets a few seconds,
    then is terminated). Left to garbage collection, an iterator that an exception's
    traceback still holds would keep its workers alive past the end of the run."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent with --num-workers 0
    if shutdown is not None:
        shutdown()


def throughput(run: Run, data: Data, session: Session) -> dict[str, Any]:
    """This session's training speed for metrics.json, taken as the loop ends (the final
    validation and export not counted): steps and samples (all ranks) per second of the loop,
    and again after its first step, which alone carries the loader's start, CUDA warm-up and
    any --compile compilation (in-loop validations and checkpoints count in both); this
    rank's peak GPU memory (None on CPU); the device."""
    on_gpu = run.device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(run.device)  # the clock must not stop before queued kernels do
    now = time.time()
    seconds = max(now - session.started, 1e-9)
    first = steady = None
    if session.first_step_done is not None:
        first = session.first_step_done - session.started
        if session.steps > 1:
            steady = (session.steps - 1) / max(now - session.first_step_done, 1e-9)
    return {
        "device": torch.cuda.get_device_name(run.device) if on_gpu else "cpu",
        "steps": session.steps,
        "seconds": seconds,
        "steps_per_s": session.steps / seconds,
        "samples_per_s": session.steps * data.samples_per_step / seconds,
        "first_step_seconds": first,
        "steady_steps_per_s": steady,
        "steady_samples_per_s": None if steady is None else steady * data.samples_per_step,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(run.device) if on_gpu else None,
    }


class NonFiniteGuard:
    """A NaN/Inf loss on any rank skips that micro-batch on every rank (no backward, no step,
    so bf16 weights never take the bad update); each skip is counted in the history
    (metrics.json's history.nonfinite) and logged, and --max-nonfinite-steps in a row stop
    the run with an error."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0

    def finite(self, loss: torch.Tensor) -> bool:
        """Whether `loss` is finite on every rank (one all-reduce when there are several)."""
        bad = float(not bool(torch.isfinite(loss.detach()).all()))
        if dist.is_initialized() and dist.get_world_size() > 1:
            bad = float(all_reduce_sum(torch.tensor([bad], dtype=torch.float64))[0])
        return bad == 0

    def count(self, run: Run, state: TrainState, terms: dict | None) -> None:
        """After a micro-batch: `terms` None means it was skipped."""
        if terms is not None:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        skipped = state.history.setdefault("nonfinite", [])
        skipped.append({"step": state.step, "batch": state.batches - 1})
        print0(
            f"step {state.step}: non-finite loss, micro-batch {state.batches - 1} skipped "
            f"({self.in_a_row} in a row, {len(skipped)} in the run)"
        )
        if self.in_a_row >= self.limit:
            raise SystemExit(
                f"train_ds.py: error: {self.in_a_row} non-finite (NaN/Inf) losses in a row at "
                f"step {state.step} (--max-nonfinite-steps {self.limit}); lower the learning "
                f"rate or check the data, then --resume from the last checkpoint"
            )


def train_step(
    engines: Engines,
    batch: dict[str, Any],
    device: torch.device,
    guard: NonFiniteGuard | None = None,
) -> dict[str, torch.Tensor] | None:
    """One micro-batch (audio Tensor[B x T], mask BoolTensor[B x T]): the critic's hinge
    step on real vs detached reconstructions, then the generator's losses with the critic
    frozen (so its backward leaves the critic's gradients alone) → the loss terms, or None
    when a loss was NaN/Inf (`guard`): then nothing further is stepped."""
    guard = guard or NonFiniteGuard(limit=1)
    audio = batch["audio"][:, None].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    g, d = engines.generator, engines.discriminator
    out = g(audio.to(engines.dtype))
    est = out.audio.float()
    if d is not None:
        d_loss = discriminator_loss(d, audio, est, mask)
        if not guard.finite(d_loss):
            return None
        d.backward(d_loss)
        d.step()
        d.module.requires_grad_(False)
    terms = engines.loss(audio, est, mask, out, discriminator=None if d is None else d.module)
    if d is not None:
        d.module.requires_grad_(True)
        terms["disc"] = d_loss.detach()
    if not guard.finite(terms["loss"]):
        return None
    g.backward(terms["loss"])
    g.step()
    return terms


def log_losses(
    run: Run,
    data: Data,
    engines: Engines,
    state: TrainState,
    session: Session,
    terms: dict[str, torch.Tensor],
    bar,
    tb,
) -> None:
    """Loss terms averaged over ranks, LR and grad norm → history, progress bar, TensorBoard."""
    names = sorted(terms)
    values = torch.stack([terms[n].detach().double().cpu() for n in names])
    means = (all_reduce_sum(values) / run.world).tolist()
    row = {"step": state.step, **dict(zip(names, means, strict=True))}
    row["lr"] = engines.generator.get_lr()[0]
    grad_norm = engines.generator.get_global_grad_norm()  # before clipping; same on all ranks
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    state.history["train"].append(row)
    rate = session.steps / max(time.time() - session.started, 1e-9)
    bar.set_postfix(
        loss=f"{row['loss']:.4f}",
        steps_s=f"{rate:.2f}",
        samples_s=f"{rate * data.samples_per_step:.0f}",
        refresh=False,
    )
    if tb is not None:
        for name, value in row.items():
            if name != "step":
                tb.add_scalar(f"train/{name}", value, state.step)
        tb.add_scalar("train/samples_per_s", rate * data.samples_per_step, state.step)


def report_epoch(run: Run, state: TrainState, epoch: int, errors: loader.EpochErrors) -> None:
    """What the loader skipped this epoch, summed over ranks (never fatal): one line per bad
    shard naming it, then the totals; into the history always, printed only when non-zero."""
    bad = all_reduce_sum(torch.tensor(errors.totals(), dtype=torch.float64))
    by_shard = errors.by_shard()
    if run.world > 1:
        gathered = [None] * run.world
        dist.all_gather_object(gathered, by_shard)
        by_shard = loader.merge_by_shard(*gathered)
    report = {
        "epoch": epoch,
        "step": state.step,
        "bad_samples": int(bad[0]),
        "bad_shards": int(bad[1]),
        "by_shard": by_shard,
    }
    state.history["data_errors"].append(report)
    for line in loader.shard_report(by_shard):
        print0(f"epoch {epoch}: {line}")
    if report["bad_samples"] or report["bad_shards"]:  # a clean epoch prints nothing
        print0(
            f"epoch {epoch} (step {state.step}): skipped {report['bad_samples']} corrupt "
            f"samples and {report['bad_shards']} unreadable shard reads"
        )
    errors.clear()


def time_is_up(run: Run) -> bool:
    """--max-seconds spent; agreed over ranks, since every rank must stop on the same step."""
    seconds = run.args.max_seconds
    if seconds <= 0:
        return False
    up = time.time() - run.started > seconds
    if run.world > 1:
        up = bool(all_reduce_sum(torch.tensor([float(up)], dtype=torch.float64))[0] > 0)
    return up
