"""Training glue: the sharded loader, masked validation, and train_ds.py in every launch mode.

The end-to-end tests run `train_ds.py` as a subprocess on tiny shard fixtures with the `tiny`
codec: one process (`python`, once with the original train_codec.py flag spellings), two CPU
ranks under the `deepspeed` launcher, two under `cluster/train.sbatch` (torchrun, with
stand-ins for srun/scontrol), and a kill -9 followed by `--resume`. The single-process run's
export is then scored by `python -m telucodec eval` and `compare`: one schema in all three
reports, and eval reproduces training's final validation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import shards
from shards import Index, ShardWriter, loader
from shards.format import encode_sample
from telucodec.configs import get_config
from telucodec.evaluate import MetricSums, evaluate
from tests.unit.test_codec_model import speechlike
from tests.unit.test_metrics import PADDING_INVARIANT_FIGURES
from tests.unit.test_windows import finish_out, manifest_row, utterance_meta
from training import loop
from training.args import parse_args
from training.checkpoint_files import rng_state, set_rng_state, verify_manifest
from training.checkpoints import TrainState
from training.engines import Engines
from training.outputs import init_record
from training.report import headline, succeeded, verdict
from training.setup import resolve_ds_config, set_schedule_length
from training.validate import val_coverage

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEGMENT = 16000


# ------------------------------------------------------------------------------ fixtures


def _meta(split: str, i: int, samples: int = SEGMENT) -> dict:
    return utterance_meta(split, f"{split}/{i}.wav", samples)


def make_shard_dir(
    root: Path, train=(6, 4), val=(5, 4), seed=0, corrupt_sample=False, truncated_shard=False
) -> Path:
    """A format-2 preprocess OUT: shards/{train,val}-NNNNNN.tar with `train`/`val`
    utterances per shard (1 s, every other one 0.5 s), index.json and manifest.jsonl.
    `corrupt_sample` puts an undecodable audio member into train shard 0; `truncated_shard`
    adds a train shard cut mid-sample."""
    rng = np.random.default_rng(seed)
    entries, rows = [], []
    specs = [("train", s, n) for s, n in enumerate(train)]
    specs += [("val", s, n) for s, n in enumerate(val)]
    if truncated_shard:
        specs.append(("train", len(train), 4))
    for split, s, n in specs:
        name = f"{split}-{s:06d}.tar"
        with ShardWriter(root / "shards" / name) as w:
            for i in range(n):
                length = SEGMENT if i % 2 == 0 else SEGMENT // 2
                key = shards.sample_key(f"{split}{s}f{i}", 0)
                meta = _meta(split, i, length)
                sample = encode_sample(key, speechlike(rng, length), [[0, length]], meta)
                if corrupt_sample and split == "train" and s == 0 and i == 1:
                    sample["audio.flac"] = b"this is not a flac stream"
                w.write_encoded(sample)
                rows.append(manifest_row(key, name, split, length, length, meta["source"]))
        info = w.info.to_dict()
        if truncated_shard and split == "train" and s == len(train):
            # Cut inside the last member's data: half the file can fall in the end-of-archive
            # padding once the members are small (one header block each).
            path = root / "shards" / name
            with tarfile.open(path) as tar:
                last = tar.getmembers()[-1]
            path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])
        entries.append({**info, "split": split})
    return finish_out(root, entries, rows)


@pytest.fixture
def clean_shm():
    """The deepspeed launcher leaves /dev/shm/deepspeed_allreduce_buffer_*; remove ours."""
    before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    yield
    for path in set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) - before:
        path.unlink(missing_ok=True)


def free_port() -> int:
    """A port free right now: fixed ports collide when two test runs share a machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(port: int) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MASTER_PORT=str(port),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO),
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
    )
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(name, None)
    return env


def _train_args(data: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    """train_ds.py and its flags for a few-second run of the tiny codec (the first seven
    items are the script and the three run-naming flags)."""
    fast = (
        "--model-config tiny --batch-size 2 --segment-seconds 0.5 --shuffle-buffer 8 "
        "--num-workers 1 --log-every 1 --val-every 0 --audio-examples 1"
    )
    run = ["--data-dir", str(data), "--checkpoint-dir", str(ckpt), "--experiment-name", name]
    return [str(REPO / "train_ds.py"), *run, *fast.split(), *extra]


def snake_case(args: list[str]) -> list[str]:
    """The same command line in the original train_codec.py spelling (`--data_dir`, …)."""
    return ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in args]


