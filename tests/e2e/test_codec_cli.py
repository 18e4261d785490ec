"""`python -m telucodec encode|decode|eval` (telucodec_cli) run as a user runs them, in a
subprocess, with a `tiny` checkpoint saved by the test: any input format/rate/channels in, a
`.tcq` at the nominal bitrate out, the exact length back, exit status 2 with a one-line
reason for every bad bitstream, and eval JSON with masked and unmasked figures side by side,
from the shards index.json lists and no others."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import shards
from shards import Index, ShardWriter, loader
from telucodec.bitstream import HEADER_BYTES, Header, decode_bitstream, encode_bitstream
from telucodec.checkpoint import load_codec, model_identity, save_codec
from telucodec.configs import get_config
from telucodec.evaluate import MetricSums, evaluate
from telucodec.metrics import PERCEPTUAL
from telucodec.model import Codec, aten_convolutions
from telucodec_cli.audio_files import read_audio
from telucodec_cli.main import parse_args
from tests.unit.test_codec_model import speechlike, trained_tiny
from tests.unit.test_windows import finish_out, manifest_row, utterance_meta

REPO = Path(__file__).resolve().parents[2]
SOURCE_RATE = 44_100
SOURCE_FRAMES = 3 * SOURCE_RATE + 77  # not a whole number of 16 kHz samples or of frames


def telucodec(*args: str) -> subprocess.CompletedProcess:
    # One thread: with two OpenMP threads on two cores shared with other jobs, torch can run
    # many times slower than with one (threads spin on barriers while a core is taken).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "telucodec", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def fails_clearly(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, and a one-line `telucodec CMD: error: ...` naming the problem, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("telucodec ") and ": error: " in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Module-wide, so it also covers training the checkpoint fixture (see `telucodec`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("codec_cli")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    save_codec(work / "ckpt", trained_tiny())
    return work / "ckpt"


@pytest.fixture(scope="module")
def stereo_flac(work) -> Path:
    """44.1 kHz stereo FLAC, the two channels at different gains."""
    rng = np.random.default_rng(0)
    left = speechlike(rng, SOURCE_FRAMES)
    audio = np.stack([left, 0.5 * left + 0.01 * rng.standard_normal(SOURCE_FRAMES)], axis=1)
    path = work / "input.flac"
    sf.write(path, audio.astype(np.float32), SOURCE_RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def encoded(work, checkpoint, stereo_flac) -> Path:
    out = work / "input.tcq"
    ok(telucodec("encode", stereo_flac, out, "--checkpoint", checkpoint, "--kbps", 6))
    return out


def expected_samples(path: Path) -> int:
    return read_audio(path, 16000).size


# ------------------------------------------------------------------------------ encode


def test_encode_reads_44k_stereo_flac_and_writes_versioned_tcq_at_6_kbps(encoded, stereo_flac):
    data = encoded.read_bytes()
    header, codes = decode_bitstream(data)
    assert data[:4] == b"TCQ\x00" and header.version == 2
    n_samples = expected_samples(stereo_flac)
    assert abs(n_samples - SOURCE_FRAMES * 16000 / SOURCE_RATE) <= 1
    model_id = model_identity(encoded.parent / "ckpt")
    assert header == Header(16000, 320, 12, 10, -(-n_samples // 320), n_samples, 2, model_id)
    assert codes.shape == (12, header.n_frames)
    payload_kbps = 8 * (len(data) - HEADER_BYTES) / (n_samples / 16000) / 1000
    assert payload_kbps == pytest.approx(6.0, rel=0.01)


def test_encode_at_1_5_kbps_uses_3_codebooks(work, checkpoint, stereo_flac):
    out = work / "low.tcq"
    proc = ok(telucodec("encode", stereo_flac, out, "--checkpoint", checkpoint, "--kbps", 1.5))
    assert "3 codebooks" in proc.stdout
    header, _ = decode_bitstream(out.read_bytes())
    payload_kbps = 8 * (out.stat().st_size - HEADER_BYTES) / (header.n_samples / 16000) / 1000
    assert header.n_codebooks == 3 and payload_kbps == pytest.approx(1.5, rel=0.01)


def test_encode_rejects_a_bitrate_the_checkpoint_cannot_serve(work, checkpoint, stereo_flac):
    proc = telucodec("encode", stereo_flac, work / "x.tcq", "--checkpoint", checkpoint, "--kbps", 7)
    fails_clearly(proc, "7.0 kbps is not a whole number of codebooks")
    assert not (work / "x.tcq").exists()


# ------------------------------------------------------------------------------ decode


def test_decode_gives_back_exactly_the_16k_length_of_the_input(
    work, checkpoint, stereo_flac, encoded
):
    out = work / "decoded.wav"
    ok(telucodec("decode", encoded, out, "--checkpoint", checkpoint))
    info = sf.info(out)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert info.frames == expected_samples(stereo_flac)
    # The CLI pipeline is the model: decode(encode(x)) == forward(x) up to PCM_16 rounding.
    decoded, _ = sf.read(out, dtype="float64")
    model = load_codec(checkpoint)
    x = torch.from_numpy(read_audio(stereo_flac, 16000))[None, None]
    with torch.no_grad():
        reference = model(x, n_quantizers=12).audio[0, 0].clamp(-1, 1).double().numpy()
    np.testing.assert_allclose(decoded, reference, rtol=0, atol=1.01 / 32768)


def test_decode_rejects_a_file_that_is_not_tcq(work, checkpoint, encoded):
    bad = work / "bad_magic.tcq"
    bad.write_bytes(b"RIFF" + encoded.read_bytes()[4:])
    proc = telucodec("decode", bad, work / "bad.wav", "--checkpoint", checkpoint)
    fails_clearly(proc, "bad magic", "not a .tcq bitstream")
    assert not (work / "bad.wav").exists()


def test_decode_rejects_a_truncated_payload(work, checkpoint, encoded):
    data = encoded.read_bytes()
    cut = work / "truncated.tcq"
    cut.write_bytes(data[:-100])
    proc = telucodec("decode", cut, work / "cut.wav", "--checkpoint", checkpoint)
    fails_clearly(proc, f"payload is {len(data) - 100 - HEADER_BYTES} bytes, expected")


def test_decode_rejects_more_codebooks_than_the_checkpoint_has(work, checkpoint):
    frames, n_samples = 50, 16_000
    codes = np.random.default_rng(1).integers(0, 1024, (13, frames))
    stream = work / "thirteen.tcq"
    stream.write_bytes(encode_bitstream(codes, Header(16000, 320, 13, 10, frames, n_samples)))
    proc = telucodec("decode", stream, work / "13.wav", "--checkpoint", checkpoint)
    fails_clearly(proc, "does not match the checkpoint", "13 codebooks, codec has only 12")


def test_decode_refuses_a_stream_encoded_by_another_checkpoint_of_the_same_shape(
    work, checkpoint, encoded
):
    other = work / "other_ckpt"
    model = load_codec(checkpoint)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # same config and shape, other weights
    save_codec(other, model)
    assert model_identity(other) != model_identity(checkpoint)
    proc = telucodec("decode", encoded, work / "other.wav", "--checkpoint", other)
    fails_clearly(proc, "encoded by model", model_identity(checkpoint).hex(), "garbage")
    assert not (work / "other.wav").exists()
    forced = ok(telucodec("decode", encoded, work / "other.wav", "--checkpoint", other, "--force"))
    assert "warning" in forced.stderr and (work / "other.wav").exists()


def test_decode_reads_a_version_1_stream_with_a_warning(work, checkpoint, encoded):
    data = encoded.read_bytes()
    v1 = bytearray(data[:32] + data[HEADER_BYTES:])  # version 1: no model identity
    v1[4] = 1
    (work / "v1.tcq").write_bytes(bytes(v1))
    proc = ok(telucodec("decode", work / "v1.tcq", work / "v1.wav", "--checkpoint", checkpoint))
    assert "warning" in proc.stderr and "version 1" in proc.stderr
    assert sf.info(work / "v1.wav").frames == decode_bitstream(data)[0].n_samples


def test_decoded_wav_is_byte_identical_to_decoding_the_whole_stream_at_once(
    work, checkpoint, encoded
):
    """Chunked decoding changes memory, not output: the same bytes as one `Codec.decode`."""
    out = work / "chunked.wav"
    ok(telucodec("decode", encoded, out, "--checkpoint", checkpoint))
    header, codes = decode_bitstream(encoded.read_bytes())
    with torch.inference_mode():
        whole = load_codec(checkpoint).decode(torch.from_numpy(codes)[None], header.n_samples)
    reference = work / "whole.wav"
    sf.write(reference, np.clip(whole[0, 0].numpy(), -1, 1), 16000, subtype="PCM_16")
    assert out.read_bytes() == reference.read_bytes()
    assert not list(work.glob("*.tmp-*"))  # the temp file was renamed into place


def test_decode_to_an_unknown_extension_is_one_line(work, checkpoint, encoded):
    proc = telucodec("decode", encoded, work / "out.xyz", "--checkpoint", checkpoint)
    fails_clearly(proc, "out.xyz", "cannot tell the audio format", "'.xyz'")
    assert not list(work.glob("out.xyz*"))


def test_checkpoint_config_out_of_bounds_is_refused_before_building_the_model(work, checkpoint):
    from telucodec.checkpoint import CheckpointError, read_checkpoint_config

    for field, value in (("codebook_size", 2**36), ("frame_channels", 0), ("n_codebooks", -1)):
        bad = work / f"bad_{field}"
        bad.mkdir(exist_ok=True)
        meta = json.loads((checkpoint / "config.json").read_text())
        meta["config"][field] = value
        (bad / "config.json").write_text(json.dumps(meta))
        (bad / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
        with pytest.raises(CheckpointError, match=f"{field} {value} outside the allowed"):
            read_checkpoint_config(bad)
    proc = telucodec("decode", "x.tcq", work / "x.wav", "--checkpoint", work / "bad_codebook_size")
    fails_clearly(proc, "codebook_size 68719476736 outside the allowed 2..65536")


# ---------------------------------------------------------------- decode in bounded memory

# Decoders whose output samples see several frames: a residual kernel of 3 frames plus
# de-emphasis on the frame pair, and a SEANet of `base`'s shape (rates 8·5·4·2, dilated units).
MULTI_FRAME = {
    "frame_k3_emphasis": get_config("small").replace(
        frame_channels=64, frame_residual_layers=2, frame_residual_kernel=3, emphasis=0.9
    ),
    "seanet": get_config("base").replace(
        encoder_dim=4, decoder_dim=32, latent_dim=16, codebook_dim=8, n_codebooks=4, emphasis=0.68
    ),
}


def random_codec(cfg) -> Codec:
    torch.manual_seed(0)
    return Codec(cfg).eval()


def chunked(model: Codec, codes: torch.Tensor, length: int, chunk: int) -> torch.Tensor:
    with torch.inference_mode():
        blocks = model.decode_blocks(lambda a, b: codes[..., a:b], length, chunk)
        return torch.cat(list(blocks), dim=-1)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_chunked_decode_is_bit_identical_to_the_whole_decode(name):
    model = random_codec(get_config(name))
    frames, length = 157, 157 * 320 - 123  # a prime frame count and a part frame at the end
    codes = torch.randint(0, 1024, (2, 6, frames), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = model.decode(codes, length)
    for chunk in (1, 2, 7, 50, 156, 157, 500):  # none but 1 and 157 divides 157
        assert torch.equal(chunked(model, codes, length, chunk), whole), chunk


@pytest.mark.parametrize("name", sorted(MULTI_FRAME))
def test_chunked_decode_of_a_multi_frame_decoder_does_not_depend_on_the_chunk(name):
    """Bit-identical for every chunk size and to the whole decode on the same conv path;
    oneDNN's whole decode rounds differently, by under 1e-6 of the peak."""
    model = random_codec(MULTI_FRAME[name])
    frames = 61
    length = frames * model.hop_length - 7
    codes = torch.randint(0, 1024, (1, 3, frames), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), aten_convolutions():
        whole = model.decode(codes, length)
    with torch.inference_mode():
        default = model.decode(codes, length)
    left, right = model.decode_context()
    assert left > right > 1  # several frames of context, and de-emphasis looks back further
    for chunk in (1, 5, 13, 60, 61, 100):
        out = chunked(model, codes, length, chunk)
        assert torch.equal(out, whole), chunk
        assert (out - default).abs().max() <= 1e-6 * default.abs().max()
    # The context is what makes the seams exact: without it, they show.
    model.decode_context = lambda: (0, 0)
    assert (chunked(model, codes, length, 13) - whole).abs().max() > 1e-3


