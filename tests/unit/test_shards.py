"""The shard format is the contract between preprocessing and training."""

from __future__ import annotations

import io
import json
import signal
import tarfile

import numpy as np
import pytest
import soundfile as sf

import shards
import shards.loader
from shards import ShardFormatError, ShardWriter, read_samples
from shards.format import to_int16


def _meta(i: int) -> dict:
    return {
        "source": f"spk/ü {i}.wav",
        "offset": 16000 * i,
        "gain_db": -3.5,
        "sample_rate": 16000,
        "split": "train",
    }


def _length(i: int) -> int:
    """Samples are utterances of any length (format 2)."""
    return 16000 + 4321 * i


def _write(path, n=4, encoding="flac", seed=0):
    rng = np.random.default_rng(seed)
    written = []
    with ShardWriter(path, encoding=encoding) as w:
        for i in range(n):
            audio = np.zeros(_length(i), np.float32)
            n_valid = _length(i) - 3000 * i
            audio[:n_valid] = rng.uniform(-0.9, 0.9, n_valid).astype(np.float32)
            key = shards.sample_key(f"f{i:03d}", i)
            w.write(key, audio, [[0, n_valid]], _meta(i))
            written.append((key, audio, n_valid))
    return w.info, written


@pytest.mark.parametrize("encoding", ["flac", "npy"])
def test_round_trip_keeps_audio_within_int16_step_and_mask_meta_exact(tmp_path, encoding):
    info, written = _write(tmp_path / "train-000000.tar", encoding=encoding)
    samples = list(read_samples([tmp_path / "train-000000.tar"]))
    assert [s["key"] for s in samples] == [k for k, _, _ in written]
    for s, (key, audio, n_valid) in zip(samples, written, strict=True):
        i = int(key.split("-")[1])
        assert s["audio"].dtype == np.float32 and s["audio"].shape == (_length(i),)
        assert np.max(np.abs(s["audio"] - audio)) <= 0.5 / 32767 + 1e-7
        assert s["mask"].dtype == bool
        assert s["mask"].sum() == n_valid and s["mask"][:n_valid].all()
        # `samples` comes from the audio, so a reader counts windows without decoding it.
        assert s["meta"] == {**_meta(i), "valid": [[0, n_valid]], "samples": _length(i)}
    assert info.samples == 4


def test_writer_records_count_and_sha256_of_final_bytes(tmp_path):
    import hashlib

    info, _ = _write(tmp_path / "a.tar", n=3)
    data = (tmp_path / "a.tar").read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.bytes == len(data)
    assert info.samples == 3
    assert not list(tmp_path.glob("*.tmp-*")), "temporary file left behind"


def test_same_samples_give_identical_shard_bytes(tmp_path):
    a, _ = _write(tmp_path / "a.tar")
    b, _ = _write(tmp_path / "b.tar")
    assert a.sha256 == b.sha256


def test_failed_write_leaves_no_shard(tmp_path):
    with pytest.raises(ValueError), ShardWriter(tmp_path / "x.tar") as w:
        w.write("k-00000", np.full(10, 2.0, np.float32), [[0, 10]], _meta(0))
    assert not (tmp_path / "x.tar").exists()
    assert not list(tmp_path.iterdir())


def test_writer_refuses_nonfinite_and_out_of_range_audio(tmp_path):
    w = ShardWriter(tmp_path / "x.tar")
    bad = np.zeros(100, np.float32)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        w.write("k-00000", bad, [[0, 100]], _meta(0))
    with pytest.raises(ValueError, match="full scale"):
        w.write("k-00001", np.full(100, 1.5, np.float32), [[0, 100]], _meta(0))
    w.abort()


@pytest.mark.parametrize("encoding", ["flac", "npy"])
def test_int16_audio_is_taken_as_pcm_and_gives_the_float_samples_bytes(encoding):
    """The pipeline hands int16 PCM straight from its segment kernel."""
    audio = np.random.default_rng(3).uniform(-1, 1, 16000).astype(np.float32)
    pcm = to_int16(audio)
    from_float = shards.encode_sample("k-00000", audio, [[0, 9000]], _meta(0), encoding)
    from_pcm = shards.encode_sample("k-00000", pcm, [[0, 9000]], _meta(0), encoding)
    assert from_pcm == from_float


