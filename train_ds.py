"""Train a TeluCodec model with DeepSpeed on a preprocess output directory.

    deepspeed train_ds.py --deepspeed_config ds_config.json --data_dir OUT
        --checkpoint_dir CKPT --experiment_name NAME --model_config small
    python train_ds.py --data_dir OUT ...                 # one process, no launcher
    torchrun --nproc_per_node 2 train_ds.py --data_dir OUT ...
    sbatch cluster/train.sbatch OUT CKPT NAME             # SLURM, one task per node

The file reads top to bottom like the procedure it runs (`main`): command line → process
group → data → model and DeepSpeed engines → training loop with periodic validation and
checkpoints → final validation, exported generator, metrics and curves. The helpers above
`main` are the pieces it needs that deserve a name (and a test): the DeepSpeed config
resolution, the masked validation sums, checkpoint state, logging.

Everything a run produces lives in CKPT/NAME/: run_config.json (args + DeepSpeed config +
codec config), checkpoints/ (DeepSpeed, with data position and RNG state), final/ (the
generator for `python -m telucodec`), metrics.json, curves.png and tb/ (TensorBoard).
docs/TRAINING.md has the details.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parent
DEFAULT_DS_CONFIG = REPO / "ds_config.json"
DEFAULT_KBPS = (1.5, 3.0, 6.0)

# ------------------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import deepspeed

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # The original train_codec.py flags, same meaning. Batch size and learning rate default
    # to ds_config.json's values; given here, they override it.
    p.add_argument("--data_dir", required=True, help="preprocess output (index.json, shards/)")
    p.add_argument("--checkpoint_dir", default="runs", help="runs go to CHECKPOINT_DIR/NAME/")
    p.add_argument("--experiment_name", default="telucodec")
    p.add_argument("--batch_size", type=int, default=None, help="per-rank micro batch")
    p.add_argument("--num_epochs", type=int, default=10, help="used when --max_steps is unset")
    p.add_argument("--learning_rate", type=float, default=None, help="peak LR after warmup")
    # TeluCodec flags.
    p.add_argument("--model_config", default="small", choices=("tiny", "small", "base"))
    p.add_argument(
        "--max_steps",
        type=int,
        default=None,
        help="optimizer steps in the whole run (0: validate and export only)",
    )
    p.add_argument(
        "--max_seconds",
        type=float,
        default=0.0,
        help="wall-clock budget of this session (0: none); the LR schedule "
        "still spans the whole run",
    )
    p.add_argument("--val_every", type=int, default=500, help="steps between validations (0: end)")
    p.add_argument(
        "--save_every",
        type=int,
        default=None,
        help="steps between checkpoints (default: --val_every; 0: end only)",
    )
    p.add_argument("--keep_checkpoints", type=int, default=3, help="newest kept (0: all)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue CHECKPOINT_DIR/NAME from its latest checkpoint (fresh start "
        "when there is none yet, so a requeued job can always pass it)",
    )
    p.add_argument(
        "--kbps",
        type=float,
        nargs="+",
        default=None,
        help="bitrates to validate at (default: 1.5 3 6, up to the model's max)",
    )
    p.add_argument(
        "--debug_validation",
        action="store_true",
        help="print the original debug block for the worst validation items",
    )
    p.add_argument(
        "--segment_seconds",
        type=float,
        default=0.5,
        help="random training crop (validation uses whole segments)",
    )
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader decode workers per rank")
    p.add_argument("--shuffle_buffer", type=int, default=1000, help="samples per worker")
    p.add_argument("--val_batch_size", type=int, default=None, help="default: --batch_size")
    p.add_argument("--max_val_items", type=int, default=0, help="first N val items only (0: all)")
    p.add_argument("--log_every", type=int, default=10, help="steps between logged losses")
    p.add_argument("--audio_examples", type=int, default=2, help="val items sent to TensorBoard")
    p.add_argument(
        "--use_discriminator",
        action="store_true",
        help="train with the STFT discriminator even if the codec config has it off",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="show DeepSpeed's INFO logging")
    # The deepspeed launcher passes --local_rank; torchrun sets LOCAL_RANK instead.
    p.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    deepspeed.add_config_arguments(p)  # --deepspeed, --deepspeed_config
    args = p.parse_args(argv)
    if args.deepspeed_config is None:
        args.deepspeed_config = str(DEFAULT_DS_CONFIG)
    if args.save_every is None:
        args.save_every = args.val_every
    return args


# --------------------------------------------------------------------------- process group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group (gloo on CPU, nccl on GPU) → (rank, world, device).

    Launchers (deepspeed, torchrun, srun+torchrun) set RANK, WORLD_SIZE, LOCAL_RANK and
    MASTER_ADDR/PORT; a plain `python train_ds.py` gets a one-process group here, else
    DeepSpeed would go looking for MPI."""
    import deepspeed

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


