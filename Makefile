# The README's two commands: `make demo` and `make test`. Each creates .venv with the pinned dependencies when
# it is missing (the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.telescope-installed
EXTRAS := dev,train,distributed

.PHONY: venv demo test proto clean gpu-check

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

# On a machine with an NVIDIA GPU (these machines and CI have none): faiss-gpu (CUDA 12 wheels) replaces faiss-cpu
# in the venv, then the GPU stage-one test and the index benchmark with stage one on the GPU. The report records
# the device of each stage one; BENCH_INDEX_ARGS passes options through, e.g. BENCH_INDEX_ARGS='--model DIR'.
# On the lent GPU machines (no network, no FAISS, CUDA 13): tools/device/prepare-gpu.sh, then tools/device/gpu-check.sh.
gpu-check: $(STAMP)
	$(BIN)/pip uninstall --quiet -y faiss-cpu
	$(BIN)/pip install --quiet 'faiss-gpu==1.15.1'
	$(BIN)/python -c "import faiss; assert faiss.get_num_gpus() > 0, 'FAISS sees no GPU'"
	$(BIN)/python -m pytest -q tests/test_stage_one_device.py
	TELESCOPE_FAISS_DEVICE=gpu $(BIN)/telescope bench index --name bench-index-gpu $(BENCH_INDEX_ARGS)
