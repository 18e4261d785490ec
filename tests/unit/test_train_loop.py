"""The training loop's step count follows the optimizer's, skipped micro-batches included."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from training import loop
from training.checkpoints import TrainState
from training.engines import Engines

NAN = float("nan")


class _AccumulatingEngine:
    """Counts steps as a DeepSpeed engine does: `step()` after every micro-batch's
    backward, an optimizer step (`global_steps`) on every `gas`-th of them."""

    def __init__(self, gas: int):
        self.gas, self.micro, self.global_steps = gas, 0, 0

    def __call__(self, audio):
        return SimpleNamespace(audio=audio * 1.0)

    def train(self) -> None:
        pass

    def backward(self, loss) -> None:
        pass

    def step(self) -> None:
        self.micro += 1
        if self.micro % self.gas == 0:
            self.global_steps += 1


def _batches(per_epoch: int):
    for i in range(10**6):
        yield {
            "audio": torch.zeros(2, 8),
            "mask": torch.ones(2, 8, dtype=torch.bool),
            "epoch": i // per_epoch,
            "worker": 0,
            "bad_samples": 0,
            "bad_shards": 0,
        }


@pytest.mark.parametrize(
    ("gas", "losses", "micro_batches", "epoch_reports"),
    [
        # the NaN shifts the first step to batch 3; epochs of 3 batches, the second partial
        (2, [1.0, NAN, 1.0, 1.0, 1.0], 5, [(3, 1), (5, 2)]),
        (1, [NAN, 1.0, 1.0], 3, [(3, 2)]),  # a skipped micro-batch is no step
    ],
)
def test_a_skipped_micro_batch_never_lets_the_step_run_ahead_of_the_optimizer(
    monkeypatch, gas, losses, micro_batches, epoch_reports
):
    """Before: the step was micro-batches // accumulation, so a skipped NaN micro-batch
    counted toward a step the optimizer never took, and the run ended one step short."""
    stream = iter(losses)
    engine = _AccumulatingEngine(gas)
    engines = Engines(
        generator=engine,
        discriminator=None,
        loss=lambda *a, **k: {"loss": torch.tensor(next(stream))},
        dtype=torch.float32,
        ds_config={},
    )
    args = SimpleNamespace(
        max_nonfinite_steps=3, num_workers=0, log_every=10**6, val_every=0, save_every=0
    )
    run = SimpleNamespace(
        args=args, rank=0, world=1, device=torch.device("cpu"), started=time.time()
    )
    data = SimpleNamespace(
        stream=SimpleNamespace(start=0),
        total_steps=2,
        batches_per_epoch=3,
        accumulation=gas,
        samples_per_step=2 * gas,
    )
    logged, reports = [], []
    monkeypatch.setattr(loop.loader, "train_loader", lambda *a: _batches(3))
    monkeypatch.setattr(loop, "log_losses", lambda *a: logged.append(a[3].step))
    monkeypatch.setattr(
        loop, "report_epoch", lambda r, st, *a: reports.append((st.batches, st.step))
    )
    monkeypatch.setattr(loop, "time_is_up", lambda run: False)
    monkeypatch.setattr(loop, "print0", lambda *a: None)
    state = TrainState()
    session = loop.train(run, data, engines, state, tb=None)
    assert state.step == engine.global_steps == 2
    assert session.steps == 2 and state.batches == micro_batches
    assert [r["batch"] for r in state.history["nonfinite"]] == [losses.index(NAN)]
    assert logged == [2]  # the last step is logged once, at its number
    assert reports == epoch_reports  # an epoch's report carries the step it ended in
