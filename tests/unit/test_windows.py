"""Windows cut at load time from utterance shards (format 2): the grid, the training phase,
the least-real-audio rule, padding, and validation windows that are the same for any world
size and for `telucodec eval`.

`write_out` builds a format-2 OUT (shards of utterances, index.json, manifest.jsonl) for
these tests and for tests/e2e/test_train.py, test_shard_integrity.py and test_codec_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from shards import Index, ShardWriter, encode_sample, loader
from telucodec.checkpoint import save_codec
from telucodec.configs import get_config
from telucodec.evaluate import evaluate
from telucodec.model import Codec
from telucodec_cli.main import main as telucodec_main
from training.setup import open_index

SR = 16000
UTTERANCE_MAX = 20 * SR  # the preprocess default, max_utterance_seconds 20


# ------------------------------------------------------------------ a format-2 OUT


def utterance_meta(split: str, source: str, samples: int) -> dict:
    """The json member of one utterance, `valid` aside (encode_sample adds it)."""
    return {
        "source": source,
        "offset": 0,
        "gain_db": 0.0,
        "sample_rate": SR,
        "split": split,
        "samples": samples,
    }


def manifest_row(key: str, shard: str, split: str, samples: int, valid: int, source: str) -> dict:
    """One manifest.jsonl line (shards/manifest.py)."""
    return {
        "key": key,
        "shard": shard,
        "split": split,
        "samples": samples,
        "seconds": samples / SR,
        "valid_seconds": valid / SR,
        "source": source,
        "offset": 0,
    }


def finish_out(
    root: Path, listed: list[dict], rows: list[dict], utterance_max: int = UTTERANCE_MAX
) -> Path:
    """index.json (format 2) and manifest.jsonl (rows in shard-name order, then as given)
    for shards already written under root/shards."""
    rows = sorted(rows, key=lambda r: r["shard"])  # stable: order within a shard kept
    shards.write_manifest(root, rows)
    index = {
        "shards": listed,
        "utterance_max_samples": utterance_max,
        "sample_rate": SR,
        "manifest": shards.MANIFEST_NAME,
    }
    shards.write_index(root, index)
    return root


def voiced(rng: np.random.Generator, n: int) -> np.ndarray:
    """A harmonic tone under a slow envelope: speech-like enough for a codec's figures."""
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 220)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 6))
    return (0.07 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def write_out(root: Path, lengths: dict[str, Sequence[Sequence[int]]], seed: int = 0) -> Path:
    """An OUT whose split `s` has shards s-000000.tar, … holding utterances of the given
    lengths in samples (`{"train": [[16000, 8000], [24000]], "val": [[40000]]}`)."""
    rng = np.random.default_rng(seed)
    listed, rows = [], []
    for split, per_shard in lengths.items():
        for number, sizes in enumerate(per_shard):
            name = f"{split}-{number:06d}.tar"
            with ShardWriter(root / "shards" / name) as writer:
                for i, n in enumerate(sizes):
                    key = shards.sample_key(f"{split}{number}u{i}", 0)
                    source = f"{split}/{number}/{i}.wav"
                    writer.write(key, voiced(rng, n), [[0, n]], utterance_meta(split, source, n))
                    rows.append(manifest_row(key, name, split, n, n, source))
            listed.append({**writer.info.to_dict(), "split": split})
    return finish_out(root, listed, rows)


def take(stream: loader.TrainStream, n: int, workers: int) -> list[dict]:
    """The first n batches of a fresh DataLoader over `stream`."""
    batches = iter(loader.train_loader(stream, num_workers=workers))
    return [next(batches) for _ in range(n)]


def keys(batches) -> list[str]:
    return [key for batch in batches for key in batch["key"]]


# ------------------------------------------------------------------------- the grid


def test_validation_windows_cover_an_utterance_on_the_fixed_grid():
    full = [[0, 40000]]
    # 2.5 s at S = 1 s: windows at 0, 1, 2 s; the last holds 0.5 s, exactly the least.
    assert loader.window_starts(40000, full, SR) == [0, 16000, 32000]
    assert loader.window_starts(39999, [[0, 39999]], SR) == [0, 16000]  # 0.49994 s: dropped
    for n in (1, 7999, 8000, 16000, 16001, 39999, 40000, 100_000):
        assert loader.grid_windows(n, SR) == len(loader.window_starts(n, [[0, n]], SR))


def test_expected_training_windows_are_the_mean_over_every_phase():
    window = 40  # min_real_samples: 20
    for n in (5, 19, 20, 39, 40, 41, 59, 60, 61, 99, 100, 257):
        phases = range(loader.phase_span(n, window))
        counts = [len(loader.window_starts(n, [[0, n]], window, p)) for p in phases]
        assert loader.expected_windows(n, window) == pytest.approx(np.mean(counts)), n
        assert min(counts) >= 1 or n < 20  # every epoch, once an utterance has a window


def test_a_window_needs_half_its_length_or_one_second_of_real_audio():
    assert loader.min_real_samples(SR) == SR // 2
    assert loader.min_real_samples(4 * SR) == SR  # not 2 s: a short utterance still trains
    assert loader.window_starts(24000, [[0, 24000]], 4 * SR) == [0]
    assert loader.window_starts(15999, [[0, 15999]], 4 * SR) == []
    # Real audio is the `valid` runs, not the length.
    assert loader.window_starts(16000, [[0, 3000], [10000, 14000]], SR) == []
    assert loader.window_starts(16000, [[0, 3000], [10000, 15000]], SR) == [0]


def test_short_utterance_gives_one_window_padded_and_masked(tmp_path):
    out = write_out(tmp_path, {"train": [[12000, 12000, 12000]], "val": [[12000]]})
    stream = loader.TrainStream(
        Index.load(out).entries("train"), batch_size=3, batches_per_epoch=2, shuffle_buffer=3
    )
    batches = take(stream, 2, workers=0)
    for batch in batches:
        assert batch["audio"].shape == (3, SR) and batch["mask"].shape == (3, SR)
        assert batch["mask"][:, :12000].all() and not batch["mask"][:, 12000:].any()
        assert not batch["audio"][:, 12000:].any() and batch["audio"][:, :12000].abs().sum() > 0
        assert all(key.endswith("@0") for key in batch["key"])
    val = list(loader.val_batches(Index.load(out).entries("val"), 4, SR))
    assert keys(val) == ["val0u0-00000@0"] and int(val[0]["mask"].sum()) == 12000


# ----------------------------------------------------------------- the training phase


def _windows(sample: dict, seed: int, epoch: int, window: int = 4000) -> list[str]:
    return [w["key"] for w in loader.cut_windows([sample], window, seed, epoch)]


def test_training_phase_differs_per_epoch_and_repeats_exactly():
    n = 50_000
    sample = loader.utterance("f-00000", np.ones(n, np.int16), {"valid": [[0, n]]})
    by_epoch = [_windows(sample, seed=5, epoch=e) for e in range(4)]
    assert len({tuple(w) for w in by_epoch}) > 1  # another phase in another epoch
    assert by_epoch == [_windows(sample, seed=5, epoch=e) for e in range(4)]  # replayable
    for epoch, names in enumerate(by_epoch):
        phase = loader.window_phase(5, epoch, "f-00000", n, 4000)
        assert 0 <= phase < 4000
        assert names[0] == f"f-00000@{phase}"
        assert all(int(k.split("@")[1]) % 4000 == phase for k in names)


def _gapped_out(root: Path) -> Path:
    """An OUT whose utterances have gaps (several `valid` runs, zeros between) and lengths
    that are no multiple of the window, so windows are padded and masked inside too."""
    rng = np.random.default_rng(4)
    listed, rows = [], []
    for split, count in (("train", 5), ("val", 3)):
        name = f"{split}-000000.tar"
        with ShardWriter(root / "shards" / name) as writer:
            for i in range(count):
                n = 30_000 + 7_777 * i
                runs = [[0, 9_000], [12_000 + 100 * i, n - 500 * i]]
                audio = np.zeros(n, np.float32)
                for start, end in runs:
                    audio[start:end] = voiced(rng, end - start)
                key = shards.sample_key(f"{split}g{i}", 0)
                meta = utterance_meta(split, f"{split}/{i}.wav", n)
                writer.write(key, audio, runs, meta)
                rows.append(manifest_row(key, name, split, n, n, f"{split}/{i}.wav"))
        listed.append({**writer.info.to_dict(), "split": split})
    return finish_out(root, listed, rows)


def _expected_window(decoded: dict, key: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """A window `<key>@<start>` as read_samples decodes it: float32 int16/32767 and the
    mask of the `valid` runs, zero-padded and masked past the utterance's end."""
    utterance, start = key.rsplit("@", 1)
    sample, start = decoded[utterance], int(start)
    audio, mask = np.zeros(window, np.float32), np.zeros(window, bool)
    part = sample["audio"][start : start + window]
    audio[: part.size], mask[: part.size] = part, sample["mask"][start : start + window]
    return audio, mask


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_hold_exactly_the_decoded_audio_and_mask_of_their_windows(tmp_path, workers):
    """The loader keeps int16 and builds batches itself (for speed): every window is still
    bit for bit what `read_samples` decodes, masked by the `valid` runs, in training (any
    phase, with workers) and in validation."""
    out = _gapped_out(tmp_path)
    index = Index.load(out)
    window = 8_000
    for split in ("train", "val"):
        decoded = {s["key"]: s for s in shards.read_samples(index.entries(split))}
        if split == "train":
            stream = loader.TrainStream(
                index.entries(split), batch_size=3, batches_per_epoch=4, window_samples=window
            )
            batches = take(stream, 8, workers=workers)
        else:
            batches = list(loader.val_batches(index.entries(split), 3, window))
        assert batches
        for batch in batches:
            assert batch["audio"].dtype == torch.float32 and batch["mask"].dtype == torch.bool
            for row, key in enumerate(batch["key"]):
                audio, mask = _expected_window(decoded, key, window)
                assert np.array_equal(
                    batch["audio"][row].numpy().view(np.int32), audio.view(np.int32)
                )
                assert np.array_equal(batch["mask"][row].numpy(), mask), key
        masks = torch.cat([b["mask"] for b in batches])
        assert not masks.all() and masks.any(axis=1).all()  # gaps and padding masked out


def test_windows_of_one_utterance_are_spread_over_batches(tmp_path):
    out = write_out(tmp_path, {"train": [[10 * SR] * 4, [10 * SR] * 4], "val": [[SR]]})
    stream = loader.TrainStream(
        Index.load(out).entries("train"), batch_size=8, batches_per_epoch=6, shuffle_buffer=4
    )
    batches = take(stream, 6, workers=0)
    utterances = [len({k.split("@")[0] for k in b["key"]}) for b in batches]
    assert min(utterances) >= 3, utterances  # the window shuffle mixes utterances


def test_more_workers_than_batches_per_epoch_keeps_the_epochs_in_order(tmp_path):
    """A worker with no batch in an epoch skips it: webdataset's with_epoch(0) would be
    endless and the run would get another epoch's batch (`AssertionError: (1, 2)`)."""
    out = write_out(tmp_path, {"train": [[SR, SR]], "val": [[SR]]})
    stream = loader.TrainStream(
        Index.load(out).entries("train"), batch_size=2, batches_per_epoch=1, shuffle_buffer=2
    )
    got = take(stream, 5, workers=2)
    assert [b["epoch"] for b in got] == [0, 1, 2, 3, 4]


def test_batches_per_epoch_come_from_the_manifest_windows(tmp_path):
    out = write_out(tmp_path, {"train": [[4 * SR, SR], [SR // 4]], "val": [[SR]]})
    rows = Index.load(out).manifest("train")
    # 4 s: (64000 − 8000 + 1) / 16000 = 3.5; 1 s: 1; 0.25 s: under the least, 0.
    assert loader.count_windows(rows, SR, grid=False) == 4
    assert loader.count_windows(rows, SR, grid=True) == 5
    assert loader.batches_per_epoch(4, 2, 1) == 2 and loader.batches_per_epoch(4, 8, 1) == 1


# ------------------------------------------------------------------------- validation


def test_validation_windows_are_the_same_for_one_and_two_ranks(tmp_path, monkeypatch):
    out = write_out(
        tmp_path, {"train": [[SR]], "val": [[40000, 12000, 70000], [5000, 33000], [16000]]}
    )
    entries = Index.load(out).entries("val")
    one = [b["key"] for b in loader.val_batches(entries, 3, SR)]
    decoded: dict[int, list[str]] = {0: [], 1: []}
    two = {}
    real = loader.decode_pcm
    for rank in (0, 1):

        def spy(members, rank=rank, **kwargs):
            decoded[rank].append(members["__key__"])
            return real(members, **kwargs)

        monkeypatch.setattr(loader, "decode_pcm", spy)
        two[rank] = [b["key"] for b in loader.val_batches(entries, 3, SR, rank, 2)]
    assert two[0] == one[0::2] and two[1] == one[1::2]
    flat = sum(one, [])
    listed = loader.count_windows(Index.load(out).manifest("val"), SR, grid=True)
    # 2.5 s → 3, 0.75 s → 1, 4.375 s → 4, 0.3125 s → 0, 2.0625 s → 2, 1 s → 1
    assert len(flat) == len(set(flat)) == listed == 11
    # Batches of 3: rank 1 has windows 3-5 and 9-10, none of the first utterance's 0-2,
    # so it never decodes it; rank 0 does not decode the last one (window 10).
    assert decoded[1] == ["val0u1-00000", "val0u2-00000", "val1u1-00000", "val2u0-00000"]
    assert decoded[0] == ["val0u0-00000", "val0u2-00000", "val1u1-00000"]


def test_eval_scores_the_windows_training_validated_on(tmp_path, capsys):
    out = write_out(tmp_path / "out", {"train": [[SR]], "val": [[40000, 12000], [70000]]})
    torch.manual_seed(0)
    model = Codec(get_config("tiny"))
    ckpt = save_codec(tmp_path / "final", model, extra={"segment_seconds": 0.5})
    report = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(ckpt), "--data-dir", str(out), "--kbps", "6"]
    assert telucodec_main([*args, "--perceptual-items", "0", "--out", str(report)]) == 0
    got = json.loads(report.read_text())
    assert got["segment_seconds"] == 0.5
    # Training's validation over two ranks: the same windows, the same figures.
    entries = Index.load(out).entries("val")
    total = None
    for rank in (0, 1):
        part = evaluate(model, loader.val_batches(entries, 4, SR // 2, rank, 2), [6.0])
        total = part.vector() if total is None else total + part.vector()
    part.load_vector(total)
    expected = part.figures()["6"]
    # 2.5 s → 5 windows of 0.5 s, 0.75 s → 2, 4.375 s → 9 (the last 0.375 s, ≥ 0.25 s)
    assert got["bitrates"]["6"]["items"] == expected["items"] == 16
    assert got["bitrates"]["6"]["masked_snr_db"] == pytest.approx(expected["masked_snr_db"])
    # --segment-seconds overrides the record; longer than the utterances is one line, exit 2.
    assert telucodec_main([*args, "--segment-seconds", "1", "--perceptual-items", "0"]) == 0
    capsys.readouterr()
    assert telucodec_main([*args, "--segment-seconds", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--segment-seconds 30" in err and "utterance_max_samples 320000" in err


def test_a_sample_whose_audio_disagrees_with_its_json_samples_is_skipped_and_counted(tmp_path):
    root = tmp_path / "out"
    name = "val-000000.tar"
    with ShardWriter(root / "shards" / name) as writer:
        for i, says in enumerate((SR, 2 * SR, SR)):
            meta = utterance_meta("val", f"v{i}.wav", SR)
            sample = encode_sample(
                f"v{i}-00000", voiced(np.random.default_rng(i), SR), [[0, SR]], meta
            )
            sample["json"] = json.dumps({**json.loads(sample["json"]), "samples": says}).encode()
            writer.write_encoded(sample)
    finish_out(root, [{**writer.info.to_dict(), "split": "val"}], [])
    tally = loader.ErrorTally(quiet=True)
    got = keys(loader.val_batches(Index.load(root).entries("val"), 2, SR, tally=tally))
    assert got == ["v0-00000@0", "v2-00000@0"]
    assert tally.bad_samples == 1 and "32000" in tally.messages[0]


# ------------------------------------------------------------------ training's refusals


def test_training_refuses_an_old_format_and_a_window_over_the_cap_in_one_line(tmp_path, capsys):
    out = write_out(tmp_path / "out", {"train": [[SR]], "val": [[SR]]})
    with pytest.raises(SystemExit) as exit_:
        open_index(str(out), 21 * SR, SR)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "--segment-seconds 21 is longer" in err and "utterance_max_samples 320000" in err
    assert open_index(str(out), 20 * SR, SR).utterance_max_samples == UTTERANCE_MAX
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "format_version": 1}))
    with pytest.raises(SystemExit) as exit_:
        open_index(str(out), SR, SR)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "re-run" in err
