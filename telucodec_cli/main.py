"""`python -m telucodec encode|decode|eval|compare`: a trained codec on files and on a
preprocess output directory.

    python -m telucodec encode IN.wav OUT.tcq --checkpoint CKPT [--kbps 6]
    python -m telucodec decode IN.tcq OUT.wav --checkpoint CKPT
    python -m telucodec eval --checkpoint CKPT --data-dir OUT [--split val] [--kbps 1.5 3 6]
                             [--segment-seconds S]
    python -m telucodec compare --checkpoint CKPT --data-dir OUT [--segment-seconds S] [--out DIR]
    python -m telucodec compare --checkpoint CKPT --audio DIR [--chunk-seconds 10]
                                [--no-normalize] [--out DIR]

Glue, like the `training` package, and outside the model package for the same reason: this
is where data meets the model. encode/decode read and write audio files and .tcq bitstreams;
eval and compare list shards through `shards.Index` (index.json, never a glob of the folder) and
batch them with the loader's deterministic `val_batches` (windows of one length on a fixed
grid: by default the length the codec was validated on in training, which its export
records, so eval scores the windows training's validation scored), then hand tensors to
`telucodec.evaluate` and `telucodec.compare`. `compare --audio` scores a folder of real
recordings instead (any format and rate, brought to the corpus's -23 LUFS with the
pipeline's own loudness meter, cut into chunks), and counts the files it cannot score;
reading files is `telucodec_cli.audio_files`' part.
`telucodec` imports neither `shards` nor `preprocess`; telucodec/__main__.py only runs
`main` below.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import soundfile as sf
import torch

from shards import Index, ShardRef, loader
from shards.atomic import atomic_write_text, fsync_dir
from telucodec.bitstream import (
    BitstreamError,
    Header,
    check_compatible,
    encode_bitstream,
    open_bitstream,
)
from telucodec.checkpoint import CheckpointError, load_codec, read_checkpoint_config
from telucodec.configs import DEFAULT_KBPS, kbps_values
from telucodec_cli.audio_files import MIN_CHUNK_SECONDS, Recordings, list_recordings, read_audio

# ------------------------------------------------------------------------ files: encode/decode


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
    """Every check (header, payload size, CRC, checkpoint) runs before a sample is written;
    then the stream is decoded a chunk of frames at a time (`Codec.decode_blocks`) straight
    into the output file, so memory is bounded by a chunk, not by the stream's length."""
    model = load_codec(args.checkpoint)
    cfg = model.cfg
    stream = open_bitstream(Path(args.input).read_bytes())
    header = stream.header
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

    def codes_of(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(stream.frames(start, stop))[None]

    with torch.inference_mode():
        blocks = model.decode_blocks(codes_of, header.n_samples)
        write_pcm16(args.output, (block[0, 0].numpy() for block in blocks), cfg.sample_rate)
    print(f"{args.input} → {args.output}: {header.n_samples} samples at {cfg.sample_rate} Hz")
    return 0


def write_pcm16(path: str, blocks: Iterable[np.ndarray], sample_rate: int) -> None:
    """Stream float blocks, clipped to [-1, 1], into a mono 16-bit file in the format its
    extension names (as `soundfile.write` does): memory holds one block. The file appears
    under `path` only when complete (a temp file beside it, renamed), so a decode that fails
    midway leaves nothing and one killed midway at most `path.tmp-PID`, never torn audio."""
    out = Path(path)
    fmt = out.suffix[1:].upper()
    if fmt not in sf.available_formats():
        raise ValueError(
            f"{path}: cannot tell the audio format from the extension {out.suffix!r}; "
            "expected .wav, .flac or another libsndfile format"
        )
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        with sf.SoundFile(tmp, "w", sample_rate, 1, "PCM_16", format=fmt) as f:
            for block in blocks:
                f.write(np.clip(block, -1.0, 1.0))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(out.parent)


# ------------------------------------------------------------- a preprocess output: eval/compare


# The window length of an export that records none (one from before format 2).
DEFAULT_SEGMENT_SECONDS = 1.0


@dataclass(frozen=True)
class Split:
    """The shards of one split (entries the loader reads as local files and checks against
    index.json), the window length in samples, and the grid windows the manifest lists."""

    index: Index
    entries: list[ShardRef]
    window: int
    listed: int


def segment_seconds_of(args: argparse.Namespace) -> float:
    """--segment-seconds, else the window length the checkpoint's training validated on
    (its export's `extra`), else DEFAULT_SEGMENT_SECONDS."""
    if args.segment_seconds is not None:
        return args.segment_seconds
    _, extra = read_checkpoint_config(args.checkpoint)
    recorded = extra.get("segment_seconds") if isinstance(extra, dict) else None
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 0:
        return float(recorded)
    return DEFAULT_SEGMENT_SECONDS


def load_split(args: argparse.Namespace, sample_rate: int) -> Split:
    """OUT/index.json, the shards of `split` it lists (a stray tar in shards/ is not data)
    and its window count; ValueError when it lists none or the window is longer than the
    OUT's utterances."""
    index = Index.load(args.data_dir)
    entries = index.entries(args.split)
    if not entries:
        raise ValueError(f"{Path(args.data_dir) / 'index.json'} lists no {args.split} shards")
    seconds = segment_seconds_of(args)
    window = int(round(seconds * sample_rate))
    cap = index.utterance_max_samples
    if window > cap:
        raise ValueError(
            f"--segment-seconds {seconds:g} is longer than the utterances of {args.data_dir} "
            f"(utterance_max_samples {cap}: {cap / sample_rate:g} s)"
        )
    listed = loader.count_windows(index.manifest(args.split), window, grid=True)
    return Split(index, entries, window, listed)


def report_skipped(command: str, tally: loader.ErrorTally) -> dict[str, int]:
    """Print what the read skipped or found different from index.json (a line per bad
    shard, then the totals); the totals for the JSON report."""
    totals = tally.totals()
    if any(totals):
        for message in tally.messages:
            print(f"telucodec {command}: {message}", file=sys.stderr)
        print(f"telucodec {command}: {loader.describe_counts(totals)}", file=sys.stderr)
    return {
        "bad_samples": tally.bad_samples,
        "bad_shards": tally.bad_shards,
        **dict(zip(loader.SHARD_COUNTS[2:], totals[2:], strict=True)),
    }


def nothing_scored(command: str, listed: int, split: str, tally: loader.ErrorTally) -> int:
    """Exit status 1 and one line when no item was scored (every shard missing or bad):
    an empty table with status 0 would read as success."""
    why = f"; first problem: {tally.messages[0]}" if tally.messages else ""
    print(
        f"telucodec {command}: error: scored none of the {listed} {split} items "
        f"index.json lists{why}",
        file=sys.stderr,
    )
    return 1


def cmd_eval(args: argparse.Namespace) -> int:
    from telucodec.evaluate import evaluate, perceptual_subset

    model = load_codec(args.checkpoint)
    split = load_split(args, model.cfg.sample_rate)
    listed = loader.listed_items(split.listed, args.max_items)
    tally = loader.ErrorTally(quiet=True)  # printed here, with the command's name
    batches = loader.val_batches(
        split.entries, args.batch_size, split.window, max_items=args.max_items, tally=tally
    )
    subset = perceptual_subset(listed, args.perceptual_items)
    figures = evaluate(model, batches, args.kbps, perceptual_items=subset).figures()
    scored = max((fig["items"] for fig in figures.values()), default=0)
    if not scored:
        return nothing_scored("eval", listed, args.split, tally)
    report = {
        "checkpoint": str(args.checkpoint),
        "data_dir": str(args.data_dir),
        "split": args.split,
        "segment_seconds": split.window / model.cfg.sample_rate,
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

    from_folder = args.audio is not None
    files = list_recordings(args.audio) if from_folder else None  # refused before the model
    model = load_codec(args.checkpoint)
    split = None if from_folder else load_split(args, model.cfg.sample_rate)
    why_not = missing_opus()
    if why_not:
        print(f"telucodec compare: {why_not}; reporting telucodec alone", file=sys.stderr)
    opus = None if why_not else opus_round_trip
    if from_folder:
        sr = model.cfg.sample_rate
        recordings = Recordings(Path(args.audio), files, sr, args.chunk_seconds, args.normalize)
        results = compare(model, recordings.items(), args.kbps, opus)
        source = recordings.report("compare")
    else:
        tally = loader.ErrorTally(quiet=True)  # printed here, with the command's name
        batches = loader.val_batches(
            split.entries, 1, split.window, max_items=args.max_items, tally=tally
        )
        items = ((b["audio"][0].numpy(), b["mask"][0].numpy()) for b in batches)
        results = compare(model, items, args.kbps, opus)
        scored = max((fig["items"] for fig in results["telucodec"].values()), default=0)
        if not scored:
            listed = loader.listed_items(split.listed, args.max_items)
            return nothing_scored("compare", listed, args.split, tally)
        source = {
            "data_dir": str(args.data_dir),
            "split": args.split,
            "segment_seconds": split.window / model.cfg.sample_rate,
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
    p.add_argument(
        "--segment-seconds",
        "--segment_seconds",
        dest="segment_seconds",
        type=float,
        default=None,
        help="--data-dir: window length; items are the windows on a fixed grid 0, S, 2S, … "
        "of every utterance (default: what the checkpoint's training validated on, else "
        f"{DEFAULT_SEGMENT_SECONDS:g})",
    )
    p.add_argument("--max-items", type=int, default=0, help="first N items only (0: all)")


def add_talk_flags(p: argparse.ArgumentParser, default: object) -> None:
    """-q/-v; before the command with False defaults, after it with SUPPRESS (so a flag
    given before the command is not reset by the subcommand's parser)."""
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", default=default, help="errors only")
    talk.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug messages too"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m telucodec", description=__doc__.splitlines()[0])
    add_talk_flags(p, False)
    talk = argparse.ArgumentParser(add_help=False)
    add_talk_flags(talk, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", parents=[talk], help="audio file → .tcq bitstream")
    e.add_argument("input")
    e.add_argument("output")
    e.add_argument("--checkpoint", required=True, help="directory written by save_codec")
    e.add_argument("--kbps", type=float, default=6.0)
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", parents=[talk], help=".tcq bitstream → WAV")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--checkpoint", required=True, help="directory written by save_codec")
    d.add_argument(
        "--force",
        action="store_true",
        help="decode even if the stream was encoded by another checkpoint",
    )
    d.set_defaults(func=cmd_decode)
    v = sub.add_parser("eval", parents=[talk], help="metrics per bitrate on a preprocess output")
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
    c = sub.add_parser("compare", parents=[talk], help="our codec vs Opus at the same bitrates")
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


def refuse(command: str, message: str) -> NoReturn:
    """A refused input: one line, exit 2."""
    print(f"telucodec {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quiet and args.verbose:  # one before the command, the other after it
        refuse(args.command, "-q/--quiet and -v/--verbose exclude each other")
    if getattr(args, "max_items", 0) < 0:  # eval and compare have it
        refuse(args.command, f"--max-items must be >= 0 (0: all), got {args.max_items}")
    if getattr(args, "batch_size", 1) < 1:  # eval has it
        refuse(args.command, f"--batch-size must be >= 1, got {args.batch_size}")
    if args.command in ("eval", "compare"):  # one list from `1.5 3 6` or `1.5,3,6`
        args.kbps = [k for group in args.kbps for k in group]
    if args.command == "compare":
        check_compare_source(args)
    seconds = getattr(args, "segment_seconds", None)  # eval and compare have it
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        print(
            f"telucodec {args.command}: error: --segment-seconds must be > 0, got {seconds}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if args.command == "eval" and args.perceptual_items < 0:
        print(
            "telucodec eval: error: --perceptual-items must be >= 0 (0: off), "
            f"got {args.perceptual_items}",
            file=sys.stderr,
        )
        raise SystemExit(2)
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
    if not args.audio.strip():
        refuse("--audio needs a folder of recordings, got an empty path")
    if args.max_items or args.split != "val" or args.segment_seconds is not None:
        refuse("--split, --max-items and --segment-seconds apply to --data-dir only")
    if args.chunk_seconds is None:
        args.chunk_seconds = 10.0
    if not (math.isfinite(args.chunk_seconds) and args.chunk_seconds >= MIN_CHUNK_SECONDS):
        refuse(f"--chunk-seconds must be >= {MIN_CHUNK_SECONDS:g}, got {args.chunk_seconds}")


def configure_logging(args: argparse.Namespace) -> None:
    """The library's messages (skipped shards, …) as plain lines on stderr; -q/-v set the
    level."""
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def output_of(args: argparse.Namespace) -> str:
    """What the command writes, for an OSError that names no file (ENOSPC on a write)."""
    return str(getattr(args, "output", None) or getattr(args, "out", None) or "its output")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 1 failed (an OSError such as a full disk or no permission: one
    line naming the file); 2 a refused input (one line); 130 / 143 on SIGINT / SIGTERM (one
    line)."""
    args = parse_args(argv)
    configure_logging(args)
    in_main = threading.current_thread() is threading.main_thread()  # signal's requirement
    previous = signal.signal(signal.SIGTERM, raise_terminated) if in_main else None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"telucodec {args.command}: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except Terminated:
        print(f"telucodec {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except (BitstreamError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"telucodec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or output_of(args)
        print(f"telucodec {args.command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
