"""The one-way arrows of the layout: `telucodec` is the model package and reads no corpus, so
no library module of it imports the data package (`shards`) or the pipeline (`preprocess`).
The glue that joins them is the `telucodec_cli` package and the `training` package behind
train_ds.py, whose modules import downward only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test process has long imported everything.
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("shards", "preprocess"))
print(json.dumps(loaded))
"""


def test_importing_every_telucodec_library_module_loads_neither_shards_nor_preprocess():
    # __main__ is the application entry (it runs telucodec_cli), not a library module.
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


# The training package, lowest first: each module imports only modules before it, so no
# cycle can form and `main` reads as the procedure over the rest. A new module takes a place.
TRAINING_ORDER = [
    "report",
    "checkpoint_files",
    "distributed",
    "interrupts",
    "args",
    "init_source",
    "setup",
    "engines",
    "checkpoints",
    "validate",
    "loop",
    "outputs",
    "main",
]


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, lazy imports inside functions included;
    `from training import loop` counts as `training.loop`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "training":
                names.update(f"training.{alias.name}" for alias in node.names)
    return names


def test_training_modules_import_only_modules_below_them():
    on_disk = sorted(p.stem for p in (REPO / "training").glob("*.py") if p.stem != "__init__")
    assert sorted(TRAINING_ORDER) == on_disk
    for i, name in enumerate(TRAINING_ORDER):
        imported = imported_modules(REPO / "training" / f"{name}.py")
        assert not {m for m in imported if m.split(".")[0] == "preprocess"}, name
        upward = {m for m in imported if m.startswith("training.")} - {
            f"training.{below}" for below in TRAINING_ORDER[:i]
        }
        assert not upward, f"training/{name}.py imports {sorted(upward)}: not below it"


def test_train_ds_is_only_the_door_into_training():
    source = REPO / "train_ds.py"
    assert imported_modules(source) == {"sys", "training.main"}
    assert len(source.read_text(encoding="utf-8").splitlines()) <= 150
