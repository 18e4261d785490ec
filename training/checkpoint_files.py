"""What a checkpoint holds besides DeepSpeed's files: each rank's RNG state as JSON and a
sha256 manifest of every file, checked before anything in it is unpickled.

JSON rather than pickle for the RNG state, so a tampered file can at worst be refused. The
manifest guards DeepSpeed's .pt files, which are pickles, against corruption and against a
file swapped on its own; it lives in the same folder, so it is integrity checking, not
protection from someone who can rewrite the folder: resume only from folders you trust.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shards.atomic import atomic_write_json

MANIFEST = "manifest.sha256.json"


def rng_state() -> dict[str, Any]:
    """This process's torch/numpy/python (and CUDA) RNG states as plain JSON data: byte
    states as lists of ints, numpy's and python's state tuples as lists. No pickle, so a
    tampered file can at worst be refused, never run code."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_files(ckpt_dir: Path, tag: str) -> list[Path]:
    """Every file of checkpoint `tag`: the generator's tag dir and the critic's, if any."""
    dirs = [ckpt_dir / tag, ckpt_dir / "discriminator" / tag]
    files = [f for d in dirs if d.is_dir() for f in sorted(d.rglob("*")) if f.is_file()]
    return [f for f in files if f.name != MANIFEST]


def write_manifest(ckpt_dir: Path, tag: str) -> None:
    """sha256 of every file of checkpoint `tag` (paths relative to `ckpt_dir`) as JSON."""
    files = {str(f.relative_to(ckpt_dir)): _sha256(f) for f in _checkpoint_files(ckpt_dir, tag)}
    atomic_write_json(
        ckpt_dir / tag / MANIFEST, {"tag": tag, "sha256": files}, indent=2, sort_keys=True
    )


def verify_manifest(ckpt_dir: Path, tag: str) -> None:
    """Refuse (SystemExit, one line naming the file) a checkpoint whose files are not exactly
    those its manifest lists with those hashes, before anything in it is unpickled."""
    manifest = ckpt_dir / tag / MANIFEST
    try:
        listed = json.loads(manifest.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(
            f"--resume: {manifest}: missing or unreadable ({exc}); refusing to load {tag}"
        ) from None
    present = {str(f.relative_to(ckpt_dir)): f for f in _checkpoint_files(ckpt_dir, tag)}
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            problem = "listed in the manifest but missing"
        elif name not in listed:
            problem = "not in the manifest"
        elif _sha256(present[name]) != listed[name]:
            problem = "sha256 does not match the manifest (modified after saving)"
        else:
            continue
        raise SystemExit(f"--resume: {ckpt_dir / name}: {problem}; refusing to load {tag}")
