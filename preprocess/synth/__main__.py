"""`python -m preprocess.synth OUT`: see preprocess/synth/cli.py."""

import sys

from preprocess.synth.cli import main

sys.exit(main())
