"""PreprocessConfig as data: it survives index.json and a Ray actor's argument unchanged."""

from __future__ import annotations

import json
import re

import pytest

from preprocess.config import PreprocessConfig, load_config


def test_to_dict_through_json_and_from_dict_gives_the_same_config():
    cfg = PreprocessConfig(segment_seconds=1.5, extra_audio_extensions=(".raw", ".pcm"))
    data = json.loads(json.dumps(cfg.to_dict()))  # lists, plus the derived keys
    assert data["segment_samples"] == 24000 and data["extra_audio_extensions"] == [".raw", ".pcm"]
    back = PreprocessConfig.from_dict(data)
    assert back == cfg and back.digest() == cfg.digest()


def test_from_dict_refuses_unknown_keys_naming_source_and_key():
    with pytest.raises(ValueError, match=r"index\.json: unknown config keys \['segment_secs'\]"):
        PreprocessConfig.from_dict({"segment_secs": 2.0}, source="index.json")


def test_config_file_keys_are_checked_and_flags_override_the_file(tmp_path):
    path = tmp_path / "pre.toml"
    path.write_text("[preprocess]\nsegment_seconds = 2.0\nval_fraction = 0.1\nframe_samples = 1\n")
    cfg = load_config(path, val_fraction=0.2, shard_mb=None)
    assert (cfg.segment_seconds, cfg.val_fraction, cfg.shard_mb) == (2.0, 0.2, 32.0)
    path.write_text("[preprocess]\nmin_rsm = 0.1\n")
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r": unknown config keys \['min_rsm'\]"
    ):
        load_config(path)
