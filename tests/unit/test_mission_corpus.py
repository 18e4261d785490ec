"""The mission-shaped benchmark corpus (benchmarks/mission_corpus.py) is what it claims:
unique files, lengths around 4 s, full folders, its planted faults, and repeatable bytes."""

from __future__ import annotations

import hashlib
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import mission_corpus as mc  # noqa: E402

HOURS = 0.15  # ~120 files: more than one block of 100, a few seconds to write
FOLDER_FILES = 40  # small folders, so the corpus has several of them


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.wav"))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> mc.MissionCorpus:
    out = tmp_path_factory.mktemp("mission") / "corpus"
    return mc.generate(out, HOURS, seed=7, folder_files=FOLDER_FILES, jobs=2)


def test_every_file_is_unique_by_sha256(corpus):
    hashes = digests(corpus.root)
    assert len(hashes) == corpus.files
    assert len(set(hashes.values())) == corpus.files


def test_hours_add_up_and_truth_matches_the_headers(corpus):
    truth = mc.read_truth(corpus.root)
    assert len(truth) == corpus.files
    assert HOURS * 3600 <= corpus.seconds < HOURS * 3600 + mc.MAX_SECONDS
    for rec in truth:
        if rec["kind"] != "truncated":  # its header declares the whole length
            info = sf.info(corpus.root / rec["path"])
            assert (info.samplerate, info.channels) == (16000, 1)
            assert info.frames == round(rec["seconds"] * 16000), rec["path"]


def test_lengths_are_lognormal_with_median_near_four_seconds(corpus):
    good = [r["seconds"] for r in mc.read_truth(corpus.root) if r["kind"] == "good"]
    assert 3.4 < statistics.median(good) < 4.6
    assert min(good) >= mc.MIN_SECONDS and max(good) <= mc.MAX_SECONDS
    # The whole plan of a large corpus, without writing it: median and tail.
    plan = mc.plan_files(20.0, seed=7)
    seconds = plan.samples[plan.kinds == 0] / mc.SAMPLE_RATE
    assert abs(float(np.median(seconds)) - mc.MEDIAN_SECONDS) < 0.1
    assert 0.005 < float(np.mean(seconds > 8.0)) < 0.1


def test_folders_hold_folder_files_each_but_the_last(corpus):
    sizes = [len(list(d.iterdir())) for d in sorted(corpus.root.iterdir())]
    assert len(sizes) == -(-corpus.files // FOLDER_FILES) > 1
    assert all(n == FOLDER_FILES for n in sizes[:-1]) and 0 < sizes[-1] <= FOLDER_FILES


def test_one_of_each_fault_in_every_hundred_files(corpus):
    truth = mc.read_truth(corpus.root)
    first = [r["kind"] for r in truth[: mc.BLOCK]]
    assert sorted(k for k in first if k != "good") == sorted(mc.KIND_NAMES[1:])
    assert mc.FAULT_SHARE == 0.05
    plan = mc.plan_files(20.0, seed=7)
    whole = plan.kinds.size // mc.BLOCK * mc.BLOCK
    assert float(np.mean(plan.kinds[:whole] != 0)) == pytest.approx(0.05)


def test_planted_faults_look_like_their_kind(corpus):
    for rec in mc.read_truth(corpus.root):
        path = corpus.root / rec["path"]
        if rec["kind"] == "truncated":
            declared = round(rec["seconds"] * 16000)
            assert path.stat().st_size < 44 + 2 * declared * 0.7
            continue
        x, _ = sf.read(path, dtype="float64")
        peak = float(np.max(np.abs(x)))
        if rec["kind"] == "short":
            assert rec["seconds"] < 0.5
        elif rec["kind"] == "quiet":
            assert sf.info(path).subtype == "FLOAT" and 1e-7 < peak < 2e-6
        elif rec["kind"] == "clipped":
            assert float(np.mean(np.abs(x) > 0.99)) > 0.005
        elif rec["kind"] == "mostly_silent":
            loud = np.abs(x) > 0.01 * peak
            assert float(np.mean(loud)) < 0.2
        else:
            assert 10 ** (-12.5 / 20) < peak <= 1.0 and float(np.mean(np.abs(x) > 0.99)) < 0.005


def test_same_seed_gives_same_bytes_whatever_the_jobs(corpus, tmp_path):
    again = mc.generate(tmp_path / "again", HOURS, seed=7, folder_files=FOLDER_FILES, jobs=1)
    assert digests(again.root) == digests(corpus.root)
    assert again.truth.read_bytes() == corpus.truth.read_bytes()


def test_another_seed_gives_other_files():
    plan = mc.plan_files(HOURS, seed=8)
    assert not np.array_equal(plan.samples[:50], mc.plan_files(HOURS, seed=7).samples[:50])


def test_a_smaller_plan_is_a_prefix_of_a_larger_one():
    small, large = mc.plan_files(1.0, seed=3), mc.plan_files(5.0, seed=3)
    n = small.kinds.size
    assert np.array_equal(small.kinds, large.kinds[:n])
    assert np.array_equal(small.samples, large.samples[:n])


def test_an_existing_out_is_refused(corpus):
    with pytest.raises(FileExistsError, match=str(corpus.root)):
        mc.generate(corpus.root, HOURS)


def test_a_slice_links_the_first_files_up_to_its_hours(corpus, tmp_path):
    dest, seconds, files = mc.slice_of(corpus.root, 0.05, tmp_path / "slice")
    assert seconds >= 0.05 * 3600 and files < corpus.files
    assert digests(dest) == {k: v for k, v in digests(corpus.root).items() if k in digests(dest)}
    assert len(mc.read_truth(dest)) == files == len(digests(dest))
