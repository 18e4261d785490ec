"""The training procedure, top to bottom, one named step per stage:

    parse_args → init_source (--init-from) → check_resume_world → init_distributed → make_run
      → resolve_ds_config → load_data → set_schedule_length → build_engines
      → write_run_config → resume (--resume)
      → train: train_step, log_losses, report_epoch, validate, save_checkpoint
      → validate (final) → save_checkpoint → export (final/, metrics.json, curves.png)

Each step takes what it needs as arguments; what several share sits in four small
dataclasses: `Run` and `Data` (training.setup), `Engines` (training.engines) and
`TrainState` (training.checkpoints). SIGINT / SIGTERM at any step end the run with one line
and exit 130 / 143 (training.interrupts). train_ds.py, the script the launchers start, only
calls `main`.
"""

from __future__ import annotations

import os

import torch.distributed as dist

from training import interrupts
from training.args import experiment_dir, parse_args
from training.checkpoints import TrainState, check_resume_world, resume, save_checkpoint
from training.distributed import init_distributed, print0
from training.engines import build_engines
from training.init_source import init_source
from training.loop import throughput, train
from training.outputs import export, write_run_config
from training.setup import load_data, make_run, resolve_ds_config, set_schedule_length
from training.validate import validate


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Run (or resume) one training session → exit code 0; a refused input exits 2 with one
    line, SIGINT / SIGTERM 130 / 143 with one line. `argv` defaults to sys.argv[1:];
    `description` heads --help."""
    args = parse_args(argv, description)
    interrupts.raise_on_signals()
    state: TrainState | None = None
    tb = None
    try:
        init = init_source(args)
        check_resume_world(args)
        rank, world, device = init_distributed(args.verbose)
        run = make_run(args, rank, world, device, init)
        ds_config = resolve_ds_config(
            args.deepspeed_config, args, device.type == "cuda", run.tb_dir
        )
        data = load_data(run, ds_config)
        set_schedule_length(ds_config, data.total_steps)
        engines = build_engines(run, ds_config)
        write_run_config(run, data, engines)
        state = resume(run, engines) if args.resume else TrainState()
        if args.init_from is not None and init is None:
            print0(f"--init-from {args.init_from} ignored: the run resumes from step {state.step}")
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run.tb_dir))

        session = train(run, data, engines, state, tb)
        speed = throughput(run, data, session)

        if session.last_val == state.step:
            figures = state.history["val"][-1]["kbps"]
        else:
            figures = validate(run, data, engines, state, tb)
        if session.last_save != state.step and session.steps:
            save_checkpoint(run, engines, state)
        if rank == 0:
            export(run, data, engines, state, figures, speed)
        dist.barrier()
        return 0
    except interrupts.Interrupted as exc:
        step = None if state is None else state.step
        rank = int(os.environ.get("RANK", "0"))  # set by the launcher or init_distributed
        return interrupts.report(exc, step, experiment_dir(args) / "checkpoints", rank)
    finally:
        if tb is not None:
            tb.close()
        if dist.is_initialized():
            dist.destroy_process_group()
