// pickle.h: a restricted, non-executing unpickler for PyTorch state dicts (the data.pkl inside torch.save
// zips).
//
// Design decision: this is a small stack machine that knows only the opcodes a tensor state dict uses and
// only a whitelist of globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter,
// the torch.*Storage classes). Globals are never imported or called: REDUCE on a whitelisted callable builds
// a plain value (an empty dict, a tensor description). Any other global or opcode is an Error that says the
// file may run code. All values live in one arena owned by the result, so hostile nesting or reference cycles
// can neither blow the C++ stack on destruction nor leak; memo size, stack depth, string lengths and object
// counts are bounded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace mambascope::io {

struct PickleValue {
    enum class Kind {
        None,
        Bool,
        Int,
        Float,
        String,  // str (BINUNICODE...) or bytes-as-str (BINSTRING)
        Tuple,
        List,
        Dict,          // dict or collections.OrderedDict; items = k0, v0, k1, v1, ... in insertion order
        Global,        // a whitelisted class/function; text = "module.name"
        PersistentId,  // BINPERSID: items[0] = the pid (torch: ('storage', <Global>, key, location, numel))
        Tensor,        // torch._utils._rebuild_tensor_v2: items[0] = storage (PersistentId)
    };
    Kind kind = Kind::None;
    bool boolean = false;
    int64_t integer = 0;  // Int; Tensor: storage_offset (elements)
    double real = 0.0;
    std::string text;
    std::vector<const PickleValue*> items;
    std::vector<int64_t> size, stride;  // Tensor

    bool is(Kind k) const { return kind == k; }
};

const char* pickle_kind_name(PickleValue::Kind k);

struct PickleDocument {
    std::deque<PickleValue> arena;  // owns every value; pointers into it stay valid
    const PickleValue* root = nullptr;
};

// Unpickles `data`. `origin` names the stream in error messages ("model.bin:archive/data.pkl").
PickleDocument unpickle(const uint8_t* data, size_t size, const std::string& origin);

// Tunables (bounds against hostile input; a 2.8B-parameter state dict needs a few thousand of each).
constexpr size_t kPickleMaxStack = 100'000;         // values on the stack, marks included
constexpr size_t kPickleMaxMemo = 1'000'000;        // memo entries
constexpr size_t kPickleMaxObjects = 5'000'000;     // values created in total
constexpr size_t kPickleMaxStringBytes = 1u << 20;  // one str / bytes literal
constexpr size_t kPickleMaxTensors = 100'000;       // _rebuild_tensor_v2 calls
constexpr size_t kPickleMaxDims = 16;               // tensor rank

}  // namespace mambascope::io
