"""Reading shards back as decoded samples, checked against index.json, with errors that
name shard and key.

A shard is named by one of three things, and which one decides how it is opened:

- a `shards.ShardRef` (what `Index.entries` lists): always a local file under OUT, and
  checked against index.json while it is read (below);
- a path object (`pathlib.Path`): always a local file;
- a string: a local path, unless it starts with a URL scheme that webdataset's `gopen`
  serves (`http(s):`, `pipe:`, `gs:`, …), given on purpose so a cluster can train from
  object storage with the same reader: `https://host/train-000000.tar` (via curl),
  `pipe:aws s3 cp s3://bucket/train-000000.tar -`. `file:/data/x.tar` is a local path.
  A `pipe:` URL runs a shell command, so it is refused unless the user opts in with
  TELUCODEC_ALLOW_PIPE=1.

Local paths never reach `gopen`: a folder named `pipe:touch X;false` or `data:v2` is a
folder (and `Index` lists shards by absolute path, so a relative OUT cannot look like a
URL either). Tar members are streamed, never seeked.

A ShardRef read to its end is compared with its index.json entry: the sample count, the
byte count and the sha256 of every byte streamed (hashed as the tar is read, no second
pass). A difference raises `ShardMismatchError` after the shard's last sample: samples
already yielded were already used, as are those before the break of a truncated tar; the
caller counts and reports the read (shards.loader). A read stopped early by its consumer
(`--max-val-items`, the end of a training epoch) is not a whole read and is not checked.

The tar is parsed here (`_tar_members`), for measured speed: tarfile's stream mode (header
parsing, buffer joins, data copies) cost ~55 µs a sample more, a third of a checked read
whose rest is the file read and the sha256 (docs/BENCHMARKS.md §2). It reads ustar, GNU
base-256 sizes and long names and pax `path`/`size`, and ends where tarfile ends on our
shards and on tarfile's own output: at the end-of-archive block, at a damaged or truncated
header after the first (the count and sha256 then catch it), and with an error at a bad
first header or data that stops short (tests/unit/test_shards.py holds it to tarfile). It
is stricter where a shard is hostile: extended headers past MAX_EXTENDED_HEADERS or
MAX_EXTENDED_BYTES, malformed pax records, names over MAX_NAME_CHARS or not UTF-8,
members the format does not have, a json over MAX_JSON_BYTES, and negative sizes are
errors; and it checks a header's checksum, name, size and type only (tarfile also stops at
a bad mtime or uid), so a listed shard relies on its count and sha256 for the rest.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from shards.format import ShardFormatError, decode_sample
from shards.index import ShardRef

# The schemes webdataset's gopen has handlers for; any other `word:` prefix is part of a
# local file name (`data:v2/shards/…`), never a URL.
URL_SCHEMES = frozenset({"pipe", "http", "https", "sftp", "ftps", "scp", "gs", "htgs", "ais", "hf"})
# `pipe:` runs its text in a shell: only when the user says so.
ALLOW_PIPE_ENV = "TELUCODEC_ALLOW_PIPE"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_TAR_NAME = re.compile(r"[^/\s'\"]+\.tar\w*")
_DRAIN_CHUNK = 1 << 20
TAR_BLOCK = 512
# Member types (the header's type byte) as tarfile treats them: regular files, whose data
# is a sample member; types with no data blocks (links, devices, directories, fifos); pax
# extended headers (per member, global, Solaris) and GNU long names, which describe the
# next header; GNU sparse files, never written by ShardWriter and refused. Any other type's
# data is skipped, as tarfile skips it.
_REGULAR_TYPES = frozenset({b"0", b"\0", b"7"})
_NO_DATA_TYPES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})
_PAX_TYPES = frozenset({b"x", b"g", b"X"})
_GNU_LONG_TYPES = frozenset({b"L", b"K"})
_GNU_TYPES = _GNU_LONG_TYPES | {b"S"}
# Read size of the local shard file: one system call per ~4 members, not per header.
_READ_BUFFER = 1 << 16
# The largest tar member read into memory. A 20-s utterance is ~0.4 MB in FLAC and 0.64 MB
# in npy, its json a few kB; a header claiming more is a damaged or foreign tar, refused
# before a read that could take the whole memory of a loader worker.
MAX_MEMBER_BYTES = 64 << 20
# A json member: a few hundred bytes (its `valid` runs and provenance); 1 MiB is far more.
MAX_JSON_BYTES = 1 << 20
# ShardWriter writes no extended header; other tools' (a pax mtime, a long path) take a
# block or two. Past these a tar is hostile or broken, not a shard.
MAX_EXTENDED_HEADERS = 4
MAX_EXTENDED_BYTES = 64 << 10
MAX_NAME_CHARS = 1024
# The members a sample of the format has (docs/SHARDS.md): anything else is refused.
SAMPLE_MEMBERS = frozenset({"audio.flac", "audio.npy", "json"})

ShardSource = str | os.PathLike | ShardRef


class ShardMismatchError(ShardFormatError):
    """A shard read to its end differs from its index.json entry (sample count, bytes or
    sha256): not the shard preprocessing wrote. `sha256_differs` says whether its bytes do."""

    def __init__(self, message: str, sha256_differs: bool = True):
        super().__init__(message)
        self.sha256_differs = sha256_differs


def url_scheme(source: ShardSource) -> str | None:
    """The gopen scheme `source` is read with, or None for a local file. Only a string can
    be a URL; a ShardRef or a path object is a local file whatever its name holds."""
    if not isinstance(source, str):
        return None
    match = _SCHEME.match(source)
    scheme = match.group(1).lower() if match else None
    return scheme if scheme in URL_SCHEMES else None


def pipe_allowed() -> bool:
    return os.environ.get(ALLOW_PIPE_ENV, "") == "1"


def check_source(source: ShardSource) -> None:
    """Refuse a `pipe:` URL unless TELUCODEC_ALLOW_PIPE=1: ShardFormatError naming it."""
    if url_scheme(source) == "pipe" and not pipe_allowed():
        raise ShardFormatError(
            f"{source!r}: a pipe: URL runs a shell command; set {ALLOW_PIPE_ENV}=1 to allow "
            "pipe: shard URLs"
        )


def local_path(source: ShardSource) -> str:
    """The file a local source names (`file:` stripped)."""
    if isinstance(source, ShardRef):
        return source.path
    text = os.fspath(source)
    return text[5:] if isinstance(source, str) and text.startswith("file:") else text


def shard_name(url: ShardSource) -> str:
    """The shard's file name in a path or URL, for messages: `pipe:curl -s
    https://h/b/train-000003.tar` → `train-000003.tar`; the whole URL if none is visible."""
    if isinstance(url, ShardRef):
        return url.name
    text = os.fspath(url)
    if url_scheme(url) is None:
        return Path(local_path(url)).name or text
    names = _TAR_NAME.findall(text)
    return names[-1] if names else Path(text).name or text


