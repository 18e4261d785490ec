"""Shards from anywhere: the readers take webdataset URLs (`file:`, `http:`, and `pipe:` when
TELUCODEC_ALLOW_PIPE=1), every error still names the shard, and Hugging Face `datasets`
loads the same shards."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import shards
from shards import ShardFormatError, ShardWriter, read_samples
from shards.loader import ErrorTally, TrainStream, read_shards
from shards.reader import ALLOW_PIPE_ENV, shard_name


def _write(path: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(3)
    with ShardWriter(path, encoding="flac") as w:
        for i in range(n):
            audio = np.zeros(16000, np.float32)
            audio[:12000] = rng.uniform(-0.5, 0.5, 12000).astype(np.float32)
            meta = {"source": f"spk/{i}.wav", "offset": 0, "gain_db": -1.5, "sample_rate": 16000}
            w.write(
                shards.sample_key(f"f{i:03d}", i), audio, [[0, 12000]], {**meta, "split": "train"}
            )
    return path


def _keys_and_audio(url: str | Path) -> list[tuple[str, np.ndarray]]:
    return [(s["key"], s["audio"]) for s in read_samples(url)]


@contextmanager
def serve(directory: Path, seconds: float = 60.0) -> Iterator[str]:
    """A local HTTP server for `directory` on 127.0.0.1 (a free port); stops when the block
    ends, or by itself after `seconds` whatever happens."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def allow_pipe(monkeypatch):
    """`pipe:` URLs run a shell command: readers refuse them without this opt-in."""
    monkeypatch.setenv(ALLOW_PIPE_ENV, "1")


def test_pipe_and_file_urls_read_the_same_samples_as_the_path(tmp_path, allow_pipe):
    path = _write(tmp_path / "train-000000.tar")
    expected = _keys_and_audio(path)
    for url in (f"pipe:cat {path}", f"file:{path}"):
        got = _keys_and_audio(url)
        assert [k for k, _ in got] == [k for k, _ in expected], url
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))


def test_http_url_reads_the_same_samples(tmp_path):
    path = _write(tmp_path / "train-000001.tar")
    with serve(tmp_path) as base:
        got = _keys_and_audio(f"{base}/train-000001.tar")
    assert [k for k, _ in got] == [k for k, _ in _keys_and_audio(path)]


def test_loader_stage_reads_urls_and_names_the_shard(tmp_path, allow_pipe):
    path = _write(tmp_path / "train-000002.tar")
    tally = ErrorTally()
    raw = list(read_shards([{"url": f"pipe:cat {path}"}], tally))
    assert len(raw) == 3 and {m["__shard__"] for m in raw} == {"train-000002.tar"}
    assert tally.bad_shards == 0


def test_url_errors_name_the_shard(tmp_path, allow_pipe):
    missing = tmp_path / "train-000009.tar"
    with pytest.raises(ShardFormatError, match=r"train-000009\.tar .*pipe:cat"):
        list(read_samples(f"pipe:cat {missing} 2>/dev/null"))
    data = _write(tmp_path / "train-000004.tar").read_bytes()
    (tmp_path / "train-000005.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardFormatError, match=r"train-000005\.tar.*f00"):
        list(read_samples(f"pipe:cat {tmp_path / 'train-000005.tar'}"))
    with serve(tmp_path) as base, pytest.raises(ShardFormatError, match=r"train-000404\.tar"):
        list(read_samples(f"{base}/train-000404.tar"))  # HTTP 404: curl -f fails


def test_pipe_url_is_refused_without_the_opt_in_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PIPE_ENV, raising=False)
    path = _write(tmp_path / "train-000007.tar")
    marker = tmp_path / "RAN"
    url = f"pipe:touch {marker}; cat {path}"
    with pytest.raises(
        ShardFormatError, match=f"pipe: URL runs a shell command; set {ALLOW_PIPE_ENV}=1"
    ):
        list(read_samples(url))
    tally = ErrorTally(quiet=True)
    assert list(read_shards([{"url": url}], tally)) == [] and tally.bad_shards == 1
    with pytest.raises(ShardFormatError, match=ALLOW_PIPE_ENV):
        TrainStream([url], batch_size=1, batches_per_epoch=1)
    assert not marker.exists()
    # A path object is a file whatever its name says; so is a string with no gopen scheme.
    odd = tmp_path / "pipe:touch RAN;false" / "data:v2"
    odd.mkdir(parents=True)
    shard = odd / "train-000008.tar"
    shard.write_bytes(path.read_bytes())
    assert len(_keys_and_audio(shard)) == 3
    monkeypatch.chdir(tmp_path / "pipe:touch RAN;false")
    assert len(_keys_and_audio("data:v2/train-000008.tar")) == 3
    assert not marker.exists() and not (tmp_path / "pipe:touch RAN;false" / "RAN").exists()


def test_shard_name_is_found_in_paths_and_urls():
    assert shard_name("/d/shards/val-000001.tar") == "val-000001.tar"
    assert shard_name("pipe:aws s3 cp s3://b/x/train-000003.tar -") == "train-000003.tar"
    assert shard_name("https://h/b/train-000004.tar?sig=1") == "train-000004.tar"


def test_hugging_face_datasets_loads_a_shard_with_audio_and_meta(tmp_path):
    datasets = pytest.importorskip("datasets")
    from shards.hf import hf_features

    path = _write(tmp_path / "train-000006.tar")
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"train": [str(path)]},
        split="train",
        features=hf_features(),
        cache_dir=str(tmp_path / "hf-cache"),
    )
    ours = next(read_samples(path))
    row = ds[0]
    assert len(ds) == 3 and row["__key__"] == ours["key"]
    pcm, rate = sf.read(io.BytesIO(row["audio.flac"]), dtype="float32")
    assert rate == 16000 and np.allclose(pcm * 32768 / 32767, ours["audio"], atol=1e-6)
    assert row["json"]["valid"] == [[0, 12000]] and row["json"]["source"] == "spk/0.wav"
    assert row["json"] == {k: ours["meta"][k] for k in row["json"]}
