"""Reading shards back as decoded samples, with errors that name shard and key.

A shard is named by a path or by a URL as webdataset takes it (`webdataset.gopen`):
`file:/data/train-000000.tar`, `pipe:aws s3 cp s3://bucket/train-000000.tar -`,
`https://host/train-000000.tar` (via curl), so a cluster can train from object storage
with the same reader; tar members are streamed, never seeked.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shards.format import ShardFormatError, decode_sample

_TAR_NAME = re.compile(r"[^/\s'\"]+\.tar\w*")


def shard_name(url: str | os.PathLike) -> str:
    """The shard's file name in a path or URL, for messages: `pipe:curl -s
    https://h/b/train-000003.tar` → `train-000003.tar`; the whole URL if none is visible."""
    text = os.fspath(url)
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


def _open(url: str | os.PathLike):
    """A binary stream of a shard: plain paths with open(); URLs with webdataset's gopen,
    imported only then (it imports torch: ~3 CPU-s and ~160 MB in every preprocessing
    worker that merely writes shards)."""
    text = os.fspath(url)
    if ":" not in text.split("/", 1)[0] or text.startswith("file:"):
        return open(text[5:] if text.startswith("file:") else text, "rb")  # noqa: SIM115
    import webdataset as wds

    return wds.gopen(text, "rb")


def iter_raw_samples(path: str | os.PathLike) -> Iterator[dict[str, bytes]]:
    """Group one tar's members by key, in file order, without decoding.

    `path` is a local path or a webdataset URL (`file:`, `pipe:`, `http(s):`). Raises
    ShardFormatError naming the shard and the last key read when the tar is truncated or
    corrupt, or the URL cannot be read (a `pipe:` command's exit status included).
    """
    shard = shard_name(path)
    current: dict[str, Any] | None = None
    try:
        with (
            _open(path) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = split_member_name(info.name)
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise ShardFormatError(
                        f"{shard}: member {info.name!r} truncated "
                        f"({len(data)} of {info.size} bytes)"
                    )
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                if ext in current:
                    raise ShardFormatError(f"{shard}: sample {key!r} repeats member {ext!r}")
                current[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ShardFormatError):
            raise
        last = current["__key__"] if current else "<none>"
        url = os.fspath(path)
        where = f" ({url})" if re.match(r"^[a-z]+:", url) else ""
        raise ShardFormatError(
            f"{shard}{where}: unreadable tar after sample {last!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if current is not None:
        yield current


def read_samples(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
) -> Iterator[dict[str, Any]]:
    """Yield `{"key", "audio": float32[T], "mask": bool[T], "meta": dict}` from shard paths,
    in order. A bad shard or member raises ShardFormatError naming shard and key."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        shard = shard_name(path)
        for members in iter_raw_samples(path):
            yield decode_sample(members, shard=shard)
