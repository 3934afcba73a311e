#!/usr/bin/env bash
# The GPU check (issue 9, point 3), run on a lent GPU machine from the repository root, .device/ carried (made
# here by tools/device/prepare-gpu.sh). The machine's image has PyTorch (CUDA 13) and no FAISS, and nothing can
# be fetched there, so: FAISS's CUDA-12 wheel and telescope from this checkout (without its pins: the image's
# torch, numpy and sentence-transformers stand in) installed beside the image's packages, the CUDA 12 runtime,
# and the cuBLAS 12 shim in front of the image's cuBLAS 13. Then the
# stage-one device tests (the GPU one runs: GPU = CPU results, CPU fallback above k 2048), and `telescope bench
# index --synthetic` (no model or data folder travels) at 200k then 1M vectors with TELESCOPE_FAISS_DEVICE=gpu:
# exact search on CPU and GPU, full-dim HNSW on the CPU, telescope's Flat stage ones on the GPU; each report
# says what ran where. Everything it writes lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
set -x
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc
site=/tmp/telescope-gpu  # beside the image's packages, not in them (its python3 is a venv already)
python3 -m pip install --quiet --no-index --no-deps --target "$site" .device/wheels/faiss_gpu_cu12-*.whl || exit 1
python3 -m pip wheel --quiet --no-index --no-deps --no-build-isolation -w /tmp/telescope-wheel . || exit 1
python3 -m pip install --quiet --no-index --no-deps --target "$site" /tmp/telescope-wheel/telescope-*.whl || exit 1
export PYTHONPATH="$site"
cublas=$(find "$(python3 -c 'import sys; print(sys.prefix)')" /usr/local /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -1)
export _FAISS_WHEEL_DISABLE_CUDA_PRELOAD=1  # the wheel would look for the nvidia-cublas-cu12 package
export LD_LIBRARY_PATH="$PWD/.device/lib:$(dirname "$cublas"):${LD_LIBRARY_PATH:-}"
PY=python3
$PY -c "import faiss; n = faiss.get_num_gpus(); print('FAISS', faiss.__version__, 'GPUs', n); assert n > 0" || exit 1
$PY -m pytest -q -p no:cacheprovider tests/test_stage_one_device.py
bench() {
    TELESCOPE_FAISS_DEVICE=gpu "$site/bin/telescope" bench index --synthetic "$1" --threads "$(nproc)" \
        --flat-plans '64:400,384:10;128:200,384:10;128:800,384:10' --hnsw-plans '128:100,384:10;128:200,384:10' \
        --hnsw-ef 64,128,256 --no-compact --workdir /tmp/telescope-bench --out "$OUT" --name "$2"
}
bench 200000 bench-index-gpu-200k
bench 1000000 bench-index-gpu-1m
