"""Reruns and OUT ownership: nothing lost, nothing stale.

A rerun reuses a finished unit only if what it read is unchanged; an OUT holds exactly
one run's output; a folder the tool did not write is never written into.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from shards import Index
from tests.conftest import REPO, preprocess, read_jsonl
from tests.e2e.test_pipeline import tree_digest
from tests.e2e.test_robustness import _speechlike

# One worker and ~2.5 s of audio per unit: each speaker file is its own unit and shard.
SMALL = ("--workers", "1", "--shard-mb", "0.05")
CORPUS = {
    "spk_a/1.wav": 1,
    "spk_a/2.wav": 2,
    "spk_b/1.wav": 3,
    "spk_b/2.wav": 4,
    "spk_c/1.wav": 5,
    "spk_d/1.wav": 6,
}


def write_wav(path: Path, seed: int, seconds: float = 2.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _speechlike(seconds, 16000, seed=seed), 16000)


def make_corpus(root: Path, files: dict[str, int]) -> Path:
    for rel, seed in files.items():
        write_wav(root / rel, seed)
    return root


def preprocess_rc(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Like conftest.preprocess, but returns a failing run instead of raising."""
    return subprocess.run(
        [sys.executable, "-m", "preprocess.run", "--input", str(corpus), "--output", str(out)]
        + ["--no-report", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )


def test_rerun_after_kill_in_assembly_on_changed_input_equals_a_clean_run(tmp_path):
    corpus = make_corpus(tmp_path / "in", CORPUS)
    out = tmp_path / "out"
    preprocess(corpus, out, *SMALL, "--keep-work")
    # What kill -9 leaves once assembly has begun: units committed, shards placed, no index.
    (out / "index.json").unlink()
    (out / "files.jsonl").unlink()
    shutil.rmtree(out / "stats.zarr")
    # The user adds a file and re-records another, then reruns the same command.
    write_wav(corpus / "spk_a/0.wav", seed=7)
    write_wav(corpus / "spk_c/1.wav", seed=8)
    preprocess(corpus, out, *SMALL)
    clean = tmp_path / "clean"
    preprocess(corpus, clean, *SMALL)
    assert len(read_jsonl(out / "files.jsonl")) == len(CORPUS) + 1
    assert tree_digest(out) == tree_digest(clean)
    assert sorted(os.listdir(out / "shards")) == [s.name for s in Index.load(out).shards]


def test_a_lost_shard_group_is_rewritten_by_redoing_the_units_whose_spools_were_freed(
    tmp_path,
):
    """A group's spools are freed once it is written (the split is decided after every
    unit); a rerun that must write it again redoes just those units, then the group."""
    corpus = make_corpus(tmp_path / "in", CORPUS)
    out = tmp_path / "out"
    preprocess(corpus, out, *SMALL, "--keep-work")
    first = tree_digest(out)
    units = tmp_path / "out" / ".work" / "units"
    assert not list(units.glob("*/samples.bin"))  # every spool freed by its groups
    groups = out / ".work" / "groups"
    before = {p.parent.name: p.stat().st_mtime_ns for p in groups.glob("*/done.json")}
    assert len(before) > 1
    shutil.rmtree(groups / "group-000000")
    (out / "index.json").unlink()
    preprocess(corpus, out, *SMALL, "--keep-work")
    assert tree_digest(out) == first
    after = {p.parent.name: p.stat().st_mtime_ns for p in groups.glob("*/done.json")}
    rewritten = sorted(g for g in after if after[g] != before.get(g))
    assert rewritten == ["group-000000"]  # the others were reused as they were
    assert not list(units.glob("*/samples.bin"))  # the redone units' spools freed again


def test_other_or_changed_input_is_refused_and_overwrite_leaves_no_stale_shard(tmp_path):
    first = make_corpus(tmp_path / "a", CORPUS)
    other = make_corpus(tmp_path / "b", {"spk_x/1.wav": 11, "spk_x/2.wav": 12})
    out = tmp_path / "out"
    preprocess(first, out, *SMALL)
    before = tree_digest(out)
    # Another input path: refused before anything starts.
    err = _refusal(other, out)
    assert "another input" in err and str(first) in err and "--overwrite" in err
    # The same path with other bytes: refused once planning has hashed them.
    write_wav(first / "spk_b/1.wav", seed=9)
    err = _refusal(first, out)
    assert "0 files added, 1 changed, 0 removed (e.g. spk_b/1.wav)" in err
    assert "--overwrite" in err
    assert tree_digest(out) == before
    preprocess(other, out, *SMALL, "--overwrite")
    listed = [s.name for s in Index.load(out).shards]
    assert sorted(os.listdir(out / "shards")) == listed
    assert len(listed) < len(before) - 2  # the first run's other train/val shards are gone
    assert {r["path"] for r in read_jsonl(out / "files.jsonl")} == {"spk_x/1.wav", "spk_x/2.wav"}


def _refusal(corpus: Path, out: Path) -> str:
    """The one-line error of a run that must be refused."""
    proc = preprocess_rc(corpus, out, *SMALL)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stderr.strip().splitlines()[-1]


def test_a_folder_the_tool_did_not_write_is_never_written_into(tmp_path):
    corpus = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1})
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "train-000000.tar").write_bytes(b"the user's own tar")
    for extra in ((), ("--overwrite",)):
        proc = preprocess_rc(corpus, out, "--workers", "1", *extra)
        assert proc.returncode == 2
        assert "not written by preprocess.run" in proc.stderr
        assert (out / "shards" / "train-000000.tar").read_bytes() == b"the user's own tar"
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
            "shards",
            "shards/train-000000.tar",
        ]


