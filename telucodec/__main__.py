"""`python -m telucodec …` runs the codec CLI (telucodec/cli.py)."""

import sys

from telucodec.cli import main

sys.exit(main())
