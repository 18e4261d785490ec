# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp carries a hash of pyproject.toml, so a second run installs nothing
# unless the pinned dependencies changed.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
DEMO ?= demo
DEMO_MINUTES ?= 12
DEMO_TRAIN_SECONDS ?= 180

.PHONY: venv demo test test-fast test-e2e lint clean gpu-carry

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The demo: corpus with real-world faults → preprocess (+ diagnosis report) → train the
# `small` codec on CPU → evaluate per bitrate. Re-running reuses what is already built
# (the demo's OUT is replaced when a newer version's config differs: --overwrite).
demo: venv
	@test -d $(DEMO)/corpus || $(BIN)/python -m preprocess.synth $(DEMO)/corpus \
		--minutes $(DEMO_MINUTES) --seed 0 --no-progress
	$(BIN)/python -m preprocess.run --input $(DEMO)/corpus --output $(DEMO)/out --shard-mb 2 \
		--overwrite
	$(BIN)/python train_ds.py --deepspeed-config ds_config.json --data-dir $(DEMO)/out \
		--checkpoint-dir $(DEMO)/runs --experiment-name demo --model-config small \
		--max-steps 2000 --max-seconds $(DEMO_TRAIN_SECONDS) --val-every 300
	$(BIN)/python -m telucodec eval --checkpoint $(DEMO)/runs/demo/final --data-dir $(DEMO)/out \
		--split val --kbps 1.5 3 6 --out $(DEMO)/eval.json
	@echo
	@echo "diagnosis report: $(DEMO)/out/report/report.md"
	@echo "training curves:  $(DEMO)/runs/demo/curves.png   metrics: $(DEMO)/runs/demo/metrics.json"
	@echo "codec eval:       $(DEMO)/eval.json"

# The whole suite (what CI runs): tests/unit, then tests/e2e (pipeline runs on Ray, training
# under DeepSpeed, the CLIs as subprocesses). ~10 min on 2 cores.
test: venv
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q tests/unit tests/e2e

# The inner loop: in-process tests only, no Ray, no training run (~1 min on 2 cores).
test-fast: venv
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q tests/unit

test-e2e: venv
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q tests/e2e

# Wheels and a preprocess OUT in .gpu_carry/ for benchmarks/gpu_check.sh on a GPU machine
# that cannot download (docs/BENCHMARKS.md, "GPU check").
gpu-carry: venv
	$(BIN)/python benchmarks/gpu_carry.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
