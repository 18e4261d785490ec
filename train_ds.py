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

The procedure is `training.main.main`; the `training` package, one module per concern
(arguments, process group, set-up, engines, checkpoints, loop, validation, outputs), holds
its steps, and its docstring lists them. Validation scoring is `telucodec.evaluate`, shared
with `python -m telucodec eval`; shard lists come from `shards.Index`.

Everything a run produces lives in CKPT/NAME/: run_config.json (args + DeepSpeed config +
codec config), checkpoints/ (DeepSpeed, with data position and RNG state), final/ (the
generator for `python -m telucodec`), metrics.json, curves.png and tb/ (TensorBoard).
Exit status: 0 done; 1 failed (e.g. a checkpoint the disk has no room for: one line);
2 a refused input (one line, before any engine or data loader starts); 130 / 143 on SIGINT /
SIGTERM (one line; --resume continues from the last checkpoint).
docs/TRAINING.md has the details.
"""

import sys

from training.main import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
