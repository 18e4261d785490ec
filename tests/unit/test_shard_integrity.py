"""Readers against untrusted data dirs and damaged or swapped shards: a folder name is never
run as a command, and what is read is checked against index.json (sample count, sha256,
split), in the training stream, in validation batches and in `telucodec eval`, with every
shortfall counted and named; nothing scored is exit 1."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from shards import Index, ShardWriter, loader, read_samples
from shards.reader import ALLOW_PIPE_ENV
from telucodec.checkpoint import save_codec
from telucodec.configs import get_config
from telucodec.model import Codec
from telucodec_cli.main import main as telucodec_main
from tests.unit.test_windows import finish_out, manifest_row, utterance_meta

SEGMENT = 8000


def make_out(root: Path, train=(4, 4), val=(3, 3), encoding: str = "flac") -> Path:
    """A small format-2 OUT: shards/{train,val}-NNNNNN.tar of utterances of `SEGMENT`
    samples (the odd ones half as long), index.json with each shard's count, bytes and
    sha256, and manifest.jsonl. Windows of SEGMENT give one window per utterance."""
    rng = np.random.default_rng(0)
    listed, rows = [], []
    for split, sizes in (("train", train), ("val", val)):
        for number, n in enumerate(sizes):
            name = f"{split}-{number:06d}.tar"
            with ShardWriter(root / "shards" / name, encoding=encoding) as writer:
                for i in range(n):
                    length = SEGMENT if i % 2 == 0 else SEGMENT // 2
                    audio = rng.uniform(-0.3, 0.3, length).astype(np.float32)
                    source = f"{split}/{number}/{i}.wav"
                    key = shards.sample_key(f"{split}{number}x{i}", 0)
                    meta = utterance_meta(split, source, length)
                    writer.write(key, audio, [[0, length]], meta)
                    rows.append(manifest_row(key, name, split, length, length, source))
            listed.append({**writer.info.to_dict(), "split": split})
    return finish_out(root, listed, rows)


def blank_header_checksum(shard: Path, member: int) -> None:
    """Blank the checksum field of one member's tar header (bytes 148–156 of its block):
    tarfile then ends the archive there without an error."""
    with tarfile.open(shard) as tar:
        offset = tar.getmembers()[member].offset
    data = bytearray(shard.read_bytes())
    data[offset + 148 : offset + 156] = b" " * 8
    shard.write_bytes(bytes(data))


def flip_audio_byte(shard: Path, sample: int) -> None:
    """Flip one byte in the middle of a sample's audio member (its PCM, for npy)."""
    with tarfile.open(shard) as tar:
        info = tar.getmembers()[2 * sample]
    assert ".audio." in info.name
    data = bytearray(shard.read_bytes())
    data[info.offset_data + info.size - 100] ^= 0x40
    shard.write_bytes(bytes(data))


def stream(out: Path, per_epoch: int = 12) -> loader.TrainStream:
    return loader.TrainStream(
        Index.load(out).entries("train"),
        batch_size=2,
        batches_per_epoch=per_epoch,
        window_samples=2000,
        shuffle_buffer=2,
        seed=1,
    )


def one_epoch(out: Path, per_epoch: int = 12) -> tuple[list[dict], loader.EpochErrors]:
    batches = iter(loader.train_loader(stream(out, per_epoch), num_workers=0))
    got = [next(batches) for _ in range(per_epoch)]
    errors = loader.EpochErrors()
    for batch in got:
        errors.update(batch)
    return got, errors


