"""Speech sources for the demo corpus: espeak-ng's Telugu voice, or a procedural stand-in.

The demo corpus (`preprocess.synth`) needs audio that a speech-activity detector, a
loudness meter and a codec treat like speech: voiced syllables with formants, consonant
noise, pauses between words and phrases, and a recording's noise floor under it all.
espeak-ng gives real Telugu phonetics when the binary is installed; on a fresh machine
or in CI a procedural source-filter generator takes its place. Either way one function,
`speech(rng, seconds, sample_rate)`, returns the same kind of signal, so everything
downstream runs the same code path.

Determinism: every random choice is drawn from the caller's `numpy.random.Generator`
(espeak-ng's own output is deterministic for fixed text and parameters), and nothing
reads the clock, the PID or a temporary file name.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
from scipy import fft, signal

ENGINES = ("auto", "espeak", "procedural")
ESPEAK = "espeak-ng"

# A few dozen everyday Telugu sentences for espeak-ng (`-v te`). Plain statements,
# questions and requests, so the prosody varies; no digits (voices read them unevenly).
TELUGU_SENTENCES = (
    "నమస్కారం, మీరు ఎలా ఉన్నారు?",
    "ఈ రోజు వాతావరణం చాలా బాగుంది.",
    "నేను ప్రతి రోజు ఉదయం నడకకు వెళ్తాను.",
    "మా ఊరిలో ఒక పెద్ద చెరువు ఉంది.",
    "పిల్లలు బడికి వెళ్ళారు.",
    "దయచేసి తలుపు మూసివేయండి.",
    "రైలు సమయానికి వచ్చింది.",
    "మార్కెట్లో కూరగాయల ధరలు పెరిగాయి.",
    "నాకు తెలుగు పాటలు అంటే చాలా ఇష్టం.",
    "హైదరాబాద్ ఒక పెద్ద నగరం.",
    "వర్షం పడుతోంది, గొడుగు తీసుకో.",
    "అమ్మ వంటగదిలో అన్నం వండుతోంది.",
    "ఈ పుస్తకం చాలా ఆసక్తికరంగా ఉంది.",
    "రేపు మనం సినిమాకు వెళ్దాం.",
    "రైతులు పొలంలో పని చేస్తున్నారు.",
    "బస్సు స్టాండ్ ఎక్కడ ఉంది?",
    "మీ పేరు ఏమిటి?",
    "నేను విజయవాడ నుండి వచ్చాను.",
    "గోదావరి నది చాలా అందంగా ఉంటుంది.",
    "సంక్రాంతి పండుగకు అందరూ ఇంటికి వస్తారు.",
    "ఈ ఫోన్ ధర ఎంత?",
    "ఉదయం ఏడు గంటలకు సమావేశం మొదలవుతుంది.",
    "డాక్టర్ గారు మందులు రాసిచ్చారు.",
    "మా తాతగారు రాత్రి కథలు చెప్పేవారు.",
    "కాఫీ తాగుతారా, టీ తాగుతారా?",
    "ఆ దుకాణం ఆదివారం మూసి ఉంటుంది.",
    "విద్యార్థులు పరీక్షకు సిద్ధమవుతున్నారు.",
    "ఆకాశంలో చంద్రుడు ప్రకాశిస్తున్నాడు.",
    "ఈ దారి గుండా నేరుగా వెళ్ళండి.",
    "మామిడి పండ్లు వేసవిలో దొరుకుతాయి.",
    "క్రికెట్ మ్యాచ్ చూడటానికి స్టేడియం నిండిపోయింది.",
    "దయచేసి కొంచెం నెమ్మదిగా మాట్లాడండి.",
    "గ్రంథాలయంలో చాలా పుస్తకాలు ఉన్నాయి.",
    "ఆమె వీణ చాలా బాగా వాయిస్తుంది.",
    "నీళ్ళు ఎక్కువగా తాగడం ఆరోగ్యానికి మంచిది.",
    "మన దేశానికి స్వాతంత్ర్యం వచ్చి చాలా సంవత్సరాలైంది.",
    "సాయంత్రం అందరం కలిసి భోజనం చేద్దాం.",
    "ఈ ఉత్తరాన్ని పోస్టాఫీసులో వేయండి.",
)

# espeak-ng voice variants that still sound like a person (no whisper, robot or croak).
ESPEAK_VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
)
ESPEAK_RATE = 22050  # espeak-ng's native output rate
PROCEDURAL_RATE = 22050  # the procedural source renders here too; both are resampled

# Vowel formants F1–F4 (Hz) of an adult male; Peterson & Barney (1952)-like values for
# the five Telugu vowel qualities a, i, u, e, o. A voice scales them (vocal-tract length).
VOWEL_FORMANTS = np.array(
    [
        [730, 1250, 2550, 3500],
        [300, 2250, 2950, 3600],
        [330, 870, 2250, 3300],
        [480, 1900, 2600, 3500],
        [520, 900, 2450, 3300],
    ],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class Voice:
    """One speaker's voice, for either engine: a speaker directory keeps it across files."""

    espeak_variant: str  # "" or a variant name, used as `-v te+<variant>`
    espeak_pitch: int  # espeak-ng -p, 0..99
    espeak_rate: int  # espeak-ng -s, words per minute
    espeak_word_gap: int  # espeak-ng -g, extra pause between words in 10 ms units
    f0_hz: float  # procedural: mean fundamental frequency
    formant_scale: float  # procedural: 1.0 adult male, ~1.17 adult female

    @property
    def espeak_voice(self) -> str:
        return "te+" + self.espeak_variant if self.espeak_variant else "te"


