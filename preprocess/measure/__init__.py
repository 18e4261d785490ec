"""Per-file measurement and decisions: everything that looks at one file's samples.

    audio_io   decode in bounded blocks → mono → 16 kHz (soundfile + streaming soxr)
    kernels    Numba loops: frame RMS/peak, clipping, non-finite, speech activity, utterances
    loudness   streaming ITU-R BS.1770-4 loudness on 100 ms sub-blocks
    spool      a file's 16 kHz samples held for the second pass (memory, or spilled to disk)
    scan       pass 1: decode once and measure (`FileAnalysis`)
    silero_vad opt-in second opinion on speech (`--vad silero`): Silero's ONNX model
    policy     keep or reject with a reason code, and the gain a kept file gets
    utterances pass 2: trim, split at long pauses, cap the length, cut 16-bit PCM

Imports: numpy/numba/soundfile/soxr and `preprocess.config` (the knobs, plain data) only —
never the orchestration around it (plan, unit, pipeline, Ray), `preprocess.diagnose` or
`preprocess.synth`. So a kernel or a rule can be tested, benchmarked or reused on a single
file without Ray, and the diagnosis re-makes decisions with this very code.
"""
