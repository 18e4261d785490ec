"""Rewriting the bytes libsndfile takes from the clock, so the same seed gives the same file.

libsndfile stamps a WAV PEAK chunk with time(NULL) and seeds an Ogg stream's serial number
from gettimeofday; everything else it writes depends only on the samples.
"""

from __future__ import annotations

import struct


def reproducible(data: bytes, fmt: str, ogg_serial: int) -> bytes:
    """Rewrite the bytes libsndfile takes from the clock: the WAV PEAK chunk's timestamp
    (time(NULL)) and the Ogg stream serial number (seeded from gettimeofday)."""
    if fmt == "WAV":
        return zero_peak_timestamp(data)
    if fmt == "OGG":
        return set_ogg_serial(data, ogg_serial)
    return data


def zero_peak_timestamp(data: bytes) -> bytes:
    """Zero the timestamp field of a RIFF/WAVE PEAK chunk (libsndfile writes time(NULL))."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    buf = bytearray(data)
    pos = 12
    while pos + 8 <= len(buf):
        chunk, size = bytes(buf[pos : pos + 4]), struct.unpack_from("<I", buf, pos + 4)[0]
        if chunk == b"PEAK" and size >= 8:
            struct.pack_into("<I", buf, pos + 12, 0)  # after the 4-byte version
        if chunk == b"data":
            break
        pos += 8 + size + (size & 1)
    return bytes(buf)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(page: bytes | bytearray) -> int:
    """Ogg page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, init 0 (RFC 3533)."""
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Give every page of a single-stream Ogg file `serial`, re-checksumming each page."""
    buf = bytearray(data)
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 4] != b"OggS":
            raise ValueError(f"Ogg page expected at byte {pos}")
        n_segments = buf[pos + 26]
        length = 27 + n_segments + sum(buf[pos + 27 : pos + 27 + n_segments])
        struct.pack_into("<I", buf, pos + 14, serial)
        struct.pack_into("<I", buf, pos + 22, 0)
        struct.pack_into("<I", buf, pos + 22, _ogg_crc(buf[pos : pos + length]))
        pos += length
    return bytes(buf)