def random_voice(rng: np.random.Generator) -> Voice:
    """Draw a voice; female-ish and male-ish voices are equally likely."""
    female = bool(rng.random() < 0.5)
    return Voice(
        espeak_variant=str(rng.choice(ESPEAK_VARIANTS)),
        espeak_pitch=int(rng.integers(25, 76)),
        espeak_rate=int(rng.integers(120, 191)),
        espeak_word_gap=int(rng.integers(4, 13)),
        f0_hz=float(rng.uniform(170, 250) if female else rng.uniform(90, 150)),
        formant_scale=float(rng.uniform(1.1, 1.22) if female else rng.uniform(0.94, 1.06)),
    )


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def resolve_engine(engine: str) -> str:
    """'auto' → 'espeak' when the binary is on PATH, else 'procedural'."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {ENGINES}")
    if engine == "auto":
        return "espeak" if espeak_available() else "procedural"
    if engine == "espeak" and not espeak_available():
        raise RuntimeError(f"engine 'espeak' requested but {ESPEAK!r} is not on PATH")
    return engine


def espeak_version() -> str | None:
    """The espeak-ng version line (it shapes the output bytes), or None without the binary."""
    if not espeak_available():
        return None
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def speech(
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
    *,
    engine: str = "auto",
    voice: Voice | None = None,
    floor_db: float | None = None,
) -> np.ndarray:
    """`seconds` of speech at `sample_rate` → float32[round(seconds·sample_rate)], peak 1.0.

    The signal starts and ends in speech (the last word may be cut with a short fade)
    and carries a stationary room-tone floor `floor_db` dB below the peak (drawn from
    −70…−55 dB when None). Real recordings have one, and without it the pauses of
    espeak-ng output are digital zeros that no activity detector sees as "background".
    """
    n = max(1, int(round(seconds * sample_rate)))
    voice = voice if voice is not None else random_voice(rng)
    floor_db = float(rng.uniform(-70.0, -55.0)) if floor_db is None else float(floor_db)
    if resolve_engine(engine) == "espeak":
        x, rate = espeak_speech(rng, seconds, voice), ESPEAK_RATE
    else:
        x, rate = procedural_speech(rng, seconds, voice), PROCEDURAL_RATE
    if rate != sample_rate:
        x = soxr.resample(x, rate, sample_rate, quality="HQ")
    x = _fade_out(_fit(x, n) / _peak(x), sample_rate)
    x = x + 10.0 ** (floor_db / 20.0) * coloured_noise(rng, n, rng.uniform(0.5, 1.2))
    return (x / _peak(x)).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Stationary Gaussian noise with power ∝ 1/f^exponent, float64[n] with RMS 1.

    exponent 0 is white, 1 pink, 2 brown. Shaped in the frequency domain (one rfft), so
    the spectrum holds exactly across the whole length, with DC removed.
    """
    if n == 0:
        return np.zeros(0)
    m = fft.next_fast_len(n, real=True)  # a prime length would make the FFT slow
    spec = fft.rfft(rng.standard_normal(m))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0.0
    x = fft.irfft(spec, m)[:n]
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


