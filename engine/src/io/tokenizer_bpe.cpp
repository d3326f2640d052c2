// Byte-level BPE from an HF tokenizer.json (tokenizer.h): NFC → added tokens → GPT-2 split → byte→unicode →
// ranked merges; ByteLevel decoding. Mirrors HF tokenizers 0.23 (checked against tests/data/tokenizer/).
#include <omp.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <mutex>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "mambascope/error.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"
#include "io/json_limits.h"

#ifdef MAMBASCOPE_HAVE_ICU
#include <unicode/bytestream.h>
#include <unicode/edits.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#endif

namespace mambascope {

namespace {

// Tokenizer JSON nests a few levels (normalizer/pre_tokenizer sequences); deeper input is refused before
// nlohmann builds, copies or dumps it (its copy and dump recurse).
constexpr int kMaxJsonDepth = 64;
// Longest JSON excerpt echoed in an error message.
constexpr size_t kMaxEcho = 200;
// Token ids are int32; the id table is dense, so the largest id may exceed the number of tokens by at most
// this many holes (bounds the table's memory on a hostile id such as 2^31 - 1).
constexpr int64_t kMaxIdHoles = int64_t{1} << 20;

std::string excerpt(const nlohmann::json& v) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > kMaxEcho) s = s.substr(0, kMaxEcho) + "... (" + std::to_string(s.size()) + " bytes)";
    return s;
}

// Inputs at least this big are cut into blocks at safe boundaries and encoded in parallel.
constexpr size_t kParallelMinBytes = size_t(1) << 20;
// Target bytes per parallel block.
constexpr size_t kParallelBlockBytes = size_t(256) << 10;

enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// \p{L}, \p{N}, \s (Unicode White_Space) as the GPT-2 regex sees them under onig.
CharClass classify(uint32_t cp) {
    if (cp < 0x80) {
        const auto c = static_cast<char>(cp);
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return kLetter;
        if (c >= '0' && c <= '9') return kNumber;
        if (c == ' ' || (c >= '\t' && c <= '\r')) return kSpace;
        return kOther;
    }
#ifdef MAMBASCOPE_HAVE_ICU
    const auto c = static_cast<UChar32>(cp);
    if (u_isUWhiteSpace(c)) return kSpace;
    const uint32_t mask = U_GET_GC_MASK(c);
    if (mask & U_GC_L_MASK) return kLetter;
    if (mask & U_GC_N_MASK) return kNumber;
    return kOther;
#else
    throw Error("non-ASCII text needs Unicode tables: Mambascope was built without ICU",
                "rebuild with libicu-dev installed, or use the byte tokenizer");
#endif
}

bool is_ascii(std::string_view s) {
    for (const char c : s)
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    return true;
}

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n.
std::array<uint32_t, 256> byte_to_unicode_table() {
    std::array<uint32_t, 256> t{};
    std::array<bool, 256> direct{};
    for (int b = 33; b <= 126; ++b) direct[b] = true;
    for (int b = 161; b <= 172; ++b) direct[b] = true;
    for (int b = 174; b <= 255; ++b) direct[b] = true;
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) t[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
    return t;
}

