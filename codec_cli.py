"""`python -m telucodec encode|decode|eval|compare`: a trained codec on files and on a
preprocess output directory.

    python -m telucodec encode IN.wav OUT.tcq --checkpoint CKPT [--kbps 6]
    python -m telucodec decode IN.tcq OUT.wav --checkpoint CKPT
    python -m telucodec eval --checkpoint CKPT --data-dir OUT [--split val] [--kbps 1.5 3 6]
    python -m telucodec compare --checkpoint CKPT --data-dir OUT [--out DIR]
    python -m telucodec compare --checkpoint CKPT --audio DIR [--chunk-seconds 10]
                                [--no-normalize] [--out DIR]

Glue, like train_ds.py, and outside the model package for the same reason: this is where
data meets the model. encode/decode read and write audio files and .tcq bitstreams; eval and
compare list shards through `shards.Index` (index.json, never a glob of the folder) and
batch them with the loader's deterministic `val_batches`, then hand tensors to
`telucodec.evaluate` and `telucodec.compare`. `compare --audio` scores a folder of real
recordings instead (any format and rate, brought to the corpus's -23 LUFS with the
pipeline's own loudness meter, cut into chunks), and counts the files it cannot score.
`telucodec` imports neither `shards` nor `preprocess`; telucodec/__main__.py only runs
`main` below.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from shards import Index, loader
from shards.atomic import atomic_write_text
from telucodec.bitstream import (
    BitstreamError,
    Header,
    check_compatible,
    decode_bitstream,
    encode_bitstream,
)
from telucodec.checkpoint import CheckpointError, load_codec
from telucodec.configs import DEFAULT_KBPS, kbps_values

# ------------------------------------------------------------------------ files: encode/decode


class AudioFileError(ValueError):
    """A file `read_audio` cannot use; `reason` is the code `compare --audio` counts it under
    (`unreadable`, `empty`, `nonfinite`, as preprocess' files.jsonl names such files)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any soundfile-readable file → float32 mono at `sample_rate` (channel mean, soxr HQ)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioFileError("unreadable", f"{path}: cannot read audio: {exc}") from exc
    if audio.shape[0] == 0:
        raise AudioFileError("empty", f"{path}: no audio frames")
    if not np.isfinite(audio).all():
        raise AudioFileError("nonfinite", f"{path}: contains NaN or Inf samples")
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
        cfg.sample_rate,
        cfg.hop_length,
        nq,
        cfg.codebook_bits,
        codes.shape[1],
        audio.size,
        model_id=model.identity,
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
    if header.model_id is None:
        print(
            f"telucodec decode: warning: {args.input} (version {header.version}) records no "
            "model identity; cannot check that this checkpoint encoded it",
            file=sys.stderr,
        )
    elif args.force and header.model_id != model.identity:
        print(
            f"telucodec decode: warning: {args.input} was encoded by model "
            f"{header.model_id.hex()}, not this checkpoint's {model.identity.hex()} (--force)",
            file=sys.stderr,
        )
    check_compatible(
        header,
        sample_rate=cfg.sample_rate,
        hop_length=cfg.hop_length,
        codebook_bits=cfg.codebook_bits,
        n_codebooks=cfg.n_codebooks,
        model_id=None if args.force else model.identity,
    )
    with torch.inference_mode():
        audio = model.decode(torch.from_numpy(codes)[None], header.n_samples)[0, 0].numpy()
    sf.write(args.output, np.clip(audio, -1.0, 1.0), cfg.sample_rate, subtype="PCM_16")
    print(f"{args.input} → {args.output}: {header.n_samples} samples at {cfg.sample_rate} Hz")
    return 0


# ------------------------------------------------------------- a preprocess output: eval/compare


def split_paths(data_dir: str, split: str) -> list[str]:
    """The shards of `split` that OUT/index.json lists (a stray tar in shards/ is not data)."""
    paths = Index.load(data_dir).paths(split)
    if not paths:
        raise ValueError(f"{Path(data_dir) / 'index.json'} lists no {split} shards")
    return paths


def report_skipped(command: str, tally: loader.ErrorTally) -> dict[str, int]:
    if tally.bad_samples or tally.bad_shards:
        print(
            f"telucodec {command}: skipped {tally.bad_samples} corrupt samples and "
            f"{tally.bad_shards} unreadable shard reads",
            file=sys.stderr,
        )
    return {"bad_samples": tally.bad_samples, "bad_shards": tally.bad_shards}


def cmd_eval(args: argparse.Namespace) -> int:
    from telucodec.evaluate import evaluate, perceptual_subset

    model = load_codec(args.checkpoint)
    index = Index.load(args.data_dir)
    paths = split_paths(args.data_dir, args.split)
    listed = index.samples(args.split)
    if args.max_items:
        listed = min(listed, args.max_items)
    tally = loader.ErrorTally()
    batches = loader.val_batches(paths, args.batch_size, max_items=args.max_items, tally=tally)
    subset = perceptual_subset(listed, args.perceptual_items)
    figures = evaluate(model, batches, args.kbps, perceptual_items=subset).figures()
    report = {
        "checkpoint": str(args.checkpoint),
        "data_dir": str(args.data_dir),
        "split": args.split,
        **report_skipped("eval", tally),
        "bitrates": figures,
    }
    print_eval_table(figures)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def print_eval_table(figures: dict[str, dict]) -> None:
    """One short row per bitrate: items, masked SNR ± 95 % half width, SI-SDR, mel, the
    unmasked SNR beside it, and PESQ-WB / STOI of the perceptual subset when scored."""
    print(
        f"{'kbps':>5}{'items':>7}{'masked SNR dB':>17}{'SI-SDR':>8}{'mel':>7}"
        f"{'unmasked':>10}{'PESQ-WB':>9}{'STOI':>7}"
    )

    def cell(value: float | None, width: int, digits: int = 2) -> str:
        return f"{'—':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for kbps, fig in figures.items():
        half = fig["masked_snr_db_ci95"]
        snr = "—" if fig["masked_snr_db"] is None else f"{fig['masked_snr_db']:.2f}"
        snr += "" if half is None else f" ± {half:.2f}"
        print(
            f"{kbps:>5}{fig['items']:>7}{snr:>17}{cell(fig['masked_si_sdr_db'], 8)}"
            f"{cell(fig['masked_mel_distance'], 7, 3)}{cell(fig['unmasked_snr_db'], 10)}"
            f"{cell(fig.get('pesq_wb'), 9)}{cell(fig.get('stoi'), 7, 3)}"
        )


def cmd_compare(args: argparse.Namespace) -> int:
    from telucodec.compare import compare, plot_comparison
    from telucodec.opus import missing_opus, opus_round_trip

    files = list_recordings(args.audio) if args.audio else None  # refused before the model
    model = load_codec(args.checkpoint)
    paths = None if files else split_paths(args.data_dir, args.split)
    why_not = missing_opus()
    if why_not:
        print(f"telucodec compare: {why_not}; reporting telucodec alone", file=sys.stderr)
    opus = None if why_not else opus_round_trip
    if files:
        sr = model.cfg.sample_rate
        recordings = Recordings(Path(args.audio), files, sr, args.chunk_seconds, args.normalize)
        results = compare(model, recordings.items(), args.kbps, opus)
        source = recordings.report("compare")
    else:
        tally = loader.ErrorTally()
        batches = loader.val_batches(paths, 1, max_items=args.max_items, tally=tally)
        items = ((b["audio"][0].numpy(), b["mask"][0].numpy()) for b in batches)
        results = compare(model, items, args.kbps, opus)
        source = {
            "data_dir": str(args.data_dir),
            "split": args.split,
            **report_skipped("compare", tally),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(args.checkpoint),
        **source,
        "opus": why_not or "opus-tools (opusenc --hard-cbr, opusdec)",
        "codecs": results,
    }
    atomic_write_text(out / "compare.json", json.dumps(report, indent=1) + "\n")
    plot_comparison(results, str(out / "compare.png"))
    print_comparison(results)
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def print_comparison(results: dict) -> None:
    """One row per codec and bitrate: SNR, SI-SDR, mel distance, PESQ-WB, STOI."""
    names = ("masked_snr_db", "masked_si_sdr_db", "masked_mel_distance", "pesq_wb", "stoi")
    print(f"{'codec':<10}{'kbps':>6}{'SNR dB':>9}{'SI-SDR':>9}{'mel':>8}{'PESQ':>7}{'STOI':>7}")
    for codec, per in results.items():
        for k, figures in per.items():
            cells = [figures[n] for n in names]
            text = "".join(f"{c:>9.2f}" if c is not None else f"{'—':>9}" for c in cells)
            print(f"{codec:<10}{k:>6}{text}")


# ------------------------------------------------------- a folder of recordings: compare --audio

MIN_ITEM_SECONDS = 0.25  # telucodec.compare drops shorter items: too little for PESQ/STOI
GATE_BLOCK_SECONDS = 0.4  # one BS.1770 gating block: shorter audio has no loudness
MIN_CHUNK_SECONDS = 1.0  # a shorter last piece of a long file joins the chunk before it


def chunk_bounds(n: int, sample_rate: int, chunk_seconds: float) -> list[tuple[int, int]]:
    """[start, end) of consecutive chunks of at most `chunk_seconds` covering n samples; a
    last piece under MIN_CHUNK_SECONDS is merged into the previous chunk rather than scored
    alone (PESQ and STOI on a few hundred ms say little)."""
    size = max(1, int(round(chunk_seconds * sample_rate)))
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_CHUNK_SECONDS * sample_rate:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def corpus_level() -> tuple[float, float]:
    """(target LUFS, peak limit dBFS) preprocess normalizes the training corpus to by
    default (PreprocessConfig): -23 LUFS under a -1 dBFS peak."""
    from preprocess.config import PreprocessConfig

    return PreprocessConfig.target_lufs, PreprocessConfig.peak_limit_dbfs


class SkipFile(Exception):
    """A recording compare --audio counts as skipped under `reason` instead of scoring."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_recording(
    path: Path, sample_rate: int, normalize: bool
) -> tuple[np.ndarray, float | None]:
    """One recording as compare --audio scores it → (float32 mono at `sample_rate`, at the
    corpus's level (corpus_level) unless `normalize` is False; its loudness in LUFS or None).
    SkipFile says why it cannot be scored: unreadable, empty, nonfinite, too_short (under
    0.25 s, or under 0.4 s when it must be normalized) or silent (no gated loudness)."""
    from preprocess.measure.loudness import integrated_loudness, normalize_loudness

    try:
        audio = read_audio(path, sample_rate)
    except AudioFileError as exc:
        raise SkipFile(exc.reason) from exc
    if audio.size < MIN_ITEM_SECONDS * sample_rate:
        raise SkipFile("too_short")
    lufs = integrated_loudness(audio, sample_rate)
    if not math.isfinite(lufs):
        short = audio.size < GATE_BLOCK_SECONDS * sample_rate
        if short and normalize:
            raise SkipFile("too_short")
        if not short or not audio.any():
            raise SkipFile("silent")
        return audio, None  # 0.25-0.4 s, scored as is: too short to measure, not silence
    if normalize:
        audio = normalize_loudness(audio, sample_rate, *corpus_level())
    return audio, lufs


@dataclass
class Recordings:
    """The audio files under a folder and what became of each: scored in chunks, or skipped
    with a reason. `items()` reads one file at a time, so memory follows the longest file,
    and the model and PESQ see at most one chunk at a time."""

    root: Path
    files: list[Path]  # list_recordings(root)
    sample_rate: int  # the model's
    chunk_seconds: float
    normalize: bool  # to the training corpus's level (corpus_level)
    scored: list[dict] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> relative paths

    def items(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(chunk float32[T], mask all True) for every scorable file, in order."""
        from preprocess.measure.audio_io import audio_extensions

        readable = audio_extensions()
        for path in self.files:
            name = path.relative_to(self.root).as_posix()
            try:
                if path.suffix.lower() not in readable:  # .m4a, .aac, …: convert them first
                    raise SkipFile("unsupported_format")
                audio, lufs = load_recording(path, self.sample_rate, self.normalize)
            except SkipFile as skip:
                self.skipped.setdefault(skip.reason, []).append(name)
                continue
            bounds = chunk_bounds(audio.size, self.sample_rate, self.chunk_seconds)
            self.scored.append(
                {
                    "path": name,
                    "seconds": round(audio.size / self.sample_rate, 3),
                    "items": len(bounds),
                    "loudness_lufs": None if lufs is None else round(lufs, 2),
                }
            )
            for a, b in bounds:
                yield audio[a:b], np.ones(b - a, bool)

    def report(self, command: str) -> dict:
        """compare.json's account of the folder, after `items()` has run; one line on stderr
        when files were skipped; ValueError when nothing could be scored."""
        reasons = sorted(self.skipped.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        counts = ", ".join(f"{len(paths)} {reason.replace('_', ' ')}" for reason, paths in reasons)
        n_skipped = sum(len(paths) for paths in self.skipped.values())
        if not self.scored:
            n = len(self.files)
            raise ValueError(f"--audio {self.root}: none of its {n} audio files scored ({counts})")
        if n_skipped:
            print(
                f"telucodec {command}: skipped {n_skipped} of {len(self.files)} files: {counts}",
                file=sys.stderr,
            )
        target = corpus_level()[0] if self.normalize else None
        level = "at their own level" if target is None else f"at {target:g} LUFS"
        print(
            f"scored {len(self.scored)} of {len(self.files)} audio files {level}, as "
            f"{sum(f['items'] for f in self.scored)} items (cut every {self.chunk_seconds:g} s)"
        )
        return {
            "audio_dir": str(self.root),
            "normalized_to_lufs": target,
            "chunk_seconds": self.chunk_seconds,
            "files": len(self.files),
            "files_scored": len(self.scored),
            "items_scored": sum(f["items"] for f in self.scored),
            "skipped_files": n_skipped,
            "skipped": dict(reasons),
            "scored": self.scored,
        }


def list_recordings(root: str | Path) -> list[Path]:
    """The audio files under `root`, recursively, sorted by relative path so every run scores
    them in the same order. Audio is decided by extension with preprocess' lists: the formats
    libsndfile reads, and those it cannot (.m4a, …), which are listed to be counted as
    skipped; any other file is left out and not counted. ValueError when `root` is not a
    folder or holds no audio."""
    from preprocess.measure.audio_io import UNSUPPORTED_AUDIO_EXTENSIONS, audio_extensions

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--audio {root}: not a directory")
    audio = audio_extensions() | UNSUPPORTED_AUDIO_EXTENSIONS
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in audio]
    if not files:
        raise ValueError(f"--audio {root}: no audio files (by extension: .wav, .flac, …)")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


# ------------------------------------------------------------------------------ command line


def add_dataset_flags(p: argparse.ArgumentParser, audio: bool = False) -> None:
    """The flags eval and compare share, spelled as in train_ds.py (`--data-dir`, `--kbps`);
    `audio`: a folder of recordings (`--audio`) is the other source, exactly one required."""
    p.add_argument("--checkpoint", required=True, help="directory written by save_codec")
    source = p.add_mutually_exclusive_group(required=True) if audio else p
    source.add_argument(
        "--data-dir",
        "--data",
        "--data_dir",
        dest="data_dir",
        required=not audio,
        help="preprocess output directory (OUT, with index.json)",
    )
    if audio:
        source.add_argument(
            "--audio",
            metavar="DIR",
            help="a folder of recordings, searched recursively (any format and rate)",
        )
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument(
        "--kbps",
        type=kbps_values,
        nargs="+",
        default=[list(DEFAULT_KBPS)],
        help="bitrates, e.g. 1.5 3 6 (or 1.5,3,6)",
    )
    p.add_argument("--max-items", type=int, default=0, help="first N items only (0: all)")


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
    d.add_argument("--checkpoint", required=True, help="directory written by save_codec")
    d.add_argument(
        "--force",
        action="store_true",
        help="decode even if the stream was encoded by another checkpoint",
    )
    d.set_defaults(func=cmd_decode)
    v = sub.add_parser("eval", help="metrics per bitrate on a preprocess output")
    add_dataset_flags(v)
    v.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    v.add_argument("--out", help="write the JSON report (every figure) to this file")
    v.add_argument(
        "--perceptual-items",
        "--perceptual_items",
        dest="perceptual_items",
        type=int,
        default=16,
        help="items (spread over the split) also scored with PESQ-WB and STOI (0: off)",
    )
    v.set_defaults(func=cmd_eval)
    c = sub.add_parser("compare", help="our codec vs Opus at the same bitrates")
    add_dataset_flags(c, audio=True)
    c.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="--audio: longest piece of a file scored as one item (default 10, at least 1)",
    )
    c.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="--audio: score files at their own level, not at -23 LUFS like the corpus",
    )
    c.add_argument("--out", default="compare", help="directory for compare.json and .png")
    c.set_defaults(func=cmd_compare)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command in ("eval", "compare"):  # one list from `1.5 3 6` or `1.5,3,6`
        args.kbps = [k for group in args.kbps for k in group]
    if args.command == "compare":
        check_compare_source(args)
    return args


def check_compare_source(args: argparse.Namespace) -> None:
    """A flag of one source given with the other is refused (one line, exit 2), not
    silently ignored; --chunk-seconds gets its default and range here."""

    def refuse(message: str) -> None:
        print(f"telucodec compare: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    if args.audio is None:
        if args.chunk_seconds is not None or not args.normalize:
            refuse("--chunk-seconds and --no-normalize apply to --audio only")
        return
    if args.max_items or args.split != "val":
        refuse("--split and --max-items apply to --data-dir only")
    if args.chunk_seconds is None:
        args.chunk_seconds = 10.0
    if not (math.isfinite(args.chunk_seconds) and args.chunk_seconds >= MIN_CHUNK_SECONDS):
        refuse(f"--chunk-seconds must be >= {MIN_CHUNK_SECONDS:g}, got {args.chunk_seconds}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except (BitstreamError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"telucodec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
