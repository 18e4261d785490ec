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
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
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
# The largest tar member read into memory. A 20-s utterance is ~0.4 MB in FLAC and 0.64 MB
# in npy, its json a few kB; a header claiming more is a damaged or foreign tar, refused
# before a read that could take the whole memory of a loader worker.
MAX_MEMBER_BYTES = 64 << 20

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


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/key.audio.flac` → (`dir/key`, `audio.flac`): the key ends at the first dot of the
    basename, as in webdataset."""
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
        return open(local_path(source), "rb")  # noqa: SIM115
    check_source(source)
    import webdataset as wds

    return wds.gopen(os.fspath(source), "rb")


class _HashingReader:
    """Read-only stream wrapper that hashes and counts every byte tarfile reads, so a shard
    is checked against index.json in the same pass that reads it."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end: tarfile stops at the end-of-archive blocks, the file goes on."""
        while self.read(_DRAIN_CHUNK):
            pass


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
            stream = _HashingReader(raw) if ref is not None else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, ext = split_member_name(info.name)
                    if info.size > MAX_MEMBER_BYTES:
                        raise ShardFormatError(
                            f"{shard}: member {info.name!r} declares {info.size} bytes, more "
                            f"than the {MAX_MEMBER_BYTES} a sample member may have"
                        )
                    data = tar.extractfile(info).read()
                    if len(data) != info.size:
                        raise ShardFormatError(
                            f"{shard}: member {info.name!r} truncated "
                            f"({len(data)} of {info.size} bytes)"
                        )
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