// One GPT-2 regex match starting at code point i of `cls` (size n); returns the end (exclusive).
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2_match(const std::vector<uint32_t>& cps, const std::vector<uint8_t>& cls, size_t i) {
    const size_t n = cps.size();
    if (cps[i] == '\'' && i + 1 < n) {
        const uint32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    const size_t j = (cps[i] == ' ' && i + 1 < n && cls[i + 1] != kSpace) ? i + 1 : i;
    if (cls[j] != kSpace) {
        size_t k = j + 1;
        while (k < n && cls[k] == cls[j]) ++k;
        return k;
    }
    // Whitespace at i: \s+(?!\S) then \s+.
    size_t k = i;
    while (k < n && cls[k] == kSpace) ++k;
    if (k == n) return k;
    if (k - i >= 2) return k - 1;
    return k;  // a single whitespace before a non-space
}

struct Piece {
    size_t begin, end;  // bytes in the normalized text
};

struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

bool is_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

// Leftmost-longest matching of a set of added tokens.
class AddedMatcher {
  public:
    void add(const AddedToken* t) {
        if (t->content.empty()) return;
        auto& bucket = by_first_[static_cast<unsigned char>(t->content[0])];
        bucket.push_back(t);
        std::stable_sort(bucket.begin(), bucket.end(), [](const AddedToken* a, const AddedToken* b) {
            return a->content.size() > b->content.size();
        });
        any_ = true;
    }
    bool empty() const { return !any_; }
    // Calls on_text(begin, end) and on_token(token, begin, end) over `s` in order.
    template <class TextFn, class TokFn>
    void split(std::string_view s, TextFn&& on_text, TokFn&& on_token) const {
        size_t text_start = 0, i = 0;
        while (i < s.size()) {
            const auto& bucket = by_first_[static_cast<unsigned char>(s[i])];
            const AddedToken* hit = nullptr;
            for (const AddedToken* t : bucket) {
                if (s.compare(i, t->content.size(), t->content) != 0) continue;
                if (t->single_word) {
                    const size_t e = i + t->content.size();
                    if ((i > 0 && is_word_byte(s[i - 1])) || (e < s.size() && is_word_byte(s[e]))) continue;
                }
                hit = t;
                break;
            }
            if (!hit) {
                ++i;
                continue;
            }
            size_t b = i, e = i + hit->content.size();
            if (hit->lstrip)
                while (b > text_start && classify(static_cast<unsigned char>(s[b - 1])) == kSpace) --b;
            if (hit->rstrip)
                while (e < s.size() && classify(static_cast<unsigned char>(s[e])) == kSpace) ++e;
            if (b > text_start) on_text(text_start, b);
            on_token(*hit, b, e);
            text_start = i = e;
        }
        if (text_start < s.size()) on_text(text_start, s.size());
    }

  private:
    std::array<std::vector<const AddedToken*>, 256> by_first_;
    bool any_ = false;
};

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceCache = std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;

class BpeTokenizer final : public Tokenizer {
  public:
    // `origin` (the file's path) names the file in errors; `name` is what name() returns.
    BpeTokenizer(const nlohmann::json& j, std::string name, const std::string& origin);

    std::vector<int32_t> encode(std::string_view utf8) const override {
        std::vector<int64_t> offsets;
        return encode_impl(utf8, offsets, false);
    }
    std::vector<int32_t> encode_with_offsets(std::string_view utf8,
                                             std::vector<int64_t>& offsets) const override {
        return encode_impl(utf8, offsets, true);
    }
    std::string decode(const std::vector<int32_t>& ids) const override {
        std::string out;
        for (const int32_t id : ids) out += token_text(id);
        return out;
    }
    std::string token_text(int32_t id) const override {
        if (id < 0 || id >= static_cast<int32_t>(id_to_bytes_.size()) || !has_id_[static_cast<size_t>(id)])
            throw Error("token id " + std::to_string(id) + " is not in the vocabulary of " + name_,
                        "ids must be in [0, " + std::to_string(id_to_bytes_.size()) + ")");
        return id_to_bytes_[static_cast<size_t>(id)];
    }
    int64_t vocab_size() const override { return static_cast<int64_t>(id_to_bytes_.size()); }
    std::string name() const override { return name_; }

  private:
    std::vector<int32_t> encode_impl(std::string_view text, std::vector<int64_t>& offsets,
                                     bool want_offsets) const;
    void encode_block(std::string_view text, int64_t base, std::vector<int32_t>& ids,
                      std::vector<int64_t>& offs, PieceCache& cache) const;
    void encode_normalized(std::string_view norm, const std::vector<int64_t>* map, int64_t base,
                           std::vector<int32_t>& ids, std::vector<int64_t>& offs, PieceCache& cache) const;
    void encode_pretokens(std::string_view s, const std::vector<int64_t>* map, size_t map_off, int64_t base,
                          std::vector<int32_t>& ids, std::vector<int64_t>& offs, PieceCache& cache) const;
    const std::vector<int32_t>& bpe(std::string_view piece, PieceCache& cache) const;

    std::string name_;
    bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true, splittable_ = true;
    std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;  // raw bytes → id
    std::array<int32_t, 256> byte_id_{};
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) → (rank, merged id)
    std::vector<std::string> id_to_bytes_;
    std::vector<bool> has_id_;
    std::vector<AddedToken> added_;
    AddedMatcher raw_matcher_, norm_matcher_;
};

