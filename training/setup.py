"""What a run is set up from: the flags and this rank's place (`Run`), the resolved DeepSpeed
config and the schedule length, and the OUT directory's training stream of windows (`Data`)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shards import Index, IndexFormatError, ManifestError, loader
from telucodec.configs import DEFAULT_KBPS, CodecConfig, get_config
from training.args import experiment_dir, fail
from training.distributed import print0
from training.init_source import InitSource

SUPPORTED_ZERO_STAGES = (0, 1)


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
    stored with the run and summarized on the terminal (write_run_config). A file that is
    missing or not a JSON object, an unsupported ZeRO stage or no gradient_clipping is one
    line, exit 2 (`fail`)."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as exc:
        fail(f"--deepspeed-config {path}: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"--deepspeed-config {path}: not valid JSON ({exc})")
    if not isinstance(cfg, dict):
        fail(f"--deepspeed-config {path}: expected a JSON object, got {type(cfg).__name__}")
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in SUPPORTED_ZERO_STAGES:
        fail(
            f"--deepspeed-config {path}: zero_optimization.stage {stage} is not supported; use "
            "0 or 1 (stages 2/3 partition weights and gradients, which validation on "
            "engine.module with uneven per-rank batches, the export's deepcopy and the second "
            "critic engine cannot use)"
        )
    cfg.pop("train_batch_size", None)  # DeepSpeed derives it: micro x accumulation x world
    if args.batch_size is not None:
        cfg["train_micro_batch_size_per_gpu"] = args.batch_size
    cfg.setdefault("train_micro_batch_size_per_gpu", 16)
    cfg.setdefault("gradient_accumulation_steps", 1)
    if "gradient_clipping" not in cfg:
        fail(f"--deepspeed-config {path}: set gradient_clipping explicitly (0 disables it)")
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
    """The OUT directory's index, this rank's training stream and the schedule it implies.
    Train and validation use one window length, `--segment-seconds`."""

    index: Index
    stream: loader.TrainStream
    micro_batch: int  # per rank
    accumulation: int  # micro-batches per optimizer step
    samples_per_step: int  # windows: micro batch x accumulation x world
    batches_per_epoch: int  # per rank: train windows // (micro batch x world)
    total_steps: int  # optimizer steps in the whole run
    val_batch_size: int
    window_samples: int  # S, of every training and validation window
    train_windows: int  # expected per epoch (loader.count_windows of the manifest)
    val_windows: int  # on the validation grid


def open_index(data_dir: str, window: int, sample_rate: int) -> Index:
    """OUT/index.json and its manifest, checked before any stream starts: another format
    (an OUT of fixed segments: re-run preprocess), no train shards, none of them intact
    (each missing or of another size than index.json says: a size check, linear in shards,
    no hashing), or a window longer than the OUT's utterances is one line, exit 2 (`fail`).
    Some shards missing or short is a one-line note: the stream skips and counts them."""
    try:
        index = Index.load(data_dir)
        index.manifest()  # read once here, so a bad manifest is a refusal, not a traceback
        cap = index.utterance_max_samples
    except (FileNotFoundError, IndexFormatError, ManifestError) as exc:
        fail(f"--data-dir: {exc}")
    if not index.entries("train"):
        fail(f"--data-dir: {Path(data_dir) / 'index.json'} lists no train shards")
    problems = index.verify(checksum=False)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        listed = f"{'; '.join(problems[:3])}{more}"
        # verify gives at most one problem per shard
        if len(index.verify("train", checksum=False)) == len(index.entries("train")):
            fail(f"--data-dir {data_dir}: no train shard is intact: {listed}")
        # A few bad shards do not stop training: the stream skips and counts them per epoch.
        print0(f"note: --data-dir {data_dir}: {listed}")
    if window > cap:
        fail(
            f"--segment-seconds {window / sample_rate:g} is longer than the utterances of "
            f"{data_dir} (utterance_max_samples {cap}: {cap / sample_rate:g} s); choose at "
            "most that, or preprocess with a larger max_utterance_seconds"
        )
    return index


def load_data(run: Run, ds_config: dict[str, Any]) -> Data:
    """Shard lists from OUT/index.json, window counts from its manifest, batch sizes from
    the resolved DeepSpeed config; every rank runs the same number of steps."""
    args = run.args
    sr = run.cfg.sample_rate
    window = int(round(args.segment_seconds * sr))
    index = open_index(args.data_dir, window, sr)
    train_windows = loader.count_windows(index.manifest("train"), window, grid=False)
    val_windows = loader.count_windows(index.manifest("val"), window, grid=True)
    if not train_windows:
        need = loader.min_real_samples(window, sr) / sr
        fail(
            f"--segment-seconds {args.segment_seconds:g}: no train utterance of {args.data_dir} "
            f"holds the {need:g} s of audio a window needs; choose a shorter window"
        )
    micro = ds_config["train_micro_batch_size_per_gpu"]
    accumulation = ds_config["gradient_accumulation_steps"]
    per_epoch = loader.batches_per_epoch(train_windows, micro, run.world)
    if train_windows < micro * run.world:
        print0(
            f"note: {train_windows} train windows of {args.segment_seconds:g} s are fewer than "
            f"one batch on every rank ({micro} x {run.world} ranks): an epoch is 1 batch per "
            "rank, the windows drawn with repetition"
        )
    if args.max_steps is not None:
        total_steps = args.max_steps
    else:
        total_steps = max(1, args.num_epochs * per_epoch // accumulation)
    stream = loader.TrainStream(
        index.entries("train"),
        batch_size=micro,
        batches_per_epoch=per_epoch,
        window_samples=window,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
    )
    samples = micro * accumulation * run.world
    val_batch = args.val_batch_size or micro
    return Data(
        index,
        stream,
        micro,
        accumulation,
        samples,
        per_epoch,
        total_steps,
        val_batch,
        window,
        train_windows,
        val_windows,
    )