def test_chunked_decode_asks_for_at_most_a_chunk_plus_context_at_a_time():
    model = random_codec(get_config("tiny"))
    frames, chunk = 2000, 64
    length = frames * 320 - 5
    left, right = model.decode_context()
    asked = []

    def codes_of(start: int, stop: int) -> torch.Tensor:
        asked.append((start, stop))
        return torch.zeros(1, 1, stop - start, dtype=torch.long)

    with torch.inference_mode():
        sizes = [block.shape[-1] for block in model.decode_blocks(codes_of, length, chunk)]
    assert max(stop - start for start, stop in asked) <= chunk + left + right
    assert asked[0][0] == 0 and asked[-1][1] == frames
    assert max(sizes) == chunk * 320 and sum(sizes) == length


def craft_stream(path: Path, frames: int, model_id: bytes, header_frames: int = 0) -> None:
    """A valid one-codebook .tcq of `frames` frames (every 10-bit pattern is a code); with
    `header_frames` its header claims that many frames (and samples to match) instead."""
    codes = np.random.default_rng(5).integers(0, 1024, (1, frames))
    header = Header(16000, 320, 1, 10, frames, 320 * frames, model_id=model_id)
    data = bytearray(encode_bitstream(codes, header))
    if header_frames:
        struct.pack_into("<IQ", data, 16, header_frames, 320 * header_frames)
    path.write_bytes(bytes(data))


