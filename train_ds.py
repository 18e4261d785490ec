"""Train a TeluCodec model with DeepSpeed on a preprocess output directory.

    deepspeed train_ds.py --deepspeed-config ds_config.json --data-dir OUT \\
        --checkpoint-dir CKPT --experiment-name NAME --model-config small
    python train_ds.py --data-dir OUT ...                 # one process, no launcher
    python train_ds.py --data-dir OUT --init-from CKPT/OLD/final ...   # fine-tune an export
    torchrun --nproc_per_node 2 train_ds.py --data-dir OUT ...
    sbatch cluster/train.sbatch OUT CKPT NAME             # SLURM, one task per node

The original train_codec.py spellings (`--data_dir`, `--batch_size`, …) still work.
`--init-from` starts from an exported codec's weights (fresh optimizer and schedule, step 0)
and refuses one whose architecture differs from `--model-config`; `--resume` wins over it.

`main` (at the bottom) is the procedure, one named step per stage, and the file reads in the
same order: arguments (and the --init-from export, checked) → process group → run, data,
engines → resume → the loop (train step, logged losses, epoch data-error report, validation,
checkpoint) → final validation → exported generator, metrics.json, curves.png. Each step
takes what it needs as arguments; what several share sits in four small dataclasses: `Run`
(flags, rank, codec, output dirs, the --init-from source), `Data` (index, training stream,
schedule length), `Engines` and `TrainState` (what a checkpoint restores besides weights).
Validation scoring is `telucodec.evaluate`, shared with `python -m telucodec eval`; shard
lists come from `shards.Index`. What the run prints and plots (summary, validation lines,
verdict, curves.png) is `training/report.py`; the RNG state and sha256 manifest a checkpoint
carries are `training/checkpoint_files.py`.

Everything a run produces lives in CKPT/NAME/: run_config.json (args + DeepSpeed config +
codec config), checkpoints/ (DeepSpeed, with data position and RNG state), final/ (the
generator for `python -m telucodec`), metrics.json, curves.png and tb/ (TensorBoard).
docs/TRAINING.md has the details.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from safetensors import safe_open
from tqdm import tqdm

from shards import Index, loader
from shards.atomic import atomic_write_bytes, atomic_write_json
from telucodec.checkpoint import (
    WEIGHTS,
    CheckpointError,
    load_weights,
    model_identity,
    read_checkpoint_config,
    save_codec,
)
from telucodec.configs import (
    DEFAULT_KBPS,
    CodecConfig,
    architecture_differences,
    get_config,
    kbps_values,
)
from telucodec.discriminator import MultiScaleSTFTDiscriminator
from telucodec.evaluate import debug_block, evaluate, perceptual_subset
from telucodec.losses import CodecLoss, discriminator_loss
from telucodec.model import Codec
from training.checkpoint_files import (
    rng_state,
    set_rng_state,
    verify_manifest,
    write_manifest,
)
from training.report import (
    headline,
    plot_curves,
    run_summary,
    succeeded,
    validation_line,
    verdict,
)

REPO = Path(__file__).resolve().parent
DEFAULT_DS_CONFIG = REPO / "ds_config.json"
SUPPORTED_ZERO_STAGES = (0, 1)

# ------------------------------------------------------------------------------ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags are kebab-case; each also answers to its snake_case spelling, so the original
    train_codec.py command lines (`--data_dir … --batch_size 16`) and the deepspeed launcher's
    `--local_rank` keep working."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)

    def flag(name: str, **kwargs: Any) -> None:
        spellings = dict.fromkeys(["--" + name.replace("_", "-"), "--" + name])
        p.add_argument(*spellings, dest=name, **kwargs)

    # The original train_codec.py flags, same meaning. Batch size and learning rate default
    # to ds_config.json's values; given here, they override it.
    flag("data_dir", required=True, help="preprocess output (index.json, shards/)")
    flag("checkpoint_dir", default="runs", help="runs go to CHECKPOINT_DIR/NAME/")
    flag("experiment_name", default="telucodec")
    flag("batch_size", type=int, default=None, help="per-rank micro batch")
    flag("num_epochs", type=int, default=10, help="used when --max-steps is unset")
    flag("learning_rate", type=float, default=None, help="peak LR after warmup")
    # TeluCodec flags.
    flag("model_config", default="small", choices=("tiny", "small", "base"))
    flag("max_steps", type=int, default=None, help="optimizer steps in the run (0: validate only)")
    flag(
        "max_seconds",
        type=float,
        default=0.0,
        help="wall-clock budget of this session (0: none); the LR schedule still spans the run",
    )
    flag("val_every", type=int, default=500, help="steps between validations (0: at the end)")
    flag("save_every", type=int, default=None, help="steps between checkpoints (--val-every)")
    flag("keep_checkpoints", type=int, default=3, help="newest kept (0: all)")
    flag(
        "resume",
        action="store_true",
        help="continue CHECKPOINT_DIR/NAME from its latest checkpoint (fresh start "
        "when there is none yet, so a requeued job can always pass it)",
    )
    flag(
        "init_from",
        default=None,
        metavar="DIR",
        help="fine-tune: start from an exported codec (CKPT/NAME/final) with its weights "
        "only, a fresh optimizer and schedule, at step 0; its architecture must match "
        "--model-config; a checkpoint that --resume finds wins over it",
    )
    flag(
        "kbps",
        type=kbps_values,
        nargs="+",
        default=None,
        help="bitrates to validate at, e.g. 1.5 3 6 or 1.5,3,6 (default: 1.5 3 6 up to the max)",
    )
    flag("debug_validation", action="store_true", help="debug block for the worst val items")
    flag("segment_seconds", type=float, default=0.5, help="random training crop (val: whole)")
    flag("num_workers", type=int, default=2, help="DataLoader decode workers per rank")
    flag("shuffle_buffer", type=int, default=1000, help="samples per worker")
    flag("val_batch_size", type=int, default=None, help="default: --batch-size")
    flag("max_val_items", type=int, default=0, help="first N val items only (0: all)")
    flag(
        "perceptual_items",
        type=int,
        default=16,
        help="val items (a fixed subset spread over the set) also scored with PESQ-WB and "
        "STOI at each validation (0: off)",
    )
    flag("log_every", type=int, default=10, help="steps between logged losses")
    flag("audio_examples", type=int, default=2, help="val items sent to TensorBoard")
    flag("use_discriminator", action="store_true", help="add the STFT discriminator")
    flag("compile", action="store_true", help="torch.compile encoder, decoder and critic")
    flag("seed", type=int, default=0)
    flag(
        "max_nonfinite_steps",
        type=int,
        default=20,
        help="stop after this many NaN/Inf losses in a row (each one skipped, not stepped)",
    )
    flag("verbose", action="store_true", help="show DeepSpeed's INFO logging")
    # The deepspeed launcher passes --local_rank; torchrun sets LOCAL_RANK instead.
    flag("local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    # DeepSpeed's own flags (deepspeed.add_config_arguments), without importing it here.
    flag("deepspeed", action="store_true", help="accepted for DeepSpeed scripts; no effect")
    flag("deepspeed_config", default=str(DEFAULT_DS_CONFIG), help="DeepSpeed JSON config")
    args = p.parse_args(argv)
    check_ranges(args)
    if args.kbps is not None:
        args.kbps = sorted(k for group in args.kbps for k in group)
        check_kbps(args.kbps, args.model_config)
    if args.save_every is None:
        args.save_every = args.val_every
    return args


# Allowed ranges of the numeric flags: (flag, lowest, highest or None).
FLAG_RANGES = (
    ("batch_size", 1, 65536),
    ("num_epochs", 1, None),
    ("learning_rate", 0.0, 1.0),
    ("max_steps", 0, None),
    ("max_seconds", 0.0, None),
    ("val_every", 0, None),
    ("save_every", 0, None),
    ("keep_checkpoints", 0, None),
    ("segment_seconds", 0.01, 600.0),
    ("num_workers", 0, 256),
    ("shuffle_buffer", 1, None),
    ("val_batch_size", 1, 65536),
    ("max_val_items", 0, None),
    ("perceptual_items", 0, None),
    ("log_every", 1, None),
    ("audio_examples", 0, 100),
    ("max_nonfinite_steps", 1, None),
)


def check_kbps(kbps: list[float], model_config: str) -> None:
    """Each --kbps a whole number of the codec's codebooks, else one line and exit 2 before
    any process group starts (it used to be a traceback from inside validation set-up)."""
    cfg = get_config(model_config)
    for k in kbps:
        try:
            cfg.n_quantizers_for_kbps(k)
        except ValueError as exc:
            fail(f"--kbps {k:g}: {exc}")


def check_ranges(args: argparse.Namespace) -> None:
    """A numeric flag out of range → one line naming it and its range, exit 2, before any
    process group or engine starts."""
    for name, lo, hi in FLAG_RANGES:
        value = getattr(args, name)
        if value is None:
            continue
        if not (math.isfinite(value) and value >= lo and (hi is None or value <= hi)):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            flag = "--" + name.replace("_", "-")
            print(f"train_ds.py: error: {flag} must be {allowed}, got {value}", file=sys.stderr)
            raise SystemExit(2)


def fail(message: str) -> NoReturn:
    """A refused input: one line on stderr (from rank 0 only: every rank checks its inputs
    before the process group exists, so N ranks would print it N times), exit 2 on every
    rank, no traceback."""
    if os.environ.get("RANK", "0") == "0":
        print(f"train_ds.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def experiment_dir(args: argparse.Namespace) -> Path:
    """CKPT/NAME: everything a run writes."""
    return Path(args.checkpoint_dir) / args.experiment_name


@dataclass(frozen=True)
class InitSource:
    """The exported codec a fine-tuning run starts from (--init-from), checked."""

    directory: Path
    extra: dict[str, Any]  # what the run that exported it recorded: step, experiment, …

    def describe(self) -> str:
        """`DIR (step S of experiment E)`, for the log line and run_config.json."""
        step, name = self.extra.get("step", "?"), self.extra.get("experiment", "?")
        return f"{self.directory} (step {step} of experiment {name})"


def init_source(args: argparse.Namespace) -> InitSource | None:
    """--init-from, checked before any process group starts: None when it is not given or a
    checkpoint to --resume exists (resume wins, so a requeued job can always pass both; the
    directory is then not even read). A missing or damaged directory, or one whose codec
    differs from --model-config in a field that shapes the weights or the meaning of the
    codes (configs.ARCHITECTURE_FIELDS), is one line naming it, exit 2. Loss weights,
    quantizer dropout and the critic may differ: that is what fine-tuning changes."""
    if args.init_from is None:
        return None
    if args.resume and (experiment_dir(args) / "checkpoints" / "latest").is_file():
        return None
    directory = Path(args.init_from)
    flag = f"--init-from {directory}"
    if not directory.is_dir():
        fail(f"{flag}: not a directory; expected an exported codec such as CKPT/NAME/final")
    try:
        source, extra = read_checkpoint_config(directory)
    except CheckpointError as exc:
        fail(f"{flag}: {exc}")
    if not (directory / WEIGHTS).is_file():
        fail(f"{flag}: {directory / WEIGHTS}: missing")
    try:  # a damaged file is refused here, before any process group, not after it
        with safe_open(str(directory / WEIGHTS), framework="pt") as weights:
            weights.keys()
    except Exception as exc:  # safetensors raises its own error types for a bad header
        fail(f"{flag}: {directory / WEIGHTS}: not a readable safetensors file: {exc}")
    differences = architecture_differences(source, get_config(args.model_config))
    if differences:
        fail(
            f"{flag}: its codec config differs from --model-config {args.model_config}: "
            + ", ".join(differences)
        )
    return InitSource(directory, extra if isinstance(extra, dict) else {})


# -------------------------------------------------------------------------- process group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(verbose: bool = False) -> tuple[int, int, torch.device]:
    """Join the process group (gloo on CPU, nccl on GPU) → (rank, world, device).

    Launchers (deepspeed, torchrun, srun+torchrun) set RANK, WORLD_SIZE, LOCAL_RANK and
    MASTER_ADDR/PORT; a plain `python train_ds.py` gets a one-process group here, else
    DeepSpeed would go looking for MPI."""
    import deepspeed

    if not verbose:
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    on_gpu = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if on_gpu:
        torch.cuda.set_device(local_rank)
    if "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one host share its cores, and a core is left to the decode workers:
        # oversubscribed OpenMP threads spin-wait, which made 2-core CPU steps 4x slower.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world - 1))
    # The shared-memory all-reduce is a JIT C++ build (30-60 s) that buys nothing here.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 tensor over ranks (on the collective's device) and return it on CPU."""
    if dist.get_world_size() == 1:
        return values
    on_gpu = dist.get_backend() == "nccl"
    reduced = values.to(torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu")
    dist.all_reduce(reduced)
    return reduced.cpu()


def print0(*a, **k) -> None:
    if dist.get_rank() == 0:
        print(*a, **k, flush=True)


# ------------------------------------------------------------------------ run, data, engines


@dataclass(frozen=True)
class Run:
    """What every step reads: the flags, this rank's place, the codec and where outputs go."""

    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    cfg: CodecConfig
    kbps: list[float]  # validation bitrates, ascending; the last one is the headline
    n_quantizers: list[int]
    exp_dir: Path  # CKPT/NAME
    started: float  # time.time() at start, for --max-seconds
    init: InitSource | None = None  # --init-from, when it applies

    @property
    def ckpt_dir(self) -> Path:
        return self.exp_dir / "checkpoints"

    @property
    def tb_dir(self) -> Path:
        return self.exp_dir / "tb"


def make_run(
    args: argparse.Namespace,
    rank: int,
    world: int,
    device: torch.device,
    init: InitSource | None = None,
) -> Run:
    """Codec config and bitrates (checked against it), and CKPT/NAME made on rank 0."""
    cfg = get_config(args.model_config)
    if args.use_discriminator:
        cfg = cfg.replace(use_discriminator=True)
    kbps = args.kbps or [k for k in DEFAULT_KBPS if k <= cfg.max_kbps]
    exp_dir = experiment_dir(args)
    if rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
    nqs = [cfg.n_quantizers_for_kbps(k) for k in kbps]
    return Run(args, rank, world, device, cfg, kbps, nqs, exp_dir, time.time(), init)


def resolve_ds_config(
    path: str, args: argparse.Namespace, on_gpu: bool, tb_dir: Path
) -> dict[str, Any]:
    """ds_config.json with what the command line and the machine decide filled in: micro
    batch and LR (when given), bf16 on GPU / fp32 on CPU, TensorBoard under the experiment.
    The schedule's length follows from the data (`set_schedule_length`). The result is
    stored with the run and summarized on the terminal (write_run_config)."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in SUPPORTED_ZERO_STAGES:
        raise SystemExit(
            f"{path}: zero_optimization.stage {stage} is not supported; use 0 or 1 (stages 2/3 "
            "partition weights and gradients, which validation on engine.module with uneven "
            "per-rank batches, the export's deepcopy and the second critic engine cannot use)"
        )
    cfg.pop("train_batch_size", None)  # DeepSpeed derives it: micro x accumulation x world
    if args.batch_size is not None:
        cfg["train_micro_batch_size_per_gpu"] = args.batch_size
    cfg.setdefault("train_micro_batch_size_per_gpu", 16)
    cfg.setdefault("gradient_accumulation_steps", 1)
    if "gradient_clipping" not in cfg:
        raise ValueError(f"{path}: set gradient_clipping explicitly (0 disables it)")
    opt = cfg.setdefault("optimizer", {"type": "AdamW", "params": {}})
    opt.setdefault("params", {}).setdefault("torch_adam", True)  # no JIT-built fused kernel
    if args.learning_rate is not None:
        opt["params"]["lr"] = args.learning_rate
    sched = cfg.get("scheduler")
    if sched and sched.get("type") == "WarmupDecayLR":
        sched.setdefault("params", {})["warmup_max_lr"] = opt["params"].get("lr", 1e-3)
    cfg["bf16"] = {**cfg.get("bf16", {}), "enabled": bool(on_gpu)}
    cfg["fp16"] = {"enabled": False}
    tb = cfg.setdefault("tensorboard", {"enabled": True})
    tb["output_path"] = str(tb_dir)
    tb.setdefault("job_name", "deepspeed")
    return cfg


def set_schedule_length(ds_config: dict[str, Any], total_steps: int) -> None:
    """The LR schedule spans the whole run (not one session); a short run still decays:
    warmup takes at most a fifth of it."""
    sched = ds_config.get("scheduler")
    if sched and sched.get("type") in ("WarmupDecayLR", "WarmupCosineLR"):
        params = sched.setdefault("params", {})
        params["total_num_steps"] = max(1, total_steps)
        params["warmup_num_steps"] = max(
            1, min(params.get("warmup_num_steps", 0), max(1, total_steps) // 5)
        )


@dataclass(frozen=True)
class Data:
    """The OUT directory's index, this rank's training stream and the schedule it implies."""

    index: Index
    stream: loader.TrainStream
    micro_batch: int  # per rank
    accumulation: int  # micro-batches per optimizer step
    samples_per_step: int  # micro batch x accumulation x world
    batches_per_epoch: int  # per rank: train samples // (micro batch x world)
    total_steps: int  # optimizer steps in the whole run
    val_batch_size: int


def load_data(run: Run, ds_config: dict[str, Any]) -> Data:
    """Shard lists from OUT/index.json, batch sizes from the resolved DeepSpeed config;
    every rank runs the same number of steps."""
    args = run.args
    index = Index.load(args.data_dir)
    if not index.entries("train"):
        raise SystemExit(f"{Path(args.data_dir) / 'index.json'} lists no train shards")
    micro = ds_config["train_micro_batch_size_per_gpu"]
    accumulation = ds_config["gradient_accumulation_steps"]
    per_epoch = loader.batches_per_epoch(index.samples("train"), micro, run.world)
    if args.max_steps is not None:
        total_steps = args.max_steps
    else:
        total_steps = max(1, args.num_epochs * per_epoch // accumulation)
    stream = loader.TrainStream(
        index.paths("train"),
        batch_size=micro,
        batches_per_epoch=per_epoch,
        crop_samples=int(round(args.segment_seconds * run.cfg.sample_rate)),
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
    )
    samples = micro * accumulation * run.world
    val_batch = args.val_batch_size or micro
    return Data(index, stream, micro, accumulation, samples, per_epoch, total_steps, val_batch)


def discriminator_ds_config(g_config: dict[str, Any]) -> dict[str, Any]:
    """The discriminator's engine: same optimizer and schedule, ZeRO <= 1 (two engines in one
    loop do not work with ZeRO 2's gradient partitioning), fp32, no second monitor."""
    cfg = copy.deepcopy(g_config)
    stage = cfg.setdefault("zero_optimization", {}).get("stage", 0)
    cfg["zero_optimization"]["stage"] = min(stage, 1)
    cfg["tensorboard"] = {"enabled": False}
    # The critic stays float32: its STFT front end has no bf16 kernels, and the generator's
    # output is cast to float32 before any loss anyway.
    cfg["bf16"] = {"enabled": False}
    return cfg


@dataclass
class Engines:
    """The generator's DeepSpeed engine, the critic's (or None), the loss and the dtype."""

    generator: Any  # deepspeed.DeepSpeedEngine around a telucodec Codec
    discriminator: Any | None
    loss: torch.nn.Module  # telucodec.losses.CodecLoss
    dtype: torch.dtype  # the generator's input dtype: bf16 on GPU, else float32
    ds_config: dict[str, Any]


def build_engines(run: Run, ds_config: dict[str, Any]) -> Engines:
    """Codec (+ critic) wrapped in DeepSpeed engines; the same seed on every rank gives the
    same initial weights, then each rank reseeds for its own quantizer-dropout draws. With
    --init-from, every rank loads the exported weights (safetensors, strict: no pickle) into
    the codec before DeepSpeed sees it, so the optimizer and schedule start fresh around
    them; the critic, never exported, starts from the seed."""
    import deepspeed

    args = run.args
    torch.manual_seed(args.seed)
    model = Codec(run.cfg)
    if run.init is not None:
        try:
            load_weights(run.init.directory, model)
        except CheckpointError as exc:
            fail(f"--init-from {run.init.directory}: {exc}")
        print0(f"initialized from {run.init.describe()}")
    if args.compile:
        compile_in_place(model.encoder, model.decoder)
    if run.rank != 0:
        ds_config["tensorboard"]["enabled"] = False
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config
    )
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    if dtype != torch.float32:
        # DeepSpeed casts the whole module; the EMA codebooks must stay float32.
        for buf in engine.module.quantizer.buffers():
            buf.data = buf.data.float()
    d_engine = None
    if run.cfg.use_discriminator:
        disc = MultiScaleSTFTDiscriminator(run.cfg)
        if args.compile:
            compile_in_place(disc)
        d_engine, _, _, _ = deepspeed.initialize(
            model=disc,
            model_parameters=disc.parameters(),
            config=discriminator_ds_config(ds_config),
        )
    loss = CodecLoss(run.cfg).to(run.device)
    torch.manual_seed(args.seed * 1000 + 1 + run.rank)
    return Engines(engine, d_engine, loss, dtype, ds_config)