std::string unicode_to_bytes(const std::string& token, const std::unordered_map<uint32_t, uint8_t>& inv,
                             bool& ok) {
    std::string out;
    size_t i = 0;
    uint32_t cp = 0;
    ok = true;
    while (i < token.size()) {
        const int len = decode_utf8(token, i, cp);
        if (len == 0) {
            ok = false;
            return out;
        }
        const auto it = inv.find(cp);
        if (it == inv.end()) {
            ok = false;
            return out;
        }
        out += static_cast<char>(it->second);
        i += static_cast<size_t>(len);
    }
    return out;
}

BpeTokenizer::BpeTokenizer(const nlohmann::json& j, std::string name, const std::string& origin)
    : name_(std::move(name)) {
    const auto bad = [&](const std::string& what) {
        return Error(
            origin + ": unsupported tokenizer.json: " + what,
            "Mambascope supports byte-level BPE tokenizers (GPT-2 / GPT-NeoX family), or use 'byte'");
    };
    // A token id: an integer in [0, 2^31) (not 1.5, not 2^40, which int32 conversion would truncate).
    const auto read_id = [&](const nlohmann::json& v, const std::string& field) -> int32_t {
        if (!v.is_number_integer())
            throw Error(origin + ": " + field + " must be an integer token id, got " + excerpt(v),
                        "token ids are integers in [0, 2^31)");
        if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT32_MAX)
                                   : (v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX))
            throw Error(origin + ": " + field + " = " + v.dump() + " is outside [0, 2^31)",
                        "token ids are integers in [0, 2^31)");
        return static_cast<int32_t>(v.get<int64_t>());
    };
    if (!j.is_object()) throw bad("the file must hold a JSON object");
    const auto& model = j.at("model");
    if (!model.is_object()) throw bad("\"model\" must be an object");
    if (model.value("type", std::string("BPE")) != "BPE") throw bad("model type is not BPE");
    // By pointer: a conditional expression with a temporary would copy the (possibly deep) normalizer.
    const nlohmann::json* norm = j.contains("normalizer") ? &j.at("normalizer") : nullptr;
    if (norm && !norm->is_null()) {
        if (!norm->is_object() || norm->value("type", "") != "NFC") throw bad("normalizer " + excerpt(*norm));
        nfc_ = true;
    }
    const auto& pre = j.at("pre_tokenizer");
    if (!pre.is_object() || pre.value("type", "") != "ByteLevel") throw bad("pre_tokenizer is not ByteLevel");
    add_prefix_space_ = pre.value("add_prefix_space", false);
    use_regex_ = pre.value("use_regex", true);

    const auto b2u = byte_to_unicode_table();
    std::unordered_map<uint32_t, uint8_t> u2b;
    for (int b = 0; b < 256; ++b) u2b[b2u[b]] = static_cast<uint8_t>(b);

    int32_t max_id = -1;
    std::vector<std::pair<std::string, int32_t>> entries;
    const auto& vocab = model.at("vocab");
    if (!vocab.is_object())
        throw Error(
            origin + ": model.vocab must be an object {token: id}, got " + std::string(vocab.type_name()),
            "is this a Hugging Face tokenizer.json?");
    for (const auto& [tok, idj] : vocab.items()) {
        const int32_t id = read_id(idj, "model.vocab[\"" + tok.substr(0, 40) + "\"]");
        bool ok = false;
        std::string bytes = unicode_to_bytes(tok, u2b, ok);
        if (!ok) throw bad("vocab entry '" + tok + "' is not byte-level");
        max_id = std::max(max_id, id);
        entries.emplace_back(std::move(bytes), id);
    }
    const nlohmann::json* added = j.contains("added_tokens") ? &j.at("added_tokens") : nullptr;
    if (added && !added->is_null() && !added->is_array())
        throw Error(origin + ": added_tokens must be an array, got " + std::string(added->type_name()));
    static const nlohmann::json kNoTokens = nlohmann::json::array();
    for (const auto& t : added && added->is_array() ? *added : kNoTokens) {
        AddedToken a;
        a.content = t.at("content").get<std::string>();
        a.id = read_id(t.at("id"), "added_tokens[].id");
        a.special = t.value("special", false);
        a.single_word = t.value("single_word", false);
        a.lstrip = t.value("lstrip", false);
        a.rstrip = t.value("rstrip", false);
        a.normalized = t.value("normalized", !a.special);
        max_id = std::max(max_id, a.id);
        added_.push_back(std::move(a));
    }
    if (max_id < 0) throw bad("empty vocabulary");
    const int64_t n_tokens = static_cast<int64_t>(entries.size() + added_.size());
    if (int64_t{max_id} >= n_tokens + kMaxIdHoles)
        throw Error(origin + ": token id " + std::to_string(max_id) + " is far beyond the " +
                        std::to_string(n_tokens) + " tokens of the vocabulary",
                    "token ids must be (nearly) dense from 0; the file is corrupt");
    id_to_bytes_.assign(static_cast<size_t>(max_id) + 1, {});
    has_id_.assign(static_cast<size_t>(max_id) + 1, false);
    for (auto& [bytes, id] : entries) {
        if (id < 0) throw bad("negative id");
        id_to_bytes_[static_cast<size_t>(id)] = bytes;
        has_id_[static_cast<size_t>(id)] = true;
        vocab_.emplace(std::move(bytes), id);
    }
    for (const auto& a : added_) {
        if (a.id < 0) throw bad("negative added-token id");
        id_to_bytes_[static_cast<size_t>(a.id)] = a.content;
        has_id_[static_cast<size_t>(a.id)] = true;
    }
    for (const auto& a : added_) {
        (a.normalized && nfc_ ? norm_matcher_ : raw_matcher_).add(&a);
        // A boundary "\n + ASCII alnum" is safe unless an added token could span or strip across it.
        if (a.lstrip || a.rstrip || a.content.find('\n') != std::string::npos) splittable_ = false;
    }
    for (int b = 0; b < 256; ++b) {
        const auto it = vocab_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
        byte_id_[b] = it == vocab_.end() ? -1 : it->second;  // GPT-NeoX lacks bytes never in UTF-8
    }
    int32_t rank = 0;
    const auto& merges = model.at("merges");
    if (!merges.is_array())
        throw Error(origin + ": model.merges must be an array of merges, got " +
                        std::string(merges.type_name()) + " " + excerpt(merges),
                    "each merge is \"left right\" or [\"left\", \"right\"]");
    for (const auto& m : merges) {
        std::string left, right;
        if (m.is_string()) {
            const auto s = m.get<std::string>();
            const size_t sp = s.find(' ', 1);
            if (sp == std::string::npos) throw bad("merge '" + s + "'");
            left = s.substr(0, sp);
            right = s.substr(sp + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            left = m[0].get<std::string>();
            right = m[1].get<std::string>();
        } else {
            throw Error(origin + ": model.merges[" + std::to_string(rank) + "] must be \"left right\" or " +
                        "[\"left\", \"right\"], got " + excerpt(m));
        }
        bool ok1 = false, ok2 = false;
        const std::string lb = unicode_to_bytes(left, u2b, ok1), rb = unicode_to_bytes(right, u2b, ok2);
        const auto li = vocab_.find(lb), ri = vocab_.find(rb), mi = vocab_.find(lb + rb);
        if (!ok1 || !ok2 || li == vocab_.end() || ri == vocab_.end() || mi == vocab_.end())
            throw bad("merge " + left + " " + right + " refers to a missing token");
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(li->second)) << 32) |
                             static_cast<uint32_t>(ri->second);
        merges_.emplace(key, std::make_pair(rank++, mi->second));
    }
}