def test_mask_runs_round_trip():
    mask = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], bool)
    runs = shards.runs_from_mask(mask)
    assert runs == [[1, 3], [5, 8], [9, 10]]
    assert np.array_equal(shards.mask_from_runs(runs, mask.size), mask)


def test_truncated_shard_error_names_shard_and_last_key(tmp_path):
    _write(tmp_path / "train-000007.tar")
    data = (tmp_path / "train-000007.tar").read_bytes()
    (tmp_path / "train-000007.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardFormatError) as err:
        list(read_samples(tmp_path / "train-000007.tar"))
    msg = str(err.value)
    assert "train-000007.tar" in msg
    assert "f00" in msg  # names a key


def _tar_with_members(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))


def test_corrupt_audio_member_error_names_shard_and_key(tmp_path):
    path = tmp_path / "val-000001.tar"
    meta = (
        b'{"valid": [[0, 10]], "source": "a", "offset": 0, "gain_db": 0,'
        b' "sample_rate": 16000, "split": "val"}'
    )
    _tar_with_members(path, {"abc-00003.audio.flac": b"not a flac stream", "abc-00003.json": meta})
    with pytest.raises(ShardFormatError, match=r"val-000001\.tar.*abc-00003.*audio\.flac"):
        list(read_samples(path))


def test_missing_member_and_bad_json_are_named(tmp_path):
    path = tmp_path / "s.tar"
    _tar_with_members(path, {"k1-00000.json": b"{}"})
    with pytest.raises(ShardFormatError, match=r"s\.tar.*k1-00000.*expected one audio"):
        list(read_samples(path))
    _tar_with_members(path, {"k2-00000.audio.npy": b"x", "k2-00000.json": b"{not json"})
    with pytest.raises(ShardFormatError, match=r"k2-00000.*bad json"):
        list(read_samples(path))


def test_a_meta_length_that_disagrees_with_the_audio_is_named(tmp_path):
    sample = shards.encode_sample("k-00000", np.zeros(10, np.float32), [[0, 10]], _meta(0))
    meta = json.loads(sample["json"])
    sample["json"] = json.dumps({**meta, "samples": 12}).encode()
    with pytest.raises(ShardFormatError, match=r"s\.tar: sample 'k-00000': meta says 12"):
        shards.decode_sample(sample, shard="s.tar")


def test_valid_runs_outside_segment_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="outside segment"):
        shards.encode_sample("k-00000", np.zeros(10, np.float32), [[0, 11]], _meta(0))


def test_shard_writer_bytes_equal_webdataset_tarwriter(tmp_path):
    """ShardWriter writes its tars without importing webdataset (and torch); the bytes must
    stay exactly what webdataset's TarWriter with the same settings writes."""
    import webdataset as wds

    from shards.format import encode_sample

    rng = np.random.default_rng(0)
    samples = [
        encode_sample(
            f"f{i:04d}-00000",
            (rng.standard_normal(1600) * 0.1).astype(np.float32),
            [[0, 1600 - 7 * i]],
            {
                "source": f"a/{i}.wav",
                "offset": 0,
                "gain_db": 0.0,
                "sample_rate": 16000,
                "split": "train",
            },
        )
        for i in range(5)
    ]
    with ShardWriter(tmp_path / "ours.tar") as w:
        for s in samples:
            w.write_encoded(s)
    buf = io.BytesIO()
    ref = wds.TarWriter(buf, user="telucodec", group="telucodec", mtime=0)
    for s in samples:
        ref.write(s)
    ref.close()
    assert (tmp_path / "ours.tar").read_bytes() == buf.getvalue()


def test_a_shard_member_has_one_header_block(tmp_path):
    """No PAX extended header per member (a float mtime caused one: 2 more blocks each)."""
    from shards.format import encode_sample
    from shards.writer import TAR_MEMBER_HEADER_BYTES

    meta = {"source": "a.wav", "offset": 0, "gain_db": 0.0, "sample_rate": 16000}
    with ShardWriter(tmp_path / "s.tar") as w:
        for i in range(3):
            audio = np.zeros(16000, np.float32)
            w.write_encoded(
                encode_sample(f"f{i:04d}-00000", audio, [[0, 16000]], meta | {"split": "train"})
            )
    with tarfile.open(tmp_path / "s.tar") as tar:
        members = tar.getmembers()
    assert len(members) == 6
    assert all(m.offset_data - m.offset == TAR_MEMBER_HEADER_BYTES == 512 for m in members)
    assert all(m.pax_headers == {} for m in members)


