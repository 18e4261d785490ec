"""The command line: every flag, its range, and the one-line refusal of a bad value.

Flags are checked here, before any process group or engine starts, so a refused input costs
one line on stderr and exit 2 on every rank, never a traceback from deep inside a run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from telucodec.configs import get_config, kbps_values

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DS_CONFIG = REPO / "ds_config.json"


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """Flags are kebab-case; each also answers to its snake_case spelling, so the original
    train_codec.py command lines (`--data_dir … --batch_size 16`) and the deepspeed launcher's
    `--local_rank` keep working. `description` heads --help: train_ds.py passes its usage."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )

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
    flag(
        "segment_seconds",
        type=float,
        default=1.0,
        help="window length of training and validation, cut from the OUT's utterances at "
        "load time (at most its utterance cap); the export records it for `telucodec eval`",
    )
    flag("num_workers", type=int, default=2, help="DataLoader decode workers per rank")
    flag(
        "shuffle_buffer",
        type=int,
        default=100,
        help="utterances per worker shuffled before windows are cut (their windows are "
        "shuffled again, 256 s of them)",
    )
    flag("val_batch_size", type=int, default=None, help="default: --batch-size")
    flag(
        "max_val_items",
        type=int,
        default=0,
        help="first N val items only (0: all), an item being one window: each validation "
        "(every --val-every and at the end) encodes and decodes every item at every --kbps "
        "bitrate, so its time grows with N x bitrates (19,712 items x 3 took 310 s on CPU); "
        "N bounds it",
    )
    flag(
        "perceptual_items",
        type=int,
        default=16,
        help="val windows (a fixed subset spread over the set) also scored with PESQ-WB and "
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
    """A refused input: one line on stderr (from rank 0 only: every rank checks the same
    inputs, so N ranks would print it N times), exit 2 on every rank, no traceback. The
    checks run before any engine or data loader starts; some (the flags, --resume's world
    size) before the process group, others (the DeepSpeed config, OUT's index, manifest and
    window) after it."""
    if os.environ.get("RANK", "0") == "0":
        print(f"train_ds.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def experiment_dir(args: argparse.Namespace) -> Path:
    """CKPT/NAME: everything a run writes."""
    return Path(args.checkpoint_dir) / args.experiment_name
