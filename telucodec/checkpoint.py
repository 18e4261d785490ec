"""Checkpoints as data: `model.safetensors` (weights and EMA codebooks) + `config.json`.

Nothing is pickled, so loading a checkpoint cannot run code: the config is JSON rebuilt into
a CodecConfig, the tensors are safetensors, and the state dict must match the model exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from telucodec.configs import CodecConfig
from telucodec.model import Codec

FORMAT = "telucodec-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files or does not match its config."""


# Bounds a checkpoint's config must respect before any model is built from it: a hostile or
# corrupted config.json must not allocate a 2**36-entry codebook. Integers, inclusive.
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "sample_rate": (1000, 192_000),
    "hop_length": (1, 65_536),
    "latent_dim": (1, 8192),
    "frame_channels": (1, 8192),
    "frame_residual_layers": (0, 64),
    "encoder_dim": (1, 8192),
    "decoder_dim": (1, 16_384),
    "n_codebooks": (1, 64),
    "codebook_size": (2, 1 << 16),  # a .tcq code is at most 16 bits
    "codebook_dim": (1, 8192),
    "kmeans_iters": (0, 1000),
    "disc_channels": (1, 4096),
}


def check_config_bounds(cfg: CodecConfig) -> None:
    """ValueError naming the first field of `cfg` outside CONFIG_BOUNDS."""
    for name, (lo, hi) in CONFIG_BOUNDS.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{name} {value!r} outside the allowed {lo}..{hi}")


def save_codec(
    directory: str | os.PathLike, model: Codec, extra: dict[str, Any] | None = None
) -> Path:
    """Write directory/model.safetensors and directory/config.json ({"format", "version",
    "config", "extra"}); `extra` must be JSON-serializable (step, metrics, ...). Files are
    written to temporaries, fsynced and renamed, so a crash never leaves a half checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "extra": extra or {},
    }
    tmp_weights = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": FORMAT})
    tmp_config = directory / (CONFIG + ".tmp")
    tmp_config.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for tmp in (tmp_weights, tmp_config):
        _fsync(tmp)
    os.replace(tmp_weights, directory / WEIGHTS)
    os.replace(tmp_config, directory / CONFIG)
    _fsync(directory)  # makes the renames durable
    return directory


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk. shards.atomic does the same
    for data files; the model package keeps its own two lines rather than import `shards`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint_config(directory: str | os.PathLike) -> tuple[CodecConfig, dict[str, Any]]:
    """(CodecConfig, extra) from directory/config.json; CheckpointError names the problem."""
    path = Path(directory) / CONFIG
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing; a checkpoint directory holds {CONFIG} and {WEIGHTS}"
        ) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'format' is not {FORMAT!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: version {meta.get('version')}, expected {FORMAT_VERSION}")
    try:
        cfg = CodecConfig.from_dict(meta["config"])
        check_config_bounds(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad 'config': {exc}") from exc
    return cfg, meta.get("extra", {})


def load_codec(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Codec:
    """Rebuild the Codec from config.json and load model.safetensors strictly; eval() mode."""
    cfg, _ = read_checkpoint_config(directory)
    model = Codec(cfg)
    load_weights(directory, model, map_location)
    model.identity = model_identity(directory)
    return model.to(map_location).eval()


def load_weights(
    directory: str | os.PathLike, model: Codec, map_location: str | torch.device = "cpu"
) -> None:
    """Load directory/model.safetensors strictly into an existing `model` (every tensor
    present, none extra, same shapes): how a fine-tuning run starts from an exported codec
    whose config the caller has already compared with its own (configs.ARCHITECTURE_FIELDS)."""
    path = Path(directory) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{path}: missing")
    device = str(map_location) if isinstance(map_location, torch.device) else map_location
    try:
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch's message spans lines; errors are one
        raise CheckpointError(
            f"{path}: weights do not match config {model.cfg.name!r}: {detail}"
        ) from exc


def model_identity(directory: str | os.PathLike) -> bytes:
    """8 bytes naming a checkpoint's model: sha256 over its config (canonical JSON of the
    codec config, not the `extra` notes) and the bytes of model.safetensors, truncated. A
    .tcq stream carries its encoder's identity, so decoding with other weights is refused."""
    cfg, _ = read_checkpoint_config(directory)
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    with open(Path(directory) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()[:8]