def keys(batches: list[dict]) -> list[str]:
    return [key for batch in batches for key in batch["key"]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained `tiny` codec: eval's figures do not matter here, what it reads does."""
    torch.manual_seed(0)
    return save_codec(tmp_path_factory.mktemp("ckpt") / "tiny", Codec(get_config("tiny")))


def run_eval(checkpoint: Path, data: Path | str, *extra: str) -> int:
    args = ["eval", "--checkpoint", str(checkpoint), "--data-dir", str(data)]
    flags = ["--kbps", "6", "--perceptual-items", "0", "--segment-seconds", "0.5"]
    return telucodec_main([*args, *flags, *extra])


# ------------------------------------------------------------------- untrusted data dirs


def test_data_dir_named_like_a_pipe_url_is_read_as_a_folder_and_runs_nothing(
    tmp_path, monkeypatch, checkpoint, capsys
):
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    pwned = tmp_path / "PWNED"
    cwd = tmp_path / "cwd"
    name = f"pipe:touch {pwned};false"  # relative: its first part is `pipe:touch `
    make_out(cwd / name)
    monkeypatch.chdir(cwd)
    assert run_eval(checkpoint, name, "--out", "report.json") == 0
    assert not pwned.exists(), "a shard path ran as a shell command"
    assert json.loads(Path("report.json").read_text())["bitrates"]["6"]["items"] == 6
    index = Index.load(name)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in index.paths("train"))
    assert len(list(read_samples(index.paths("val")))) == 6
    assert len(list(read_samples(index.entries("val")))) == 6
    tally = loader.ErrorTally(quiet=True)
    batches = loader.val_batches(index.entries("val"), 4, SEGMENT, tally=tally)
    assert sum(len(b["key"]) for b in batches) == 6
    assert tally.totals() == [0] * len(loader.SHARD_COUNTS)
    batches, errors = one_epoch(Path(name), per_epoch=3)
    assert len(keys(batches)) == 6 and errors.by_shard() == {}
    by_path = loader.TrainStream(index.paths("train"), batch_size=2, batches_per_epoch=2)
    assert next(iter(loader.train_loader(by_path, num_workers=0)))["bad_shards"] == 0
    assert not pwned.exists(), "a shard path ran as a shell command"
    capsys.readouterr()


def test_data_dir_with_a_colon_is_a_plain_folder(tmp_path, monkeypatch, checkpoint, capsys):
    make_out(tmp_path / "data:v2")
    monkeypatch.chdir(tmp_path)
    assert run_eval(checkpoint, "data:v2") == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].split()[:2] == ["6", "6"] and out.err == ""
    assert len(list(read_samples(Index.load("data:v2").entries("train")))) == 8


# ------------------------------------------------------------------- damaged tar header


def test_damaged_header_mid_shard_is_a_counted_shortfall_in_the_train_stream(tmp_path):
    out = make_out(tmp_path, train=(6, 4))
    blank_header_checksum(out / "shards" / "train-000000.tar", member=2 * 2)  # sample 2's audio
    batches, errors = one_epoch(out)
    # Only the damaged shard is named (cut reads of the intact one are no shortfall); every
    # whole read of it lacks its last 4 samples and differs from index.json.
    by_shard = errors.by_shard()
    assert set(by_shard) == {"train-000000.tar"}
    skipped, reads, missing, other, sha = by_shard["train-000000.tar"]
    assert reads >= 1 and missing == 4 * reads and sha == reads and skipped == other == 0
    assert errors.totals() == (0, reads)
    assert not any(k.startswith(("train0x2", "train0x3")) for k in keys(batches))
    [line] = loader.shard_report(by_shard)
    assert line == (
        f"train-000000.tar: {missing} samples index.json lists not read; "
        f"sha256 differs from index.json in {reads} reads"
    )


def test_damaged_header_is_counted_in_validation_and_eval(tmp_path, checkpoint, capsys):
    out = make_out(tmp_path, val=(5, 3))
    blank_header_checksum(out / "shards" / "val-000000.tar", member=2 * 2)
    tally = loader.ErrorTally(quiet=True)
    items = keys(list(loader.val_batches(Index.load(out).entries("val"), 2, SEGMENT, tally=tally)))
    assert len(items) == 2 + 3
    assert tally.bad_shards == 1 and tally.total("missing_samples") == 3
    assert any(
        "val-000000.tar" in m and "read 2 samples, index.json lists 5" in m for m in tally.messages
    )
    # Two ranks read every shard, but their tallies sum to the one bad read.
    per_rank = [loader.ErrorTally(quiet=True) for _ in range(2)]
    for rank, t in enumerate(per_rank):
        list(loader.val_batches(Index.load(out).entries("val"), 2, SEGMENT, rank, 2, tally=t))
    assert loader.merge_by_shard(*(t.by_shard for t in per_rank)) == tally.by_shard

    report = tmp_path / "eval.json"
    assert run_eval(checkpoint, out, "--out", str(report)) == 0
    err = capsys.readouterr().err
    assert "val-000000.tar" in err and "3 samples index.json lists not read" in err
    written = json.loads(report.read_text())
    assert written["bitrates"]["6"]["items"] == 5
    assert (written["bad_shards"], written["missing_samples"], written["sha256_mismatches"]) == (
        1,
        3,
        1,
    )


def test_reads_cut_by_the_epoch_end_or_max_items_are_no_shortfall(tmp_path):
    out = make_out(tmp_path, train=(4, 4), val=(3, 3))
    batches, errors = one_epoch(out, per_epoch=3)  # 6 of the shards' 8 samples
    assert len(keys(batches)) == 6 and errors.by_shard() == {} and errors.totals() == (0, 0)
    tally = loader.ErrorTally(quiet=True)
    entries = Index.load(out).entries("val")
    assert len(keys(list(loader.val_batches(entries, 2, SEGMENT, max_items=4, tally=tally)))) == 4
    assert tally.totals() == [0] * len(loader.SHARD_COUNTS) and tally.messages == []