def test_missing_input_fails_before_ray_starts_or_output_is_made(tmp_path, monkeypatch, capsys):
    from preprocess import run

    _no_ray(monkeypatch)
    missing, out = tmp_path / "no-such-corpus", tmp_path / "out"
    args = ["--input", str(missing), "--output", str(out), "--workers", "1", "--no-report"]
    assert run.main(args) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


def _no_ray(monkeypatch):
    from preprocess import pipeline

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a run that cannot begin")

    monkeypatch.setattr(pipeline, "ray_session", no_ray)


def test_an_input_inside_the_output_is_refused_before_overwrite_clears_it(
    tmp_path, monkeypatch, capsys
):
    """--overwrite removes OUT's report/, shards/, .work: an input in there went with it."""
    from preprocess import run
    from preprocess.config import load_config
    from preprocess.out.outdir import claim_output

    _no_ray(monkeypatch)
    out = tmp_path / "out"
    claim_output(out, tmp_path / "elsewhere", load_config(), overwrite=False)  # OUT is ours
    corpus = make_corpus(out / "report" / "corpus", {"spk_a/1.wav": 1})
    args = ["--input", str(corpus), "--output", str(out), "--overwrite", "--no-report"]
    assert run.main(args) == 2
    assert "must not lie inside the output" in capsys.readouterr().err
    assert (corpus / "spk_a" / "1.wav").is_file()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    from preprocess import run

    _no_ray(monkeypatch)
    corpus = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    args = ["--input", str(corpus), "--output", str(blocker / "out"), "--no-report"]
    assert run.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be written" in err[0], err


def test_a_unit_is_reused_only_with_the_same_inputs_and_all_its_parts(tmp_path):
    from dataclasses import replace

    import pytest

    from preprocess.actors.unit import process_unit, unit_dir, unit_is_done, unit_key
    from preprocess.config import PreprocessConfig
    from preprocess.plan.planner import InputFile, WorkUnit, fingerprint

    root = make_corpus(tmp_path / "in", {"a.wav": 1, "b.wav": 2})
    files = {r["path"]: InputFile(**r) for r in fingerprint(root, ["a.wav", "b.wav"])}
    unit, cfg, work = WorkUnit(0, ["a.wav", "b.wav"]), PreprocessConfig(), tmp_path / "w"
    done = process_unit(unit, files, root, work, cfg)
    key = unit_key(unit, files, cfg)
    assert unit_is_done(work, 0, key)
    rewritten = {**files, "b.wav": replace(files["b.wav"], sha256="0" * 64)}
    assert unit_key(unit, rewritten, cfg) != key
    assert unit_key(WorkUnit(0, ["a.wav"]), files, cfg) != key
    # A .work committed by other code (e.g. tars with PAX headers) is redone, not mixed in.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("preprocess.actors.unit.running_code_version", lambda: "0.0+src.older")
        assert unit_key(unit, files, cfg) != key
    (unit_dir(work, 0) / done["parts"][0]["name"]).unlink()
    assert not unit_is_done(work, 0, key)
    # Once its shard groups are written the unit's parts are gone by design: the unit is
    # still reused for the split and assembly, as long as no group need be written again.
    assert unit_is_done(work, 0, key, need_parts=False)
    assert not unit_is_done(work, 0, unit_key(unit, rewritten, cfg), need_parts=False)