def _tarfile_samples(path) -> tuple[list[dict], str | None]:
    """What the reader gave while it read with tarfile's stream mode: the samples (members
    grouped by key) before the end or the break, and the break's exception class, if any."""
    got, current = [], None
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = shards.reader.split_member_name(info.name)
                data = tar.extractfile(info).read()
                if current is not None and current["__key__"] != key:
                    got.append(current)
                    current = None
                current = current or {"__key__": key}
                current[ext] = data
    except tarfile.TarError:
        return got, "broke"
    return got + ([current] if current else []), None


def _our_samples(path) -> tuple[list[dict], str | None]:
    got = []
    try:
        for sample in shards.reader.iter_raw_samples(path):
            got.append(sample)
    except ShardFormatError:
        return got, "broke"
    return got, None


def _odd_tar(path, tar_format: int) -> None:
    """Members tarfile writes in each format: a path over 100 bytes (a ustar prefix, a GNU
    long name, a pax path), a non-ASCII name, a directory, a symlink, an empty member, a
    float mtime (a pax header of its own in pax format)."""
    long_key = "p" * 60 + "/" + "d" * 60
    with tarfile.open(path, "w", format=tar_format) as tar:
        directory = tarfile.TarInfo("p" * 60)
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in [
            (f"{long_key}.audio.flac", b"x" * 700),
            (f"{long_key}.json", b"{}"),
            ("ü-00001.audio.npy", b""),
            ("ü-00001.json", b"y" * 512),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("k.link")
        link.type, link.linkname = tarfile.SYMTYPE, "ü-00001.json"
        tar.addfile(link)


@pytest.mark.parametrize(
    "tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, "ours"]
)
def test_our_tar_reader_reads_what_tarfile_reads(tmp_path, tar_format):
    """shards.reader parses tars itself, for speed; it must give the members tarfile gives."""
    path = tmp_path / "s.tar"
    if tar_format == "ours":
        _write(path)
    else:
        _odd_tar(path, tar_format)
    expected, broke = _tarfile_samples(path)
    assert broke is None and len(expected) >= 2
    assert _our_samples(path) == (expected, None)


def test_our_tar_reader_breaks_and_ends_where_tarfile_does(tmp_path):
    """Cut anywhere or with a damaged header: the same samples before the cut, and an error
    where tarfile raised one (data cut short), none where it ended quietly (a header cut or
    damaged after the first: index.json's count and sha256 catch those)."""
    whole = tmp_path / "whole.tar"
    _write(whole, n=3)
    data = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    offsets = sorted({*range(0, len(data), 512), *range(100, len(data), 4099), len(data) - 1})
    for end in offsets:
        cut.write_bytes(data[:end])
        assert _our_samples(cut) == _tarfile_samples(cut), f"cut at {end}"
    with tarfile.open(whole) as tar:
        headers = [m.offset for m in tar.getmembers()]
    for offset in headers:
        damaged = bytearray(data)
        damaged[offset + 148 : offset + 156] = b" " * 8
        cut.write_bytes(bytes(damaged))
        assert _our_samples(cut) == _tarfile_samples(cut), f"header at {offset}"


def _header(name: bytes, size: int | bytes, kind: bytes = b"0") -> bytes:
    """One ustar header block with a valid checksum; `size` as bytes is the raw field."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = size if isinstance(size, bytes) else f"{size:011o}\0".encode()
    block[156:157] = kind
    block[257:263] = b"ustar\0"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def _member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    return _header(name, len(data), kind) + data + bytes(-len(data) % 512)


def _npy(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pcm, allow_pickle=False)
    return buf.getvalue()


def _refused(tmp_path, tar: bytes, match: str) -> None:
    """`tar` is refused with ShardFormatError matching `match`, within seconds (an alarm
    turns a parser that loops into a failure, not a hung suite)."""
    path = tmp_path / "hostile.tar"
    path.write_bytes(tar + bytes(1024))
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the tar reader did not return"))
    signal.alarm(5)
    try:
        with pytest.raises(ShardFormatError, match=match):
            list(shards.reader.iter_raw_samples(path))
    finally:
        signal.alarm(0)


def test_a_member_claiming_a_negative_size_is_an_error_not_a_read_to_the_end(tmp_path):
    """A GNU base-256 size field can be negative; read(-n) would read the rest of the file."""
    _refused(tmp_path, _header(b"a.json", b"\xff" * 12) + b"{}" * 5000, "negative size -1")


def test_a_pax_record_without_its_length_is_an_error_not_an_endless_loop(tmp_path):
    tar = _member(b"././@PaxHeader", b"a=b\n", b"x") + _member(b"k.json", b"{}")
    _refused(tmp_path, tar, "invalid pax header")


def test_extended_headers_past_their_bounds_are_refused(tmp_path):
    chain = b"".join(_member(b"././@PaxHeader", b"11 a=bcdef\n", b"x") for _ in range(5))
    _refused(tmp_path, chain + _member(b"k.json", b"{}"), "extended headers past 4")
    big = _member(b"././@PaxHeader", b"x" * (65 << 10), b"x") + _member(b"k.json", b"{}")
    _refused(tmp_path, big, "extended headers past")
    long_name = b"k" * 2000 + b".json"
    _refused(
        tmp_path,
        _member(b"././@LongLink", long_name, b"L") + _member(b"k.json", b"{}"),
        "member name of 2005 characters",
    )


def test_members_the_format_does_not_have_are_refused_naming_them(tmp_path):
    tar = _member(b"k.json", b"{}") + _member(b"k.x1", b"payload")
    _refused(tmp_path, tar, r"member 'k\.x1' is not part of a sample")


def test_a_json_member_over_a_mebibyte_is_refused_before_it_is_read(tmp_path):
    _refused(tmp_path, _header(b"k.json", 2 << 20), "more than the 1048576")


def test_a_member_name_that_is_not_utf8_is_refused(tmp_path):
    _refused(tmp_path, _member(b"\xff-00000.json", b"{}"), "not UTF-8")


@pytest.mark.parametrize(
    "meta",
    [b'{"valid": [[0, Infinity]], "samples": 10}', b"[" * 100_000, b'{"valid": [["0", "5"]]}'],
)
def test_json_that_python_cannot_hold_is_a_format_error_on_every_read_path(meta):
    """Infinity (OverflowError in int()), deep nesting (RecursionError), string runs: each
    a ShardFormatError naming the sample, never an exception that ends a loader worker."""
    members = {"__key__": "k", "json": meta, "audio.npy": _npy(np.zeros(10, np.int16))}
    with pytest.raises(ShardFormatError, match="sample 'k'"):
        shards.format.decode_pcm(members, shard="s.tar")
    with pytest.raises(ShardFormatError, match="sample 'k'"):
        shards.loader.sample_meta(members, "s.tar", None)


def test_format_float_values_are_int16_over_32767_bit_for_bit():
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    expected = pcm.astype(np.float32) / np.float32(32767)
    got = shards.format.pcm_to_float(pcm.reshape(256, 256))
    assert got.dtype == np.float32 and np.array_equal(
        got.ravel().view(np.int32), expected.view(np.int32)
    )


# ------------------------------------------------------------ format 2: index and manifest


def _row(i: int, split: str = "train") -> dict:
    return {
        "key": f"f{i:03d}-00000",
        "shard": f"{split}-000000.tar",
        "split": split,
        "samples": 16000 + i,
        "seconds": (16000 + i) / 16000,
        "valid_seconds": 1.0,
        "source": f"spk/{i}.wav",
        "offset": 0,
    }


def _format2_out(root, **fields):
    root.mkdir(parents=True, exist_ok=True)
    shards.write_manifest(root, [_row(0), _row(1), _row(2, "val")])
    data = {"shards": [], "utterance_max_samples": 320000, "manifest": "manifest.jsonl"}
    shards.write_index(root, data | {"input": "/data/corpus"} | fields)
    return root


def test_index_reads_format_2_with_its_utterance_cap_and_manifest(tmp_path):
    index = shards.Index.load(_format2_out(tmp_path))
    assert index.format_version == shards.FORMAT_VERSION == 2
    assert index.utterance_max_samples == 320000
    assert [r["key"] for r in index.manifest()] == ["f000-00000", "f001-00000", "f002-00000"]
    assert [r["key"] for r in index.manifest("val")] == ["f002-00000"]
    (tmp_path / "manifest.jsonl").unlink()
    assert len(index.manifest()) == 3, "rows are read once per Index"


def test_format_1_out_is_refused_in_one_line_that_says_to_rerun_preprocess(tmp_path):
    _format2_out(tmp_path / "old out", format_version=1)
    with pytest.raises(shards.IndexFormatError) as err:
        shards.Index.load(tmp_path / "old out")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"{tmp_path / 'old out'}: written by an older preprocess (format 1: fixed 1-s "
        "segments); re-run `python -m preprocess.run --input /data/corpus --output "
        f"'{tmp_path / 'old out'}' --overwrite`"
    )
    assert shards.Index.load(tmp_path / "old out", check_version=False).format_version == 1


def test_newer_and_missing_format_versions_are_refused(tmp_path):
    _format2_out(tmp_path, format_version=3)
    with pytest.raises(shards.IndexFormatError, match=r"format 3.*; upgrade telucodec$"):
        shards.Index.load(tmp_path)
    (tmp_path / "index.json").write_text('{"shards": []}')
    with pytest.raises(shards.IndexFormatError, match="format_version None, expected 2"):
        shards.Index.load(tmp_path)


def test_write_index_records_the_current_format_unless_told(tmp_path):
    shards.write_index(tmp_path, {"shards": []})
    assert shards.Index.load(tmp_path).format_version == shards.FORMAT_VERSION


def test_index_without_utterance_cap_names_the_field(tmp_path):
    shards.write_index(tmp_path, {"shards": []})
    with pytest.raises(shards.IndexFormatError, match="utterance_max_samples is None"):
        _ = shards.Index.load(tmp_path).utterance_max_samples


def test_manifest_round_trips_rows_in_order_and_writes_atomically(tmp_path):
    rows = [_row(i) | {"extra": "kept"} for i in range(3)]
    path = shards.write_manifest(tmp_path, rows)
    assert path == tmp_path / shards.MANIFEST_NAME
    assert shards.read_manifest(tmp_path) == rows
    assert not list(tmp_path.glob("*.tmp-*"))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_manifest_writer_refuses_a_row_without_the_fields(tmp_path):
    bad = _row(0)
    del bad["samples"]
    with pytest.raises(shards.ManifestError, match=r"row 1 \(f000-00000\): missing samples"):
        shards.write_manifest(tmp_path, [_row(1), bad])
    assert not (tmp_path / shards.MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"key": "k"}', "missing shard, split, samples"),
    ],
)
def test_bad_manifest_line_is_named_by_file_and_line(tmp_path, line, problem):
    good = json.dumps(_row(0))
    (tmp_path / shards.MANIFEST_NAME).write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(shards.ManifestError) as err:
        shards.read_manifest(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / shards.MANIFEST_NAME}:2: ")
    assert problem in str(err.value)


def test_manifest_field_of_the_wrong_type_is_named(tmp_path):
    (tmp_path / shards.MANIFEST_NAME).write_text(json.dumps(_row(0) | {"samples": "9"}) + "\n")
    with pytest.raises(shards.ManifestError, match=r":1: samples is '9', expected int"):
        shards.read_manifest(tmp_path)


def test_missing_manifest_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest; expected a format-2"):
        shards.read_manifest(tmp_path)


def test_a_flac_claiming_more_samples_than_an_utterance_holds_is_refused_before_decoding():
    """A few KB of FLAC whose STREAMINFO claims 2^36 − 1 samples would allocate them all."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, np.int16), 16000, format="FLAC", subtype="PCM_16")
    flac = bytearray(buf.getvalue())
    bits = int.from_bytes(flac[18:26], "big") | (1 << 36) - 1  # STREAMINFO total samples
    flac[18:26] = bits.to_bytes(8, "big")
    members = {"__key__": "k", "json": b'{"valid": [[0, 1600]]}', "audio.flac": bytes(flac)}
    with pytest.raises(ShardFormatError, match="more than 33554432"):
        shards.format.decode_pcm(members, shard="s.tar")
