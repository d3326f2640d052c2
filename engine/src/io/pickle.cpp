#include "io/pickle.h"

#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "mambascope/error.h"

namespace mambascope::io {

const char* pickle_kind_name(PickleValue::Kind k) {
    using K = PickleValue::Kind;
    switch (k) {
        case K::None:
            return "None";
        case K::Bool:
            return "bool";
        case K::Int:
            return "int";
        case K::Float:
            return "float";
        case K::String:
            return "str";
        case K::Tuple:
            return "tuple";
        case K::List:
            return "list";
        case K::Dict:
            return "dict";
        case K::Global:
            return "global";
        case K::PersistentId:
            return "persistent id";
        case K::Tensor:
            return "tensor";
    }
    return "?";
}

namespace {

using K = PickleValue::Kind;

// Opcodes (CPython Lib/pickle.py). Only these are accepted.
enum Op : uint8_t {
    MARK = '(',
    STOP = '.',
    BININT = 'J',
    BININT1 = 'K',
    BININT2 = 'M',
    NONE = 'N',
    BINPERSID = 'Q',
    REDUCE = 'R',
    BINSTRING = 'T',
    SHORT_BINSTRING = 'U',
    BINUNICODE = 'X',
    APPEND = 'a',
    BUILD = 'b',
    GLOBAL = 'c',
    APPENDS = 'e',
    BINGET = 'h',
    LONG_BINGET = 'j',
    EMPTY_LIST = ']',
    BINPUT = 'q',
    LONG_BINPUT = 'r',
    SETITEM = 's',
    TUPLE = 't',
    EMPTY_TUPLE = ')',
    SETITEMS = 'u',
    BINFLOAT = 'G',
    EMPTY_DICT = '}',
    PROTO = 0x80,
    TUPLE1 = 0x85,
    TUPLE2 = 0x86,
    TUPLE3 = 0x87,
    NEWTRUE = 0x88,
    NEWFALSE = 0x89,
    LONG1 = 0x8a,
    SHORT_BINUNICODE = 0x8c,
    BINUNICODE8 = 0x8d,
    STACK_GLOBAL = 0x93,
    MEMOIZE = 0x94,
    FRAME = 0x95,
};

constexpr int kMaxProtocol = 5;

// Globals we accept. Nothing here is ever imported or executed: they are names the state-dict format uses.
const std::unordered_set<std::string>& whitelist() {
    static const std::unordered_set<std::string> w = {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        // Storage classes name the element type of a persistent storage. Non-float ones are accepted here so
        // that the loader can report "unsupported dtype" instead of "forbidden global".
        "torch.FloatStorage",
        "torch.HalfStorage",
        "torch.BFloat16Storage",
        "torch.DoubleStorage",
        "torch.LongStorage",
        "torch.IntStorage",
        "torch.ShortStorage",
        "torch.CharStorage",
        "torch.ByteStorage",
        "torch.BoolStorage",
    };
    return w;
}

std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s.substr(0, 200)) out += (c >= 32 && c < 127) ? static_cast<char>(c) : '?';
    return out;
}

class Unpickler {
  public:
    Unpickler(const uint8_t* data, size_t size, const std::string& origin)
        : p_(data), n_(size), origin_(origin) {}

