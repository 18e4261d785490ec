"""The data contract between preprocessing and training.

`shards` is the only package that both sides import: preprocess writes samples with
`ShardWriter`, training reads them with `read_samples` (or the torch loader in
`shards.loader`). The on-disk format is documented in `docs/SHARDS.md`; the
output directory's index, and the only way to list its shards, is `shards.Index`.
Readers given its entries (`Index.entries(split)`) check what they read against it.
`OUT/manifest.jsonl` lists every utterance without opening a tar (`shards.manifest`).
"""

from shards.format import (
    AUDIO_ENCODINGS,
    DEFAULT_AUDIO_ENCODING,
    SAMPLE_RATE,
    ShardFormatError,
    SplitMismatchError,
    decode_sample,
    encode_sample,
    mask_from_runs,
    runs_from_mask,
    sample_key,
)
from shards.index import (
    FORMAT_VERSION,
    INDEX_NAME,
    SHARD_DIR,
    SPLITS,
    Index,
    IndexFormatError,
    ShardRef,
    write_index,
)
from shards.manifest import MANIFEST_NAME, ManifestError, read_manifest, write_manifest
from shards.reader import ShardMismatchError, read_samples
from shards.writer import ShardInfo, ShardWriter

__all__ = [
    "AUDIO_ENCODINGS",
    "DEFAULT_AUDIO_ENCODING",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "Index",
    "IndexFormatError",
    "MANIFEST_NAME",
    "ManifestError",
    "SHARD_DIR",
    "SPLITS",
    "SplitMismatchError",
    "ShardRef",
    "SAMPLE_RATE",
    "ShardFormatError",
    "ShardInfo",
    "ShardMismatchError",
    "ShardWriter",
    "decode_sample",
    "encode_sample",
    "mask_from_runs",
    "read_manifest",
    "read_samples",
    "runs_from_mask",
    "sample_key",
    "write_index",
    "write_manifest",
]
