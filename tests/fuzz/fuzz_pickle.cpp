// Fuzz target: the restricted unpickler (engine/src/io/pickle.cpp), in memory. Walks the resulting value graph
// (bounded: the arena holds every value once; items may share values, so visited ones are skipped).
#include <unordered_set>
#include <vector>

#include "fuzz_common.h"
#include "io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using mambascope::io::PickleValue;
    try {
        const mambascope::io::PickleDocument doc = mambascope::io::unpickle(data, size, "fuzz/data.pkl");
        std::vector<const PickleValue*> todo{doc.root};
        std::unordered_set<const PickleValue*> seen;
        size_t acc = 0;
        while (!todo.empty()) {
            const PickleValue* v = todo.back();
            todo.pop_back();
            if (!v || !seen.insert(v).second) continue;
            acc += v->text.size() + v->size.size() + v->stride.size() + std::string(mambascope::io::pickle_kind_name(v->kind)).size();
            for (const PickleValue* c : v->items) todo.push_back(c);
        }
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
    return 0;
}
