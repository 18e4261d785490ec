"""The `.tcq` bitstream: a fixed header and the code indices bit-packed, bytes in, bytes out.

Layout (little-endian header, 40 bytes):

| offset | size | field |
|---|---|---|
| 0 | 4 | magic `b"TCQ\\x00"` |
| 4 | 1 | version (2) |
| 5 | 1 | codebook_bits (10 for 1024 entries) |
| 6 | 2 | n_codebooks used (Nq) |
| 8 | 4 | sample_rate |
| 12 | 4 | hop_length |
| 16 | 4 | n_frames F |
| 20 | 8 | n_samples (exact decoded length) |
| 28 | 4 | CRC-32 of the payload |
| 32 | 8 | model identity: sha256(config + weights)[:8] of the encoding checkpoint (0: none) |
| 40 | ceil(F·Nq·bits/8) | payload: the codes, frame-major, MSB-first, zero-padded to a byte |

Version 1 streams (the same without the model identity: a 32-byte header) are still read;
their `Header.model_id` is None, so a decoder cannot check which checkpoint encoded them.

Payload order: frame 0's Nq codes (codebook 0 first), then frame 1's, …; each code is `bits`
bits, most significant bit first, and the last byte is padded with zero bits.

Frame-major order lets a stream be cut after any frame, and lets a reader unpack any run of
frames from their own bytes (`Bitstream.frames`): a long stream is decoded chunk by chunk
without ever holding all its codes unpacked. The payload is exactly F·Nq·bits bits rounded
up to a byte, so its bitrate is Nq·bits·frame_rate: 0.5 kbps per codebook at 50 frames/s.
No file I/O here; the CLI reads and writes the bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"TCQ\x00"
VERSION = 2
_HEADER_V1 = struct.Struct("<4sBBHIIIQI")
_HEADER = struct.Struct("<4sBBHIIIQI8s")
HEADER_BYTES = _HEADER.size
MODEL_ID_BYTES = 8
_HEADER_SIZES = {1: _HEADER_V1.size, 2: _HEADER.size}


class BitstreamError(ValueError):
    """A bitstream that is corrupt, truncated, or does not match the codec decoding it."""


@dataclass(frozen=True)
class Header:
    sample_rate: int
    hop_length: int
    n_codebooks: int
    codebook_bits: int
    n_frames: int
    n_samples: int
    version: int = VERSION
    model_id: bytes | None = None  # the encoding checkpoint's identity; None: not recorded


def payload_bytes(n_frames: int, n_codebooks: int, codebook_bits: int) -> int:
    """ceil(F · Nq · bits / 8): the exact payload size."""
    return -(-n_frames * n_codebooks * codebook_bits // 8)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """int[Nq x F] code indices in [0, 2**bits) -> packed payload bytes (frame-major)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [Nq x F], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"codes outside 0..{(1 << bits) - 1} cannot be packed in {bits} bits")
    values = codes.T.reshape(-1).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bit_array = ((values[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_array.reshape(-1)).tobytes()


def unpack_codes(payload: bytes, n_codebooks: int, n_frames: int, bits: int) -> np.ndarray:
    """Inverse of pack_codes -> int64[Nq x F]. The payload length must be exact."""
    check_payload_size(payload, n_codebooks, n_frames, bits)
    return unpack_frames(payload, n_codebooks, bits, 0, n_frames)


def check_payload_size(payload: bytes, n_codebooks: int, n_frames: int, bits: int) -> None:
    """BitstreamError unless `payload` is exactly the ceil(F·Nq·bits / 8) bytes of F frames."""
    expected = payload_bytes(n_frames, n_codebooks, bits)
    if len(payload) != expected:
        raise BitstreamError(
            f"payload is {len(payload)} bytes, expected {expected} for {n_frames} frames x "
            f"{n_codebooks} codebooks x {bits} bits"
        )


def unpack_frames(
    payload: bytes | memoryview, n_codebooks: int, bits: int, start: int, stop: int
) -> np.ndarray:
    """Frames [start, stop) of a payload -> int64[Nq x (stop - start)], unpacked from their
    own bytes only, so memory is bounded by the frames asked for, not by the stream."""
    if not 0 <= start <= stop:
        raise ValueError(f"frame range [{start}, {stop}) is not a range")
    first, end = start * n_codebooks * bits, stop * n_codebooks * bits  # bit offsets
    first_byte, end_byte = first // 8, -(-end // 8)
    if end_byte > len(payload):
        raise BitstreamError(
            f"frames [{start}, {stop}) need {end_byte} payload bytes, it has {len(payload)}"
        )
    raw = np.frombuffer(payload, dtype=np.uint8, count=end_byte - first_byte, offset=first_byte)
    count = (stop - start) * n_codebooks
    bit_array = np.unpackbits(raw)[first % 8 : first % 8 + count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    values = bit_array.reshape(count, bits).astype(np.int64) @ weights
    return values.reshape(stop - start, n_codebooks).T.copy()


def encode_bitstream(codes: np.ndarray, header: Header) -> bytes:
    """int[Nq x F] codes + header -> complete .tcq bytes."""
    codes = np.asarray(codes)
    if codes.shape != (header.n_codebooks, header.n_frames):
        raise ValueError(
            f"codes shape {codes.shape} does not match header "
            f"({header.n_codebooks} codebooks x {header.n_frames} frames)"
        )
    payload = pack_codes(codes, header.codebook_bits)
    head = _HEADER.pack(
        MAGIC,
        VERSION,
        header.codebook_bits,
        header.n_codebooks,
        header.sample_rate,
        header.hop_length,
        header.n_frames,
        header.n_samples,
        zlib.crc32(payload),
        header.model_id or bytes(MODEL_ID_BYTES),
    )
    return head + payload


def read_header(data: bytes) -> Header:
    """Parse and check the header of .tcq bytes; BitstreamError says what was expected."""
    if len(data) < _HEADER_V1.size:
        raise BitstreamError(f"{len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, bits, nq, sr, hop, frames, samples, _ = _HEADER_V1.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"bad magic {magic!r}, expected {MAGIC!r}: not a .tcq bitstream")
    if version not in _HEADER_SIZES:
        raise BitstreamError(
            f"bitstream version {version}, this reader expects {VERSION} (or the older 1)"
        )
    if len(data) < _HEADER_SIZES[version]:
        raise BitstreamError(
            f"{len(data)} bytes is shorter than the {_HEADER_SIZES[version]}-byte header"
        )
    model_id = None
    if version >= 2:
        model_id = _HEADER.unpack_from(data)[-1]
        model_id = None if model_id == bytes(MODEL_ID_BYTES) else model_id
    if not 1 <= bits <= 16 or nq < 1 or sr < 1 or hop < 1 or samples < 1:
        raise BitstreamError(
            f"implausible header: {bits} bits, {nq} codebooks, {sr} Hz, hop {hop}, "
            f"{samples} samples"
        )
    if frames != -(-samples // hop):
        raise BitstreamError(
            f"header says {samples} samples but {frames} frames; expected "
            f"ceil({samples} / {hop}) = {-(-samples // hop)}"
        )
    return Header(sr, hop, nq, bits, frames, samples, version, model_id)


@dataclass(frozen=True)
class Bitstream:
    """A checked .tcq stream whose codes are unpacked on demand, a run of frames at a time.

    >>> stream = open_bitstream(data)            # header, payload size and CRC checked
    >>> codes = stream.frames(0, 500)            # int64[Nq x 500]: frames 0 .. 499
    """

    header: Header
    payload: memoryview  # a view into the caller's bytes: nothing is copied

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Codes of frames [start, stop) -> int64[Nq x (stop - start)]."""
        if stop > self.header.n_frames:
            raise ValueError(f"frame {stop} is past the stream's {self.header.n_frames} frames")
        h = self.header
        return unpack_frames(self.payload, h.n_codebooks, h.codebook_bits, start, stop)


def open_bitstream(data: bytes) -> Bitstream:
    """Check .tcq bytes (header, exact payload size, CRC) without unpacking any code.
    Raises BitstreamError on bad magic or version, a truncated or padded payload, or a CRC
    mismatch: every check runs before the first frame is decoded."""
    header = read_header(data)
    payload = memoryview(data)[_HEADER_SIZES[header.version] :]
    check_payload_size(payload, header.n_codebooks, header.n_frames, header.codebook_bits)
    crc = _HEADER_V1.unpack_from(data)[-1]
    if zlib.crc32(payload) != crc:
        raise BitstreamError(f"payload CRC-32 {zlib.crc32(payload):08x}, header says {crc:08x}")
    return Bitstream(header, payload)


def decode_bitstream(data: bytes) -> tuple[Header, np.ndarray]:
    """.tcq bytes -> (Header, int64[Nq x F] codes), all frames at once (for short streams;
    `open_bitstream` reads long ones a chunk at a time). Raises as `open_bitstream`."""
    stream = open_bitstream(data)
    return stream.header, stream.frames(0, stream.header.n_frames)


def check_compatible(
    header: Header,
    *,
    sample_rate: int,
    hop_length: int,
    codebook_bits: int,
    n_codebooks: int,
    model_id: bytes | None = None,
) -> None:
    """Raise BitstreamError unless a codec with these numbers can decode `header`'s stream
    (same rate, hop and code width; at most its number of codebooks; the same model
    identity when both the stream and the caller know one)."""
    problems = []
    if header.model_id is not None and model_id is not None and header.model_id != model_id:
        problems.append(
            f"encoded by model {header.model_id.hex()}, this checkpoint is {model_id.hex()} "
            "(same shape, different weights: decoding would give garbage)"
        )
    if header.sample_rate != sample_rate:
        problems.append(f"sample rate {header.sample_rate} Hz, codec has {sample_rate} Hz")
    if header.hop_length != hop_length:
        problems.append(f"hop {header.hop_length}, codec has {hop_length}")
    if header.codebook_bits != codebook_bits:
        problems.append(f"{header.codebook_bits}-bit codes, codec has {codebook_bits}-bit codes")
    if header.n_codebooks > n_codebooks:
        problems.append(f"{header.n_codebooks} codebooks, codec has only {n_codebooks}")
    if problems:
        raise BitstreamError("bitstream does not match the checkpoint: " + "; ".join(problems))