    PickleDocument run() {
        while (true) {
            op_pos_ = pos_;
            const uint8_t op = byte();
            switch (op) {
                case PROTO: {
                    const int v = byte();
                    if (v > kMaxProtocol) malformed("unsupported pickle protocol " + std::to_string(v));
                    break;
                }
                case FRAME:
                    bytes(8);
                    break;  // framing is a hint for buffering; the data follows inline
                case STOP: {
                    if (stack_.size() != 1 || !marks_.empty())
                        malformed("STOP with a stack of " + std::to_string(stack_.size()));
                    doc_.root = stack_.back();
                    return std::move(doc_);
                }
                case MARK:
                    if (marks_.size() >= kPickleMaxStack) malformed("too many nested marks");
                    marks_.push_back(stack_.size());
                    break;
                case NONE:
                    push(make(K::None));
                    break;
                case NEWTRUE:
                case NEWFALSE: {
                    PickleValue* v = make(K::Bool);
                    v->boolean = op == NEWTRUE;
                    push(v);
                    break;
                }
                case BININT:
                    push_int(static_cast<int32_t>(u32()));
                    break;
                case BININT1:
                    push_int(byte());
                    break;
                case BININT2:
                    push_int(u16());
                    break;
                case LONG1: {
                    const size_t len = byte();
                    if (len > 8)
                        malformed("LONG1 integer of " + std::to_string(len) + " bytes does not fit 64 bits");
                    const uint8_t* b = bytes(len);
                    uint64_t u = 0;
                    for (size_t i = 0; i < len; ++i) u |= static_cast<uint64_t>(b[i]) << (8 * i);
                    if (len > 0 && len < 8 && (b[len - 1] & 0x80))
                        u |= ~uint64_t{0} << (8 * len);  // sign-extend
                    push_int(static_cast<int64_t>(u));
                    break;
                }
                case BINFLOAT: {
                    const uint8_t* b = bytes(8);
                    uint64_t u = 0;
                    for (int i = 0; i < 8; ++i) u = (u << 8) | b[i];  // big-endian
                    PickleValue* v = make(K::Float);
                    std::memcpy(&v->real, &u, 8);
                    push(v);
                    break;
                }
                case SHORT_BINUNICODE:
                case SHORT_BINSTRING:
                    push_string(byte());
                    break;
                case BINUNICODE:
                    push_string(u32());
                    break;
                case BINSTRING: {
                    const int32_t len = static_cast<int32_t>(u32());
                    if (len < 0) malformed("negative BINSTRING length");
                    push_string(static_cast<uint64_t>(len));
                    break;
                }
                case BINUNICODE8:
                    push_string(u64());
                    break;
                case EMPTY_TUPLE:
                    push(make(K::Tuple));
                    break;
                case EMPTY_LIST:
                    push(make(K::List));
                    break;
                case EMPTY_DICT:
                    push(make(K::Dict));
                    break;
                case TUPLE: {
                    PickleValue* t = make(K::Tuple);
                    t->items = pop_mark();
                    push(t);
                    break;
                }
                case TUPLE1:
                case TUPLE2:
                case TUPLE3: {
                    const size_t k = op - TUPLE1 + 1;
                    need(k);
                    PickleValue* t = make(K::Tuple);
                    t->items.assign(stack_.end() - static_cast<ptrdiff_t>(k), stack_.end());
                    stack_.resize(stack_.size() - k);
                    push(t);
                    break;
                }
                case BINPUT:
                    memo_put(byte());
                    break;
                case LONG_BINPUT:
                    memo_put(u32());
                    break;
                case MEMOIZE:
                    memo_put(memo_.size());
                    break;
                case BINGET:
                    memo_get(byte());
                    break;
                case LONG_BINGET:
                    memo_get(u32());
                    break;
                case GLOBAL: {
                    const std::string module = line();
                    const std::string name = line();
                    push(global(module, name));
                    break;
                }
                case STACK_GLOBAL: {
                    need(2);
                    const PickleValue* name = pop();
                    const PickleValue* module = pop();
                    if (!module->is(K::String) || !name->is(K::String))
                        malformed("STACK_GLOBAL needs two strings");
                    push(global(module->text, name->text));
                    break;
                }
                case BINPERSID: {
                    need(1);
                    PickleValue* v = make(K::PersistentId);
                    v->items.push_back(pop());
                    push(v);
                    break;
                }
                case REDUCE: {
                    need(2);
                    const PickleValue* args = pop();
                    const PickleValue* callable = pop();
                    push(reduce(callable, args));
                    break;
                }
                case BUILD: {
                    need(2);
                    const PickleValue* state = pop();
                    const PickleValue* obj = stack_.back();
                    // OrderedDict state dicts carry attributes (`_metadata`) set through BUILD; we do not
                    // need them.
                    if (!obj->is(K::Dict) || !(state->is(K::Dict) || state->is(K::None))) {
                        forbidden_op(op, std::string("BUILD on a ") + pickle_kind_name(obj->kind));
                    }
                    break;
                }
                case SETITEM: {
                    need(3);
                    const PickleValue* value = pop();
                    const PickleValue* key = pop();
                    dict_top()->items.insert(dict_top()->items.end(), {key, value});
                    break;
                }
                case SETITEMS: {
                    auto kv = pop_mark();
                    if (kv.size() % 2 != 0) malformed("SETITEMS with an odd number of values");
                    need(1);
                    PickleValue* d = dict_top();
                    d->items.insert(d->items.end(), kv.begin(), kv.end());
                    break;
                }
                case APPEND: {
                    need(2);
                    const PickleValue* v = pop();
                    list_top()->items.push_back(v);
                    break;
                }
                case APPENDS: {
                    auto vs = pop_mark();
                    need(1);
                    PickleValue* l = list_top();
                    l->items.insert(l->items.end(), vs.begin(), vs.end());
                    break;
                }
                default:
                    forbidden_op(op, "");
            }
        }
    }

