"""The preprocessing pipeline: every file accounted for, right decisions, clean shards,
and byte-identical output whatever the worker count or interruptions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from shards import read_samples
from tests.conftest import REPO, preprocess, read_jsonl, run_cmd

SHARD_MB = "0.3"


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every output file that must be byte-identical across runs."""
    names = [
        "index.json",
        "files.jsonl",
        "manifest.jsonl",
        *sorted(p.relative_to(out).as_posix() for p in (out / "shards").glob("*.tar")),
    ]
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


def test_every_input_file_has_exactly_one_record(synth_corpus, synth_out):
    corpus, truth = synth_corpus
    records = read_jsonl(synth_out / "files.jsonl")
    on_disk = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())
    assert [r["path"] for r in records] == on_disk
    assert {r["path"] for r in records} == {t["path"] for t in truth}
    for r in records:
        assert r["status"] in ("kept", "rejected")
        assert (r["status"] == "kept") == (r["reason"] in ("ok", "normalized"))


def test_decisions_match_ground_truth_class_by_class(synth_corpus, synth_out):
    _, truth = synth_corpus
    records = {r["path"]: r for r in read_jsonl(synth_out / "files.jsonl")}
    wrong = defaultdict(list)
    for t in truth:
        r = records[t["path"]]
        if (r["status"], r["reason"]) != (t["expected_status"], t["expected_reason"]):
            wrong[t["class"]].append(
                f"{t['path']}: got {r['status']}/{r['reason']} ({r['detail']}), "
                f"expected {t['expected_status']}/{t['expected_reason']}"
            )
    assert not wrong, "\n".join(f"{c}: {m}" for c, ms in wrong.items() for m in ms)


def test_quiet_intact_speech_is_kept_and_normalized(synth_corpus, synth_out):
    _, truth = synth_corpus
    records = {r["path"]: r for r in read_jsonl(synth_out / "files.jsonl")}
    quiet = [records[t["path"]] for t in truth if t["class"] == "quiet_speech"]
    assert quiet
    for r in quiet:
        assert r["status"] == "kept" and r["reason"] == "normalized"
        assert r["gain_db"] > 20 and r["segments"] > 0
        assert r["peak"] < 0.01  # the original filter would have thrown it away


def test_one_file_of_each_duplicate_group_is_kept(synth_corpus, synth_out):
    records = read_jsonl(synth_out / "files.jsonl")
    groups = defaultdict(list)
    for r in records:
        if r["bytes"]:
            groups[r["sha256"]].append(r)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    assert dup_groups
    for g in dup_groups:
        assert sum(r["reason"] != "duplicate" for r in g) == 1
        first = min(g, key=lambda r: r["path"])
        assert first["reason"] != "duplicate"


def test_shards_hold_whole_utterances_that_match_the_index_and_manifest(synth_out):
    index = json.loads((synth_out / "index.json").read_text())
    records = {r["path"]: r for r in read_jsonl(synth_out / "files.jsonl")}
    assert index["format_version"] == 2 and "segment_samples" not in index
    cap = index["utterance_max_samples"]
    manifest = read_jsonl(synth_out / index["manifest"])
    rows = iter(manifest)
    sources = defaultdict(set)
    per_file = defaultdict(int)
    assert len(index["shards"]) >= 3
    for entry in index["shards"]:
        path = synth_out / "shards" / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        samples = list(read_samples(path))
        assert len(samples) == entry["samples"]
        srcs = [s["meta"]["source"] for s in samples]
        same_neighbours = sum(a == b for a, b in zip(srcs, srcs[1:], strict=False))
        most = max(srcs.count(x) for x in set(srcs))
        # Neighbours share a file only when one file holds more than half the shard.
        assert same_neighbours == max(0, 2 * most - len(srcs) - 1), entry["name"]
        for s in samples:
            a, m, meta = s["audio"], s["mask"], s["meta"]
            assert 1 <= a.size <= cap and np.isfinite(a).all() and np.abs(a).max() <= 1.0
            assert meta["samples"] == a.size and meta["valid"] == [[0, a.size]] and m.all()
            assert meta["split"] == entry["split"]
            row = next(rows)  # the manifest lists the same utterances in the same order
            assert (row["key"], row["shard"], row["split"]) == (s["key"], path.name, meta["split"])
            assert (row["samples"], row["source"], row["offset"]) == (
                a.size,
                meta["source"],
                meta["offset"],
            )
            assert row["seconds"] == row["valid_seconds"] == a.size / 16000
            sources[s["meta"]["source"]].add(entry["split"])
            per_file[s["meta"]["source"]] += 1
    assert all(len(splits) == 1 for splits in sources.values()), "a file is in both splits"
    assert {split for splits in sources.values() for split in splits} == {"train", "val"}
    assert next(rows, None) is None
    for path, n in per_file.items():
        assert records[path]["status"] == "kept" and records[path]["segments"] == n


