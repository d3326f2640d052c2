// emu_rt.h: host-side CUDA runtime calls for the CPU emulation (malloc/memcpy; a fake H200: 132 SMs).
#pragma once
#include <cuda_runtime.h>
#include <cstdlib>
#include <cstring>
inline cudaError_t emu_cudaMalloc(void** p, size_t n) {
    *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
    return cudaSuccess;
}
template <class T>
cudaError_t emu_cudaMallocT(T** p, size_t n) {
    return emu_cudaMalloc(reinterpret_cast<void**>(p), n);
}
inline cudaError_t emu_cudaMallocAsync(void** p, size_t n, cudaStream_t) {
    return emu_cudaMalloc(p, n);
}
inline cudaError_t emu_cudaFree(void* p) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t emu_cudaFreeAsync(void* p, cudaStream_t) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t emu_cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
    std::memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t emu_cudaMemset(void* d, int v, size_t n) {
    std::memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t emu_cudaDeviceSynchronize() {
    return cudaSuccess;
}
inline cudaError_t emu_cudaGetLastError() {
    return cudaSuccess;
}
inline cudaError_t emu_cudaGetDevice(int* d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t emu_cudaGetDeviceCount(int* d) {
    *d = 1;
    return cudaSuccess;
}
extern int emu_sms_rt;
inline cudaError_t emu_cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrL2CacheSize ? 50 << 20 : emu_sms_rt;  // an H100's / H200's 50 MB L2; else the SMs
    return cudaSuccess;
}
template <class F>
cudaError_t emu_cudaOccupancy(int* v, F, int threads, size_t) {
    *v = threads <= 128 ? 4 : 2;
    return cudaSuccess;
}
inline const char* emu_cudaGetErrorString(cudaError_t) {
    return "emulated CUDA error";
}
inline const char* emu_cudaGetErrorName(cudaError_t) {
    return "cudaErrorEmulated";
}
template <class F, class A>
cudaError_t emu_cudaFuncSetAttribute(F, A, int) {  // dynamic shared memory is emu_smem: nothing to raise
    return cudaSuccess;
}
#define cudaMalloc(p, n) emu_cudaMallocT(p, n)
#define cudaFuncSetAttribute emu_cudaFuncSetAttribute
#define cudaGetErrorString emu_cudaGetErrorString
#define cudaGetErrorName emu_cudaGetErrorName
#define cudaMallocAsync emu_cudaMallocAsync
#define cudaFree emu_cudaFree
#define cudaFreeAsync emu_cudaFreeAsync
#define cudaMemcpy emu_cudaMemcpy
#define cudaMemset emu_cudaMemset
#define cudaDeviceSynchronize emu_cudaDeviceSynchronize
#define cudaGetLastError emu_cudaGetLastError
#define cudaGetDevice emu_cudaGetDevice
#define cudaGetDeviceCount emu_cudaGetDeviceCount
#define cudaDeviceGetAttribute emu_cudaDeviceGetAttribute
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor emu_cudaOccupancy
