"""`python -m telucodec_cli …`: the same command line as `python -m telucodec …`."""

import sys

from telucodec_cli.main import main

sys.exit(main())