def test_one_and_two_workers_and_script_entry_give_identical_bytes(
    synth_corpus, synth_out, tmp_path
):
    out1 = tmp_path / "w1"
    run = preprocess(
        synth_corpus[0], out1, "--workers", "1", "--shard-mb", SHARD_MB, "--timings", script=True
    )
    assert tree_digest(out1) == tree_digest(synth_out)
    # --timings: the run's own phases, in order, each with its wall and CPU seconds.
    table = run.stdout[run.stdout.index("phase ") :].splitlines()
    names = [line[:26].strip() for line in table[1:-1]]
    assert names == [
        "start-up: Ray",
        "start-up: actors",
        "listing",
        "hash + probe",
        "plan: dedupe, units",
        "scan",
        "split + shard groups",
        "shard",
        "assembly: shards, manifest",
        "assembly: files.jsonl",
        "assembly: stats.zarr",
        "assembly: index.json",
    ]
    scan = next(line for line in table if line.startswith("scan "))
    assert float(scan.split()[-1]) > 0  # the workers' CPU seconds in the scan
    assert table[-1].startswith("total")


def test_kill_9_mid_run_then_rerun_gives_identical_bytes(synth_corpus, synth_out, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "preprocess.run",
        "--input",
        str(synth_corpus[0]),
        "--output",
        str(out),
        "--workers",
        "2",
        "--shard-mb",
        SHARD_MB,
        "--no-report",
    ]
    # A private, short TMPDIR: the killed run's Ray temp dir lands there, and the rerun
    # must clear it (kill -9 skips the run's own clean-up).
    tmp_root = Path(tempfile.mkdtemp(prefix="tck-", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TMPDIR": str(tmp_root)}
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    units = out / ".work" / "units"
    while time.time() < deadline and proc.poll() is None:
        if units.exists() and list(units.glob("unit-*[0-9]")):
            break  # at least one unit committed: kill in the middle of the rest
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists(), "run finished before it could be killed"
    assert list(tmp_root.glob("tcray-*")), "the killed run left no Ray temp dir to clear"
    rerun = ["-m", "preprocess.run", "--input", str(synth_corpus[0]), "--output", str(out)]
    run_cmd([*rerun, "--workers", "2", "--shard-mb", SHARD_MB, "--no-report"], env=env)
    assert tree_digest(out) == tree_digest(synth_out)
    assert not list(tmp_root.iterdir()), "the killed run's Ray temp dir outlived the rerun"
    shutil.rmtree(tmp_root, ignore_errors=True)


def test_rerun_on_finished_output_changes_nothing(synth_corpus, synth_out):
    before = tree_digest(synth_out)
    preprocess(synth_corpus[0], synth_out, "--workers", "2", "--shard-mb", SHARD_MB)
    assert tree_digest(synth_out) == before


def test_other_config_on_same_output_is_refused(synth_corpus, synth_out):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "preprocess.run",
            "--input",
            str(synth_corpus[0]),
            "--output",
            str(synth_out),
            "--max-utterance-seconds",
            "8",
            "--no-report",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert proc.returncode == 2
    assert "another config" in proc.stderr


def test_stats_store_aligns_with_files_jsonl(synth_out):
    from preprocess.out.stats_store import read_stats

    stats = read_stats(synth_out / "stats.zarr")
    records = read_jsonl(synth_out / "files.jsonl")
    cols = stats["files"]
    assert list(cols["path"]) == [r["path"] for r in records]
    reasons = stats["attrs"]["reasons"]
    assert [reasons[i] for i in cols["reason"]] == [r["reason"] for r in records]
    offs = stats["frame_offsets"]
    assert offs.shape == (len(records) + 1,)
    for i, r in enumerate(records):
        n = offs[i + 1] - offs[i]
        if r["status"] == "kept":
            # 20 ms frames over the decoded file (at most one partial frame dropped)
            assert abs(n * 0.02 - r["seconds"]) < 0.05
            rms = stats["frame_values"][offs[i] : offs[i + 1]]
            assert np.isfinite(rms).all()


def test_index_states_each_split_and_val_lands_within_one_group(synth_out):
    """totals.splits holds files, groups, hours and the share asked vs achieved; val is
    whole groups (speaker folders, or files where the folders are too few to hold val, as
    in this 3-folder corpus: totals.split_grouping says which), within one group of its
    target, none shared with train."""
    from preprocess.plan.split import val_target_seconds

    index = json.loads((synth_out / "index.json").read_text())
    records = read_jsonl(synth_out / "files.jsonl")
    splits = index["totals"]["splits"]
    kept = [r for r in records if r["status"] == "kept"]
    by_folder = index["totals"]["split_grouping"] == "dir"

    def group_of(path: str) -> str:
        return path.split("/")[0] if by_folder else path

    groups: dict[str, set[str]] = defaultdict(set)
    for r in kept:
        groups[group_of(r["path"])].add(r["split"])
    assert all(len(s) == 1 for s in groups.values()), "a group is in both splits"
    for split in ("train", "val"):
        rs = [r for r in kept if r["split"] == split]
        s = splits[split]
        assert s["files"] == len(rs) and s["files"] > 0
        assert s["groups"] == sum(1 for g in groups.values() if split in g)
        assert s["hours"] == pytest.approx(sum(r["seconds"] for r in rs) / 3600, abs=1e-5)
    assert splits["val"]["asked_fraction"] == 0.05
    assert splits["val"]["fraction"] + splits["train"]["fraction"] == pytest.approx(1.0)
    # Planned on the audio the decisions kept (what the utterances hold), per group.
    planned = defaultdict(float)
    for r in kept:
        planned[group_of(r["path"])] += r["valid_seconds"]
    total = sum(planned.values())
    target = val_target_seconds(total, 0.05, index["config"]["min_val_seconds"])
    val_planned = sum(v for g, v in planned.items() if "val" in groups[g])
    assert abs(val_planned - target) <= max(planned.values())
    assert splits["val"]["fraction"] == pytest.approx(val_planned / total, abs=1e-5)


def test_a_run_that_keeps_nothing_says_so():
    """2 000 files all `short` ended rc 0 with a table and no word that OUT is empty; the
    CLI now ends such a run with this one line and exit 1 (tests/e2e/test_run_guarantees.py)."""
    from preprocess.summary import unusable_result

    empty = {"segments": 0, "files": 0, "shards": 0, "valid_hours": 0.0}
    totals = {"by_reason": {"short": {"files": 3, "hours": 0.001}}, "files": 3}
    line = unusable_result({"totals": {**totals, "splits": {"train": empty}}})
    assert line.startswith("nothing kept: all 3 files were rejected")
    kept = {"train": {**empty, "segments": 5}}
    assert unusable_result({"totals": {**totals, "splits": kept}}) is None
    # A split manifest that lists every kept file as val leaves nothing to train on.
    all_val = {"train": empty, "val": {**empty, "segments": 5}}
    line = unusable_result({"totals": {**totals, "splits": all_val}})
    assert line.startswith("train is empty: every kept utterance is in val")