# --------------------------------------------------------------------------- configuration


def resolve_ds_config(
    path: str, args: argparse.Namespace, total_steps: int, on_gpu: bool, tb_dir: Path
) -> dict[str, Any]:
    """ds_config.json with what only the run knows filled in: micro batch and LR (when given
    on the command line), the schedule's length, bf16 on GPU / fp32 on CPU, TensorBoard
    under the experiment. The result is printed and stored with the run."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
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
    lr = opt["params"].get("lr", 1e-3)
    sched = cfg.get("scheduler")
    if sched and sched.get("type") in ("WarmupDecayLR", "WarmupCosineLR"):
        params = sched.setdefault("params", {})
        params["total_num_steps"] = max(1, total_steps)
        # A short run still decays: warmup takes at most a fifth of it.
        params["warmup_num_steps"] = max(
            1, min(params.get("warmup_num_steps", 0), max(1, total_steps) // 5)
        )
        if sched["type"] == "WarmupDecayLR":
            params["warmup_max_lr"] = lr
    cfg["bf16"] = {**cfg.get("bf16", {}), "enabled": bool(on_gpu)}
    cfg["fp16"] = {"enabled": False}
    tb = cfg.setdefault("tensorboard", {"enabled": True})
    tb["output_path"] = str(tb_dir)
    tb.setdefault("job_name", "deepspeed")
    return cfg


def discriminator_ds_config(g_config: dict[str, Any]) -> dict[str, Any]:
    """The discriminator's engine: same optimizer and schedule, ZeRO <= 1 (two engines in one
    loop do not work with ZeRO 2's gradient partitioning), fp32, no second monitor."""
    cfg = json.loads(json.dumps(g_config))
    stage = cfg.setdefault("zero_optimization", {}).get("stage", 0)
    cfg["zero_optimization"]["stage"] = min(stage, 1)
    cfg["tensorboard"] = {"enabled": False}
    # The critic stays float32: its STFT front end has no bf16 kernels, and the generator's
    # output is cast to float32 before any loss anyway.
    cfg["bf16"] = {"enabled": False}
    return cfg


# ------------------------------------------------------------------------ validation sums

# One float64 vector per bitrate; summing it over ranks gives the figures of the whole set.
VAL_FIELDS = (
    "items",  # items evaluated
    "gated",  # items without a masked SNR (no valid audio, or below -60 dBFS)
    "snr_sum",  # Σ per-item masked SNR dB over non-gated items
    "signal",  # Σ masked reference energy
    "error",  # Σ masked error energy
    "sisdr_sum",  # Σ per-item masked SI-SDR dB over non-gated items
    "mel_sum",  # Σ per-item masked mel distance
    "mel_items",  # items with a mel distance
    "u_snr_sum",  # unmasked (whole segment, padding included) per-item SNR dB
    "u_snr_items",
    "u_signal",
    "u_error",
    "valid_samples",  # Σ mask
    "samples",  # Σ segment length
)


