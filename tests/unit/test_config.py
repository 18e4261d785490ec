"""Config and CLI values are judged up front: one line naming the key or file, exit 2,
before Ray starts or OUT is touched (issue 11, items 7 and 8)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from preprocess import run
from preprocess.config import ConfigError, PreprocessConfig, load_config
from preprocess.diagnose import cli as diagnose


def wrong_type(value: object) -> object:
    """A value of another kind than `value`: a string for numbers, a number for the rest."""
    return "abc" if isinstance(value, int | float) and not isinstance(value, bool) else 1


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(PreprocessConfig)])
def test_every_field_refuses_a_value_of_the_wrong_type_naming_the_key(key):
    bad = wrong_type(getattr(PreprocessConfig(), key))
    with pytest.raises(ConfigError, match=rf"^config key {key} = {bad!r}: expected") as err:
        PreprocessConfig(**{key: bad})
    assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("frame_ms", 0, "1 ≤ frame_ms ≤ 1000"),
        ("clip_level", 1.5, "0 < clip_level ≤ 1"),
        ("clip_level", 0.0, "0 < clip_level ≤ 1"),
        ("sample_rate", 8000, "16000"),
        ("val_fraction", 1.0, "0 ≤ val_fraction < 1"),
        ("min_val_seconds", -1, "min_val_seconds ≥ 0"),
        ("max_utterance_seconds", float("inf"), "finite"),
        ("max_utterance_seconds", 0.5, "1 ≤ max_utterance_seconds ≤ 600"),
        ("split_pause_seconds", 0.0, "split_pause_seconds > 0"),
        ("clip_min_run", 2.5, "an integer"),
        ("trim", 0, "true or false"),
        ("val_fraction", True, "a number"),
        ("audio_encoding", "mp3", "['flac', 'npy']"),
        ("extra_audio_extensions", "m4a", "a list of extensions"),
    ],
)
def test_out_of_range_values_name_key_value_and_allowed_range(key, value, allowed):
    with pytest.raises(ConfigError, match=f"config key {key} = ") as err:
        PreprocessConfig(**{key: value})
    assert allowed in str(err.value)


def test_an_int_for_a_float_field_is_the_same_config_as_the_float():
    assert (
        PreprocessConfig(max_utterance_seconds=20).digest()
        == PreprocessConfig(max_utterance_seconds=20.0).digest()
    )


def test_a_bad_value_in_the_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("frame_ms = 0\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}: config key frame_ms = 0.0"):
        load_config(path)
    assert load_config(path, frame_ms=20.0).frame_ms == 20.0  # a flag overrides the file


# The rows of issue 11 items 7 and 8, each an error before anything starts.
CONFIG_CASES = {
    "frame_ms zero": ("c.json", '{"frame_ms": 0}', "config key frame_ms = 0.0"),
    "string for a number": (
        "c.toml",
        'max_utterance_seconds = "abc"',
        "max_utterance_seconds = 'abc'",
    ),
    "retired segment length": (
        "c.toml",
        "segment_seconds = 4.0",
        "segment_seconds is no longer a preprocess setting: the segment length is chosen at "
        "training time (`train_ds.py --segment-seconds`)",
    ),
    "retired valid fraction": (
        "c.json",
        '{"min_valid_fraction": 0.5}',
        "min_valid_fraction is no longer a preprocess setting",
    ),
    "bool for a number": ("c.json", '{"val_fraction": true}', "val_fraction = True"),
    "top-level list": ("c.json", "[1, 2]", "expected a table of config keys, got a list"),
    "unparsable toml": ("c.toml", "frame_ms = = 2", "not valid TOML"),
    "unparsable json": ("c.json", "{frame_ms: 2", "not valid JSON"),
    "unknown key": ("c.json", '{"frame_msec": 2}', "unknown config keys ['frame_msec']"),
    "preprocess table": ("c.toml", "[preprocess]\nclip_level = 2.0", "clip_level = 2.0"),
    "directory": ("c.d", None, "is a directory"),
    "missing": ("absent.json", "", "no such file"),
}


def make_config(tmp_path, name: str, text: str | None):
    path = tmp_path / name
    if text is None:
        path.mkdir()
    elif name != "absent.json":
        path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_run_refuses_a_bad_config_before_ray_or_out(tmp_path, capsys, case):
    name, text, message = CONFIG_CASES[case]
    path = make_config(tmp_path, name, text)
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--config", str(path)]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("preprocess: error: ") and message in err and str(path) in err
    assert err.count("\n") == 1, err
    assert not out.exists()
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("case", ["frame_ms zero", "top-level list", "directory"])
def test_diagnose_refuses_a_bad_config_before_scanning(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)  # where a raw corpus's scan dir goes by default
    name, text, message = CONFIG_CASES[case]
    path = make_config(tmp_path, name, text)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert diagnose.main([str(corpus), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preprocess: error: ") and message in err
    assert not (tmp_path / "corpus.diagnose").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--segment-seconds", "4"],
            "--segment-seconds is no longer a preprocess flag: the segment length is chosen at "
            "training time (`train_ds.py --segment-seconds`)",
        ),
        (["--min-valid-fraction", "0.5"], "--min-valid-fraction is no longer a preprocess flag"),
        (["--max-utterance-seconds", "0"], "max_utterance_seconds = 0.0"),
        (["--val-fraction", "1.5"], "val_fraction = 1.5"),
        (["--min-val-seconds", "-5"], "min_val_seconds = -5.0"),
        (["--split-by", "speaker"], "split_by = 'speaker'"),
        (["--split-by", "re:("], "a valid regular expression"),
        (["--split-by", "manifest:absent.csv"], "a readable manifest"),
        (["--workers", "0"], "--workers 0"),
    ],
)
def test_run_refuses_bad_flags_before_ray_or_out(tmp_path, capsys, flags, message):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    assert run.main(["--input", str(tmp_path / "in"), "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preprocess: error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top", "-1"], "--top -1"),
        (["--max-padding", "2"], "--max-padding 2.0"),
        (["--workers", "0"], "--workers 0"),
        (["--what-if", "frame_msec=3"], "not a config field"),
        (["--what-if", "min_active_fraction=3"], "config key min_active_fraction = 3.0"),
    ],
)
def test_diagnose_refuses_bad_flags_before_scanning(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)  # where a raw corpus's scan dir goes by default
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert diagnose.main([str(corpus), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "corpus.diagnose").exists()


def test_to_dict_through_json_and_from_dict_gives_the_same_config():
    cfg = PreprocessConfig(max_utterance_seconds=1.5, extra_audio_extensions=(".raw", ".pcm"))
    data = json.loads(json.dumps(cfg.to_dict()))  # lists, plus the derived keys
    assert data["utterance_max_samples"] == 24000
    assert data["extra_audio_extensions"] == [".raw", ".pcm"]
    back = PreprocessConfig.from_dict(data)
    assert back == cfg and back.digest() == cfg.digest()


def test_a_format_1_config_is_refused_saying_where_the_segment_length_went():
    with pytest.raises(ConfigError, match=r"^index\.json: segment_seconds is no longer a "):
        PreprocessConfig.from_dict({"segment_seconds": 1.0}, source="index.json")
    with pytest.raises(ConfigError, match="train_ds.py --segment-seconds"):
        load_config(min_valid_fraction=0.5)


def test_min_utterance_longer_than_the_cap_is_refused():
    with pytest.raises(ConfigError, match="min_utterance_seconds = 30.0: expected ≤ max_utt"):
        PreprocessConfig(min_utterance_seconds=30.0)


def test_from_dict_refuses_unknown_keys_naming_source_and_key():
    with pytest.raises(ValueError, match=r"index\.json: unknown config keys \['segment_secs'\]"):
        PreprocessConfig.from_dict({"segment_secs": 2.0}, source="index.json")


def test_config_file_keys_are_checked_and_flags_override_the_file(tmp_path):
    path = tmp_path / "pre.toml"
    path.write_text(
        "[preprocess]\nmax_utterance_seconds = 8.0\nval_fraction = 0.1\nframe_samples = 1\n"
    )
    cfg = load_config(path, val_fraction=0.2, shard_mb=None)
    assert (cfg.max_utterance_seconds, cfg.val_fraction, cfg.shard_mb) == (8.0, 0.2, 32.0)
    path.write_text("[preprocess]\nmin_rsm = 0.1\n")
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r": unknown config keys \['min_rsm'\]"
    ):
        load_config(path)