def test_decoding_ten_minutes_grows_memory_by_a_chunk_not_by_the_stream(work, checkpoint):
    """A crafted 10-minute one-codebook stream (37.5 kB) decodes to 9.6 M samples, 38 MB as
    float32; whole-stream decoding grew the peak RSS by 156 MB, chunked by ~3 MB."""
    model_id = model_identity(checkpoint)
    craft_stream(work / "warm.tcq", 1200, model_id)  # three chunks: the allocator warmed up
    craft_stream(work / "ten_min.tcq", 30_000, model_id)
    probe = (
        "import resource, sys, torch\n"
        "from telucodec_cli import main as codec_cli\n"
        "torch.set_num_threads(1)\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ckpt, warm, long, out = sys.argv[1:]\n"
        "assert codec_cli.main(['decode', warm, out, '--checkpoint', ckpt]) == 0\n"
        "before = peak()\n"
        "assert codec_cli.main(['decode', long, out, '--checkpoint', ckpt]) == 0\n"
        "print('growth_kb', peak() - before)\n"
    )
    args = (checkpoint, work / "warm.tcq", work / "ten_min.tcq", work / "ten_min.wav")
    proc = subprocess.run(
        [sys.executable, "-c", probe, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    growth_kb = int(proc.stdout.split("growth_kb")[-1])
    assert sf.info(work / "ten_min.wav").frames == 9_600_000
    float32_output_kb = 9_600_000 * 4 / 1024
    assert growth_kb < float32_output_kb / 4, f"peak RSS grew {growth_kb} kB"


def test_header_whose_frames_disagree_with_the_payload_is_one_line(work, checkpoint):
    """A header claiming 4 h over a 10-minute payload: refused before any sample is written."""
    stream = work / "claims_4h.tcq"
    craft_stream(stream, 30_000, model_identity(checkpoint), header_frames=720_000)
    proc = telucodec("decode", stream, work / "claims_4h.wav", "--checkpoint", checkpoint)
    fails_clearly(proc, "payload is 37500 bytes, expected 900000 for 720000 frames")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(work.glob("claims_4h.wav*"))


# ------------------------------------------------------------------------------ eval


@pytest.fixture(scope="module")
def preprocess_out(work) -> Path:
    """A format-2 OUT: shards/{train,val}-000000.tar listed in OUT/index.json and
    manifest.jsonl, utterances of 1 s. Val utterances 2 and 4 hold only 6000 and 3000 real
    samples (their `valid` runs). A stale `val-000099.tar` (3 items, from some earlier run)
    lies in shards/ but not in the index: it is not part of this output."""
    out = work / "out"
    rng = np.random.default_rng(3)
    listed, rows = [], []
    for split, n_items, number in (("train", 2, 0), ("val", 5, 0), ("val", 3, 99)):
        name = f"{split}-{number:06d}.tar"
        with ShardWriter(out / "shards" / name) as writer:
            for i in range(n_items):
                n_valid = {2: 6000, 4: 3000}.get(i, 16000)
                audio = np.zeros(16000, np.float32)
                audio[:n_valid] = speechlike(rng, n_valid)
                meta = utterance_meta(split, f"{split}/{i}.wav", 16000)
                key = shards.sample_key(f"{split}{number}x{i}", 0)
                writer.write(key, audio, [[0, n_valid]], meta)
                rows.append(manifest_row(key, name, split, 16000, n_valid, meta["source"]))
        if number != 99:
            listed.append({**writer.info.to_dict(), "split": split})
    listed_names = {entry["name"] for entry in listed}
    return finish_out(out, listed, [r for r in rows if r["shard"] in listed_names])


def test_eval_prints_masked_and_unmasked_figures_per_bitrate(work, checkpoint, preprocess_out):
    report_path = work / "eval" / "report.json"
    proc = ok(
        telucodec(
            "eval",
            "--checkpoint",
            checkpoint,
            "--data-dir",
            preprocess_out,
            "--split",
            "val",
            "--kbps",
            "1.5",
            "3",
            "6",
            "--batch-size",
            2,
            "--segment-seconds",
            0.5,
            "--out",
            report_path,
        )
    )
    # Windows of 0.5 s (a window needs 0.25 s of real audio): 2 of each whole utterance,
    # 1 of utterance 2 (6000 real samples, 2000 padding), none of utterance 4 (3000).
    # The terminal gets a short table (a row per bitrate), the file every figure.
    rows = proc.stdout.splitlines()
    assert rows[0].split()[:3] == ["kbps", "items", "masked"] and "PESQ-WB" in rows[0]
    assert [r.split()[:2] for r in rows[1:4]] == [["1.5", "7"], ["3", "7"], ["6", "7"]]
    assert not proc.stdout.lstrip().startswith("{")
    report = json.loads(report_path.read_text())
    assert report["split"] == "val" and set(report["bitrates"]) == {"1.5", "3", "6"}
    assert report["segment_seconds"] == 0.5
    assert report["bad_samples"] == report["bad_shards"] == 0
    for kbps, nq in (("1.5", 3), ("3", 6), ("6", 12)):
        figures = report["bitrates"][kbps]
        assert figures["n_quantizers"] == nq and figures["items"] == 7
        # By default every window of this 7-window split is in the perceptual subset; that
        # of utterance 2 (0.375 s of audio) is too short for STOI's 384 ms analysis: counted
        # as missing, not as a low score.
        assert set(figures) == set(MetricSums(PERCEPTUAL).summary()) | {"n_quantizers"}
        assert (figures["pesq_wb_items"], figures["stoi_items"]) == (7, 6)
        assert 1.0 <= figures["pesq_wb"] <= 4.65 and 0.0 < figures["stoi"] <= 1.0
        for value in figures.values():
            assert isinstance(value, (int, float)) and np.isfinite(value)
        assert figures["gated_items"] == figures["unmasked_gated_items"] == 0
        assert figures["padding_fraction"] == pytest.approx(1 - (6 * 8000 + 6000) / (7 * 8000))
        # Padding holds zeros, so scoring it adds no signal, only the decoder's output there
        # as error: with padded items the unmasked figures are strictly lower.
        assert figures["unmasked_snr_db"] < figures["masked_snr_db"]
        assert figures["unmasked_global_snr_db"] < figures["masked_global_snr_db"]
        assert figures["masked_snr_db"] > 0  # a trained codec, so the figures mean something
        lo = figures["masked_snr_db"] - figures["masked_snr_db_ci95"]
        assert lo < figures["masked_snr_db"] and figures["masked_snr_db_items"] == 7

    # The same numbers as the library call on the same windows (the CLI adds only I/O).
    batches = loader.val_batches(Index.load(preprocess_out).entries("val"), 2, 8000)
    model = load_codec(checkpoint)
    direct = evaluate(model, batches, [1.5, 3.0, 6.0], perceptual_items=range(7)).figures()
    assert direct == report["bitrates"]


def test_eval_reads_only_the_shards_index_json_lists(work, checkpoint, preprocess_out):
    """A stale val-000099.tar in shards/ (3 items) is not in index.json, so not evaluated."""
    assert (preprocess_out / "shards" / "val-000099.tar").is_file()
    out = work / "eval-listed.json"
    args = ("--data-dir", preprocess_out, "--kbps", 6, "--out", out, "--perceptual-items", 0)
    ok(telucodec("eval", "--checkpoint", checkpoint, *args, "--segment-seconds", 0.5))
    figures = json.loads(out.read_text())["bitrates"]["6"]
    assert figures["items"] == 7 and "pesq_wb" not in figures


def test_eval_and_compare_accept_the_older_spellings_data_and_comma_kbps():
    new = ["--checkpoint", "c", "--data-dir", "d", "--kbps", "1.5", "3", "6"]
    old = ["--checkpoint", "c", "--data", "d", "--kbps", "1.5,3,6"]
    for command in ("eval", "compare"):
        assert vars(parse_args([command, *old])) == vars(parse_args([command, *new]))
        assert parse_args([command, *old]).kbps == [1.5, 3.0, 6.0]
    assert parse_args(["eval", "--checkpoint", "c", "--data", "d"]).kbps == [1.5, 3.0, 6.0]


def test_eval_refuses_a_negative_perceptual_subset(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["eval", "--checkpoint", "c", "--data-dir", "d", "--perceptual-items", "-1"])
    assert exc.value.code == 2
    assert "--perceptual-items must be >= 0" in capsys.readouterr().err


def test_eval_without_a_preprocess_output_is_a_clear_error(work, checkpoint):
    proc = telucodec("eval", "--checkpoint", checkpoint, "--data-dir", work / "nowhere")
    fails_clearly(proc, "no index.json", "preprocess output directory")


def test_eval_of_a_split_the_index_does_not_list_is_a_clear_error(work, checkpoint):
    empty = work / "empty"
    empty.mkdir()
    shards.write_index(empty, {"shards": []})
    proc = telucodec("eval", "--checkpoint", checkpoint, "--data-dir", empty)
    fails_clearly(proc, "index.json lists no val shards")


# ------------------------------------------------- flags, interrupts and write failures


def test_quiet_and_verbose_work_before_and_after_the_command():
    base = ["--checkpoint", "c", "--data-dir", "d"]
    for command, rest in (
        ("eval", base),
        ("compare", base),
        ("encode", ["a", "b", "--checkpoint", "c"]),
    ):
        assert parse_args(["-q", command, *rest]).quiet
        assert parse_args([command, *rest, "-q"]).quiet
        assert parse_args([command, "--verbose", *rest]).verbose
        plain = parse_args([command, *rest])
        assert plain.quiet is False and plain.verbose is False


def test_quiet_before_and_verbose_after_the_command_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["-q", "decode", "a.tcq", "b.wav", "--checkpoint", "c", "-v"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "telucodec decode: error: -q/--quiet and -v/--verbose exclude each other"


@pytest.mark.parametrize(
    ("command", "flag", "value", "message"),
    [
        ("eval", "--max-items", "-1", "--max-items must be >= 0 (0: all), got -1"),
        ("compare", "--max-items", "-3", "--max-items must be >= 0 (0: all), got -3"),
        ("eval", "--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ],
)
def test_out_of_range_item_and_batch_counts_are_one_line_exit_2(
    capsys, command, flag, value, message
):
    with pytest.raises(SystemExit) as exc:
        parse_args([command, "--checkpoint", "c", "--data-dir", "d", flag, value])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == f"telucodec {command}: error: {message}"


def test_an_output_that_cannot_be_written_is_one_line_naming_it_exit_1(
    tmp_path, checkpoint, stereo_flac
):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    proc = telucodec("encode", stereo_flac, locked / "x.tcq", "--checkpoint", checkpoint)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"telucodec encode: error: {locked / 'x.tcq'}: ")
    assert "Permission denied" in proc.stderr


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(2, 130, "interrupted (SIGINT)"), (15, 143, "terminated (SIGTERM)")],
)
def test_a_signal_mid_command_is_one_line_and_its_exit_code(
    monkeypatch, capsys, tmp_path, sig, code, said
):
    """Ctrl-C or a SIGTERM while a command runs: one line, 130 / 143, no traceback; the
    SIGTERM handler is put back afterwards."""
    import signal
    import time

    from telucodec_cli import main as cli

    def signalled(args):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the signal's exception interrupts this
        return 0

    monkeypatch.setattr(cli, "cmd_encode", signalled)
    # A shell without job control starts a background job with SIGINT ignored, and Python
    # then installs no Ctrl-C handler: give this process the one a terminal gives it.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)
        assert cli.main(["encode", "a", str(tmp_path / "b"), "--checkpoint", "c"]) == code
        assert capsys.readouterr().err.strip() == f"telucodec encode: {said}"
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_a_full_disk_while_writing_is_one_line_naming_the_output_exit_1(
    monkeypatch, capsys, tmp_path
):
    import errno

    from telucodec_cli import main as cli

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() gives it

    monkeypatch.setattr(cli, "cmd_encode", full)
    out = tmp_path / "b.tcq"
    assert cli.main(["encode", "a", str(out), "--checkpoint", "c"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"telucodec encode: error: {out}: {os.strerror(errno.ENOSPC)}"
