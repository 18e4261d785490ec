"""Robustness of the pipeline's units: bad files become reason codes, memory stays flat."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess.actors import unit as unit_mod
from preprocess.config import PreprocessConfig
from preprocess.plan.planner import InputFile, WorkUnit, fingerprint
from tests.conftest import run_cmd


def _speechlike(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics with pauses: active enough for the policy."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    syll = (np.sin(2 * np.pi * 3.0 * t) > -0.3).astype(float)
    x = x * syll + 0.001 * rng.standard_normal(t.size)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def _files(root: Path, names: list[str]) -> dict[str, InputFile]:
    recs = fingerprint(root, names)
    out = {}
    for r in recs:
        f = InputFile(**r)
        f.split = "train"
        out[f.path] = f
    return out


def test_an_exception_on_one_file_becomes_its_reason_and_others_go_on(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(root / name, _speechlike(3.0, 16000, seed=len(name)), 16000)
    files = _files(root, ["a.wav", "b.wav", "c.wav"])
    real = unit_mod.analyze_file

    def flaky(path, cfg, spool):
        if Path(path).name == "b.wav":
            raise MemoryError("simulated decoder blow-up")
        return real(path, cfg, spool)

    monkeypatch.setattr(unit_mod, "analyze_file", flaky)
    cfg = PreprocessConfig()
    done = unit_mod.process_unit(
        WorkUnit(0, ["a.wav", "b.wav", "c.wav"]), files, root, tmp_path / "work", cfg
    )
    recs = {
        json.loads(line)["path"]: json.loads(line)
        for line in (tmp_path / "work/units/unit-000000/files.jsonl").read_text().splitlines()
    }
    assert recs["b.wav"]["reason"] == "corrupt"
    assert "simulated decoder blow-up" in recs["b.wav"]["detail"]
    assert recs["a.wav"]["status"] == recs["c.wav"]["status"] == "kept"
    assert done["segments"] == recs["a.wav"]["segments"] + recs["c.wav"]["segments"] > 0


_RSS_PROBE = r"""
import json, resource, sys
from pathlib import Path
from preprocess.actors import unit as u
from preprocess.config import PreprocessConfig
from preprocess.plan.planner import InputFile, WorkUnit, fingerprint
root, name, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
f = InputFile(**fingerprint(root, [name])[0])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
done = u.process_unit(WorkUnit(0, [name]), {name: f}, root, work, PreprocessConfig())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"segments": done["segments"], "rss_kb": after, "growth_kb": after - before}))
"""


def _peak_rss(root: Path, name: str, work: Path) -> dict:
    proc = run_cmd(["-c", _RSS_PROBE, str(root), name, str(work)])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ten_minute_file_is_processed_with_flat_memory(tmp_path):
    """Peak RSS for a 10-minute 48 kHz stereo file stays within a few MB of a 1-minute one;
    loading it whole would take 230 MB at the source rate."""
    root = tmp_path / "in"
    root.mkdir()
    for name, minutes in (("one.wav", 1), ("ten.wav", 10)):
        with sf.SoundFile(root / name, "w", 48000, 2, subtype="PCM_16") as f:
            for i in range(minutes * 6):  # write in 10 s blocks: the test itself stays small
                block = _speechlike(10.0, 48000, seed=i)
                f.write(np.stack([block, 0.9 * block], axis=1))
    small = _peak_rss(root, "one.wav", tmp_path / "w1")
    large = _peak_rss(root, "ten.wav", tmp_path / "w10")
    assert large["segments"] > 9 * small["segments"]
    growth_mb = (large["rss_kb"] - small["rss_kb"]) / 1024
    print(f"peak RSS 1 min: {small['rss_kb'] >> 10} MB, 10 min: {large['rss_kb'] >> 10} MB")
    assert growth_mb < 40, f"peak RSS grew by {growth_mb:.1f} MB for a 10x longer file"


def test_script_and_module_entry_points_share_the_parser():
    out = run_cmd([str(Path(__file__).resolve().parents[2] / "preprocess" / "run.py"), "--help"])
    mod = run_cmd(["-m", "preprocess.run", "--help"])
    assert "--address" in out.stdout and "--workers" in out.stdout
    assert out.stdout.split("options:")[1] == mod.stdout.split("options:")[1]
    assert sys.executable


def test_undecodable_audio_formats_are_unsupported_not_junk(tmp_path):
    from preprocess.pipeline import plan_decision

    (tmp_path / "talk.M4A").write_bytes(b"\x00\x00\x00\x18ftypM4A junk")
    (tmp_path / "notes.txt").write_text("transcript")
    (tmp_path / "broken.wav").write_bytes(b"RIFF????WAVEjunk")
    files = _files(tmp_path, ["talk.M4A", "notes.txt", "broken.wav"])
    reasons = {p: plan_decision(f) for p, f in files.items()}
    assert reasons["talk.M4A"].reason == "unsupported_format"
    assert "ffmpeg" in reasons["talk.M4A"].detail
    assert reasons["notes.txt"].reason == "not_audio"
    assert reasons["broken.wav"].reason == "corrupt"
    assert reasons["broken.wav"].detail  # the decoder's own message


def test_overflowing_float_samples_are_rejected_not_measured_or_normalized(tmp_path):
    """A float WAV holding values no audio has: one 1e30 spike in speech (kept before, at
    −595 dB gain, every segment near digital silence) and speech at ±3.4e38 (called
    `silent` with null measurements, which crashed the report). A float file at int16
    scale (±32767) is still audio."""
    root = tmp_path / "in"
    root.mkdir()
    speech = _speechlike(3.0, 16000, seed=4)
    spike = speech.copy()
    spike[20000] = 1e30
    sf.write(root / "spike.wav", spike, 16000, subtype="FLOAT")
    sf.write(root / "max.wav", np.sign(speech) * 3.4e38, 16000, subtype="FLOAT")
    sf.write(root / "int16-scale.wav", speech * 32767, 16000, subtype="FLOAT")
    names = ["int16-scale.wav", "max.wav", "spike.wav"]
    files = _files(root, names)
    unit_mod.process_unit(WorkUnit(0, names), files, root, tmp_path / "work", PreprocessConfig())
    lines = (tmp_path / "work/units/unit-000000/files.jsonl").read_text().splitlines()
    recs = {r["path"]: r for r in map(json.loads, lines)}
    for name, count in (("spike.wav", 1), ("max.wav", None)):
        assert recs[name]["reason"] == "nonfinite", recs[name]
        assert "beyond ±32768" in recs[name]["detail"]
        assert recs[name]["nonfinite"] > 0 and count in (None, recs[name]["nonfinite"])
    # Under the limit, and not clipped either (float headroom is not a flat top): kept,
    # with the gain that brings it down to the loudness target.
    assert recs["int16-scale.wav"]["status"] == "kept", recs["int16-scale.wav"]
    assert recs["int16-scale.wav"]["gain_db"] < -60


def test_a_file_that_killed_its_worker_is_rejected_without_being_read(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(root / name, _speechlike(3.0, 16000, seed=len(name)), 16000)
    files = _files(root, ["a.wav", "b.wav"])
    real, read = unit_mod.analyze_file, []
    monkeypatch.setattr(unit_mod, "analyze_file", lambda p, *a: read.append(p) or real(p, *a))
    unit_mod.process_unit(
        WorkUnit(0, ["a.wav", "b.wav"]),
        files,
        root,
        tmp_path / "work",
        PreprocessConfig(),
        crashed={"b.wav": "the worker process died twice while reading this file"},
    )
    lines = (tmp_path / "work/units/unit-000000/files.jsonl").read_text().splitlines()
    recs = {r["path"]: r for r in map(json.loads, lines)}
    assert read == [root / "a.wav"]
    assert recs["b.wav"]["reason"] == "corrupt" and "died twice" in recs["b.wav"]["detail"]
    assert recs["a.wav"]["status"] == "kept"
    assert not list((tmp_path / "work/units/unit-000000").glob("in-progress"))


def _descendants(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids + [d for k in kids for d in _descendants(k)]


@pytest.mark.slow
def test_a_worker_killed_mid_unit_costs_a_task_not_the_run(tmp_path):
    """kill -9 of a worker (the OOM killer, a decoder's segfault) while it processes a unit:
    the run restarts it, sends the unit again and ends as a clean run does, byte for byte.
    Before: ActorDiedError, a 56-line traceback, exit 1."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import REPO, preprocess
    from tests.e2e.test_pipeline import tree_digest

    root = tmp_path / "in"
    (root / "long").mkdir(parents=True)
    sf.write(root / "short.wav", _speechlike(3.0, 16000, seed=1), 16000)
    with sf.SoundFile(root / "long" / "30min.wav", "w", 16000, 1, "PCM_16") as f:
        block = np.tile(_speechlike(10.0, 16000, seed=2), 6) * 0.5
        for _ in range(30):  # 30 minutes: seconds of work for the worker to die in
            f.write(block)
    cmd = [sys.executable, "-m", "preprocess.run", "--input", str(root), "--no-report"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [*cmd, "--output", str(tmp_path / "killed"), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed, deadline = None, time.monotonic() + 120
    markers = tmp_path / "killed" / ".work" / "units"
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        reading = [unit_mod.read_in_progress(m) for m in markers.glob("*.partial/in-progress")]
        if "long/30min.wav" not in reading:
            continue  # kill while the long file is being read, not between files
        for pid in _descendants(proc.pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"UnitWorker.process" in title:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
    out, err = proc.communicate(timeout=600)
    assert killed, "no worker was seen processing a unit"
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "a worker died reading" in err, err[-3000:]
    preprocess(root, tmp_path / "clean", "--workers", "1")
    assert tree_digest(tmp_path / "killed") == tree_digest(tmp_path / "clean")


def test_a_file_under_a_path_libsndfile_refuses_is_read_not_called_corrupt(tmp_path):
    """libsndfile refuses paths of 1024 bytes or more ("Supplied filename too long"): an
    intact file under deep Telugu folder names was rejected as corrupt."""
    root = tmp_path / "in"
    rel = "/".join(["తెలుగు" * 10] * 6) + "/utt.wav"  # 180-byte names, 1 087 bytes in all
    (root / rel).parent.mkdir(parents=True)
    with open(root / rel, "wb") as fh:  # soundfile cannot write there by path either
        sf.write(fh, _speechlike(3.0, 16000, seed=5), 16000, format="WAV")
    assert len(str(root / rel).encode()) >= 1024
    unit_mod.process_unit(
        WorkUnit(0, [rel]), _files(root, [rel]), root, tmp_path / "w", PreprocessConfig()
    )
    line = (tmp_path / "w/units/unit-000000/files.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    assert rec["status"] == "kept", rec["detail"]
    assert rec["seconds"] == pytest.approx(3.0)


def test_a_header_rate_under_1_khz_is_corrupt_not_upsampled(tmp_path):
    """A 12 KB WAV whose header says 1 Hz was scanned as 3 000 s (16 000× upsampling)."""
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "one-hz.wav", _speechlike(0.375, 16000, seed=3), 1)
    unit_mod.process_unit(
        WorkUnit(0, ["one-hz.wav"]),
        _files(root, ["one-hz.wav"]),
        root,
        tmp_path / "w",
        PreprocessConfig(),
    )
    rec = json.loads((tmp_path / "w/units/unit-000000/files.jsonl").read_text())
    assert rec["reason"] == "corrupt" and "invalid header: 1 Hz" in rec["detail"]


def test_headroom_is_only_a_float_files_and_a_clipped_mp3_stays_clipped(tmp_path):
    """Speech peaking at 8.0 in a FLOAT WAV is headroom (kept); the same speech hard-clipped
    and encoded as MP3 decodes past 1.0 (the decoder overshoots the flat tops), and its
    runs at ≥ 0.99 are still clipping."""
    root = tmp_path / "in"
    root.mkdir()
    speech = _speechlike(4.0, 16000, seed=6)
    sf.write(root / "headroom.wav", speech / np.abs(speech).max() * 8.0, 16000, subtype="FLOAT")
    # Driven 1.1× into the rails: 2.8 % of samples in flat runs, 0.45 % under a ceiling of 1.
    clipped = np.clip(speech / np.abs(speech).max() * 1.1, -1, 1)
    sf.write(root / "clipped.mp3", clipped, 16000, format="MP3")
    names = ["clipped.mp3", "headroom.wav"]
    unit_mod.process_unit(
        WorkUnit(0, names), _files(root, names), root, tmp_path / "w", PreprocessConfig()
    )
    lines = (tmp_path / "w/units/unit-000000/files.jsonl").read_text().splitlines()
    recs = {r["path"]: r for r in map(json.loads, lines)}
    assert recs["headroom.wav"]["status"] == "kept", recs["headroom.wav"]["detail"]
    assert recs["clipped.mp3"]["reason"] == "clipped", recs["clipped.mp3"]["detail"]
