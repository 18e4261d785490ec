"""The one-way arrows of the layout: `telucodec` is the model package and reads no corpus, so
no library module of it imports the data package (`shards`) or the pipeline (`preprocess`).
The glue that joins them is codec_cli.py and train_ds.py, beside the packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: this test process has long imported everything.
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("shards", "preprocess"))
print(json.dumps(loaded))
"""


def test_importing_every_telucodec_library_module_loads_neither_shards_nor_preprocess():
    # __main__ is the application entry (it runs codec_cli), not a library module.
    library = ["telucodec"] + sorted(
        f"telucodec.{path.stem}"
        for path in (REPO / "telucodec").glob("*.py")
        if path.stem not in ("__init__", "__main__")
    )
    assert "telucodec.evaluate" in library and "telucodec.compare" in library
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *library],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
