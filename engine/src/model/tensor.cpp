#include "mambascope/tensor.h"

namespace mambascope {

std::string Tensor::shape_string() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

Tensor Tensor::owned(std::vector<int64_t> shape, std::vector<float> values) {
    auto store = std::make_shared<std::vector<float>>(std::move(values));
    Tensor t;
    t.shape = std::move(shape);
    t.data = store->data();
    t.owner = std::move(store);
    return t;
}

}  // namespace mambascope
