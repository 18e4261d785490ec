"""Our shards as a Hugging Face `datasets` dataset, through its generic webdataset builder.

    urls = shards.Index.load(OUT).paths("train")
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               features=shards.hf.hf_features())

A row is one utterance (format 2): `__key__`, `audio.flac` and `json` with `samples`,
`valid` and the provenance fields. The builder does not check what it reads against
index.json (our readers do, `shards.reader`): run `Index.verify()` first if that matters.

The builder would type `audio.flac` as `datasets.Audio`, whose encoder needs torchcodec
(and resamples/re-encodes); declaring the features keeps the FLAC bytes as they are in the
shard (decode with soundfile or `shards.format.decode_sample`) and types the json meta
(docs/SHARDS.md), so nothing beyond `datasets` itself is needed.
"""

from __future__ import annotations

from typing import Any

from shards.format import DEFAULT_AUDIO_ENCODING


def hf_features(encoding: str = DEFAULT_AUDIO_ENCODING) -> Any:
    """`datasets.Features` of one sample: `__key__`, `__url__`, `audio.<encoding>` (raw
    bytes for flac; the int16 array the builder loads for npy) and `json` (the meta)."""
    import datasets

    audio = (
        datasets.Value("binary") if encoding == "flac" else datasets.List(datasets.Value("int16"))
    )
    return datasets.Features(
        {
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
            f"audio.{encoding}": audio,
            "json": {
                "gain_db": datasets.Value("float64"),
                "offset": datasets.Value("int64"),
                "sample_rate": datasets.Value("int64"),
                "samples": datasets.Value("int64"),
                "source": datasets.Value("string"),
                "split": datasets.Value("string"),
                "valid": datasets.List(datasets.List(datasets.Value("int64"))),
            },
        }
    )