def _member_limit(shard: str, name: str) -> int:
    """The most bytes member `name` may have: a json's MAX_JSON_BYTES, an audio member's
    MAX_MEMBER_BYTES; ShardFormatError for a member the format does not have."""
    _, ext = split_member_name(name)
    if ext not in SAMPLE_MEMBERS:
        raise ShardFormatError(
            f"{shard}: member {name!r} is not part of a sample (expected "
            f"{', '.join(sorted(SAMPLE_MEMBERS))}; docs/SHARDS.md)"
        )
    return MAX_JSON_BYTES if ext == "json" else MAX_MEMBER_BYTES


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/key.audio.flac` → (`dir/key`, `audio.flac`): the key ends at the first dot of the
    basename, as in webdataset. A name that is not UTF-8 is refused (ValueError): keys are
    hashed and printed as text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"member name {name!r} is not UTF-8") from None
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        raise ValueError(f"member {name!r} has no extension")
    return (f"{head}/{stem}" if head else stem), ext


def _open(source: ShardSource) -> BinaryIO:
    """A binary stream of a shard: local files with open(); URLs with webdataset's gopen,
    imported only then (it imports torch: ~3 CPU-s and ~160 MB in every preprocessing
    worker that merely writes shards)."""
    if url_scheme(source) is None:
        return open(local_path(source), "rb", buffering=_READ_BUFFER)  # noqa: SIM115
    check_source(source)
    import webdataset as wds

    return wds.gopen(os.fspath(source), "rb")


class _TarStream:
    """The bytes of one shard as the tar parser asks for them: exactly `n` at a time (a
    pipe's short reads are read again), hashed and counted when `hashing`, so a listed
    shard is checked against index.json in the same pass that reads it."""

    def __init__(self, stream: BinaryIO, hashing: bool):
        self._stream = stream
        self.sha = hashlib.sha256() if hashing else None
        self.size = 0

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        while 0 < len(data) < n:  # a pipe or socket: read on to n or the end
            more = self._stream.read(n - len(data))
            if not more:
                break
            data += more
        if self.sha is not None:
            self.sha.update(data)
        self.size += len(data)
        return data

    def skip(self, n: int) -> None:
        """Read (and hash) `n` bytes without keeping them."""
        while n > 0:
            got = len(self.read(min(n, _DRAIN_CHUNK)))
            if not got:
                raise tarfile.ReadError("unexpected end of data")
            n -= got

    def drain(self) -> None:
        """Read to the end: the parser stops at the end-of-archive blocks, the file goes on."""
        while self.read(_DRAIN_CHUNK):
            pass


class _HeaderError(Exception):
    """A block that is not a valid tar header."""


def _tar_number(field: bytes) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (first byte
    0x80, or 0xFF for a negative number), as tarfile.nti reads it."""
    if field[0] in (0x80, 0xFF):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0xFF else n
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise _HeaderError("invalid header") from None


def _tar_header(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, type) of one 512-byte header block; _HeaderError when it is short or
    its checksum (the byte sum with the checksum field as spaces, unsigned or signed) does
    not match."""
    if len(block) != TAR_BLOCK:
        raise _HeaderError("truncated header")
    stored = _tar_number(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 256  # the field counts as 8 spaces
    if stored != unsigned:
        high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
        if stored != unsigned - 256 * high:
            raise _HeaderError("bad checksum")
    kind = block[156:157]
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    prefix = block[345:500].split(b"\0", 1)[0]
    if prefix and kind not in _GNU_TYPES:  # a ustar name longer than 100 bytes
        name = prefix.decode("utf-8", "surrogateescape") + "/" + name
    if kind == b"\0" and name.endswith("/"):  # an old-style directory
        kind = b"5"
    return name, _tar_number(block[124:136]), kind


def _pax_records(data: bytes) -> dict[str, str]:
    """The `path` and `size` of a pax extended header's `<length> <key>=<value>\\n` records
    (the only keys that change what a sample reader yields; others are dropped, so a
    header of a million keys keeps none). Each record is checked as CPython ≥ 3.12.6
    checks it: ASCII digits, a space, at least 5 bytes, inside the data, ending in a
    newline; anything else is _HeaderError (never a loop that does not advance)."""
    records, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit() or not digits.isascii():
            raise _HeaderError("invalid pax header")
        length = int(digits)
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _HeaderError("invalid pax header")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _HeaderError("invalid pax header")
        if key in (b"path", b"size"):
            records[key.decode("ascii")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _member_data(
    stream: _TarStream, shard: str, name: str, size: int, limit: int = MAX_MEMBER_BYTES
) -> bytes:
    """A member's `size` bytes and the padding to its block boundary; tarfile's error
    when the stream ends before them, ShardFormatError past `limit` bytes (refused
    before it is read)."""
    if size < 0:  # a base-256 or pax size can say so; read(-n) would read to the end
        raise tarfile.ReadError(f"member {name!r}: negative size {size}")
    if size > limit:
        raise ShardFormatError(
            f"{shard}: member {name!r} declares {size} bytes, more than the "
            f"{limit} a sample member of its kind may have"
        )
    data = stream.read(size)  # the data and its padding apart: no slice copies the data
    if len(data) != size or len(stream.read(-size % TAR_BLOCK)) != -size % TAR_BLOCK:
        raise tarfile.ReadError("unexpected end of data")
    return data


def _tar_members(
    stream: _TarStream, shard: str, limit: Callable[[str], int] = lambda name: MAX_MEMBER_BYTES
) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular member, in file order: a hand-written tar reader, for
    measured speed (module docstring), that ends where tarfile's stream mode ends. Raises
    tarfile.ReadError where tarfile raises it: a bad or missing first header, a bad header
    after an extended one, data cut short, extended headers past their bounds;
    ShardFormatError for a member over `limit(name)` bytes (`limit` may raise it too)."""
    first = True
    global_pax: dict[str, str] = {}
    while True:
        block = stream.read(TAR_BLOCK)
        if len(block) < TAR_BLOCK or block.count(0) == TAR_BLOCK:
            if first and len(block) < TAR_BLOCK:
                raise tarfile.ReadError("empty file" if not block else "truncated header")
            return
        try:
            name, size, kind = _tar_header(block)
        except _HeaderError as exc:
            if first:
                raise tarfile.ReadError(str(exc)) from None
            return  # a damaged header ends the archive, as in tarfile
        first = False
        pax = dict(global_pax)
        long_name = None
        extended = 0
        while kind in _PAX_TYPES or kind in _GNU_LONG_TYPES:  # they describe the next header
            extended += 1
            if extended > MAX_EXTENDED_HEADERS or not 0 <= size <= MAX_EXTENDED_BYTES:
                raise tarfile.ReadError(
                    f"member {name!r}: extended headers past {MAX_EXTENDED_HEADERS} of "
                    f"{MAX_EXTENDED_BYTES} bytes (a shard's tar needs none)"
                )
            data = _member_data(stream, shard, name, size)
            try:
                if kind in _PAX_TYPES:
                    records = _pax_records(data)
                    pax.update(records)
                    if kind == b"g":
                        global_pax.update(records)
                elif kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                name, size, kind = _tar_header(stream.read(TAR_BLOCK))
            except _HeaderError as exc:
                raise tarfile.ReadError(f"after an extended header: {exc}") from None
        if long_name is not None:
            name = long_name
        if "path" in pax:
            name = pax["path"]
        if len(name) > MAX_NAME_CHARS:
            raise tarfile.ReadError(f"member name of {len(name)} characters: {name[:60]!r}…")
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise tarfile.ReadError(f"member {name!r}: pax size {pax['size']!r}") from None
        if kind in _REGULAR_TYPES:
            yield name, _member_data(stream, shard, name, size, limit(name))
        elif kind == b"S":
            raise tarfile.ReadError(f"member {name!r} is a GNU sparse file")
        elif kind not in _NO_DATA_TYPES:
            if size < 0:
                raise tarfile.ReadError(f"member {name!r}: negative size {size}")
            stream.skip(-(-size // TAR_BLOCK) * TAR_BLOCK)


def mismatch(ref: ShardRef, samples: int, size: int, sha256: str) -> ShardMismatchError | None:
    """How a whole read of `ref` differs from its index.json entry; None when it does not."""
    problems = []
    if samples != ref.samples:
        problems.append(f"read {samples} samples, index.json lists {ref.samples}")
    if size != ref.bytes:
        problems.append(f"{size} bytes, index.json lists {ref.bytes}")
    if sha256 != ref.sha256:
        problems.append("sha256 differs from index.json")
    if not problems:
        return None
    return ShardMismatchError(f"{ref.name}: " + "; ".join(problems), sha256 != ref.sha256)


def iter_raw_samples(source: ShardSource) -> Iterator[dict[str, bytes]]:
    """Group one tar's members by key, in file order, without decoding.

    `source`: a ShardRef, a local path or a URL (module docstring). Raises ShardFormatError
    naming the shard and the last key read when the tar is truncated or corrupt, or the URL
    cannot be read (a `pipe:` command's exit status included); for a ShardRef read to its
    end, ShardMismatchError after the last sample when it differs from index.json.
    """
    shard = shard_name(source)
    ref = source if isinstance(source, ShardRef) else None
    current: dict[str, Any] | None = None
    samples = 0
    try:
        with _open(source) as raw:
            # Only a listed shard has a sha256 to compare with; a URL is streamed as is.
            stream = _TarStream(raw, hashing=ref is not None)
            for name, data in _tar_members(stream, shard, lambda n: _member_limit(shard, n)):
                key, ext = split_member_name(name)
                if current is not None and current["__key__"] != key:
                    samples += 1
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                if ext in current:
                    raise ShardFormatError(f"{shard}: sample {key!r} repeats member {ext!r}")
                current[ext] = data
            if ref is not None:
                stream.drain()
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ShardFormatError):
            raise
        last = current["__key__"] if current else "<none>"
        scheme = url_scheme(source)
        where = f" ({os.fspath(source)})" if scheme else ""
        raise ShardFormatError(
            f"{shard}{where}: unreadable tar after sample {last!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if current is not None:
        samples += 1
        yield current
    if ref is not None:
        problem = mismatch(ref, samples, stream.size, stream.sha.hexdigest())
        if problem is not None:
            raise problem


def read_samples(paths: ShardSource | Iterable[ShardSource]) -> Iterator[dict[str, Any]]:
    """Yield `{"key", "audio": float32[T], "mask": bool[T], "meta": dict}` from shards, in
    order. A bad shard or member raises ShardFormatError naming shard and key; a ShardRef
    (`Index.entries(split)`) is also checked against index.json: each sample's `split`
    (SplitMismatchError) and, read whole, its count and sha256 (ShardMismatchError)."""
    if isinstance(paths, (str, os.PathLike, ShardRef)):
        paths = [paths]
    for path in paths:
        shard = shard_name(path)
        split = path.split if isinstance(path, ShardRef) else None
        for members in iter_raw_samples(path):
            yield decode_sample(members, shard=shard, split=split)
