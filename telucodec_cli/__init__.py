"""The codec's command line, `python -m telucodec encode|decode|eval|compare` (and the
`telucodec` script): glue where audio files and preprocess outputs meet the codec, so it
imports `shards`, `telucodec` and the pipeline's loudness meter, which the model package
must not.

    main.py         parse the command line and run one command
    audio_files.py  audio files in: read_audio, the recordings folder of `compare --audio`
"""