def validation_sums(
    ref: torch.Tensor, est: torch.Tensor, mask: torch.Tensor, sample_rate: int = 16000
) -> tuple[np.ndarray, np.ndarray]:
    """One batch → (sums float64[len(VAL_FIELDS)], per-item masked SNR dB float64[B]).

    ref, est Tensor[B x 1 x T] or [B x T]; mask BoolTensor[B x T]. Masked figures see only
    mask == 1; the unmasked ones score the whole segment, padding and all, as the original
    validation did, to show what padding does to the number."""
    from telucodec import metrics

    signal, error, n_valid = metrics.masked_energies(ref, est, mask)
    snr, gated = metrics.snr_from_energies(signal, error, n_valid)
    sisdr, _ = metrics.masked_si_sdr_db(ref, est, mask)
    mel = metrics.masked_mel_distance(ref, est, mask, sample_rate=sample_rate)
    everything = torch.ones_like(torch.as_tensor(mask), dtype=torch.bool)
    u_signal, u_error, u_n = metrics.masked_energies(ref, est, everything)
    u_snr, _ = metrics.snr_from_energies(u_signal, u_error, u_n)
    sums = {
        "items": len(snr),
        "gated": gated,
        "snr_sum": np.nansum(snr),
        "signal": signal.sum(),
        "error": error.sum(),
        "sisdr_sum": np.nansum(sisdr),
        "mel_sum": np.nansum(mel),
        "mel_items": np.isfinite(mel).sum(),
        "u_snr_sum": np.nansum(u_snr),
        "u_snr_items": np.isfinite(u_snr).sum(),
        "u_signal": u_signal.sum(),
        "u_error": u_error.sum(),
        "valid_samples": n_valid.sum(),
        "samples": u_n.sum(),
    }
    return np.array([sums[name] for name in VAL_FIELDS], dtype=np.float64), snr


def summarize(sums: np.ndarray) -> dict[str, float]:
    """Summed VAL_FIELDS (over batches and ranks) → the reported figures."""
    from telucodec import metrics

    s = dict(zip(VAL_FIELDS, (float(v) for v in sums), strict=True))
    scored = s["items"] - s["gated"]
    nan = float("nan")
    return {
        "masked_snr_db": s["snr_sum"] / scored if scored else nan,
        "masked_snr_global_db": metrics.global_snr_db(s["signal"], s["error"]),
        "masked_si_sdr_db": s["sisdr_sum"] / scored if scored else nan,
        "mel_distance": s["mel_sum"] / s["mel_items"] if s["mel_items"] else nan,
        "unmasked_snr_db": s["u_snr_sum"] / s["u_snr_items"] if s["u_snr_items"] else nan,
        "unmasked_snr_global_db": metrics.global_snr_db(s["u_signal"], s["u_error"]),
        "items": int(s["items"]),
        "gated_items": int(s["gated"]),
        "padding_fraction": 1.0 - s["valid_samples"] / s["samples"] if s["samples"] else nan,
    }


def debug_block(key: str, kbps: float, ref: np.ndarray, est: np.ndarray, mask: np.ndarray) -> str:
    """The original train_codec.py debug print for one item, with the masked figures beside
    the unmasked ones it used to show."""

    def power(x):
        return float(np.mean(np.square(x, dtype=np.float64))) if x.size else float("nan")

    noise = ref - est
    m_sig, m_noise = power(ref[mask]), power(noise[mask])
    u_sig, u_noise = power(ref), power(noise)

    def db(a, b):
        return 10 * math.log10(a / b) if a > 0 and b > 0 else float("nan")

    return "\n".join(
        [
            f"=== VALIDATION SNR DEBUG === {key} @ {kbps:g} kbps",
            f"Input  range: [{ref.min():.6f}, {ref.max():.6f}], "
            f"mean={ref.mean():.6f}, std={ref.std():.6f}",
            f"Output range: [{est.min():.6f}, {est.max():.6f}], "
            f"mean={est.mean():.6f}, std={est.std():.6f}",
            f"Padding: {100 * (1 - mask.mean()):.1f}% of {mask.size} samples",
            f"Signal power: {u_sig:.8f} (masked {m_sig:.8f})",
            f"Noise power:  {u_noise:.8f} (masked {m_noise:.8f})",
            f"SNR: {db(u_sig, u_noise):.2f} dB unmasked, {db(m_sig, m_noise):.2f} dB masked",
        ]
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches,
    kbps_list: list[float],
    n_quantizers: list[int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    sample_rate: int = 16000,
    n_worst: int = 0,
    n_examples: int = 0,
) -> dict[str, Any]:
    """Run this rank's validation batches at every bitrate (model in eval() mode, so the
    EMA codebooks stay put and no collective runs inside forward).

    Returns {"sums": float64[len(kbps) x len(VAL_FIELDS)] (this rank only), "worst": the
    n_worst items with the lowest masked SNR at the highest bitrate as (snr, key, ref,
    est, mask), "examples": up to n_examples (key, ref, {kbps: est})}."""
    was_training = model.training
    model.eval()
    sums = np.zeros((len(kbps_list), len(VAL_FIELDS)))
    worst, examples = [], []
    for batch in batches:
        ref = batch["audio"][:, None].to(device)
        mask = batch["mask"]
        outs = {}
        for i, (kbps, nq) in enumerate(zip(kbps_list, n_quantizers, strict=True)):
            est = model(ref.to(dtype), n_quantizers=nq).audio.float().cpu()
            batch_sums, snr = validation_sums(ref.cpu(), est, mask, sample_rate)
            sums[i] += batch_sums
            outs[kbps] = est
        top = kbps_list[-1]  # `snr` is still the last, highest bitrate's
        if n_worst:
            for j, key in enumerate(batch["key"]):
                value = snr[j] if np.isfinite(snr[j]) else -np.inf
                worst.append(
                    (
                        float(value),
                        key,
                        ref[j, 0].cpu().numpy(),
                        outs[top][j, 0].numpy(),
                        mask[j].numpy(),
                    )
                )
            worst = sorted(worst, key=lambda w: w[0])[:n_worst]
        for j, key in enumerate(batch["key"]):
            if len(examples) < n_examples:
                examples.append((key, ref[j, 0].cpu(), {k: v[j, 0] for k, v in outs.items()}))
    model.train(was_training)
    return {"sums": sums, "worst": worst, "examples": examples}


# ------------------------------------------------------------------------------ checkpoints


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    ckpt_dir: Path, engine, d_engine, step: int, state: dict[str, Any], keep: int
) -> str:
    """DeepSpeed checkpoint `stepNNNNNNNN` with `state` (step, data position, history) as
    client state, plus each rank's RNG state. DeepSpeed writes `latest` last, so a kill
    mid-save leaves the previous checkpoint as the one --resume takes."""
    tag = f"step{step:08d}"
    rank = dist.get_rank()
    (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), ckpt_dir / tag / f"rng_rank{rank:03d}.pt")
    if d_engine is not None:
        d_engine.save_checkpoint(str(ckpt_dir / "discriminator"), tag=tag)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"train_state": state})
    dist.barrier()
    if rank == 0 and keep > 0:
        old = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir())[:-keep]
        for name in old:
            shutil.rmtree(ckpt_dir / name, ignore_errors=True)
            shutil.rmtree(ckpt_dir / "discriminator" / name, ignore_errors=True)
    return tag


