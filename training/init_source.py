"""--init-from: the exported codec a fine-tuning run starts from, checked before any process
group starts (a directory that is missing, damaged or of another architecture is one line)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from telucodec.checkpoint import WEIGHTS, CheckpointError, read_checkpoint_config
from telucodec.configs import architecture_differences, get_config
from training.args import experiment_dir, fail


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
