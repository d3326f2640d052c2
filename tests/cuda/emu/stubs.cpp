// stubs.cpp: what the CPU emulation cannot run (cuBLAS) and its settings.
#include "cuda/gemm.cuh"
#include "emu_rt.h"
#include "mambascope/error.h"
int emu_sms_rt = 132;
namespace mambascope::kernels::cuda {
CublasHandle::CublasHandle() {}
CublasHandle::~CublasHandle() {}
void gemm_rowmajor(cublasHandle_t, cudaStream_t, int64_t, int64_t, int64_t, const float*, int64_t,
                   const float*, int64_t, float*, int64_t, bool, float) {
    throw Error("no gemm in emulation");
}
}  // namespace mambascope::kernels::cuda