const std::vector<int32_t>& BpeTokenizer::bpe(std::string_view piece, PieceCache& cache) const {
    if (const auto it = cache.find(piece); it != cache.end()) return it->second;
    struct Sym {
        int32_t id, prev, next, len;
    };
    struct Cand {
        int32_t rank, pos, new_id;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    const auto n = static_cast<int32_t>(piece.size());
    std::vector<Sym> sym(static_cast<size_t>(n));
    for (const char c : piece)
        if (byte_id_[static_cast<unsigned char>(c)] < 0)
            throw Error(name_ + ": byte " + std::to_string(static_cast<unsigned char>(c)) + " has no token");
    for (int32_t i = 0; i < n; ++i)
        sym[static_cast<size_t>(i)] = {byte_id_[static_cast<unsigned char>(piece[static_cast<size_t>(i)])],
                                       i - 1, i + 1 < n ? i + 1 : -1, 1};
    const auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
        const auto it =
            merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
        return it == merges_.end() ? nullptr : &it->second;
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
    for (int32_t i = 0; i + 1 < n; ++i)
        if (const auto* m = lookup(sym[static_cast<size_t>(i)].id, sym[static_cast<size_t>(i) + 1].id))
            heap.push({m->first, i, m->second});
    while (!heap.empty()) {
        const Cand top = heap.top();
        heap.pop();
        Sym& s = sym[static_cast<size_t>(top.pos)];
        if (s.len == 0 || s.next < 0) continue;
        Sym& nx = sym[static_cast<size_t>(s.next)];
        const auto* m = lookup(s.id, nx.id);
        if (!m || m->second != top.new_id) continue;
        s.id = top.new_id;
        s.len += nx.len;
        nx.len = 0;
        s.next = nx.next;
        if (s.next >= 0) sym[static_cast<size_t>(s.next)].prev = top.pos;
        if (s.prev >= 0)
            if (const auto* mp = lookup(sym[static_cast<size_t>(s.prev)].id, s.id))
                heap.push({mp->first, s.prev, mp->second});
        if (s.next >= 0)
            if (const auto* mn = lookup(s.id, sym[static_cast<size_t>(s.next)].id))
                heap.push({mn->first, top.pos, mn->second});
    }
    std::vector<int32_t> out;
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[static_cast<size_t>(i)].next)
        out.push_back(sym[static_cast<size_t>(i)].id);
    return cache.emplace(std::string(piece), std::move(out)).first->second;
}

