"""`python -m preprocess.diagnose PATH`: see preprocess/diagnose/cli.py."""

import sys

from preprocess.diagnose.cli import main

sys.exit(main())
