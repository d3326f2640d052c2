// cuda_check.cuh: checked CUDA runtime and cuBLAS calls that throw mambascope::Error with the call, file,
// line and a hint a user can act on.
//
// Design decision: every kernel launch is followed by CUDA_CHECK(cudaGetLastError()) (launch-configuration
// errors), but no implicit synchronisation: asynchronous faults surface at the caller's next synchronising
// call, which is also checked. Header-only, usable from .cu and .cpp files.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "mambascope/error.h"

namespace mambascope::kernels::cuda {

inline std::string cuda_hint(cudaError_t e) {
    switch (e) {
        case cudaErrorMemoryAllocation:
            return "the GPU ran out of memory: use a shorter chunk, a smaller model, or free other GPU work";
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver:
            return "no usable NVIDIA GPU/driver: run with the CPU backend (--device cpu)";
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorUnsupportedPtxVersion:
            return "the binary was built for another GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=<your sm>";
        case cudaErrorInvalidValue:
        case cudaErrorInvalidConfiguration:
            return "invalid launch arguments (a shape or stride is out of range): this is a bug, please "
                   "report it";
        default:
            return "a CUDA call failed; rerun with CUDA_LAUNCH_BLOCKING=1 (and compute-sanitizer) to locate "
                   "it";
    }
}

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
    throw ::mambascope::Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" +
                                  cudaGetErrorString(e) + ") in " + call + " [" + file + ":" +
                                  std::to_string(line) + "]",
                              cuda_hint(e));
}

inline const char* cublas_status_name(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS:
            return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED:
            return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED:
            return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE:
            return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH:
            return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR:
            return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED:
            return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR:
            return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED:
            return "CUBLAS_STATUS_NOT_SUPPORTED";
        default:
            return "CUBLAS_STATUS_UNKNOWN";
    }
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
    throw ::mambascope::Error(
        std::string("cuBLAS error ") + cublas_status_name(s) + " in " + call + " [" + file + ":" +
            std::to_string(line) + "]",
        s == CUBLAS_STATUS_ALLOC_FAILED
            ? "the GPU ran out of memory: use a shorter chunk or a smaller model"
            : "a matrix product failed on the GPU: check the shapes, or use the CPU backend");
}

}  // namespace mambascope::kernels::cuda

#define CUDA_CHECK(call)                                                                            \
    do {                                                                                            \
        const cudaError_t ms_cuda_err_ = (call);                                                    \
        if (ms_cuda_err_ != cudaSuccess)                                                            \
            ::mambascope::kernels::cuda::throw_cuda_error(ms_cuda_err_, #call, __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                             \
    do {                                                                                               \
        const cublasStatus_t ms_cublas_st_ = (call);                                                   \
        if (ms_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
            ::mambascope::kernels::cuda::throw_cublas_error(ms_cublas_st_, #call, __FILE__, __LINE__); \
    } while (0)
