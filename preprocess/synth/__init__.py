"""The demo-corpus generator: deterministic speech with planted real-world faults.

    cli            `python -m preprocess.synth OUT [--minutes M] [--seed S] [--engine …]`
    corpus         plan → render → write the files and OUT.truth.jsonl beside them
    plan           which files, of which class, in which folders, under which names
    classes        the fault-class registry: decision, rate, planner and renderer per class
    spec           FileSpec, Folder, and the seeded draws that fill them in
    render         speech in room tone, channels, encoding to reproducible bytes
    sndfile_bytes  rewriting the clock-dependent bytes libsndfile writes
    truth          the ground-truth records and their file
    speech         espeak-ng Telugu or procedural speech

Imports: numpy, scipy, soundfile, soxr — nothing of the pipeline. It plants what
docs/CONTRACTS.md says the pipeline must decide, so importing the pipeline here would let
the generator and the code under test agree by construction; and the pipeline never imports
it either (tests/e2e/test_layout.py holds both arrows).
"""