# ------------------------------------------------------------ swapped or altered shards


def test_val_shard_copied_over_a_train_shard_is_never_trained_on(tmp_path, checkpoint, capsys):
    out = make_out(tmp_path, train=(4, 4), val=(4,))
    val = (out / "shards" / "val-000000.tar").read_bytes()
    (out / "shards" / "train-000001.tar").write_bytes(val)
    batches, errors = one_epoch(out)
    assert keys(batches) and not any(k.startswith("val") for k in keys(batches))
    by_shard = errors.by_shard()
    assert set(by_shard) == {"train-000001.tar"}
    skipped, reads, missing, other, sha = by_shard["train-000001.tar"]
    assert other == skipped > 0 and sha >= 1 and missing == 0
    [line] = loader.shard_report(by_shard)
    assert line.startswith(f"train-000001.tar: skipped {other} samples of another split; ")
    assert "sha256 differs from index.json" in line
    with pytest.raises(shards.SplitMismatchError, match="train-000001.tar.*split 'val'.*'train'"):
        list(read_samples(Index.load(out).entries("train")))

    # eval of the train split: the val items are skipped and counted, the shard named.
    report = tmp_path / "eval.json"
    assert run_eval(checkpoint, out, "--split", "train", "--out", str(report)) == 0
    err = capsys.readouterr().err
    assert "skipped samples of another split" in err and "train-000001.tar" in err
    written = json.loads(report.read_text())
    assert written["bitrates"]["6"]["items"] == 4 and written["other_split"] == 4


def test_one_flipped_audio_byte_is_a_sha256_mismatch_naming_the_shard(tmp_path):
    out = make_out(tmp_path, train=(4, 4), val=(3, 3), encoding="npy")
    flip_audio_byte(out / "shards" / "val-000001.tar", sample=1)
    flip_audio_byte(out / "shards" / "train-000000.tar", sample=1)
    tally = loader.ErrorTally(quiet=True)
    entries = Index.load(out).entries("val")
    # npy PCM has no checksum of its own: every item decodes and is scored (the documented
    # cost of checking while streaming); the read is reported at its end.
    assert len(keys(list(loader.val_batches(entries, 2, SEGMENT, tally=tally)))) == 6
    assert tally.bad_shards == 1 and tally.total("sha256_mismatches") == 1
    assert tally.messages == [
        "shard differs from index.json: val-000001.tar: sha256 differs from index.json"
    ]
    with pytest.raises(shards.ShardMismatchError, match="val-000001.tar: sha256 differs"):
        list(read_samples(entries))
    _, errors = one_epoch(out)
    assert set(errors.by_shard()) == {"train-000000.tar"}
    [line] = loader.shard_report(errors.by_shard())
    assert line.startswith("train-000000.tar: sha256 differs from index.json in ")


# ------------------------------------------------------------------------ nothing scored


def test_eval_with_every_val_shard_missing_exits_1_with_one_line(tmp_path, checkpoint, capsys):
    out = make_out(tmp_path)
    for shard in (out / "shards").glob("val-*.tar"):
        shard.unlink()
    assert run_eval(checkpoint, out, "--out", str(tmp_path / "eval.json")) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("telucodec eval: error: scored none of the 6 val items index.json lists")
    assert "val-000000.tar" in line and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "eval.json").exists()
    args = ["compare", "--checkpoint", str(checkpoint), "--data-dir", str(out), "--kbps", "6"]
    args += ["--segment-seconds", "0.5"]
    assert telucodec_main([*args, "--out", str(tmp_path / "cmp")]) == 1
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("telucodec compare: error: scored none of the 6 val items")
    assert not (tmp_path / "cmp" / "compare.json").exists()


def test_member_declaring_a_huge_size_is_refused_before_it_is_read(tmp_path):
    from shards.reader import MAX_MEMBER_BYTES, iter_raw_samples

    # Only the header is written: a reader that trusted it would try to read 1 TiB.
    info = tarfile.TarInfo("k0.audio.flac")
    info.size = 1 << 40
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT))
    assert info.size > MAX_MEMBER_BYTES
    with pytest.raises(
        shards.ShardFormatError, match="train-000000.tar: member 'k0.audio.flac' declares"
    ):
        list(iter_raw_samples(shard))