// Pre-tokenizes normalized text s (whose byte k sits at original offset map ? (*map)[map_off + k] : base +
// map_off + k) and appends BPE ids.
void BpeTokenizer::encode_pretokens(std::string_view s, const std::vector<int64_t>* map, size_t map_off,
                                    int64_t base, std::vector<int32_t>& ids, std::vector<int64_t>& offs,
                                    PieceCache& cache) const {
    if (s.empty()) return;
    const auto orig = [&](size_t k) {
        return map ? (*map)[map_off + k] : base + static_cast<int64_t>(map_off + k);
    };
    std::string prefixed;
    std::string_view work = s;
    bool prefix = false;
    if (add_prefix_space_ && s[0] != ' ') {
        prefixed = " " + std::string(s);
        work = prefixed;
        prefix = true;
    }
    const auto emit = [&](size_t b, size_t e) {  // bytes [b, e) of `work`
        const auto& toks = bpe(work.substr(b, e - b), cache);
        size_t pos = b;
        for (const int32_t t : toks) {
            ids.push_back(t);
            const size_t in_s = prefix ? (pos == 0 ? 0 : pos - 1) : pos;
            offs.push_back(orig(in_s));
            pos += id_to_bytes_[static_cast<size_t>(t)].size();
        }
    };
    if (!use_regex_) {
        emit(0, work.size());
        return;
    }
    std::vector<uint32_t> cps;
    std::vector<uint8_t> cls;
    std::vector<size_t> at;  // byte offset of each code point
    cps.reserve(work.size());
    cls.reserve(work.size());
    at.reserve(work.size() + 1);
    uint32_t cp = 0;
    for (size_t i = 0; i < work.size();) {
        const int len = decode_utf8(work, i, cp);
        if (len == 0) throw Error("internal: invalid UTF-8 after normalization");
        cps.push_back(cp);
        cls.push_back(classify(cp));
        at.push_back(i);
        i += static_cast<size_t>(len);
    }
    at.push_back(work.size());
    for (size_t i = 0; i < cps.size();) {
        const size_t e = gpt2_match(cps, cls, i);
        emit(at[i], at[e]);
        i = e;
    }
}

