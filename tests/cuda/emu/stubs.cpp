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
void gemm_rowmajor_bf16(cublasHandle_t, cudaStream_t, int64_t, int64_t, int64_t, const __nv_bfloat16*,
                        int64_t, const __nv_bfloat16*, int64_t, float*, int64_t, float) {
    throw Error("no gemm in emulation");
}
void gemm_rowmajor_bf16_out(cublasHandle_t, cudaStream_t, int64_t, int64_t, int64_t, const __nv_bfloat16*,
                            int64_t, const __nv_bfloat16*, int64_t, __nv_bfloat16*, int64_t) {
    throw Error("no gemm in emulation");
}
void to_bf16(int64_t, int64_t, const float*, int64_t, __nv_bfloat16*, int64_t, cudaStream_t) {
    throw Error("no bf16 conversion in emulation (gemm.cu is not emulated)");
}
}  // namespace mambascope::kernels::cuda