# ---------------------------------------------------------------------------------------
# espeak-ng
# ---------------------------------------------------------------------------------------


def espeak_speech(rng: np.random.Generator, seconds: float, voice: Voice) -> np.ndarray:
    """Telugu sentences from espeak-ng joined by phrase pauses: float64 at ESPEAK_RATE,
    at least `seconds` long (the caller cuts)."""
    need = int(np.ceil(seconds * ESPEAK_RATE)) + 1
    parts: list[np.ndarray] = []
    have = 0
    while have < need:
        text = TELUGU_SENTENCES[int(rng.integers(len(TELUGU_SENTENCES)))]
        utt = _trim_zeros(_espeak_once(text, voice))
        if parts:
            pause = np.zeros(int(rng.uniform(0.25, 0.6) * ESPEAK_RATE), np.float32)
            parts.append(pause)
            have += pause.size
        parts.append(utt)
        have += utt.size
    return np.concatenate(parts)[:need].astype(np.float64)


@functools.lru_cache(maxsize=256)
def _espeak_once(text: str, voice: Voice) -> np.ndarray:
    """One espeak-ng call → float32 mono at 22.05 kHz. Cached: same text and voice give
    the same samples, and a speaker says the same sentence more than once."""
    cmd = [
        ESPEAK,
        "-v",
        voice.espeak_voice,
        "-s",
        str(voice.espeak_rate),
        "-p",
        str(voice.espeak_pitch),
        "-g",
        str(voice.espeak_word_gap),
        "--stdout",
        text,
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(
            f"{' '.join(cmd[:-1])} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    # espeak-ng streams a WAV whose size fields are placeholders; libsndfile reads up to
    # the real end of the data, which is what we want here.
    x, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    if rate != ESPEAK_RATE:
        x = soxr.resample(x, rate, ESPEAK_RATE, quality="HQ")
    return np.ascontiguousarray(x[:, 0])


def _trim_zeros(x: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(np.abs(x) > 1e-4)
    return x[nz[0] : nz[-1] + 1] if nz.size else x


# ---------------------------------------------------------------------------------------
# Procedural source-filter speech
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Syllable:
    start: int  # sample where the syllable (its consonant, if any) starts
    consonant: int  # samples of unvoiced consonant noise before the vowel (0: none)
    vowel: int  # samples of voiced vowel
    vowel_id: int  # row of VOWEL_FORMANTS
    band: int  # consonant noise band, index into _consonant_bands
    stress: float  # amplitude of the vowel relative to the phrase


def procedural_speech(rng: np.random.Generator, seconds: float, voice: Voice) -> np.ndarray:
    """Source-filter speech, float64 at PROCEDURAL_RATE, `seconds` long (not normalised).

    A Rosenberg glottal pulse train with a jittered, declining f0 contour drives a
    cascade of four formant resonators whose frequencies follow the vowel of each
    syllable (Klatt 1980, "Software for a cascade/parallel formant synthesizer").
    Syllables get raised-cosine envelopes; unvoiced consonants are band-passed noise
    bursts; words are separated by short gaps and phrases by longer pauses, which is
    what gives speech its 20–40 dB frame-energy dynamic range.
    """
    sample_rate = PROCEDURAL_RATE
    n = max(1, int(round(seconds * sample_rate)))
    syllables = _syllable_plan(rng, n, sample_rate)
    f0 = _f0_contour(rng, n, sample_rate, voice.f0_hz)
    voiced_env = np.zeros(n)
    for s in syllables:
        a = s.start + s.consonant
        env = s.stress * _envelope(s.vowel, sample_rate)
        voiced_env[a : a + s.vowel] += env[: max(0, n - a)]
    source = _glottal_source(f0, sample_rate) * voiced_env
    source += 0.02 * rng.standard_normal(n) * voiced_env  # aspiration noise
    voiced = _formant_filter(source, syllables, sample_rate, voice.formant_scale)
    voiced /= _peak(voiced)
    return voiced + _consonant_noise(rng, n, syllables, sample_rate)


def _syllable_plan(rng: np.random.Generator, n: int, sample_rate: int) -> list[_Syllable]:
    """Lay out words of 1–4 syllables with word gaps and phrase pauses until n samples.

    Speech starts within 30 ms and the last syllable may run past n (it is cut and faded),
    so the whole requested duration is speech-like, short requests included.
    """
    sr = sample_rate
    t = int(rng.uniform(0.005, 0.03) * sr)
    syllables: list[_Syllable] = []
    words_left_in_phrase = int(rng.integers(3, 8))
    while t < n:
        for _ in range(int(rng.integers(1, 5))):
            consonant = int(rng.uniform(0.03, 0.09) * sr) if rng.random() < 0.6 else 0
            vowel = int(rng.uniform(0.08, 0.2) * sr)
            syllables.append(
                _Syllable(
                    t,
                    consonant,
                    vowel,
                    int(rng.integers(len(VOWEL_FORMANTS))),
                    int(rng.integers(3)),
                    float(rng.uniform(0.55, 1.0)),
                )
            )
            t += consonant + vowel + int(rng.uniform(0.0, 0.02) * sr)
        words_left_in_phrase -= 1
        if words_left_in_phrase == 0:
            t += int(rng.uniform(0.25, 0.6) * sr)
            words_left_in_phrase = int(rng.integers(3, 8))
        else:
            t += int(rng.uniform(0.04, 0.15) * sr)
    return [s for s in syllables if s.start < n]


def _f0_contour(rng: np.random.Generator, n: int, sample_rate: int, f0_hz: float) -> np.ndarray:
    """f0 in Hz per sample: declination over ~2 s phrases, slow wander and fast jitter.

    Drawn at a 1 kHz control rate and interpolated: f0 moves far slower than the samples.
    """
    control = 1000
    k = max(2, int(np.ceil(n / sample_rate * control)) + 1)
    t = np.arange(k) / control
    declination = 1.12 - 0.25 * (t % rng.uniform(1.6, 2.6)) / 2.6
    knots = rng.normal(0.0, 0.06, int(t[-1] * 8) + 2)  # wander: ~8 random knots a second
    wander = np.interp(t * 8, np.arange(knots.size), knots)
    jitter = signal.lfilter([0.3], [1.0, -0.7], rng.normal(0.0, 0.01, k))
    f0_control = f0_hz * declination * np.exp(wander + jitter)
    return np.interp(np.arange(n) / sample_rate, t, f0_control)


def _glottal_source(f0: np.ndarray, sample_rate: int) -> np.ndarray:
    """Differentiated Rosenberg (1971) glottal flow pulses at the instantaneous f0.

    The derivative stands in for lip radiation, giving the −6 dB/octave tilt of speech.
    """
    phase = np.cumsum(f0 / sample_rate) % 1.0
    t_open, t_close = 0.4, 0.16
    rising = 0.5 * (1.0 - np.cos(np.pi * phase / t_open))
    falling = np.cos(np.pi * (phase - t_open) / (2.0 * t_close))
    flow = np.where(phase < t_open, rising, np.where(phase < t_open + t_close, falling, 0.0))
    return np.diff(flow, prepend=0.0)


def _formant_filter(
    x: np.ndarray, syllables: list[_Syllable], sample_rate: int, scale: float
) -> np.ndarray:
    """Cascade of four resonators, retuned at each syllable; the state carries over so
    the switch happens at low amplitude without a click."""
    y = np.zeros_like(x)
    zi = np.zeros((4, 2))
    bounds = [s.start for s in syllables] + [x.size]  # before the first: silence, y = 0
    for s, a, b in zip(syllables, bounds[:-1], bounds[1:], strict=True):
        sos = _resonator_sos(s.vowel_id, sample_rate, round(scale, 3))
        y[a:b], zi = signal.sosfilt(sos, x[a:b], zi=zi)
    return y


@functools.lru_cache(maxsize=512)
def _resonator_sos(vowel_id: int, sample_rate: int, scale: float) -> np.ndarray:
    """Second-order sections of the four formant resonators, each with unit gain at DC."""
    nyquist_guard = 0.45 * sample_rate
    freqs = np.minimum(VOWEL_FORMANTS[vowel_id] * scale, nyquist_guard)
    sos = np.zeros((4, 6))
    for i, (f, bw) in enumerate(zip(freqs, FORMANT_BANDWIDTHS, strict=True)):
        r = np.exp(-np.pi * bw / sample_rate)
        c = -2.0 * r * np.cos(2.0 * np.pi * f / sample_rate)
        sos[i] = [1.0 + c + r * r, 0.0, 0.0, 1.0, c, r * r]
    return sos


def _consonant_noise(
    rng: np.random.Generator, n: int, syllables: list[_Syllable], sample_rate: int
) -> np.ndarray:
    """Unvoiced consonants: band-passed noise bursts (plosive, /s/-like, /ʃ/-like)."""
    out = np.zeros(n)
    bands = _consonant_bands(sample_rate)
    for s in syllables:
        if s.consonant == 0:
            continue
        m = min(s.consonant, n - s.start)
        burst = signal.sosfilt(bands[s.band], rng.standard_normal(m))
        burst *= _envelope(m, sample_rate, attack=0.005, release=0.015)
        out[s.start : s.start + m] += 0.12 * s.stress * burst / max(_peak(burst), 1e-9)
    return out


@functools.lru_cache(maxsize=16)
def _consonant_bands(sample_rate: int) -> tuple[np.ndarray, ...]:
    nyq = sample_rate / 2.0
    edges = ((500.0, 4000.0), (4000.0, 7500.0), (2000.0, 4500.0))
    return tuple(
        signal.butter(2, [lo / nyq, min(hi, 0.9 * nyq) / nyq], btype="band", output="sos")
        for lo, hi in edges
    )


def _envelope(m: int, sample_rate: int, attack: float = 0.015, release: float = 0.03) -> np.ndarray:
    """Raised-cosine attack and release around a flat middle, float64[m]."""
    env = np.ones(m)
    a = min(m // 2, int(attack * sample_rate))
    r = min(m - a, int(release * sample_rate))
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    if r:
        env[m - r :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, r + 1) / r)
    return env


# ---------------------------------------------------------------------------------------
# Small signal helpers
# ---------------------------------------------------------------------------------------


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly n samples: cut, or pad with zeros (the caller adds the noise floor)."""
    if x.size >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - x.size)])


def _fade_out(x: np.ndarray, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    """A 10 ms fade at the end, so a word cut mid-way does not end in a click."""
    m = min(x.size, int(seconds * sample_rate))
    if m:
        x = x.copy()
        x[-m:] *= np.linspace(1.0, 0.0, m)
    return x


def _peak(x: np.ndarray) -> float:
    p = float(np.max(np.abs(x))) if x.size else 0.0
    return p if p > 0 else 1.0
