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

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(BIN)/python -m preprocess.demo --workdir $(DEMO) --minutes $(DEMO_MINUTES) \
		--train-seconds $(DEMO_TRAIN_SECONDS)

test: venv
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