def run_training(
    cmd: list[str], port: int | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run a training command line (MASTER_PORT: `port`, else a free one); fail with its output."""
    env = _env(port or free_port())
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{cmd}\n{output}"
    return proc


def metrics_of(ckpt: Path, name: str) -> dict:
    return json.loads((ckpt / name / "metrics.json").read_text())


# -------------------------------------------------------------------------- loader units


def _keys(batches) -> list[list[str]]:
    return [b["key"] for b in batches]


def _stream(data: Path, batch: int = 2, per_epoch: int = 5, seed: int = 3) -> loader.TrainStream:
    return loader.TrainStream(
        Index.load(data).paths("train"),
        batch_size=batch,
        batches_per_epoch=per_epoch,
        window_samples=4000,
        shuffle_buffer=6,
        seed=seed,
    )


def _take(stream: loader.TrainStream, n: int, workers: int) -> list[dict]:
    it = iter(loader.train_loader(stream, num_workers=workers))
    return [next(it) for _ in range(n)]


def test_every_rank_gets_the_same_batches_per_epoch_from_uneven_shards(tmp_path, monkeypatch):
    data = make_shard_dir(tmp_path, train=(9, 1, 2), val=(1,))
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        batches = _take(_stream(data, per_epoch=4), 8, workers=0)
        assert [b["epoch"] for b in batches] == [0] * 4 + [1] * 4
        assert all(b["audio"].shape == (2, 4000) and b["mask"].dtype == torch.bool for b in batches)
        per_rank[rank] = _keys(batches)
    # Resampled draws are dealt out, so the ranks do not see one identical stream.
    assert per_rank[0] != per_rank[1]


def test_resumed_stream_replays_the_batches_of_an_uninterrupted_one(tmp_path):
    data = make_shard_dir(tmp_path, train=(5, 3))
    straight = _take(_stream(data), 12, workers=2)
    resumed_stream = _stream(data)
    resumed_stream.start = 7  # mid-epoch, and not a multiple of the worker count
    resumed = _take(resumed_stream, 5, workers=2)
    assert _keys(resumed) == _keys(straight[7:])
    for a, b in zip(resumed, straight[7:], strict=True):
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["mask"], b["mask"])
    assert [b["epoch"] for b in resumed] == [1, 1, 1, 2, 2]


def test_corrupt_sample_and_truncated_shard_are_skipped_and_counted(tmp_path):
    data = make_shard_dir(tmp_path, train=(3, 2), corrupt_sample=True, truncated_shard=True)
    batches = _take(_stream(data, per_epoch=20), 20, workers=0)
    errors = loader.EpochErrors()
    for b in batches:
        errors.update(b)
        assert all("train0f1" not in key for key in b["key"])  # the corrupt one never appears
    bad_samples, bad_shards = errors.totals()
    assert bad_samples > 0 and bad_shards > 0
    # The truncated shard still gave the samples before the cut.
    assert any(key.startswith("train2f0") for b in batches for key in b["key"])


def test_validation_batches_cover_every_item_once_in_the_same_batches_for_any_world(tmp_path):
    data = make_shard_dir(tmp_path, train=(1,), val=(5, 4, 3))
    paths = Index.load(data).paths("val")
    one = _keys(loader.val_batches(paths, 4, SEGMENT, rank=0, world=1))
    two = [_keys(loader.val_batches(paths, 4, SEGMENT, rank=r, world=2)) for r in (0, 1)]
    assert sorted(sum(one, [])) == sorted(sum(sum(two, []), []))
    assert len(sum(one, [])) == 12 == len(set(sum(one, [])))
    assert two[0] == one[0::2] and two[1] == one[1::2]
    batches = list(loader.val_batches(paths, 4, SEGMENT))
    assert all(b["audio"].shape[1] == SEGMENT for b in batches)
    # Shards of 5, 4 and 3 utterances, every other one 0.5 s: 7 whole windows, 5 half
    # padded (a window needs half its length of real audio).
    assert sum(int(b["mask"].sum()) for b in batches) == 7 * SEGMENT + 5 * SEGMENT // 2


# ------------------------------------------------------------------ masked validation


class PointwiseCodec(torch.nn.Module):
    """A stand-in codec whose output at a sample depends only on that sample's input and
    position, and which writes garbage where the input is zero padding, as an untrained
    decoder does. Real codecs look across samples; this isolates the metric plumbing."""

    cfg = get_config("tiny")  # bitrate ladder and sample rate

    def forward(self, audio, n_quantizers=None):
        position = torch.arange(audio.shape[-1], dtype=audio.dtype)
        garbage = 0.05 * torch.sin(0.3 * position) * (audio == 0)
        est = 0.9 * audio + 0.002 * torch.cos(0.01 * position * n_quantizers) + garbage
        return SimpleNamespace(audio=est)


def test_masked_validation_is_unchanged_by_extra_padding(tmp_path):
    rng = np.random.default_rng(5)
    clips = [speechlike(rng, n) for n in (16000, 20000, 24000)]
    path = str(tmp_path / "val.tar")
    with ShardWriter(path) as w:
        for i, clip in enumerate(clips):
            meta = _meta("val", i, len(clip))
            w.write(shards.sample_key(f"c{i}", 0), clip, [[0, len(clip)]], meta)

    def figures(window: int) -> dict:
        batches = loader.val_batches([path], 2, window)
        return evaluate(PointwiseCodec(), batches, [6.0]).figures()["6"]

    # Each utterance is one window either way, padded to 1.5 s or to 3 s.
    bare, padded = figures(24000), figures(48000)
    for name in PADDING_INVARIANT_FIGURES:
        assert padded[name] == pytest.approx(bare[name], rel=1e-9, abs=1e-9), name
    assert padded["items"] == bare["items"] == 3 and padded["gated_items"] == 0
    # Scored over the whole segment, the padding's garbage drags the figure down.
    assert padded["unmasked_snr_db"] < bare["unmasked_snr_db"] - 3
    assert padded["padding_fraction"] > 0.5 > bare["padding_fraction"]


def test_ds_config_is_zero1_with_explicit_clipping_torch_adam_and_auto_precision():
    cfg = json.loads((REPO / "ds_config.json").read_text())
    assert cfg["zero_optimization"]["stage"] == 1
    assert cfg["gradient_clipping"] > 0
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["torch_adam"]
    assert cfg["scheduler"]["type"] == "WarmupDecayLR"
    assert cfg["tensorboard"]["enabled"]
    args = parse_args(["--data-dir", "x", "--learning-rate", "0.002", "--batch-size", "3"])
    cpu = resolve_ds_config(args.deepspeed_config, args, False, Path("tb"))
    gpu = resolve_ds_config(args.deepspeed_config, args, True, Path("tb"))
    set_schedule_length(cpu, 50)
    assert cpu["bf16"]["enabled"] is False and gpu["bf16"]["enabled"] is True
    assert cpu["train_micro_batch_size_per_gpu"] == 3 and "train_batch_size" not in cpu
    assert cpu["optimizer"]["params"]["lr"] == cpu["scheduler"]["params"]["warmup_max_lr"] == 0.002
    assert cpu["scheduler"]["params"]["total_num_steps"] == 50
    assert cpu["scheduler"]["params"]["warmup_num_steps"] <= 10
    defaults = parse_args(["--data-dir", "x"])
    from_file = resolve_ds_config(defaults.deepspeed_config, defaults, False, Path("tb"))
    assert from_file["train_micro_batch_size_per_gpu"] == cfg["train_micro_batch_size_per_gpu"]
    assert from_file["optimizer"]["params"]["lr"] == cfg["optimizer"]["params"]["lr"]


def test_original_train_codec_command_line_means_the_same_as_the_kebab_case_one():
    # The command line of the original instructions, then the launchers' own flags.
    original = [
        "--data_dir",
        "/workspace/telugu_data/filtered",
        "--checkpoint_dir",
        "/workspace/models/codec",
        "--batch_size",
        "16",
        "--num_epochs",
        "100",
        "--learning_rate",
        "1e-5",
        "--experiment_name",
        "telucodec_filtered",
        "--model_config",
        "tiny",
        "--max_steps",
        "7",
        "--val_every",
        "3",
        "--debug_validation",
        "--kbps",
        "6,1.5,3",
        "--deepspeed_config",
        str(REPO / "ds_config.json"),
        "--local_rank=1",
    ]
    kebab = [a.replace("_", "-") if a.startswith("--") else a for a in original]
    kebab[kebab.index("6,1.5,3")] = "1.5 3 6"
    kebab = " ".join(kebab).split()  # --kbps 1.5 3 6: three tokens
    old, new = parse_args(original), parse_args(kebab)
    assert vars(old) == vars(new)
    assert old.data_dir == "/workspace/telugu_data/filtered" and old.batch_size == 16
    assert old.num_epochs == 100 and old.learning_rate == 1e-5 and old.local_rank == 1
    assert old.kbps == [1.5, 3.0, 6.0] and old.debug_validation and old.save_every == 3


def test_headline_decides_snr_above_or_below_zero_only_with_95_percent_confidence():
    """The masked SNR half of the verdict (SI-SDR, its other half, clearly above 0 dB here;
    tests/e2e/test_train_guardrails.py has the cases where SI-SDR decides)."""

    def line(*snr_db: float) -> str:
        tally = MetricSums()
        tally.add_values("masked_snr_db", snr_db)
        tally.add_values("masked_si_sdr_db", [5.0 + 0.1 * i for i in range(len(snr_db))])
        figures = tally.summary()
        assert succeeded(figures) == (verdict(figures) == "SUCCESS")
        return headline("6", figures)

    assert line(3.0, 4.0, 5.0, 4.5).endswith(
        "SUCCESS: masked SNR > 0 dB and SI-SDR > 0 dB, each with 95 % confidence (n = 4)"
    )
    assert "FAILURE: masked SNR < 0 dB with 95 % confidence (n = 4)" in line(-3.0, -4.0, -5.0, -4.5)
    # A positive mean is not enough: with this spread the interval straddles 0 dB.
    undecided = line(8.0, -6.0, 5.0, -2.0)
    assert "UNDECIDED: masked SNR 95 % interval [" in undecided
    assert "] dB spans 0 (n = 4)" in undecided
    assert "SUCCESS" not in undecided and "FAILURE" not in undecided
    assert "UNDECIDED: too few scored items" in line(12.0) and "(n = 1" in line(12.0)
    assert "UNDECIDED: too few scored items" in line() and "(n = 0" in line()


# ------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> SimpleNamespace:
    """`python train_ds.py` for 6 steps on shards with a corrupt sample and a cut shard."""
    root = tmp_path_factory.mktemp("single")
    data = make_shard_dir(root / "out", train=(3,), corrupt_sample=True, truncated_shard=True)
    ckpt = root / "ckpt"
    extra = ("--max-steps", "6", "--val-every", "3", "--debug-validation")
    proc = run_training([sys.executable, *_train_args(data, ckpt, "single", *extra)])
    return SimpleNamespace(data=data, exp=ckpt / "single", proc=proc, root=root)


def test_single_process_run_writes_checkpoint_metrics_export_and_counts_corrupt_data(single_run):
    from telucodec.checkpoint import load_codec

    exp, proc = single_run.exp, single_run.proc
    m = json.loads((exp / "metrics.json").read_text())
    assert m["step"] == 6 and m["world_size"] == 1
    assert [r["step"] for r in m["history"]["train"]] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in m["history"]["train"])
    assert [r["step"] for r in m["history"]["val"]] == [3, 6]
    final = m["final"]["6"]
    # Val: 5 + 4 utterances, 5 of 1 s (2 windows of 0.5 s) and 4 of 0.5 s (1): 14 windows.
    assert final["items"] == 14 and np.isfinite(final["masked_snr_db"])
    assert final["n_quantizers"] == 12 and final["masked_snr_db_items"] == 14
    # The 95 % interval of the mean, in the one schema, at every validation and at the end.
    assert final["masked_snr_db_ci95_lo"] < final["masked_snr_db"] < final["masked_snr_db_ci95_hi"]
    assert all(
        r["kbps"]["6"]["masked_si_sdr_db_ci95_lo"] < r["kbps"]["6"]["masked_si_sdr_db_ci95_hi"]
        for r in m["history"]["val"]
    )
    assert m["verdict"] in {"SUCCESS", "FAILURE", "UNDECIDED"}
    assert m["success"] == (m["verdict"] == "SUCCESS")
    assert f"{m['verdict']}: " in proc.stdout.splitlines()[-1] and "(n = 14" in proc.stdout
    assert "95 % CI [" in proc.stdout
    assert set(m["final"]) == {"1.5", "3", "6"}
    errors = m["history"]["data_errors"]
    assert sum(e["bad_samples"] for e in errors) > 0 and sum(e["bad_shards"] for e in errors) > 0
    assert "skipped" in proc.stdout and "corrupt samples" in proc.stdout
    assert "=== VALIDATION SNR DEBUG ===" in proc.stdout and "Signal power" in proc.stdout
    assert "val masked SNR 6 kbps:" in proc.stdout and "unmasked" in proc.stdout.splitlines()[-1]
    # PESQ-WB and STOI of the default perceptual subset (all 14 windows here, padding cut
    # off) at every validation: in metrics.json, the per-validation lines and the final line.
    for record in m["history"]["val"]:
        for figures in record["kbps"].values():
            assert figures["pesq_wb_items"] == figures["stoi_items"] == 14
            assert 1.0 <= figures["pesq_wb"] <= 4.65 and 0.0 < figures["stoi"] <= 1.0
    assert "PESQ-WB" in proc.stdout.splitlines()[-1] and "STOI" in proc.stdout.splitlines()[-1]
    assert proc.stdout.count("STOI") >= 2 * 3 + 1  # 2 validations x 3 bitrates + final line
    assert (exp / "checkpoints" / "latest").read_text().strip() == "step00000006"
    assert (exp / "curves.png").stat().st_size > 1000
    assert not list(exp.glob("*.tmp*")), "an atomic write left its temporary behind"
    assert list((exp / "tb").glob("events.out.tfevents.*"))
    run_config = json.loads((exp / "run_config.json").read_text())
    assert run_config["deepspeed"]["bf16"]["enabled"] is False
    assert run_config["data"]["window_samples"] == 8000
    assert run_config["data"]["val_windows"] == 14 and run_config["data"]["segment_seconds"] == 0.5
    assert run_config["model"]["name"] == "tiny"
    codec = load_codec(exp / "final")
    with torch.no_grad():
        assert codec(torch.zeros(1, 1, 1600), n_quantizers=3).audio.shape == (1, 1, 1600)


def test_metrics_eval_and_compare_reports_share_one_schema(single_run):
    """metrics.json (training), eval.json and compare.json carry the same figures per
    bitrate under the same names; eval of the exported generator, batched like training's
    validation, reproduces training's final figures."""
    from telucodec.compare import EXTRA

    final = json.loads((single_run.exp / "metrics.json").read_text())["final"]
    ckpt, data, root = single_run.exp / "final", single_run.data, single_run.root
    codec = [sys.executable, "-m", "telucodec"]
    common = ["--checkpoint", str(ckpt), "--data-dir", str(data)]
    run_cmd = dict(cwd=REPO, capture_output=True, text=True, timeout=240)
    env = {**_env(0), "OMP_NUM_THREADS": "1"}
    evaluated = subprocess.run(
        [*codec, "eval", *common, "--batch-size", "2", "--out", str(root / "eval.json")],
        env=env,
        **run_cmd,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    env_no_opus = {**env, "PATH": "/nonexistent"}  # ours alone: the schema is the point here
    compared = subprocess.run(
        [*codec, "compare", *common, "--kbps", "6", "--max-items", "3", "--out", str(root / "cmp")],
        env=env_no_opus,
        **run_cmd,
    )
    assert compared.returncode == 0, compared.stderr
    eval_report = json.loads((root / "eval.json").read_text())
    compare_report = json.loads((root / "cmp" / "compare.json").read_text())

    # Training's validation and eval both score the default perceptual subset (PESQ-WB and
    # STOI), so all three reports carry the same figures.
    schema = set(MetricSums(EXTRA).summary()) | {"n_quantizers"}
    for kbps in ("1.5", "3", "6"):
        assert set(final[kbps]) == set(eval_report["bitrates"][kbps]) == schema
        assert final[kbps]["pesq_wb_items"] >= 1
    assert set(compare_report["codecs"]["telucodec"]["6"]) == schema
    for kbps, figures in final.items():
        for name, value in figures.items():
            got = eval_report["bitrates"][kbps][name]
            assert got == (value if value is None else pytest.approx(value, rel=1e-6)), name


@pytest.mark.usefixtures("clean_shm")
def test_two_cpu_ranks_under_deepspeed_launcher_finish_on_uneven_shards(tmp_path):
    data = make_shard_dir(tmp_path / "out", train=(9, 1, 2), val=(3,))
    ckpt = tmp_path / "ckpt"
    port = free_port()
    cmd = [
        str(BIN / "deepspeed"),
        "--num_gpus",
        "2",
        "--master_port",
        str(port),
        *_train_args(
            data,
            ckpt,
            "ds2",
            "--max-steps",
            "5",
            "--deepspeed-config",
            str(REPO / "ds_config.json"),
        ),
    ]
    run_training(cmd, port=port)
    m = metrics_of(ckpt, "ds2")
    assert m["world_size"] == 2 and m["step"] == 5
    # Windows of 0.5 s: a 1-s utterance gives 1.5 an epoch on average, a 0.5-s one 1, so
    # 15 windows / (2 per batch x 2 ranks) = 3 batches per epoch: epoch 0 whole, 1 partial.
    assert [(e["epoch"], e["step"]) for e in m["history"]["data_errors"]] == [(0, 3), (1, 5)]
    assert m["final"]["6"]["items"] == 5  # val on the grid: 2 windows of 1 s, 1 of 0.5 s


def fake_slurm(tmp_path: Path, port: int) -> dict:
    """`scontrol` and `srun` stand-ins for one node, so cluster/train.sbatch runs here."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1\n'
    )
    (bin_dir / "srun").write_text(
        '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nSLURM_NODEID=0 exec "$@"\n'
    )
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = _env(port)
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NNODES="1",
        SLURM_SUBMIT_DIR=str(REPO),
        NPROC_PER_NODE="2",
    )
    return env


@pytest.mark.usefixtures("clean_shm")
def test_validation_figures_are_identical_for_one_and_two_ranks(tmp_path):
    """World 1 by plain `python`, spelled as the original train_codec.py command line
    (`--data_dir …`); world 2 by cluster/train.sbatch, i.e. torchrun on a node."""
    data = make_shard_dir(tmp_path / "out", train=(4,), val=(5, 4, 2))
    ckpt = tmp_path / "ckpt"
    eval_only = ("--max-steps", "0", "--debug-validation")
    old_spelling = snake_case(_train_args(data, ckpt, "w1", *eval_only))
    assert "--data_dir" in old_spelling and "--max_steps" in old_spelling
    run_training([sys.executable, *old_spelling])
    port = free_port()
    sbatch = [
        "bash",
        str(REPO / "cluster" / "train.sbatch"),
        str(data),
        str(ckpt),
        "w2",
        *_train_args(data, ckpt, "w2", *eval_only)[7:],
    ]
    proc = subprocess.run(
        sbatch,
        cwd=tmp_path,
        env=fake_slurm(tmp_path, port),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"1 node(s) x 2 process(es), master 127.0.0.1:{port}" in proc.stdout
    one, two = metrics_of(ckpt, "w1"), metrics_of(ckpt, "w2")
    assert two["world_size"] == 2 and one["world_size"] == 1
    for kbps in ("1.5", "3", "6"):
        assert one["final"][kbps]["items"] == two["final"][kbps]["items"] == 17
        for name, value in one["final"][kbps].items():
            expected = value if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)
            assert two["final"][kbps][name] == expected, name


def test_resume_after_kill_continues_the_same_loss_curve(tmp_path):
    """Generator and discriminator engines, optimizer, LR schedule, data position and RNG all
    come back: the resumed run's losses are those of the uninterrupted one."""
    data = make_shard_dir(tmp_path / "out", train=(5, 4))
    ckpt = tmp_path / "ckpt"
    steps = (
        "--max-steps",
        "8",
        "--save-every",
        "4",
        "--keep-checkpoints",
        "0",
        "--use-discriminator",
        "--num-workers",
        "2",
    )
    run_training([sys.executable, *_train_args(data, ckpt, "straight", *steps)])

    cmd = [sys.executable, *_train_args(data, ckpt, "killed", *steps)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(free_port()),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 180
    try:
        for line in proc.stdout:
            if "checkpoint saved:" in line and "step00000004" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert time.time() < deadline, "no checkpoint at step 4"
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (ckpt / "killed" / "metrics.json").exists()

    run_training(
        [sys.executable, *_train_args(data, ckpt, "killed", *steps, "--resume")],
    )
    straight = {r["step"]: r for r in metrics_of(ckpt, "straight")["history"]["train"]}
    resumed = {r["step"]: r for r in metrics_of(ckpt, "killed")["history"]["train"]}
    assert sorted(resumed) == sorted(straight) == list(range(1, 9))
    for step in range(1, 9):
        for term in ("loss", "l1", "mel", "adv", "disc", "lr"):
            assert resumed[step][term] == pytest.approx(straight[step][term], rel=1e-4, abs=1e-7), (
                step,
                term,
            )


# ------------------------------------------------------------------ fine-tuning (--init-from)


def test_every_codec_config_field_is_either_architecture_or_recipe():
    """--init-from compares the architecture fields; a new CodecConfig field must be put in
    one of the two lists, or fine-tuning would silently ignore it."""
    from telucodec.configs import ARCHITECTURE_FIELDS, RECIPE_FIELDS, CodecConfig

    names = [f.name for f in dataclasses.fields(CodecConfig)]
    assert sorted(ARCHITECTURE_FIELDS + RECIPE_FIELDS) == sorted(names)
    assert not set(ARCHITECTURE_FIELDS) & set(RECIPE_FIELDS)


def test_fine_tuning_starts_from_the_exported_weights_bitwise_at_step_0(single_run, tmp_path):
    from safetensors.torch import load_file

    source = single_run.exp / "final"
    ckpt = tmp_path / "ckpt"
    extra = ("--init_from", str(source), "--max-steps", "0")  # the snake_case spelling too
    proc = run_training([sys.executable, *_train_args(single_run.data, ckpt, "ft", *extra)])
    assert f"initialized from {source} (step 6 of experiment single)" in proc.stdout
    before = load_file(str(source / "model.safetensors"))
    after = load_file(str(ckpt / "ft" / "final" / "model.safetensors"))
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert metrics_of(ckpt, "ft")["step"] == 0  # a fresh run, not the source's step 6
    run_config = json.loads((ckpt / "ft" / "run_config.json").read_text())
    assert run_config["args"]["init_from"] == str(source)
    recorded = run_config["init_from"]
    assert recorded["step"] == 6 and recorded["experiment"] == "single"
    assert len(recorded["model_id"]) == 16


def test_resume_wins_over_init_from_so_a_requeued_job_can_pass_both(single_run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(single_run.exp, ckpt / "single")  # a run with a step-6 checkpoint
    gone = tmp_path / "deleted-since"  # not even read: the checkpoint has the weights
    extra = ("--resume", "--init-from", str(gone), "--max-steps", "6")
    proc = run_training([sys.executable, *_train_args(single_run.data, ckpt, "single", *extra)])
    assert f"--init-from {gone} ignored: the run resumes from step 6" in proc.stdout
    assert "initialized from" not in proc.stdout
    assert json.loads((ckpt / "single" / "run_config.json").read_text())["init_from"] is None


def test_a_resumed_fine_tune_keeps_the_record_of_its_source_weights(tmp_path):
    """A requeued session resumes from its checkpoint without reading --init-from again;
    run_config.json, rewritten each session, must still name the weights it started from."""
    record = {"directory": "/gone", "model_id": "0123abcd0123abcd", "step": 3, "experiment": "e"}
    (tmp_path / "run_config.json").write_text(json.dumps({"init_from": record}))
    resumed = SimpleNamespace(init=None, exp_dir=tmp_path)
    assert init_record(resumed) == record
    assert init_record(SimpleNamespace(init=None, exp_dir=tmp_path / "new")) is None


def _tiny_export(directory: Path) -> Path:
    from telucodec.checkpoint import save_codec
    from telucodec.model import Codec

    return save_codec(directory, Codec(get_config("tiny")), extra={"step": 3})


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("mismatch", "its codec config differs from --model-config small: latent_dim 16 vs 64"),
        ("missing", "not a directory; expected an exported codec"),
        ("no_weights", "model.safetensors: missing"),
        ("corrupt_weights", "not a readable safetensors file"),
    ],
)
def test_init_from_a_mismatched_missing_or_damaged_export_is_one_line_exit_2(
    tmp_path, case, expected
):
    source = tmp_path / "export"
    if case != "missing":
        _tiny_export(source)
    if case == "no_weights":
        (source / "model.safetensors").unlink()
    if case == "corrupt_weights":
        (source / "model.safetensors").write_bytes(b"not safetensors at all")
    config = "small" if case == "mismatch" else "tiny"
    data = make_shard_dir(tmp_path / "out", train=(2,), val=(2,))
    args = _train_args(data, tmp_path / "ckpt", "bad", "--init-from", str(source))
    cmd = [sys.executable, *args, "--model-config", config, "--max-steps", "1"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(free_port()), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_ds.py: error: --init-from {source}: "), last
    assert expected in last, last
    assert proc.stderr.strip() == last  # refused before any process group or engine starts
    assert not (tmp_path / "ckpt" / "bad" / "run_config.json").exists()


# ------------------------------------------------------------------ refused inputs, guards


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [
        ("--batch-size", "0", "in [1, 65536]"),
        ("--max_steps", "-1", ">= 0"),
        ("--max-nonfinite-steps", "0", ">= 1"),
    ],
)
def test_out_of_range_flag_is_one_line_naming_it_and_its_range_exit_2(flag, value, allowed, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--data-dir", "x", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    name = "--" + flag[2:].replace("_", "-")
    assert name in err and allowed in err and f"got {value}" in err, err


def test_a_bitrate_the_codec_cannot_serve_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--data-dir", "x", "--model-config", "tiny", "--kbps", "3", "99"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train_ds.py: error: --kbps 99: ")
    assert "whole number of codebooks" in err


def test_zero_stage_2_or_3_is_refused_at_config_resolution_naming_the_file(tmp_path, capsys):
    args = parse_args(["--data-dir", "x"])
    for stage in (2, 3):
        cfg = json.loads((REPO / "ds_config.json").read_text())
        cfg["zero_optimization"]["stage"] = stage
        path = tmp_path / f"zero{stage}.json"
        path.write_text(json.dumps(cfg))
        with pytest.raises(SystemExit) as exc:
            resolve_ds_config(str(path), args, False, Path("tb"))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert str(path) in err[0] and f"stage {stage}" in err[0] and "0 or 1" in err[0]
    cfg["zero_optimization"]["stage"] = 0
    path.write_text(json.dumps(cfg))
    assert resolve_ds_config(str(path), args, False, Path("tb"))


def test_rng_state_is_json_data_and_round_trips():
    import random

    state = json.loads(json.dumps(rng_state()))  # plain JSON, no pickle
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


class _Engine:
    """A stand-in DeepSpeed engine that records backward/step calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, audio):
        return SimpleNamespace(audio=audio * 1.0)

    def backward(self, loss):
        self.calls.append("backward")

    def step(self):
        self.calls.append("step")


def test_nonfinite_loss_is_skipped_counted_and_stops_the_run_after_the_limit(capsys, monkeypatch):
    losses = iter([float("nan"), 1.0, float("inf"), float("nan"), float("nan")])
    engines = Engines(
        generator=_Engine(),
        discriminator=None,
        loss=lambda *a, **k: {"loss": torch.tensor(next(losses))},
        dtype=torch.float32,
        ds_config={},
    )
    batch = {"audio": torch.zeros(2, 8), "mask": torch.ones(2, 8, dtype=torch.bool)}
    guard = loop.NonFiniteGuard(limit=3)
    state = TrainState()
    run = SimpleNamespace(rank=0)
    monkeypatch.setattr(loop, "print0", print)  # no process group in this test
    outcomes = []
    with pytest.raises(SystemExit) as exc:
        for _ in range(5):
            terms = loop.train_step(engines, batch, torch.device("cpu"), guard)
            state.batches += 1
            outcomes.append(terms is not None)
            guard.count(run, state, terms)
    # Only the finite loss was backpropagated and stepped; the third NaN/Inf in a row stops.
    assert outcomes == [False, True, False, False, False]
    assert engines.generator.calls == ["backward", "step"]
    assert [r["batch"] for r in state.history["nonfinite"]] == [0, 2, 3, 4]
    assert "3 non-finite" in str(exc.value.code) and "--max-nonfinite-steps 3" in str(
        exc.value.code
    )
    assert "non-finite loss, micro-batch 0 skipped" in capsys.readouterr().out


class _Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_tampered_checkpoint_is_refused_on_resume_and_its_pickle_never_runs(tmp_path):
    data = make_shard_dir(tmp_path / "out", train=(4,))
    ckpt = tmp_path / "ckpt"
    steps = ("--max-steps", "2", "--save-every", "2")
    run_training([sys.executable, *_train_args(data, ckpt, "t", *steps)])
    ckpt_dir = ckpt / "t" / "checkpoints"
    tag_dir = ckpt_dir / "step00000002"
    assert (tag_dir / "manifest.sha256.json").is_file()
    assert (tag_dir / "rng_rank000.json").is_file() and not list(tag_dir.glob("rng*.pt"))
    verify_manifest(ckpt_dir, "step00000002")  # untouched: accepted

    # An edited RNG file, and a stray old-style pickle beside it: both refused by name.
    rng = tag_dir / "rng_rank000.json"
    original = rng.read_bytes()
    rng.write_bytes(original.replace(b"[", b"[ ", 1))
    with pytest.raises(SystemExit, match="rng_rank000.json: sha256 does not match"):
        verify_manifest(ckpt_dir, "step00000002")
    rng.write_bytes(original)
    marker = tmp_path / "pwned"
    torch.save({"x": _Payload(marker)}, tag_dir / "rng_rank000.pt")
    with pytest.raises(SystemExit, match="rng_rank000.pt: not in the manifest"):
        verify_manifest(ckpt_dir, "step00000002")
    (tag_dir / "rng_rank000.pt").unlink()

    # DeepSpeed's model file replaced by a pickle payload: --resume refuses before loading.
    model_file = next(tag_dir.glob("*model_states.pt"))
    torch.save({"module": _Payload(marker)}, model_file)
    cmd = [sys.executable, *_train_args(data, ckpt, "t", "--max-steps", "4", "--resume")]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(free_port()), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode != 0
    assert f"{model_file}: sha256 does not match the manifest" in proc.stderr
    assert "refusing to load step00000002" in proc.stderr.strip().splitlines()[-1]
    assert not marker.exists(), "the checkpoint's pickle ran"


def test_bad_shards_are_reported_once_per_shard_per_epoch_by_name(tmp_path, capfd, caplog):
    data = make_shard_dir(tmp_path, train=(3, 2), corrupt_sample=True, truncated_shard=True)
    batches = _take(_stream(data, per_epoch=10), 20, workers=0)
    # The stream itself neither prints nor logs per error: the trainer reports per epoch.
    assert "skipped" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == "shards.loader"]
    per_epoch = {0: loader.EpochErrors(), 1: loader.EpochErrors()}
    for b in batches:
        per_epoch[b["epoch"]].update(b)
    for errors in per_epoch.values():
        by_shard = errors.by_shard()
        # The shard with the undecodable sample and the cut one, each named once.
        assert set(by_shard) == {"train-000000.tar", "train-000002.tar"}
        assert by_shard["train-000000.tar"][0] > 0 and by_shard["train-000002.tar"][1] > 0
        assert sum(v[0] for v in by_shard.values()) == errors.totals()[0]
        lines = loader.shard_report(by_shard)
        assert len(lines) == 2
        assert lines[0].startswith("train-000000.tar: skipped ") and "corrupt samples" in lines[0]
        assert lines[1].startswith("train-000002.tar: skipped ") and "unreadable" in lines[1]
    # Validation's tally logs one warning per bad shard, naming it.
    bad = data / "shards" / "val-000000.tar"
    bad.write_bytes(bad.read_bytes()[:3000])
    tally = loader.ErrorTally()
    list(loader.val_batches(Index.load(data).paths("val"), 2, SEGMENT, tally=tally))
    logged = [r.getMessage() for r in caplog.records if r.name == "shards.loader"]
    assert len(logged) == 1 and "val-000000.tar" in logged[0] and tally.bad_shards == 1


def test_epoch_data_errors_are_printed_only_when_some_were_skipped(capsys, monkeypatch):
    """A clean epoch prints nothing (it used to print "skipped 0 … and 0 …" every epoch); a
    dirty one names the shard, then the totals. Both go into the history."""
    monkeypatch.setattr(loop, "all_reduce_sum", lambda values: values)  # one rank, no group
    monkeypatch.setattr(loop, "print0", print)
    run, state = SimpleNamespace(world=1), TrainState(step=3)
    errors = loader.EpochErrors()
    errors.update({"worker": 0, "bad_samples": 0, "bad_shards": 0})
    loop.report_epoch(run, state, 0, errors)
    assert capsys.readouterr().out == ""
    bad = {"worker": 0, "bad_samples": 2, "bad_shards": 1}
    errors.update({**bad, "bad_by_shard": {"train-000007.tar": [2, 1]}})
    loop.report_epoch(run, state, 1, errors)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1: train-000007.tar: skipped 2")
    assert lines[1] == "epoch 1 (step 3): skipped 2 corrupt samples and 1 unreadable shard reads"
    reported = state.history["data_errors"]
    history = [(e["epoch"], e["bad_samples"], e["bad_shards"]) for e in reported]
    assert history == [(0, 0, 0), (1, 2, 1)]


def test_final_line_states_how_many_listed_val_items_were_scored():
    data = SimpleNamespace(val_windows=55)
    args = SimpleNamespace(max_val_items=0)
    coverage = val_coverage(data, args, {"items": 35})
    assert coverage == "; scored 35 of 55 listed val items (20 unreadable)"
    assert val_coverage(data, args, {"items": 55}) == "; scored 55 of 55 listed val items"
    args.max_val_items = 10
    assert val_coverage(data, args, {"items": 10}) == "; scored 10 of 10 listed val items"
