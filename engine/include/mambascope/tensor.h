// tensor.h: a named float32 tensor that either owns its data or views a memory-mapped file.
//
// All weights are float32 once loaded (f16/bf16 are converted on load). A Tensor shares ownership of whatever
// keeps its bytes alive (a vector or a mapped file), so views into a mapped safetensors file are zero-copy
// and safe to pass around. Row-major, PyTorch's shape order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mambascope {

struct Tensor {
    std::vector<int64_t> shape;         // PyTorch order, row-major
    const float* data = nullptr;        // numel() floats, 4-byte aligned
    std::shared_ptr<const void> owner;  // keeps `data` alive

    int64_t numel() const {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return n;
    }
    int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
    std::string shape_string() const;  // "[3072, 768]"

    // A tensor that owns a copy of `values`.
    static Tensor owned(std::vector<int64_t> shape, std::vector<float> values);
};

}  // namespace mambascope