  private:
    // ---- input ----
    const uint8_t* bytes(uint64_t k) {
        if (k > n_ - pos_) {
            throw Error(origin_ + ": pickle is truncated (needs " + std::to_string(k) +
                            " bytes at byte offset " + std::to_string(pos_) + ", has " +
                            std::to_string(n_ - pos_) + ")",
                        "the checkpoint file is incomplete; re-download or re-save it");
        }
        const uint8_t* b = p_ + pos_;
        pos_ += static_cast<size_t>(k);
        return b;
    }
    uint8_t byte() { return *bytes(1); }
    uint16_t u16() {
        const uint8_t* b = bytes(2);
        return static_cast<uint16_t>(b[0] | (b[1] << 8));
    }
    uint32_t u32() {
        const uint8_t* b = bytes(4);
        return static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) |
               (static_cast<uint32_t>(b[2]) << 16) | (static_cast<uint32_t>(b[3]) << 24);
    }
    uint64_t u64() {
        const uint64_t lo = u32();
        return lo | (static_cast<uint64_t>(u32()) << 32);
    }
    std::string line() {
        std::string s;
        while (true) {
            const char c = static_cast<char>(byte());
            if (c == '\n') return s;
            if (s.size() >= 256) malformed("GLOBAL name longer than 256 bytes");
            s += c;
        }
    }

    // ---- errors ----
    [[noreturn]] void malformed(const std::string& what) {
        throw Error(origin_ + ": malformed pickle at byte offset " + std::to_string(op_pos_) + ": " + what,
                    "the checkpoint is corrupt or not a PyTorch state dict");
    }
    [[noreturn]] void forbidden_op(uint8_t op, const std::string& detail) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        std::string shown = hex;
        if (op >= 32 && op < 127) shown += std::string(" '") + static_cast<char>(op) + "'";
        throw Error("forbidden pickle opcode " + shown + (detail.empty() ? "" : " (" + detail + ")") +
                        " at byte offset " + std::to_string(op_pos_) + " in " + origin_ +
                        ": this file may run code; refusing",
                    "only plain tensor state dicts are loaded; convert the checkpoint to safetensors");
    }
    [[noreturn]] void forbidden_global(const std::string& name) {
        throw Error("forbidden pickle global " + printable(name) + " at byte offset " +
                        std::to_string(op_pos_) + " in " + origin_ + ": this file may run code; refusing",
                    "only plain tensor state dicts are loaded; convert the checkpoint to safetensors");
    }

    // ---- values ----
    PickleValue* make(K kind) {
        if (doc_.arena.size() >= kPickleMaxObjects)
            malformed("more than " + std::to_string(kPickleMaxObjects) + " objects");
        doc_.arena.emplace_back();
        doc_.arena.back().kind = kind;
        return &doc_.arena.back();
    }
    void push(const PickleValue* v) {
        if (stack_.size() >= kPickleMaxStack)
            malformed("stack deeper than " + std::to_string(kPickleMaxStack));
        stack_.push_back(v);
    }
    void push_int(int64_t i) {
        PickleValue* v = make(K::Int);
        v->integer = i;
        push(v);
    }
    void push_string(uint64_t len) {
        if (len > kPickleMaxStringBytes)
            malformed("string of " + std::to_string(len) + " bytes exceeds the limit");
        const uint8_t* b = bytes(len);
        PickleValue* v = make(K::String);
        v->text.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(len));
        push(v);
    }
    // Stack entries above the last mark must exist.
    void need(size_t k) {
        const size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() < floor + k) malformed("stack underflow");
    }
    const PickleValue* pop() {
        const PickleValue* v = stack_.back();
        stack_.pop_back();
        return v;
    }
    std::vector<const PickleValue*> pop_mark() {
        if (marks_.empty()) malformed("no MARK on the stack");
        const size_t m = marks_.back();
        marks_.pop_back();
        std::vector<const PickleValue*> out(stack_.begin() + static_cast<ptrdiff_t>(m), stack_.end());
        stack_.resize(m);
        return out;
    }
    // Containers are mutable only through the stack top; the arena holds them non-const.
    PickleValue* mutable_top() { return const_cast<PickleValue*>(stack_.back()); }
    PickleValue* dict_top() {
        if (!stack_.back()->is(K::Dict))
            malformed(std::string("SETITEM on a ") + pickle_kind_name(stack_.back()->kind));
        return mutable_top();
    }
    PickleValue* list_top() {
        if (!stack_.back()->is(K::List))
            malformed(std::string("APPEND on a ") + pickle_kind_name(stack_.back()->kind));
        return mutable_top();
    }
    void memo_put(uint64_t idx) {
        if (stack_.empty()) malformed("memo store with an empty stack");
        if (memo_.size() >= kPickleMaxMemo && !memo_.count(idx)) malformed("memo larger than the limit");
        memo_[idx] = stack_.back();
    }
    void memo_get(uint64_t idx) {
        auto it = memo_.find(idx);
        if (it == memo_.end()) malformed("memo key " + std::to_string(idx) + " was never stored");
        push(it->second);
    }

    const PickleValue* global(const std::string& module, const std::string& name) {
        const std::string full = module + "." + name;
        if (!whitelist().count(full)) forbidden_global(full);
        PickleValue* v = make(K::Global);
        v->text = full;
        return v;
    }

    static bool int_tuple(const PickleValue* t, std::vector<int64_t>& out) {
        if (!t->is(K::Tuple) && !t->is(K::List)) return false;
        out.clear();
        for (const PickleValue* x : t->items) {
            if (!x->is(K::Int)) return false;
            out.push_back(x->integer);
        }
        return true;
    }

    const PickleValue* reduce(const PickleValue* callable, const PickleValue* args) {
        if (!callable->is(K::Global))
            forbidden_op(REDUCE, std::string("call of a ") + pickle_kind_name(callable->kind));
        if (!args->is(K::Tuple)) malformed("REDUCE arguments are not a tuple");
        const std::string& f = callable->text;
        const auto& a = args->items;
        if (f == "collections.OrderedDict") {
            if (!a.empty()) malformed("OrderedDict called with arguments");
            return make(K::Dict);
        }
        if (f == "torch._utils._rebuild_tensor_v2") {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if (a.size() < 6 || a.size() > 7)
                malformed("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
            if (++tensors_ > kPickleMaxTensors)
                malformed("more than " + std::to_string(kPickleMaxTensors) + " tensors");
            PickleValue* t = make(K::Tensor);
            if (!a[0]->is(K::PersistentId)) malformed("tensor storage is not a persistent id");
            if (!a[1]->is(K::Int)) malformed("tensor storage offset is not an int");
            if (!int_tuple(a[2], t->size) || !int_tuple(a[3], t->stride))
                malformed("tensor size/stride are not int tuples");
            if (t->size.size() != t->stride.size()) malformed("tensor size and stride have different ranks");
            if (t->size.size() > kPickleMaxDims)
                malformed("tensor rank above " + std::to_string(kPickleMaxDims));
            t->items.push_back(a[0]);
            t->integer = a[1]->integer;
            return t;
        }
        if (f == "torch._utils._rebuild_parameter") {
            // (data, requires_grad, backward_hooks): a Parameter is its tensor for our purposes.
            if (a.size() != 3 || !a[0]->is(K::Tensor))
                malformed("_rebuild_parameter expects (tensor, bool, hooks)");
            return a[0];
        }
        forbidden_op(REDUCE, "call of " + f);
    }

    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0, op_pos_ = 0;
    std::string origin_;
    PickleDocument doc_;
    std::vector<const PickleValue*> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, const PickleValue*> memo_;
    size_t tensors_ = 0;
};

}  // namespace

PickleDocument unpickle(const uint8_t* data, size_t size, const std::string& origin) {
    return Unpickler(data, size, origin).run();
}

}  // namespace mambascope::io