void BpeTokenizer::encode_normalized(std::string_view norm, const std::vector<int64_t>* map, int64_t base,
                                     std::vector<int32_t>& ids, std::vector<int64_t>& offs,
                                     PieceCache& cache) const {
    const auto orig = [&](size_t k) { return map ? (*map)[k] : base + static_cast<int64_t>(k); };
    if (norm_matcher_.empty()) {
        encode_pretokens(norm, map, 0, base, ids, offs, cache);
        return;
    }
    norm_matcher_.split(
        norm,
        [&](size_t b, size_t e) { encode_pretokens(norm.substr(b, e - b), map, b, base, ids, offs, cache); },
        [&](const AddedToken& t, size_t b, size_t) {
            ids.push_back(t.id);
            offs.push_back(orig(b));
        });
}

void BpeTokenizer::encode_block(std::string_view text, int64_t base, std::vector<int32_t>& ids,
                                std::vector<int64_t>& offs, PieceCache& cache) const {
    const auto on_text = [&](size_t b, size_t e) {
        const std::string_view seg = text.substr(b, e - b);
        const int64_t seg_base = base + static_cast<int64_t>(b);
        if (!nfc_ || is_ascii(seg)) {
            encode_normalized(seg, nullptr, seg_base, ids, offs, cache);
            return;
        }
#ifdef MAMBASCOPE_HAVE_ICU
        UErrorCode err = U_ZERO_ERROR;
        const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
        if (U_FAILURE(err)) throw Error("ICU NFC normaliser unavailable");
        const icu::StringPiece sp(seg.data(), static_cast<int32_t>(seg.size()));
        if (nfc->isNormalizedUTF8(sp, err) && U_SUCCESS(err)) {
            encode_normalized(seg, nullptr, seg_base, ids, offs, cache);
            return;
        }
        err = U_ZERO_ERROR;
        std::string norm;
        icu::StringByteSink<std::string> sink(&norm);
        icu::Edits edits;
        nfc->normalizeUTF8(0, sp, sink, &edits, err);
        if (U_FAILURE(err)) throw Error("NFC normalisation failed: " + std::string(u_errorName(err)));
        std::vector<int64_t> map(norm.size() + 1, seg_base + static_cast<int64_t>(seg.size()));
        auto it = edits.getFineIterator();
        while (it.next(err)) {
            for (int32_t k = 0; k < it.newLength(); ++k)
                map[static_cast<size_t>(it.destinationIndex() + k)] =
                    seg_base + it.sourceIndex() + (it.hasChange() ? 0 : k);
        }
        encode_normalized(norm, &map, 0, ids, offs, cache);
#else
        throw Error("non-ASCII text needs NFC normalisation: Mambascope was built without ICU",
                    "rebuild with libicu-dev installed, or use the byte tokenizer");
#endif
    };
    if (raw_matcher_.empty()) {
        on_text(0, text.size());
        return;
    }
    raw_matcher_.split(text, on_text, [&](const AddedToken& t, size_t b, size_t) {
        ids.push_back(t.id);
        offs.push_back(base + static_cast<int64_t>(b));
    });
}

