"""The training procedure behind train_ds.py, one module per concern, imports pointing down
only: `args` (flags, ranges, one-line refusals) → `init_source` (--init-from, checked) →
`distributed` (process group, sums over ranks, rank-0 printing) → `setup` (`Run`, the
resolved DeepSpeed config, `Data`: index and training stream) → `engines` (`Engines`: codec
and critic in DeepSpeed) → `checkpoints` (`TrainState`, save, --resume) → `validate` →
`loop` (train steps, logged losses, epoch data-error report) → `outputs` (run_config.json,
final/, metrics.json) → `main` (the procedure, top to bottom). Beside them, used by several:
`report` (what a run prints and plots: summary, validation lines, verdict, curves.png) and
`checkpoint_files` (the JSON RNG state and sha256 manifest a checkpoint carries).
"""