def test_a_shard_group_is_written_only_from_units_of_the_same_key_and_reused_by_its_key(
    tmp_path,
):
    from dataclasses import replace

    import pytest

    from preprocess.actors.shard_group import (
        StaleUnitError,
        group_dir,
        group_is_done,
        group_key,
        write_group,
    )
    from preprocess.actors.unit import process_unit, unit_dir, unit_key
    from preprocess.config import PreprocessConfig
    from preprocess.plan.planner import InputFile, ShardGroup, WorkUnit, fingerprint

    root = make_corpus(tmp_path / "in", {"a.wav": 1, "b.wav": 2, "c.wav": 3})
    files = {r["path"]: InputFile(**r) for r in fingerprint(root, ["a.wav", "b.wav", "c.wav"])}
    cfg, work = PreprocessConfig(), tmp_path / "w"
    units = [WorkUnit(0, ["a.wav", "b.wav"]), WorkUnit(1, ["c.wav"])]
    for unit in units:
        process_unit(unit, files, root, work, cfg)
    keys = {u.unit_id: unit_key(u, files, cfg) for u in units}
    group = ShardGroup(0, "val", [(0, 1), (1, 0)])  # b.wav and c.wav; a.wav to another
    gkey = group_key(group, keys, cfg.digest())
    assert not group_is_done(work, 0, gkey)
    # A unit committed for other bytes (the plan's key differs): nothing is written.
    rewritten = {**files, "c.wav": replace(files["c.wav"], sha256="0" * 64)}
    stale_keys = {**keys, 1: unit_key(units[1], rewritten, cfg)}
    with pytest.raises(StaleUnitError, match="unit 1"):
        write_group(group, stale_keys, work, cfg)
    assert not group_dir(work, 0).exists()
    assert group_key(group, stale_keys, cfg.digest()) != gkey
    done = write_group(group, keys, work, cfg)
    assert done["group_key"] == gkey and group_is_done(work, 0, gkey)
    rows = [json.loads(line) for line in (group_dir(work, 0) / "part-000.jsonl").open()]
    assert sorted(r["source"] for r in rows) == ["b.wav", "c.wav"]
    assert {r["split"] for r in rows} == {"val"}  # the spool's samples had no split yet
    assert (unit_dir(work, 0) / "samples.bin").exists()  # the driver frees spools, later
    assert not group_is_done(work, 0, group_key(group, stale_keys, cfg.digest()))
    for other in (ShardGroup(0, "train", group.members), ShardGroup(0, "val", [(0, 1)])):
        assert not group_is_done(work, 0, group_key(other, keys, cfg.digest()))
    (group_dir(work, 0) / done["shards"][0]["name"]).unlink()
    assert not group_is_done(work, 0, gkey)


def test_a_damaged_fingerprint_cache_is_a_cache_miss_not_an_error(tmp_path):
    """A rerun read .work/fingerprints.jsonl with json.loads and stopped at a damaged line
    ("preprocess: error: Expecting ',' delimiter", naming no file)."""
    from preprocess.pipeline import _cache_line, _load_fingerprint_cache, _stat_key

    root = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1, "spk_b/1.wav": 2})
    cache = tmp_path / "fingerprints.jsonl"
    paths = ("spk_a/1.wav", "spk_b/1.wav")
    cache.write_text("".join(_cache_line(_stat_key(root, p), {"path": p}) for p in paths))
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0][:-5] + "\n" + lines[1] + "\n{}\n[1]\n")
    assert list(_load_fingerprint_cache(cache, root)) == ["spk_b/1.wav"]
    cache.write_bytes(b"\xff\xfe not text")
    assert _load_fingerprint_cache(cache, root) == {}