std::vector<int32_t> BpeTokenizer::encode_impl(std::string_view text, std::vector<int64_t>& offsets,
                                               bool want_offsets) const {
    check_utf8(text, name_ + " input");
    std::vector<int32_t> ids;
    offsets.clear();
    // Blocks cut at "visible ASCII, '\n', ASCII letter/digit": the '\n' is a pre-token of its own (a longer
    // whitespace run would end differently at a block end) and no added token spans the cut.
    std::vector<size_t> cuts{0};
    if (splittable_ && text.size() >= kParallelMinBytes && omp_get_max_threads() > 1) {
        size_t next = kParallelBlockBytes;
        for (size_t p = next; p < text.size(); ++p) {
            if (p < next) continue;
            const char c = text[p];
            const auto before = static_cast<unsigned char>(text[p - 2]);  // p ≥ kParallelBlockBytes ≥ 2
            if (text[p - 1] == '\n' && before > 0x20 && before < 0x7F &&
                ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
                cuts.push_back(p);
                next = p + kParallelBlockBytes;
            }
        }
    }
    cuts.push_back(text.size());
    const auto nblocks = static_cast<int64_t>(cuts.size() - 1);
    if (nblocks <= 1) {
        PieceCache cache;
        encode_block(text, 0, ids, offsets, cache);
    } else {
        std::vector<std::vector<int32_t>> bids(static_cast<size_t>(nblocks));
        std::vector<std::vector<int64_t>> boffs(static_cast<size_t>(nblocks));
        std::exception_ptr failure;
        std::mutex failure_mutex;
#pragma omp parallel
        {
            PieceCache cache;
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < nblocks; ++b) {
                try {
                    const auto ub = static_cast<size_t>(b);
                    encode_block(text.substr(cuts[ub], cuts[ub + 1] - cuts[ub]),
                                 static_cast<int64_t>(cuts[ub]), bids[ub], boffs[ub], cache);
                } catch (...) {
                    std::lock_guard<std::mutex> lock(failure_mutex);
                    if (!failure) failure = std::current_exception();
                }
            }
        }
        if (failure) std::rethrow_exception(failure);
        size_t total = 0;
        for (const auto& v : bids) total += v.size();
        ids.reserve(total);
        offsets.reserve(total);
        for (int64_t b = 0; b < nblocks; ++b) {
            ids.insert(ids.end(), bids[static_cast<size_t>(b)].begin(), bids[static_cast<size_t>(b)].end());
            offsets.insert(offsets.end(), boffs[static_cast<size_t>(b)].begin(),
                           boffs[static_cast<size_t>(b)].end());
        }
    }
    if (!want_offsets) offsets.clear();
    return ids;
}

}  // namespace

std::shared_ptr<const Tokenizer> load_tokenizer_json(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open tokenizer " + path.string(), "check the path, or use --tokenizer byte");
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) throw Error("cannot read tokenizer " + path.string(), "check the file");
    check_json_nesting(text, "tokenizer " + path.string(), kMaxJsonDepth);  // before any recursive copy
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error("tokenizer " + path.string() +
                    " is not valid JSON: " + std::string(e.what()).substr(0, kMaxEcho));
    }
    try {
        return std::make_shared<BpeTokenizer>(j, path.filename().string(), "tokenizer " + path.string());
    } catch (const nlohmann::json::exception& e) {
        throw Error("tokenizer " + path.string() +
                    ": missing or malformed field: " + std::string(e.what()).substr(0, kMaxEcho));
    }
}

}  // namespace mambascope
