/* libcublas.so.12 for FAISS's CUDA-12 wheel on a machine that has only cuBLAS 13 (the GPU machines lent to this
 * project: CUDA 13 image, nothing can be fetched there, and cuBLAS 12 is ~600 MB against a 64 MiB carry limit).
 *
 * libfaiss of faiss-gpu-cu12 calls these eight cuBLAS functions, each bound to the symbol version
 * "libcublas.so.12" (readelf --dyn-syms). This library exports them under that version (cublas12_shim.map) and
 * forwards each call to the same function of libcublas.so.13, loaded on first use. The signatures are cuBLAS's
 * own (cublas_api.h, unchanged from 12 to 13); handles, streams and pointers are passed through untouched.
 * An empty libcublasLt.so.12 is built beside it: libfaiss names it as needed but calls nothing in it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int status_t; /* cublasStatus_t; every enum argument below is an int too */

static void *resolve(const char *name) {
    static void *lib;
    if (!lib && !(lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL))) {
        fprintf(stderr, "cublas12 shim: cannot load libcublas.so.13: %s\n", dlerror());
        abort();
    }
    void *fn = dlsym(lib, name);
    if (!fn) {
        fprintf(stderr, "cublas12 shim: libcublas.so.13 has no %s\n", name);
        abort();
    }
    return fn;
}

#define FORWARD(name, params, args)                              \
    status_t name params {                                       \
        static status_t(*fn) params;                             \
        if (!fn) fn = (status_t(*) params)resolve(#name);        \
        return fn args;                                          \
    }

FORWARD(cublasCreate_v2, (void **handle), (handle))
FORWARD(cublasDestroy_v2, (void *handle), (handle))
FORWARD(cublasSetStream_v2, (void *handle, void *stream), (handle, stream))
FORWARD(cublasGetMathMode, (void *handle, int *mode), (handle, mode))
FORWARD(cublasSetMathMode, (void *handle, int mode), (handle, mode))
FORWARD(cublasSgemmEx,
        (void *handle, int transa, int transb, int m, int n, int k, const float *alpha, const void *A, int Atype,
         int lda, const void *B, int Btype, int ldb, const float *beta, void *C, int Ctype, int ldc),
        (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc))
FORWARD(cublasGemmEx,
        (void *handle, int transa, int transb, int m, int n, int k, const void *alpha, const void *A, int Atype,
         int lda, const void *B, int Btype, int ldb, const void *beta, void *C, int Ctype, int ldc,
         int computeType, int algo),
        (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType,
         algo))
FORWARD(cublasGemmStridedBatchedEx,
        (void *handle, int transa, int transb, int m, int n, int k, const void *alpha, const void *A, int Atype,
         int lda, long long strideA, const void *B, int Btype, int ldb, long long strideB, const void *beta,
         void *C, int Ctype, int ldc, long long strideC, int batchCount, int computeType, int algo),
        (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype,
         ldc, strideC, batchCount, computeType, algo))
