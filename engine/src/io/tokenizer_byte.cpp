// The byte tokenizer and the tokenizer factories (tokenizer.h).
#include <algorithm>
#include <mutex>

#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/tokenizer.h"

namespace mambascope {

namespace {

// Byte ids 0..255; specials (non-empty text) are matched in the input before the bytes, longest first.
class ByteTokenizer final : public Tokenizer {
  public:
    explicit ByteTokenizer(std::vector<std::pair<std::string, int32_t>> specials)
        : specials_(std::move(specials)) {
        std::stable_sort(specials_.begin(), specials_.end(),
                         [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
        for (const auto& [text, id] : specials_) {
            if (id < 0) throw Error("byte tokenizer: negative special id " + std::to_string(id));
            vocab_ = std::max<int64_t>(vocab_, int64_t(id) + 1);
            if (id >= 256) text_of_.resize(static_cast<size_t>(id) + 1 - 256);
        }
        for (const auto& [text, id] : specials_)
            if (id >= 256) text_of_[static_cast<size_t>(id) - 256] = text;
    }
    std::vector<int32_t> encode(std::string_view s) const override {
        std::vector<int64_t> offsets;
        return encode_with_offsets(s, offsets);
    }
    std::vector<int32_t> encode_with_offsets(std::string_view s,
                                             std::vector<int64_t>& offsets) const override {
        std::vector<int32_t> ids;
        ids.reserve(s.size());
        offsets.clear();
        offsets.reserve(s.size());
        for (size_t i = 0; i < s.size();) {
            int32_t hit = -1;
            size_t len = 1;
            for (const auto& [text, id] : specials_) {
                if (!text.empty() && s.compare(i, text.size(), text) == 0) {
                    hit = id;
                    len = text.size();
                    break;
                }
            }
            ids.push_back(hit >= 0 ? hit : static_cast<int32_t>(static_cast<unsigned char>(s[i])));
            offsets.push_back(static_cast<int64_t>(i));
            i += len;
        }
        return ids;
    }
    std::string decode(const std::vector<int32_t>& ids) const override {
        std::string out;
        out.reserve(ids.size());
        for (const int32_t id : ids) out += token_text(id);
        return out;
    }
    std::string token_text(int32_t id) const override {
        if (id >= 0 && id < 256) return std::string(1, static_cast<char>(id));
        if (id >= 256 && static_cast<size_t>(id - 256) < text_of_.size())
            return text_of_[static_cast<size_t>(id - 256)];
        throw Error("token id " + std::to_string(id) + " is not in the byte tokenizer's vocabulary",
                    "byte ids are 0..255");
    }
    int64_t vocab_size() const override { return vocab_; }
    std::string name() const override { return "byte"; }

  private:
    std::vector<std::pair<std::string, int32_t>> specials_;
    std::vector<std::string> text_of_;  // ids ≥ 256
    int64_t vocab_ = 256;
};

}  // namespace

std::shared_ptr<const Tokenizer> make_byte_tokenizer(std::vector<std::pair<std::string, int32_t>> specials) {
    return std::make_shared<ByteTokenizer>(std::move(specials));
}

std::shared_ptr<const Tokenizer> builtin_gpt_neox_tokenizer() {
    static std::mutex mutex;
    static std::shared_ptr<const Tokenizer> cached;
    std::lock_guard<std::mutex> lock(mutex);
    if (!cached) cached = load_tokenizer_json(find_resource("tokenizer/gpt-neox-20b.json"));
    return cached;
}

std::shared_ptr<const Tokenizer> tokenizer_from_spec(std::string_view spec) {
    if (spec == "byte") return make_byte_tokenizer();
    if (spec.empty() || spec == "gpt-neox-20b") return builtin_gpt_neox_tokenizer();
    return load_tokenizer_json(std::filesystem::path(std::string(spec)));
}

std::shared_ptr<const Tokenizer> choose_tokenizer(const std::filesystem::path& model_dir,
                                                  std::string_view tokenizer_hint) {
    std::error_code ec;
    if (!model_dir.empty() && std::filesystem::exists(model_dir / "tokenizer.json", ec))
        return load_tokenizer_json(model_dir / "tokenizer.json");
    if (tokenizer_hint == "byte") return make_byte_tokenizer();
    if (!tokenizer_hint.empty() && tokenizer_hint.ends_with(".json") &&
        std::filesystem::exists(std::filesystem::path(std::string(tokenizer_hint)), ec))
        return load_tokenizer_json(std::filesystem::path(std::string(tokenizer_hint)));
    return builtin_gpt_neox_tokenizer();
}

}  // namespace mambascope
