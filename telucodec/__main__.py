"""`python -m telucodec …`: the application entry point, not a library module.

It only runs the codec command line, which lives in the top-level glue module
`codec_cli.py` (beside train_ds.py): `eval` and `compare` read a preprocess output through
`shards`, and the model package must not import the data package. Importing `telucodec` or
any of its library modules never loads `shards` or `preprocess`; running this entry does.
"""

import sys

from codec_cli import main

sys.exit(main())