def compile_in_place(*modules: torch.nn.Module) -> None:
    """--compile: `nn.Module.compile()` wraps each module's call, not the module, so state_dict
    keys stay the eager ones and checkpoints, --resume and the export are the same with or
    without it. The quantizer stays eager: its k-means seeding and dead-code revival read
    `.item()` and index by data-dependent masks (docs/CODEC.md). Compilation happens on the
    first call, inside the --max-seconds budget."""
    for module in modules:
        module.compile()


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
            "segment_samples": data.index.segment_samples,
            "micro_batch": data.micro_batch,
            "batches_per_epoch": data.batches_per_epoch,
            "crop_samples": data.stream.crop_samples,
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


# ----------------------------------------------------------------------------- checkpoints


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


# -------------------------------------------------------------------------------- the loop


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
    while state.step < data.total_steps:
        epoch = state.batches // data.batches_per_epoch
        batch = next(batches)
        assert batch["epoch"] == epoch, (batch["epoch"], epoch)
        epoch_errors.update(batch)
        terms = train_step(engines, batch, run.device, guard)
        state.batches += 1
        state.step = state.batches // data.accumulation
        guard.count(run, state, terms)
        if state.batches % data.batches_per_epoch == 0:
            report_epoch(run, state, epoch, epoch_errors)
        if state.batches % data.accumulation:
            continue  # gradient accumulation: not an optimizer step yet
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
    del batches  # stops the loader's workers
    bar.close()
    return session


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
    shard naming it, then the totals."""
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
    print0(
        f"epoch {epoch} (step {state.step}): skipped {report['bad_samples']} corrupt samples "
        f"and {report['bad_shards']} unreadable shard reads"
    )
    errors.clear()


def val_coverage(data: Data, args: argparse.Namespace, figures: dict[str, Any]) -> str:
    """How many val items were scored of those index.json lists (capped at --max-val-items),
    appended to the final line: `; scored 35 of 55 listed val items (20 unreadable)`."""
    listed = loader.listed_items(data.index.samples("val"), args.max_val_items)
    scored = figures["items"]
    missing = f" ({listed - scored} unreadable)" if scored < listed else ""
    return f"; scored {scored} of {listed} listed val items{missing}"


def time_is_up(run: Run) -> bool:
    """--max-seconds spent; agreed over ranks, since every rank must stop on the same step."""
    seconds = run.args.max_seconds
    if seconds <= 0:
        return False
    up = time.time() - run.started > seconds
    if run.world > 1:
        up = bool(all_reduce_sum(torch.tensor([float(up)], dtype=torch.float64))[0] > 0)
    return up


# ------------------------------------------------------------------------------ validation


def validate(run: Run, data: Data, engines: Engines, state: TrainState, tb) -> dict[str, dict]:
    """Every val item exactly once over all ranks (loader.val_batches), scored at every
    bitrate (telucodec.evaluate); one all-reduce of the tallies gives the figures of the
    whole set, the same for any world size. Appends to the history; returns the figures."""
    args = run.args
    tally = loader.ErrorTally()
    batches = loader.val_batches(
        data.index.paths("val"),
        data.val_batch_size,
        run.rank,
        run.world,
        args.max_val_items,
        tally,
    )
    listed = loader.listed_items(data.index.samples("val"), args.max_val_items)
    result = evaluate(
        engines.generator.module,
        batches,
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


# --------------------------------------------------------------------------------- outputs


def export(
    run: Run,
    data: Data,
    engines: Engines,
    state: TrainState,
    figures: dict,
    speed: dict[str, Any] | None = None,
) -> None:
    """Rank 0: the generator to CKPT/NAME/final (float32, for `python -m telucodec`),
    metrics.json (with `speed`, this session's `throughput`) and curves.png, and the
    headline: the original success criterion decided with 95 % confidence."""
    exp_dir, top = run.exp_dir, f"{run.kbps[-1]:g}"
    generator = engines.generator.module
    if engines.dtype != torch.float32:
        # Only its state_dict is saved: with --compile the copy's compiled forward would
        # still call the original bf16 module, so never run this copy.
        generator = copy.deepcopy(generator).float()
    extra = {"step": state.step, "experiment": run.args.experiment_name, "validation": figures}
    save_codec(exp_dir / "final", generator, extra=extra)
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
        "throughput": speed,
        "history": state.history,
    }
    write_json(exp_dir / "metrics.json", metrics)
    plot_curves(state.history, exp_dir / "curves.png")
    print(f"exported generator: {exp_dir / 'final'} (telucodec.checkpoint.load_codec)")
    print(f"{state.step} steps in {elapsed:.0f} s; metrics: {exp_dir / 'metrics.json'}")
    print(headline(top, figures[top]) + val_coverage(data, run.args, figures[top]), flush=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=2, sort_keys=True, default=float)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    init = init_source(args)
    rank, world, device = init_distributed(args.verbose)
    run = make_run(args, rank, world, device, init)
    ds_config = resolve_ds_config(args.deepspeed_config, args, device.type == "cuda", run.tb_dir)
    data = load_data(run, ds_config)
    set_schedule_length(ds_config, data.total_steps)
    engines = build_engines(run, ds_config)
    write_run_config(run, data, engines)
    state = resume(run, engines) if args.resume else TrainState()
    if args.init_from is not None and init is None:
        print0(f"--init-from {args.init_from} ignored: the run resumes from step {state.step}")
    tb = None
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
        tb.close()
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
