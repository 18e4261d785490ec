"""The codec and its critic wrapped in DeepSpeed engines (`Engines`), seeded alike on every
rank, optionally from --init-from's weights and compiled in place."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from telucodec.checkpoint import CheckpointError, load_weights
from telucodec.discriminator import MultiScaleSTFTDiscriminator
from telucodec.losses import CodecLoss
from telucodec.model import Codec
from training.args import fail
from training.distributed import print0
from training.setup import Run


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