def load_checkpoint(ckpt_dir: Path, engine, d_engine) -> dict[str, Any] | None:
    """Load the latest checkpoint into the engines and this rank's RNG; its train_state, or
    None when there is none."""
    if not (ckpt_dir / "latest").is_file():
        return None
    path, client = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        return None
    tag = (ckpt_dir / "latest").read_text().strip()
    if d_engine is not None:
        d_engine.load_checkpoint(str(ckpt_dir / "discriminator"), tag=tag)
    rng_file = ckpt_dir / tag / f"rng_rank{dist.get_rank():03d}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:  # e.g. resumed on more ranks than saved: a fresh but deterministic stream
        torch.manual_seed(zlib.crc32(f"{tag}/{dist.get_rank()}".encode()))
        print(f"[rank {dist.get_rank()}] no {rng_file.name} in {tag}; RNG reseeded", flush=True)
    return client["train_state"]


# ---------------------------------------------------------------------------------- logging


def plot_curves(history: dict[str, list], path: Path) -> None:
    """Training loss and validation SNR against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    train = history["train"]
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="loss")
        for term in ("l1", "stft", "mel"):
            if term in train[0]:
                ax_loss.plot(
                    [r["step"] for r in train], [r[term] for r in train], label=term, alpha=0.6
                )
        ax_loss.set_yscale("log")
    ax_loss.set(title="training loss (mean over ranks)", xlabel="step")
    ax_loss.legend()
    val = history["val"]
    for kbps in sorted({k for r in val for k in r["kbps"]}, key=float):
        steps = [r["step"] for r in val if kbps in r["kbps"]]
        ax_val.plot(
            steps,
            [r["kbps"][kbps]["masked_snr_db"] for r in val if kbps in r["kbps"]],
            "o-",
            label=f"masked SNR {kbps} kbps",
        )
    if val:
        top = max(val[-1]["kbps"], key=float)
        steps = [r["step"] for r in val]
        ax_val.plot(
            steps,
            [r["kbps"][top]["masked_snr_global_db"] for r in val],
            "s--",
            label=f"masked global SNR {top} kbps",
        )
        ax_val.plot(
            steps,
            [r["kbps"][top]["unmasked_snr_db"] for r in val],
            "x:",
            label=f"unmasked SNR {top} kbps",
        )
    ax_val.axhline(0.0, color="grey", lw=0.8)
    ax_val.set(title="validation", xlabel="step", ylabel="dB")
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


def headline(kbps: str, figures: dict[str, float]) -> str:
    """The success line of the original instructions, with the global and unmasked SNR."""
    snr = figures["masked_snr_db"]
    verdict = "SUCCESS: SNR > 0" if snr > 0 else "FAILURE: SNR <= 0 (see --debug_validation)"
    return (
        f"val masked SNR {kbps} kbps: {snr:.1f} dB (global "
        f"{figures['masked_snr_global_db']:.1f} dB; unmasked "
        f"{figures['unmasked_snr_db']:.1f} dB) — {verdict}"
    )


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import deepspeed
    from tqdm import tqdm

    from shards import loader
    from telucodec.checkpoint import save_codec
    from telucodec.configs import get_config
    from telucodec.discriminator import MultiScaleSTFTDiscriminator
    from telucodec.losses import CodecLoss, discriminator_loss
    from telucodec.model import Codec

    if not args.verbose:
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")
    rank, world, device = init_distributed()
    t_start = time.time()
    exp_dir = Path(args.checkpoint_dir) / args.experiment_name
    ckpt_dir, tb_dir = exp_dir / "checkpoints", exp_dir / "tb"
    if rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)

    # -- codec config and bitrates
    cfg = get_config(args.model_config)
    if args.use_discriminator:
        cfg = cfg.replace(use_discriminator=True)
    kbps_list = sorted(args.kbps or [k for k in DEFAULT_KBPS if k <= cfg.max_kbps])
    n_quantizers = [cfg.n_quantizers_for_kbps(k) for k in kbps_list]

    # -- data: shard lists from the index; every rank runs the same number of steps
    train_shards = loader.shard_entries(args.data_dir, "train")
    val_shards = loader.shard_entries(args.data_dir, "val")
    if not train_shards:
        raise SystemExit(f"{args.data_dir}/index.json lists no train shards")
    n_train = sum(e.samples for e in train_shards)
    with open(args.deepspeed_config, encoding="utf-8") as f:
        file_cfg = json.load(f)
    args.batch_size = micro = args.batch_size or file_cfg.get("train_micro_batch_size_per_gpu", 16)
    accum = file_cfg.get("gradient_accumulation_steps", 1)
    batches_per_epoch = loader.batches_per_epoch(n_train, micro, world)
    if args.max_steps is not None:
        total_steps = args.max_steps
    else:
        total_steps = max(1, args.num_epochs * batches_per_epoch // accum)
    crop = int(round(args.segment_seconds * cfg.sample_rate))
    stream = loader.TrainStream(
        [e.path for e in train_shards],
        batch_size=micro,
        batches_per_epoch=batches_per_epoch,
        crop_samples=crop,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
    )
    val_batch = args.val_batch_size or micro

    # -- model and engines; the same seed on every rank gives the same initial weights
    torch.manual_seed(args.seed)
    model = Codec(cfg)
    ds_config = resolve_ds_config(
        args.deepspeed_config, args, total_steps, device.type == "cuda", tb_dir
    )
    if rank != 0:
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
    if cfg.use_discriminator:
        disc = MultiScaleSTFTDiscriminator(cfg)
        d_engine, _, _, _ = deepspeed.initialize(
            model=disc,
            model_parameters=disc.parameters(),
            config=discriminator_ds_config(ds_config),
        )
    loss_fn = CodecLoss(cfg).to(device)
    # Different quantizer-dropout draws per rank from here on.
    torch.manual_seed(args.seed * 1000 + 1 + rank)

    run_config = {
        "args": vars(args),
        "world_size": world,
        "device": str(device),
        "deepspeed": ds_config,
        "model": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {
            "train_shards": len(train_shards),
            "train_samples": n_train,
            "val_shards": len(val_shards),
            "val_samples": sum(e.samples for e in val_shards),
            "segment_samples": loader.segment_samples(args.data_dir),
            "batches_per_epoch": batches_per_epoch,
            "crop_samples": crop,
        },
        "total_steps": total_steps,
        "kbps": kbps_list,
        "n_quantizers": n_quantizers,
    }
    print0(json.dumps(run_config, indent=2, default=str))
    if rank == 0:
        write_json(exp_dir / "run_config.json", run_config)

    # -- resume: engine weights, optimizer, scheduler, data position, RNG
    state = {"step": 0, "batches": 0, "history": {"train": [], "val": [], "data_errors": []}}
    if args.resume:
        loaded = load_checkpoint(ckpt_dir, engine, d_engine)
        if loaded is None:
            print0(f"--resume: no checkpoint in {ckpt_dir} yet, starting fresh")
        else:
            state = loaded
            print0(f"resumed {ckpt_dir} at step {state['step']}")
    history = state["history"]
    tb = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(tb_dir))

    def validate(step: int) -> dict[str, dict[str, float]]:
        tally = loader.ErrorTally()
        batches = loader.val_batches(
            [e.path for e in val_shards], val_batch, rank, world, args.max_val_items, tally
        )
        result = evaluate(
            engine.module,
            batches,
            kbps_list,
            n_quantizers,
            device,
            dtype,
            cfg.sample_rate,
            n_worst=5 if args.debug_validation else 0,
            n_examples=args.audio_examples if rank == 0 else 0,
        )
        sums = all_reduce_sum(torch.from_numpy(result["sums"])).numpy()
        errors = all_reduce_sum(
            torch.tensor([tally.bad_samples, tally.bad_shards], dtype=torch.float64)
        )
        figures = {f"{k:g}": summarize(s) for k, s in zip(kbps_list, sums, strict=True)}
        record = {
            "step": step,
            "kbps": figures,
            "bad_samples": int(errors[0]),
            "bad_shards": int(errors[1]),
        }
        history["val"].append(record)
        if args.debug_validation:
            worst = [None] * world
            dist.all_gather_object(worst, result["worst"])
            for _, key, ref, est, mask in sorted(sum(worst, []), key=lambda w: w[0])[:5]:
                print0(debug_block(key, kbps_list[-1], ref, est, mask))
        if rank == 0:
            for kbps, fig in figures.items():
                print(
                    f"step {step} val {kbps} kbps: masked SNR {fig['masked_snr_db']:.2f} dB "
                    f"(global {fig['masked_snr_global_db']:.2f}), SI-SDR "
                    f"{fig['masked_si_sdr_db']:.2f} dB, mel {fig['mel_distance']:.3f}, "
                    f"unmasked SNR {fig['unmasked_snr_db']:.2f} dB "
                    f"[{fig['items']} items, {fig['gated_items']} gated]",
                    flush=True,
                )
                for name, value in fig.items():
                    tb.add_scalar(f"val_{kbps}kbps/{name}", value, step)
            if record["bad_samples"] or record["bad_shards"]:
                print(
                    f"step {step} val: skipped {record['bad_samples']} corrupt samples, "
                    f"{record['bad_shards']} unreadable shards",
                    flush=True,
                )
            for key, ref, ests in result["examples"]:
                tb.add_audio(f"audio/{key}/input", ref[None], step, cfg.sample_rate)
                for kbps, est in ests.items():
                    tb.add_audio(
                        f"audio/{key}/{kbps:g}kbps", est.clamp(-1, 1)[None], step, cfg.sample_rate
                    )
            tb.flush()
            plot_curves(history, exp_dir / "curves.png")
        return figures

    def checkpoint(step: int) -> None:
        tag = save_checkpoint(ckpt_dir, engine, d_engine, step, state, args.keep_checkpoints)
        print0(f"checkpoint saved: {ckpt_dir / tag}")

    # -- training loop
    step = state["step"]
    engine.train()
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=rank != 0,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stdout,
    )
    samples_per_step = micro * accum * world
    last_val = last_save = -1
    t_loop, steps_this_session = time.time(), 0
    epoch_errors = loader.EpochErrors()

    def report_epoch(epoch: int) -> None:
        """What the loader skipped this epoch, summed over ranks (never fatal)."""
        bad = all_reduce_sum(torch.tensor(epoch_errors.totals(), dtype=torch.float64))
        report = {
            "epoch": epoch,
            "step": step,
            "bad_samples": int(bad[0]),
            "bad_shards": int(bad[1]),
        }
        history["data_errors"].append(report)
        print0(
            f"epoch {epoch} (step {step}): skipped {report['bad_samples']} corrupt samples "
            f"and {report['bad_shards']} unreadable shard reads"
        )
        epoch_errors.by_worker.clear()

    stream.start = state["batches"]
    batches = iter(loader.train_loader(stream, args.num_workers, device.type == "cuda"))
    stop = step >= total_steps
    while not stop:
        epoch = state["batches"] // batches_per_epoch
        batch = next(batches)
        assert batch["epoch"] == epoch, (batch["epoch"], epoch)
        epoch_errors.update(batch)
        audio = batch["audio"][:, None].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        out = engine(audio.to(dtype))
        est = out.audio.float()
        if d_engine is not None:
            d_loss = discriminator_loss(d_engine, audio, est, mask)
            d_engine.backward(d_loss)
            d_engine.step()
            d_engine.module.requires_grad_(False)  # G's step must not touch D's grads
        terms = loss_fn(
            audio, est, mask, out, discriminator=d_engine.module if d_engine is not None else None
        )
        if d_engine is not None:
            d_engine.module.requires_grad_(True)
            terms["disc"] = d_loss.detach()
        engine.backward(terms["loss"])
        engine.step()
        state["batches"] += 1
        step = state["step"] = state["batches"] // accum
        if state["batches"] % batches_per_epoch == 0:
            report_epoch(epoch)
        if state["batches"] % accum:
            continue  # gradient accumulation: not an optimizer step yet
        steps_this_session += 1

        if step % args.log_every == 0 or step == total_steps:
            names = sorted(terms)
            values = torch.stack([terms[n].detach().double().cpu() for n in names])
            means = (all_reduce_sum(values) / world).tolist()
            row = {"step": step, **dict(zip(names, means, strict=True)), "lr": engine.get_lr()[0]}
            grad_norm = engine.get_global_grad_norm()  # before clipping; the same on every rank
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            history["train"].append(row)
            rate = steps_this_session / max(time.time() - t_loop, 1e-9)
            bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                steps_s=f"{rate:.2f}",
                samples_s=f"{rate * samples_per_step:.0f}",
                refresh=False,
            )
            if tb is not None:
                for name, value in row.items():
                    if name != "step":
                        tb.add_scalar(f"train/{name}", value, step)
                tb.add_scalar("train/samples_per_s", rate * samples_per_step, step)
        bar.update(1)

        time_up = args.max_seconds > 0 and time.time() - t_start > args.max_seconds
        if world > 1 and args.max_seconds > 0:  # every rank must stop on the same step
            time_up = bool(all_reduce_sum(torch.tensor([float(time_up)]))[0] > 0)
        stop = step >= total_steps or time_up
        if stop:
            if state["batches"] % batches_per_epoch:
                report_epoch(epoch)  # the part of the epoch this session ran
            break
        if args.val_every and step % args.val_every == 0:
            validate(step)
            last_val = step
        if args.save_every and step % args.save_every == 0:
            checkpoint(step)
            last_save = step
    del batches  # stops the loader's workers
    bar.close()

    # -- final validation, checkpoint, exported generator, metrics, curves
    figures = validate(step) if last_val != step else history["val"][-1]["kbps"]
    if last_save != step and steps_this_session:
        checkpoint(step)
    elapsed = time.time() - t_start
    if rank == 0:
        top = f"{kbps_list[-1]:g}"
        success = bool(figures[top]["masked_snr_db"] > 0)
        export = engine.module
        if dtype != torch.float32:
            import copy

            export = copy.deepcopy(engine.module).float()
        save_codec(
            exp_dir / "final",
            export,
            extra={"step": step, "experiment": args.experiment_name, "validation": figures},
        )
        metrics = {
            "experiment": args.experiment_name,
            "step": step,
            "total_steps": total_steps,
            "world_size": world,
            "samples_seen": step * samples_per_step,
            "elapsed_seconds": elapsed,
            "final": figures,
            "kbps": [f"{k:g}" for k in kbps_list],
            "success": success,
            "history": history,
        }
        write_json(exp_dir / "metrics.json", metrics)
        plot_curves(history, exp_dir / "curves.png")
        tb.close()
        print(f"exported generator: {exp_dir / 'final'} (telucodec.checkpoint.load_codec)")
        print(f"{step} steps in {elapsed:.0f} s; metrics: {exp_dir / 'metrics.json'}")
        print(headline(top, figures[top]), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
