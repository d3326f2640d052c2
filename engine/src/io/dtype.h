// dtype.h: element types found in checkpoints and their exact conversion to float32 (private to
// engine/src/io).
//
// Design decision: conversions are bit-exact reference implementations (IEEE binary16 incl. subnormals, inf
// and NaN; bfloat16 is the top half of a float32), shared by the safetensors and torch zip loaders so both
// agree bit for bit.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace mambascope::io {

enum class DType { F32, F16, BF16, F64, Unsupported };

inline size_t dtype_bytes(DType t) {
    switch (t) {
        case DType::F32:
            return 4;
        case DType::F16:
            return 2;
        case DType::BF16:
            return 2;
        case DType::F64:
            return 8;
        default:
            return 0;
    }
}

// IEEE 754 binary16 → binary32, exact for every input.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 → 127
    } else if (mant == 0) {
        bits = sign;  // ±0
    } else {
        // Subnormal: value = mant · 2^-24. Normalise the mantissa.
        int e = -1;
        do {
            ++e;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// bfloat16 → binary32: the 16 bits are the high half of the float.
inline float bf16_to_float(uint16_t b) {
    const uint32_t bits = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Converts `n` little-endian elements of type `t` at `src` (any alignment) into `dst`.
inline void convert_to_float(DType t, const uint8_t* src, size_t n, float* dst) {
    // An empty tensor (a 0 in its shape) has no storage: dst may be null, and memcpy(nullptr, ·, 0) is undefined
    // (UBSan; fuzz finding tests/fuzz/crashes/safetensors/crash-7332…).
    if (n == 0) return;
    switch (t) {
        case DType::F32:
            std::memcpy(dst, src, n * 4);
            break;
        case DType::F16:
            for (size_t i = 0; i < n; ++i)
                dst[i] = half_to_float(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
            break;
        case DType::BF16:
            for (size_t i = 0; i < n; ++i)
                dst[i] = bf16_to_float(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
            break;
        case DType::F64:
            for (size_t i = 0; i < n; ++i) {
                double d;
                std::memcpy(&d, src + 8 * i, 8);
                dst[i] = static_cast<float>(d);
            }
            break;
        default:
            break;
    }
}

}  // namespace mambascope::io
