"""`python -m telucodec …`: the application entry point, not a library module.

It only runs the codec command line, which lives in the glue package `telucodec_cli`
(beside `training`): `eval` and `compare` read a preprocess output through
`shards`, and the model package must not import the data package. Importing `telucodec` or
any of its library modules never loads `shards` or `preprocess`; running this entry does.
"""

import sys

from telucodec_cli.main import main

sys.exit(main())
