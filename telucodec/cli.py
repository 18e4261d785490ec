"""`python -m telucodec encode|decode|eval`: use a trained codec from the command line.

encode: any audio file (format, rate, channels) → 16 kHz mono → `.tcq` bitstream.
decode: `.tcq` → WAV of exactly the original length.
eval:   masked and unmasked metrics per bitrate on a preprocess output's split.

This is glue like train_ds.py: the only telucodec module that reads audio files, and the only
one that imports `shards` (lazily, in `eval`) to read validation samples. (checkpoint.py
reads and writes checkpoint directories; every other module works on arrays.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from telucodec.bitstream import (
    BitstreamError,
    Header,
    check_compatible,
    decode_bitstream,
    encode_bitstream,
)
from telucodec.checkpoint import CheckpointError, load_codec


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any soundfile-readable file → float32 mono at `sample_rate` (channel mean, soxr HQ)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read audio: {exc}") from exc
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: no audio frames")
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: contains NaN or Inf samples")
    mono = audio.mean(axis=1).astype(np.float32)
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    return mono


def cmd_encode(args: argparse.Namespace) -> int:
    model = load_codec(args.checkpoint)
    cfg = model.cfg
    nq = cfg.n_quantizers_for_kbps(args.kbps)
    audio = read_audio(args.input, cfg.sample_rate)
    with torch.inference_mode():
        codes = model.encode(torch.from_numpy(audio)[None, None], nq)[0].numpy()
    header = Header(
        cfg.sample_rate, cfg.hop_length, nq, cfg.codebook_bits, codes.shape[1], audio.size
    )
    data = encode_bitstream(codes, header)
    Path(args.output).write_bytes(data)
    seconds = audio.size / cfg.sample_rate
    print(
        f"{args.input} → {args.output}: {seconds:.2f} s, {nq} codebooks, "
        f"{len(data)} bytes ({8 * len(data) / seconds / 1000:.2f} kbps incl. header)"
    )
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    model = load_codec(args.checkpoint)
    cfg = model.cfg
    header, codes = decode_bitstream(Path(args.input).read_bytes())
    check_compatible(
        header,
        sample_rate=cfg.sample_rate,
        hop_length=cfg.hop_length,
        codebook_bits=cfg.codebook_bits,
        n_codebooks=cfg.n_codebooks,
    )
    with torch.inference_mode():
        audio = model.decode(torch.from_numpy(codes)[None], header.n_samples)[0, 0].numpy()
    sf.write(args.output, np.clip(audio, -1.0, 1.0), cfg.sample_rate, subtype="PCM_16")
    print(f"{args.input} → {args.output}: {header.n_samples} samples at {cfg.sample_rate} Hz")
    return 0


def _batches(paths: list[Path], batch_size: int, limit: int):
    from shards import read_samples  # the CLI's one corpus read; the model never does

    audio, mask = [], []
    for seen, sample in enumerate(read_samples(paths), start=1):
        audio.append(sample["audio"])
        mask.append(sample["mask"])
        if len(audio) == batch_size:
            yield np.stack(audio), np.stack(mask)
            audio, mask = [], []
        if limit and seen >= limit:
            break
    if audio:
        yield np.stack(audio), np.stack(mask)


def cmd_eval(args: argparse.Namespace) -> int:
    from telucodec.evaluate import evaluate

    model = load_codec(args.checkpoint)
    paths = sorted(Path(args.data, "shards").glob(f"{args.split}-*.tar"))
    if not paths:
        raise ValueError(f"no {args.split}-*.tar shards in {Path(args.data, 'shards')}")
    kbps = [float(k) for k in args.kbps.split(",")]
    results = evaluate(model, _batches(paths, args.batch_size, args.max_items), kbps)
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "split": args.split,
        "bitrates": results,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def _val_paths(data: str, split: str) -> list[Path]:
    paths = sorted(Path(data, "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise ValueError(f"no {split}-*.tar shards in {Path(data, 'shards')}")
    return paths


def cmd_compare(args: argparse.Namespace) -> int:
    from telucodec.compare import compare, plot_comparison
    from telucodec.opus import missing_opus, opus_round_trip

    model = load_codec(args.checkpoint)
    paths = _val_paths(args.data, args.split)
    kbps = [float(k) for k in args.kbps.split(",")]
    why_not = missing_opus()
    if why_not:
        print(f"telucodec compare: {why_not}; reporting telucodec alone", file=sys.stderr)
    items = ((a[i], m[i]) for a, m in _batches(paths, 1, args.max_items) for i in range(a.shape[0]))
    results = compare(model, items, kbps, None if why_not else opus_round_trip)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "split": args.split,
        "opus": why_not or "opus-tools (opusenc --hard-cbr, opusdec)",
        "codecs": results,
    }
    (out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_comparison(results, str(out / "compare.png"))
    print(f"{'codec':<10}{'kbps':>6}{'SNR dB':>9}{'SI-SDR':>9}{'mel':>8}{'PESQ':>7}{'STOI':>7}")
    for codec, per in results.items():
        for k, r in per.items():
            cells = [r[n] for n in ("snr_db", "si_sdr_db", "mel_distance", "pesq_wb", "stoi")]
            text = "".join(f"{c:>9.2f}" if c is not None else f"{'—':>9}" for c in cells)
            print(f"{codec:<10}{k:>6}{text}")
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m telucodec", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="audio file → .tcq bitstream")
    e.add_argument("input")
    e.add_argument("output")
    e.add_argument("--checkpoint", required=True, help="directory written by save_codec")
    e.add_argument("--kbps", type=float, default=6.0)
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help=".tcq bitstream → WAV")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--checkpoint", required=True)
    d.set_defaults(func=cmd_decode)
    v = sub.add_parser("eval", help="metrics per bitrate on a preprocess output")
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--data", required=True, help="preprocess output directory (OUT)")
    v.add_argument("--split", default="val", choices=("train", "val"))
    v.add_argument("--kbps", default="1.5,3,6", help="comma-separated bitrates")
    v.add_argument("--batch-size", type=int, default=32)
    v.add_argument("--max-items", type=int, default=0, help="0 = all")
    v.add_argument("--out", help="also write the JSON here")
    v.set_defaults(func=cmd_eval)
    c = sub.add_parser("compare", help="our codec vs Opus at the same bitrates")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--data", required=True, help="preprocess output directory (OUT)")
    c.add_argument("--split", default="val", choices=("train", "val"))
    c.add_argument("--kbps", default="1.5,3,6", help="comma-separated bitrates")
    c.add_argument("--max-items", type=int, default=0, help="0 = all")
    c.add_argument("--out", default="compare", help="directory for compare.json/.png")
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BitstreamError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"telucodec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
