"""The same format-2 OUT read by the three loaders a user brings (docs/SHARDS.md "Interop"):
plain webdataset, Hugging Face `datasets` and a Lhotse `CutSet` under its samplers. Each
test runs the example the doc shows, on an OUT built with the shards writer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import shards
from shards import Index, ShardWriter, read_samples

SR = 16000
# Utterance lengths in samples per shard: uneven, one shorter than a second, one with two
# valid runs (a padded gap), as preprocess writes them.
TRAIN = ((11200, 40000, 23456), (8000, 61000))
VAL = ((17000, 9600),)
MAX_SAMPLES = 20 * SR


def _meta(split: str, shard: int, i: int, n: int) -> dict:
    return {
        "source": f"{split}/spk{shard}/utt{i}.wav",
        "offset": 160 * i,
        "gain_db": -2.5,
        "sample_rate": SR,
        "split": split,
        "samples": n,
    }


def make_utterance_out(root: Path, encoding: str = "flac") -> Path:
    """A format-2 OUT: shards of utterances of uneven length, index.json and manifest.jsonl."""
    rng = np.random.default_rng(0)
    listed, rows = [], []
    for split, shard_sizes in (("train", TRAIN), ("val", VAL)):
        for number, sizes in enumerate(shard_sizes):
            name = f"{split}-{number:06d}.tar"
            with ShardWriter(root / "shards" / name, encoding=encoding) as writer:
                for i, n in enumerate(sizes):
                    audio = rng.uniform(-0.5, 0.5, n).astype(np.float32)
                    valid = [[0, n]] if i != 1 else [[0, n // 3], [n // 2, n]]
                    if i == 1:
                        audio[n // 3 : n // 2] = 0.0
                    key = shards.sample_key(f"{split}{number}u{i}", 0)
                    writer.write(key, audio, valid, _meta(split, number, i, n))
                    rows.append(
                        {
                            "key": key,
                            "shard": name,
                            "split": split,
                            "samples": n,
                            "seconds": n / SR,
                            "valid_seconds": sum(e - s for s, e in valid) / SR,
                            "source": _meta(split, number, i, n)["source"],
                            "offset": 160 * i,
                        }
                    )
            listed.append({**writer.info.to_dict(), "split": split})
    shards.write_manifest(root, rows)
    shards.write_index(
        root,
        {
            "format_version": shards.FORMAT_VERSION,
            "sample_rate": SR,
            "utterance_max_samples": MAX_SAMPLES,
            "manifest": shards.MANIFEST_NAME,
            "shards": listed,
        },
    )
    return root


@pytest.fixture
def out(tmp_path) -> Path:
    return make_utterance_out(tmp_path / "out")


def ours(out: Path, split: str) -> dict[str, dict]:
    return {s["key"]: s for s in read_samples(Index.load(out).entries(split))}


def test_manifest_lists_every_utterance_of_the_shards_with_its_length(out):
    index = Index.load(out)
    read = ours(out, "train") | ours(out, "val")
    rows = index.manifest()
    assert [r["key"] for r in rows] == list(read)  # shard-name order, then tar order
    for row in rows:
        sample = read[row["key"]]
        assert row["samples"] == sample["audio"].size == sample["meta"]["samples"]
        assert row["valid_seconds"] == pytest.approx(sample["mask"].sum() / SR)
    assert sum(r["samples"] for r in index.manifest("val")) == 17000 + 9600


def test_plain_webdataset_reads_utterances_as_docs_show(out):
    import webdataset as wds

    # docs/SHARDS.md, "Plain webdataset"
    urls = Index.load(out).paths("train")
    ds = wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("__key__", "audio.flac", "json")
    got = {}
    for key, flac, meta in ds:
        pcm, rate = sf.read(io.BytesIO(flac), dtype="int16")
        audio = pcm.astype(np.float32) / 32767
        mask = shards.mask_from_runs(meta["valid"], meta["samples"])
        got[key] = (rate, audio, mask, meta)

    expected = ours(out, "train")
    assert list(got) == list(expected)
    for key, (rate, audio, mask, meta) in got.items():
        assert rate == SR and meta == expected[key]["meta"]
        assert np.array_equal(audio, expected[key]["audio"])
        assert np.array_equal(mask, expected[key]["mask"])


def test_hugging_face_datasets_loads_the_train_split_as_docs_show(out, tmp_path):
    datasets = pytest.importorskip("datasets")
    from shards.hf import hf_features

    # docs/SHARDS.md, "Hugging Face datasets"
    index = Index.load(out)
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"train": index.paths("train")},
        split="train",
        features=hf_features(),
        cache_dir=str(tmp_path / "hf-cache"),
    )
    row = ds[1]
    pcm, rate = sf.read(io.BytesIO(row["audio.flac"]), dtype="int16")

    expected = ours(out, "train")
    assert len(ds) == index.samples("train") == len(expected)
    sample = expected[row["__key__"]]
    assert rate == SR and row["json"]["samples"] == pcm.size == 40000
    assert np.array_equal(pcm.astype(np.float32) / 32767, sample["audio"])
    assert row["json"] == sample["meta"]
    assert row["json"]["valid"] == [[0, 40000 // 3], [20000, 40000]]


def test_hugging_face_npy_features_give_the_int16_pcm(tmp_path):
    datasets = pytest.importorskip("datasets")
    from shards.hf import hf_features

    out = make_utterance_out(tmp_path / "out", encoding="npy")
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"val": Index.load(out).paths("val")},
        split="val",
        features=hf_features("npy"),
        cache_dir=str(tmp_path / "hf-cache"),
    )
    expected = ours(out, "val")
    assert [r["__key__"] for r in ds] == list(expected)
    pcm = np.asarray(ds[0]["audio.npy"], np.int16)
    assert np.array_equal(pcm.astype(np.float32) / 32767, expected[ds[0]["__key__"]]["audio"])


def test_lhotse_cutset_has_one_cut_per_utterance_with_valid_runs_and_audio(out):
    pytest.importorskip("lhotse")
    from shards.lhotse_cuts import cutset

    cuts = cutset(out, "train")
    expected = ours(out, "train")
    assert cuts.is_lazy and len(cuts) == len(expected)
    listed = list(cuts)
    assert [c.id for c in listed] == list(expected)
    for cut in listed:
        sample = expected[cut.id]
        n = sample["audio"].size
        assert cut.duration == n / SR and cut.sampling_rate == SR and cut.num_samples == n
        assert cut.custom["valid"] == sample["meta"]["valid"]
        assert cut.custom["source"] == sample["meta"]["source"]
        assert cut.custom["shard"] in {"train-000000.tar", "train-000001.tar"}
        spans = [(round(s.start * SR), round(s.end * SR)) for s in cut.supervisions]
        assert spans == [tuple(r) for r in sample["meta"]["valid"]]
        audio = cut.load_audio()
        assert audio.shape == (1, n)
        # soundfile scales int16 by 1/32768, ours by 1/32767: the same PCM.
        assert np.array_equal(np.round(audio[0] * 32768), np.round(sample["audio"] * 32767))


def test_lhotse_dynamic_bucketing_sampler_draws_every_cut_once_per_epoch(out):
    pytest.importorskip("lhotse")
    from lhotse.dataset import DynamicBucketingSampler
    from lhotse.dataset.collation import collate_audio

    from shards.lhotse_cuts import cutset

    # docs/SHARDS.md, "Lhotse"
    cuts = cutset(out, "train", shuffle_shards=True, seed=0)
    sampler = DynamicBucketingSampler(
        cuts, max_duration=4.0, num_buckets=2, shuffle=True, seed=0, buffer_size=100
    )
    drawn = []
    for batch in sampler:
        audio, lengths = collate_audio(batch)
        assert audio.shape[0] == len(batch) and int(lengths.max()) == audio.shape[1]
        drawn += [c.id for c in batch]
    assert sorted(drawn) == sorted(ours(out, "train"))


def test_lhotse_shard_order_changes_per_pass_but_repeats_for_a_seed(out):
    pytest.importorskip("lhotse")
    from shards.lhotse_cuts import OutCutIterator

    def orders(seed):
        it = OutCutIterator(Index.load(out), "train", shuffle_shards=True, seed=seed)
        return [[c.custom["shard"] for c in it][0] for _ in range(6)]

    assert orders(3) == orders(3)
    assert len(set(orders(3))) == 2  # both shards lead some pass


def test_lhotse_cutset_refuses_a_format_1_out(out):
    pytest.importorskip("lhotse")
    from shards.lhotse_cuts import cutset

    data = Index.load(out).data | {"format_version": 1}
    shards.write_index(out, data)
    with pytest.raises(shards.IndexFormatError, match="older preprocess"):
        cutset(out, "train")


def test_lhotse_cutset_refuses_a_val_shard_copied_over_a_train_shard(out):
    pytest.importorskip("lhotse")
    from shards.lhotse_cuts import cutset

    val = (out / "shards" / "val-000000.tar").read_bytes()
    (out / "shards" / "train-000001.tar").write_bytes(val)
    with pytest.raises(shards.SplitMismatchError, match="train-000001.tar.*split 'val'.*'train'"):
        list(cutset(out, "train"))


def test_lhotse_cut_refuses_meta_samples_that_differ_from_the_audio(out):
    pytest.importorskip("lhotse")
    from shards.lhotse_cuts import _to_cut
    from shards.reader import iter_raw_samples

    members = next(iter_raw_samples(Index.load(out).entries("train")[0]))
    meta = json.loads(members["json"])
    members["json"] = json.dumps(meta | {"samples": meta["samples"] + 1}).encode()
    with pytest.raises(shards.ShardFormatError, match="meta says .* samples, its audio has"):
        _to_cut(members, "train-000000.tar", "train")
