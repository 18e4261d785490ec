"""Listing the input: every path is accounted for, nothing blocks, nothing loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from preprocess.out.stats_store import read_stats
from preprocess.pipeline import plan_decision
from preprocess.plan.planner import InputFile, fingerprint, list_inputs
from tests.conftest import preprocess, read_jsonl
from tests.e2e.test_rerun import write_wav

BAD = b"spk_a/bad\xff\xfe.wav"


def _odd_corpus(root: Path, outside: Path) -> None:
    """Two good speakers plus every kind of entry a real-world corpus folder holds."""
    write_wav(root / "spk_a/1.wav", seed=1)
    write_wav(root / "spk_b/1.wav", seed=2)
    write_wav(root / "spk_a/renamed.wav", seed=3)  # soundfile cannot write such a name
    os.rename(bytes(root / "spk_a/renamed.wav"), bytes(root) + b"/" + BAD)
    write_wav(outside, seed=4)
    os.mkfifo(root / "spk_b/a.wav")
    os.symlink("loop.wav", root / "spk_b/loop.wav")
    os.symlink("nowhere.wav", root / "spk_b/gone.wav")
    os.symlink("..", root / "spk_b/up")  # a directory link that would loop if followed
    os.symlink("../spk_a/1.wav", root / "spk_b/alias.wav")
    os.symlink(outside, root / "spk_b/outside.wav")


def test_odd_entries_and_bad_names_are_accounted_for_and_the_run_goes_on(tmp_path):
    corpus = tmp_path / "in"
    _odd_corpus(corpus, tmp_path / "elsewhere.wav")
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is a fine OUT
    preprocess(corpus, out, "--workers", "1")
    records = {r["path"]: r for r in read_jsonl(out / "files.jsonl")}
    reasons = {p: r["reason"] for p, r in records.items()}
    assert reasons == {
        "spk_a/1.wav": "ok",
        "spk_a/bad\\xff\\xfe.wav": "bad_name",
        "spk_b/1.wav": "ok",
        "spk_b/a.wav": "not_regular_file",
        "spk_b/alias.wav": "duplicate",  # a file link is followed: same bytes as spk_a/1.wav
        "spk_b/gone.wav": "broken_link",
        "spk_b/loop.wav": "symlink_loop",
        "spk_b/outside.wav": "ok",  # a file link out of the corpus is followed too
        "spk_b/up": "not_regular_file",  # a directory link is not
    }
    assert BAD.hex() in records["spk_a/bad\\xff\\xfe.wav"]["detail"]
    assert "FIFO" in records["spk_b/a.wav"]["detail"]
    stats = read_stats(out / "stats.zarr")
    assert list(stats["files"]["path"]) == list(records)
    names = stats["attrs"]["reasons"]
    assert [names[i] for i in stats["files"]["reason"]] == list(reasons.values())


def test_unreadable_directory_and_file_get_reason_unreadable(tmp_path, monkeypatch):
    """chmod 000 does not stop root (the test user here), so the kernel's refusal is
    simulated at the two calls that meet it: listing a directory, opening a file."""
    write_wav(tmp_path / "locked/x.wav", seed=1)
    write_wav(tmp_path / "secret.wav", seed=2)
    real_scandir, real_open = os.scandir, os.open

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def os_open(path, flags, *args, **kwargs):
        if Path(path).name == "secret.wav":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", os_open)
    listing = list_inputs(tmp_path)
    assert listing.files == ["secret.wav"]
    [locked] = listing.skipped
    assert (locked.path, plan_decision(locked).reason) == ("locked/", "unreadable")
    [secret] = [InputFile(**r) for r in fingerprint(tmp_path, ["secret.wav"])]
    decision = plan_decision(secret)
    assert decision.reason == "unreadable" and "Permission denied" in decision.detail
    assert decision.detail.endswith("fix its permissions")


def test_a_folder_deeper_than_path_max_is_unreadable_with_the_right_advice(tmp_path):
    """Made through directory descriptors: no path to it fits PATH_MAX (4096 bytes). The
    detail said "fix its permissions", which cannot help."""
    (tmp_path / "spk").mkdir()
    write_wav(tmp_path / "spk/ok.wav", seed=1)
    fd = os.open(tmp_path / "spk", os.O_RDONLY)
    try:
        for _ in range(17):  # 17 × 251 bytes
            os.mkdir("d" * 250, dir_fd=fd)
            deeper = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("x.wav", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    listing = list_inputs(tmp_path)
    assert listing.files == ["spk/ok.wav"]
    [deep] = listing.skipped
    assert deep.plan_reason == "unreadable"
    assert "shorten it" in deep.probe_error and "permissions" not in deep.probe_error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 entries anyway")
def test_chmod_000_directory_and_file_are_unreadable(tmp_path):
    write_wav(tmp_path / "locked/x.wav", seed=1)
    write_wav(tmp_path / "secret.wav", seed=2)
    (tmp_path / "locked").chmod(0)
    (tmp_path / "secret.wav").chmod(0)
    try:
        listing = list_inputs(tmp_path)
        assert [(f.path, f.plan_reason) for f in listing.skipped] == [("locked/", "unreadable")]
        [rec] = fingerprint(tmp_path, ["secret.wav"])
        assert rec["plan_reason"] == "unreadable"
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_a_fifo_is_never_opened_for_reading(tmp_path):
    """Listed as a FIFO, or swapped in after listing: either way no read blocks."""
    os.mkfifo(tmp_path / "pipe.wav")
    listing = list_inputs(tmp_path)
    assert [(f.path, f.plan_reason) for f in listing.skipped] == [("pipe.wav", "not_regular_file")]
    [rec] = fingerprint(tmp_path, ["pipe.wav"])
    assert rec["plan_reason"] == "not_regular_file"
