#!/usr/bin/env bash
# Run here, on a development machine (network, gcc), before the GPU check: puts what the lent GPU machine lacks
# into .device/ (git-ignored), for `device run` to carry:
#   .device/wheels  FAISS's CUDA-12 wheel for the machine's Python 3.12 (faiss-gpu-cu12 1.14.1.post1, 48 MB: the
#                   newest FAISS GPU wheel under the 64 MiB carry limit)
#   .device/lib     the CUDA 12 runtime (libcudart.so.12, 0.7 MB), and libcublas.so.12 / libcublasLt.so.12 shims
#                   that hand FAISS's cuBLAS calls to the image's cuBLAS 13 (cublas12_shim.c says why and how)
# Then: device run with command "bash tools/device/gpu-check.sh", carry [".device"], timeout_s 560.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/device
rm -rf .device && mkdir -p .device/wheels .device/lib
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d .device/wheels 'faiss-gpu-cu12==1.14.1.post1' 'nvidia-cuda-runtime-cu12==12.8.90'
# only the runtime library: installed, the wheel's nvidia/__init__.py would hide the image's nvidia packages (torch's CUDA)
unzip -q -j -o .device/wheels/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' -d .device/lib
rm .device/wheels/nvidia_cuda_runtime_cu12-*.whl
gcc -O2 -fPIC -shared -Wl,-soname,libcublas.so.12 -Wl,--version-script=$here/cublas12_shim.map \
    -o .device/lib/libcublas.so.12 $here/cublas12_shim.c -ldl
echo 'void telescope_cublaslt12_placeholder(void) {}' |
    gcc -O2 -fPIC -shared -Wl,-soname,libcublasLt.so.12 -x c -o .device/lib/libcublasLt.so.12 -
du -sh .device/*
