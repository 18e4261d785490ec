"""The `.tcq` bitstream (telucodec.bitstream): exact sizes, bit-exact round trips, and a clear
BitstreamError for every way a stream can be corrupt, truncated or meant for another codec."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from telucodec import bitstream
from telucodec.bitstream import (
    HEADER_BYTES,
    BitstreamError,
    Header,
    check_compatible,
    decode_bitstream,
    encode_bitstream,
    open_bitstream,
    pack_codes,
    payload_bytes,
    read_header,
    unpack_codes,
)
from telucodec.configs import get_config

MODEL = bytes.fromhex("0123456789abcdef")


def make_stream(n_samples=16_321, nq=6, bits=10, hop=320, seed=0) -> tuple[bytes, np.ndarray]:
    frames = -(-n_samples // hop)
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (nq, frames))
    header = Header(16000, hop, nq, bits, frames, n_samples, model_id=MODEL)
    return encode_bitstream(codes, header), codes


def test_header_is_40_bytes_with_the_model_identity_and_fields_round_trip():
    data, codes = make_stream()
    assert HEADER_BYTES == 40 and data[:4] == b"TCQ\x00" and data[4] == bitstream.VERSION == 2
    assert data[32:40] == MODEL
    header, decoded = decode_bitstream(data)
    assert header == Header(16000, 320, 6, 10, 52, 16_321, model_id=MODEL)
    np.testing.assert_array_equal(decoded, codes)
    assert decoded.dtype == np.int64


@pytest.mark.parametrize("bits", [1, 3, 8, 10, 13, 16])
@pytest.mark.parametrize("nq,frames", [(1, 1), (3, 7), (12, 50), (5, 33)])
def test_codes_round_trip_bit_exactly_for_any_width(bits, nq, frames):
    codes = np.random.default_rng(bits * 100 + nq).integers(0, 1 << bits, (nq, frames))
    codes[0, 0], codes[-1, -1] = 0, (1 << bits) - 1  # both extremes
    payload = pack_codes(codes, bits)
    assert len(payload) == payload_bytes(frames, nq, bits) == -(-frames * nq * bits // 8)
    np.testing.assert_array_equal(unpack_codes(payload, nq, frames, bits), codes)


def test_stream_size_is_header_plus_ceil_of_frames_codebooks_bits():
    for n_samples in (1, 319, 320, 321, 48_000, 48_028):
        for nq in (1, 3, 6, 12):
            data, _ = make_stream(n_samples=n_samples, nq=nq)
            frames = -(-n_samples // 320)
            assert len(data) == 40 + -(-frames * nq * 10 // 8)


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_payload_bitrate_is_nominal_for_whole_frames(name):
    cfg = get_config(name)
    seconds = 10
    frames = int(seconds * cfg.frame_rate)
    for kbps in (1.5, 3.0, 6.0):
        nq = cfg.n_quantizers_for_kbps(kbps)
        size = payload_bytes(frames, nq, cfg.codebook_bits)
        assert 8 * size / seconds / 1000 == pytest.approx(kbps, rel=1e-12)


def test_payload_is_frame_major_msb_first():
    # Frame 0 holds codes (1, 2), frame 1 holds (3, 4); 4 bits each -> nibbles 1 2 3 4.
    codes = np.array([[1, 3], [2, 4]])
    assert pack_codes(codes, 4) == bytes([0x12, 0x34])
    # 10-bit codes 1 and 2: 0000000001 0000000010 then 4 zero pad bits.
    assert pack_codes(np.array([[1], [2]]), 10) == bytes([0x00, 0x40, 0x20])


def test_first_frames_of_a_stream_are_a_prefix_of_its_payload():
    codes = np.random.default_rng(1).integers(0, 1024, (4, 20))  # 4 x 10 bits = 5 bytes/frame
    full = pack_codes(codes, 10)
    assert full[: 5 * 7] == pack_codes(codes[:, :7], 10)


@pytest.mark.parametrize("bits,nq", [(3, 1), (10, 1), (10, 5), (13, 3), (16, 2)])
def test_any_run_of_frames_unpacks_from_its_own_bytes_equal_to_the_whole(bits, nq):
    frames = 37
    codes = np.random.default_rng(bits + nq).integers(0, 1 << bits, (nq, frames))
    stream = open_bitstream(
        encode_bitstream(codes, Header(16000, 320, nq, bits, frames, 320 * frames))
    )
    for start in range(frames + 1):  # every bit offset a frame can start at
        for stop in (start, start + 1, start + 9, frames):
            stop = min(stop, frames)
            got = stream.frames(start, stop)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, codes[:, start:stop])
    with pytest.raises(ValueError, match="past the stream's 37 frames"):
        stream.frames(30, 38)


def test_a_four_hour_stream_is_checked_and_read_a_chunk_at_a_time_in_bounded_memory():
    """The issue's case: 0.9 MB, one codebook, 4 h. Unpacking it whole takes 65 MB (int64
    codes and a byte per bit); opening it allocates nothing, a 500-frame chunk ~50 kB."""
    frames = 4 * 3600 * 50
    payload = np.random.default_rng(0).bytes(payload_bytes(frames, 1, 10))
    head = Header(16000, 320, 1, 10, frames, 320 * frames, model_id=MODEL)
    fields = (b"TCQ\x00", 2, 10, 1, 16000, 320, frames, 320 * frames, zlib.crc32(payload), MODEL)
    data = struct.pack("<4sBBHIIIQI8s", *fields) + payload  # any 10-bit pattern is a code
    tracemalloc.start()
    try:
        stream = open_bitstream(data)
        opened = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        chunk = stream.frames(frames - 777, frames - 277)
        per_chunk = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream.header == head and chunk.shape == (1, 500)
    assert opened < 10_000 and per_chunk < 100_000, (opened, per_chunk)
    np.testing.assert_array_equal(chunk, unpack_codes(payload, 1, frames, 10)[:, -777:-277])


def test_pack_rejects_codes_that_do_not_fit():
    with pytest.raises(ValueError, match="cannot be packed in 10 bits"):
        pack_codes(np.array([[1024]]), 10)
    with pytest.raises(ValueError, match="cannot be packed"):
        pack_codes(np.array([[-1]]), 10)
    with pytest.raises(ValueError, match=r"\[Nq x F\]"):
        pack_codes(np.zeros(5, dtype=int), 10)
    with pytest.raises(ValueError, match="does not match header"):
        encode_bitstream(np.zeros((3, 4), dtype=int), Header(16000, 320, 3, 10, 5, 1600))


# ------------------------------------------------------------------------------ bad streams


def test_bad_magic_is_not_a_tcq_bitstream():
    data, _ = make_stream()
    with pytest.raises(BitstreamError, match="bad magic.*not a .tcq bitstream"):
        decode_bitstream(b"RIFF" + data[4:])


def test_other_version_is_rejected_with_both_numbers():
    data = bytearray(make_stream()[0])
    data[4] = 3
    with pytest.raises(BitstreamError, match=r"version 3, this reader expects 2 \(or the older 1"):
        decode_bitstream(bytes(data))


def test_short_header_is_rejected():
    with pytest.raises(BitstreamError, match="shorter than the 40-byte header"):
        read_header(b"TCQ\x00\x02")
    with pytest.raises(BitstreamError, match="shorter than the 40-byte header"):
        read_header(make_stream()[0][:36])


def test_version_1_stream_without_model_identity_is_still_read():
    data, codes = make_stream()
    v1 = bytearray(data[:32] + data[40:])  # the version-1 layout: no identity field
    v1[4] = 1
    header, decoded = decode_bitstream(bytes(v1))
    assert header.version == 1 and header.model_id is None
    np.testing.assert_array_equal(decoded, codes)
    kw = dict(sample_rate=16000, hop_length=320, codebook_bits=10, n_codebooks=12)
    check_compatible(header, **kw, model_id=b"\xff" * 8)  # nothing to compare: accepted


def test_stream_of_another_model_is_refused_naming_both_identities():
    header = decode_bitstream(make_stream()[0])[0]
    kw = dict(sample_rate=16000, hop_length=320, codebook_bits=10, n_codebooks=12)
    check_compatible(header, **kw, model_id=MODEL)
    other = bytes(8)[:7] + b"\x01"
    with pytest.raises(BitstreamError, match=f"encoded by model {MODEL.hex()}.*{other.hex()}"):
        check_compatible(header, **kw, model_id=other)


@pytest.mark.parametrize("cut", [1, 10, 200])
def test_truncated_payload_is_rejected_with_expected_size(cut):
    data, _ = make_stream()
    with pytest.raises(BitstreamError, match=r"payload is \d+ bytes, expected 390"):
        decode_bitstream(data[:-cut])


def test_trailing_bytes_are_rejected():
    data, _ = make_stream()
    with pytest.raises(BitstreamError, match="expected 390"):
        decode_bitstream(data + b"\x00")


def test_flipped_payload_bit_fails_the_crc():
    data = bytearray(make_stream()[0])
    data[HEADER_BYTES + 17] ^= 0x04
    with pytest.raises(BitstreamError, match="CRC-32"):
        decode_bitstream(bytes(data))


def repack(data: bytes, **fields) -> bytes:
    """Rewrite header fields (keeping the CRC of the payload) of a valid stream."""
    names = ["magic", "version", "bits", "nq", "sr", "hop", "frames", "samples", "crc", "model"]
    values = dict(zip(names, struct.unpack_from("<4sBBHIIIQI8s", data), strict=True))
    values.update(fields)
    return struct.pack("<4sBBHIIIQI8s", *values.values()) + data[HEADER_BYTES:]


def test_header_whose_frames_disagree_with_samples_is_rejected():
    data, _ = make_stream()
    with pytest.raises(BitstreamError, match=r"ceil\(99999 / 320\) = 313"):
        decode_bitstream(repack(data, samples=99_999))


@pytest.mark.parametrize(
    "fields", [{"bits": 0}, {"bits": 17}, {"nq": 0}, {"sr": 0}, {"hop": 0}, {"samples": 0}]
)
def test_implausible_header_fields_are_rejected(fields):
    data, _ = make_stream()
    if fields == {"samples": 0}:
        fields = {"samples": 0, "frames": 0}
    with pytest.raises(BitstreamError, match="implausible header"):
        decode_bitstream(repack(data, **fields))


def test_crc_is_of_the_payload_only():
    data, _ = make_stream()
    assert struct.unpack_from("<I", data, 28)[0] == zlib.crc32(data[HEADER_BYTES:])


def test_check_compatible_names_every_mismatch():
    header = Header(16000, 320, 13, 10, 1, 320)
    cfg = get_config("tiny")
    with pytest.raises(BitstreamError, match="13 codebooks, codec has only 12"):
        check_compatible(
            header, sample_rate=16000, hop_length=320, codebook_bits=10, n_codebooks=12
        )
    with pytest.raises(BitstreamError) as info:
        check_compatible(
            Header(24000, 240, 3, 9, 1, 240),
            sample_rate=cfg.sample_rate,
            hop_length=cfg.hop_length,
            codebook_bits=cfg.codebook_bits,
            n_codebooks=cfg.n_codebooks,
        )
    message = str(info.value)
    assert "24000 Hz" in message and "hop 240" in message and "9-bit codes" in message
    check_compatible(
        Header(16000, 320, 12, 10, 1, 320),
        sample_rate=16000,
        hop_length=320,
        codebook_bits=10,
        n_codebooks=12,
    )
