# The README's two commands: `make demo` and `make test`. Each creates .venv with the pinned dependencies when
# it is missing (the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.telescope-installed
EXTRAS := dev,train,distributed

.PHONY: venv demo test proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/telescope demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf .cache build *.egg-info

# Regenerate the gRPC stubs from proto/telescope/v1/*.proto (tests/test_proto_drift.py fails when they are stale).
proto: $(STAMP)
	$(BIN)/python -m telescope.proto.build
