#!/usr/bin/env bash
# The GPU check (issue 9, point 3), run on a lent GPU machine from the repository root, .device/ carried (made
# here by tools/device/prepare-gpu.sh). The machine's image has PyTorch (CUDA 13) and no FAISS, and nothing can
# be fetched there, so: FAISS's CUDA-12 GPU build (cut to sm_90) and telescope from this checkout (without its pins: the image's
# torch, numpy and sentence-transformers stand in) installed beside the image's packages, the CUDA 12 runtime,
# and the cuBLAS 12 shim in front of the image's cuBLAS 13. Then the
# stage-one device tests (the GPU one runs: GPU = CPU results, CPU fallback above k 2048), and `telescope bench
# index --synthetic` (no model or data folder travels) at 200k then 1M vectors with TELESCOPE_FAISS_DEVICE=gpu:
# exact search on CPU and GPU, full-dim HNSW on the CPU, telescope's Flat stage ones on the GPU; each report
# says what ran where. Also the CUDA training step: the training tests, where torch trains on the GPU.
# The 1M run gets what is left of GPU_CHECK_SECONDS (default 490: a 520 s device run). GPU_CHECK_STEPS picks
# steps (default all: "faiss train bench200k bench1m"; setup always runs).
# Everything it writes lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
set -x
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc
site=/tmp/telescope-gpu  # beside the image's packages, not in them (its python3 is a venv already)
mkdir -p "$site" && python3 -m tarfile -e .device/faiss-gpu.tar.xz "$site" || exit 1
python3 -m pip wheel --quiet --no-index --no-deps --no-build-isolation -w /tmp/telescope-wheel . || exit 1
python3 -m pip install --quiet --no-index --no-deps --target "$site" /tmp/telescope-wheel/telescope-*.whl \
    .device/wheels/*.whl || exit 1
cp -r .device/site/. "$site"/
export PYTHONPATH="$site"
cublas=$(find "$(python3 -c 'import sys; print(sys.prefix)')" /usr/local /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$PWD/.device/lib:$(dirname "$cublas"):${LD_LIBRARY_PATH:-}"
PY=python3
$PY -c "import faiss; n = faiss.get_num_gpus(); print('FAISS', faiss.__version__, 'GPUs', n); assert n > 0" || exit 1
steps=" ${GPU_CHECK_STEPS:-faiss train bench200k bench1m} "
step() { [[ $steps == *" $1 "* ]]; }
if step faiss; then $PY -c "
import faiss, numpy as np
x = np.random.default_rng(0).standard_normal((10000, 64)).astype('float32')
cpu = faiss.IndexFlatIP(64); cpu.add(x)
gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
assert (gpu.search(x[:50], 10)[1] == cpu.search(x[:50], 10)[1]).mean() > 0.99
print('GPU Flat search = CPU')" || exit 1
    $PY -m pytest -q -p no:cacheprovider tests/test_stage_one_device.py
fi
step train && $PY -c "import torch; assert torch.cuda.is_available(); print('torch', torch.__version__, 'trains on', torch.cuda.get_device_name(0))" &&
    $PY -m pytest -q -p no:cacheprovider --durations=5 tests/test_train_objectives.py tests/test_train_cli.py tests/test_bt2_training.py
deadline=${GPU_CHECK_SECONDS:-490}
bench() {  # N NAME [options]
    local n=$1 name=$2 left=$((deadline - SECONDS)); shift 2
    echo "$name: $left s left"
    TELESCOPE_FAISS_DEVICE=gpu timeout "$left" "$site/bin/telescope" bench index --synthetic "$n" \
        --threads "$(nproc)" --no-compact --workdir /tmp/telescope-bench --out "$OUT" --name "$name" "$@"
}
step bench200k && bench 200000 bench-index-gpu-200k --queries 500 --batch1-queries 50 --repeats 2 --hnsw-ef 64,128,256 \
    --flat-plans '64:400,384:10;128:200,384:10;128:800,384:10' --hnsw-plans '128:100,384:10;128:200,384:10'
step bench1m && bench 1000000 bench-index-gpu-1m --queries 1000 --batch1-queries 100 --repeats 3 \
    --hnsw-ef 64,256,512,1024 --flat-plans '64:400,384:10;128:200,384:10;128:800,384:10' \
    --hnsw-plans '128:100,384:10;128:200,384:10;128:800,384:10'