def test_a_split_that_cannot_be_made_is_refused_before_any_file_is_scanned(tmp_path):
    """The split waits for the decisions; its errors (a regex that misses an audio file)
    must not wait for hours of scanning: exit 2, one line, no unit committed."""
    corpus = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1, "other/2.wav": 2})
    out = tmp_path / "out"
    run = preprocess_rc(corpus, out, "--workers", "1", "--split-by", "re:^(spk_[a-z])/")
    assert run.returncode == 2, run.stderr
    err = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "match no speaker" in err[0] and "other/2.wav" in err[0]
    assert not list((out / ".work").glob("units/unit-*"))


def test_hashes_journaled_before_a_kill_are_reused_and_a_torn_line_is_skipped(tmp_path):
    """Each batch's hashes are appended to the cache as they arrive (no pause for a full
    save), so a kill mid-hash of 100 k files keeps what was hashed."""
    from preprocess.pipeline import _cache_line, _load_fingerprint_cache, _stat_key

    root = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1, "spk_b/1.wav": 2})
    cache = tmp_path / "fingerprints.jsonl"
    a, b = ({"path": p, "sha256": p[4]} for p in ("spk_a/1.wav", "spk_b/1.wav"))
    key_a, key_b = _stat_key(root, a["path"]), _stat_key(root, b["path"])
    torn = _cache_line(key_b, b)[:-9]  # kill -9 mid-write
    cache.write_text(_cache_line(key_a, {**a, "sha256": "old"}) + _cache_line(key_a, a) + torn)
    loaded = _load_fingerprint_cache(cache, root)
    assert {p: hit.rec for p, hit in loaded.items()} == {"spk_a/1.wav": a}  # the last line wins


def test_a_file_changed_after_its_hash_is_hashed_again_by_the_rerun(tmp_path, monkeypatch):
    """Before: the driver took a file's stat key when the worker's hash came back (and
    again when it rewrote the cache), so a file rewritten in between (same size, mtime put
    back) was cached with the old hash under the new key: every rerun reused the stale
    hash. The key is now taken before the file is read."""
    from preprocess import pipeline
    from preprocess.measure.stage_times import PhaseClock
    from preprocess.plan.planner import fingerprint

    root = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1, "spk_b/1.wav": 2})
    changed = root / "spk_a/1.wav"

    def hash_then_change(pool, batches):
        for batch in batches:
            recs = fingerprint(root, batch)
            st = changed.stat()
            data = bytearray(changed.read_bytes())
            data[-1] ^= 1  # same size; the mtime is put back below
            changed.write_bytes(bytes(data))
            os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
            yield recs

    monkeypatch.setattr(pipeline, "fingerprint_on", hash_then_change)
    work = tmp_path / "work"
    work.mkdir()
    cfg = pipeline.PreprocessConfig()
    first = pipeline._plan(root, cfg, work, [], PhaseClock())
    stale = next(f.sha256 for f in first if f.path == "spk_a/1.wav")
    reused = pipeline._load_fingerprint_cache(work / pipeline.FINGERPRINTS, root)
    assert "spk_a/1.wav" not in reused and "spk_b/1.wav" in reused
    monkeypatch.setattr(
        pipeline,
        "fingerprint_on",
        lambda pool, batches: map(lambda batch: fingerprint(root, batch), batches),
    )
    again = pipeline._plan(root, cfg, work, [], PhaseClock())
    fresh = next(f.sha256 for f in again if f.path == "spk_a/1.wav")
    assert fresh != stale and fresh == fingerprint(root, ["spk_a/1.wav"])[0]["sha256"]


def test_a_stamp_that_is_a_folder_is_one_line(tmp_path, monkeypatch, capsys):
    from preprocess import run
    from preprocess.out.outdir import STAMP

    _no_ray(monkeypatch)
    corpus = make_corpus(tmp_path / "in", {"spk_a/1.wav": 1})
    (tmp_path / "out" / STAMP).mkdir(parents=True)
    assert run.main(["--input", str(corpus), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a file" in err[0], err
