// tokenizer.h: text ↔ token ids. Two kinds: the exact GPT-NeoX-20B byte-level BPE (any HF tokenizer.json with
// the ByteLevel/BPE pipeline: NFC normaliser, added tokens, GPT-2 split regex, byte→unicode map, ranked
// merges, ByteLevel decoder), and a byte tokenizer (id = byte value) for the byte-level demo models.
//
// Design decision: the GPT-2 split regex is implemented by hand as a linear scanner over code points (ICU
// supplies \p{L}, \p{N} and White_Space), and BPE runs per pre-token with a rank heap and a per-call cache of
// repeated pieces. Big inputs are cut at a lone newline between visible ASCII and an ASCII letter/digit — a
// boundary no pre-token or added token crosses — and encoded in parallel; the result is identical to a serial
// run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mambascope {

class Tokenizer {
  public:
    virtual ~Tokenizer() = default;
    // UTF-8 text → ids. Error for invalid UTF-8 (BPE) or when non-ASCII text needs ICU and it is absent.
    virtual std::vector<int32_t> encode(std::string_view utf8) const = 0;
    // Ids and, for each token, the byte offset in `utf8` where it starts (offsets.size() == ids.size()).
    virtual std::vector<int32_t> encode_with_offsets(std::string_view utf8,
                                                     std::vector<int64_t>& offsets) const = 0;
    // Ids → bytes (the exact concatenation of the tokens' bytes; Error for an id outside the vocabulary).
    virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
    // The bytes of one token (may be a partial UTF-8 sequence); added tokens give their content.
    virtual std::string token_text(int32_t id) const = 0;
    virtual int64_t vocab_size() const = 0;  // largest id + 1
    virtual std::string name() const = 0;
};

// An HF tokenizer.json with the ByteLevel BPE pipeline (GPT-2, GPT-NeoX). Error naming the file on anything
// unsupported.
std::shared_ptr<const Tokenizer> load_tokenizer_json(const std::filesystem::path& path);

// id = byte value (0..255); `specials` are extra (text, id) tokens matched in the input before the bytes
// (ids ≥ 256, or < 256 to alias a byte for decoding only when text is empty).
std::shared_ptr<const Tokenizer> make_byte_tokenizer(
    std::vector<std::pair<std::string, int32_t>> specials = {});

// The GPT-NeoX-20B tokenizer shipped in resources/tokenizer/gpt-neox-20b.json (loaded once, then shared).
std::shared_ptr<const Tokenizer> builtin_gpt_neox_tokenizer();

// A model's tokenizer: <model_dir>/tokenizer.json wins; else hint "byte" → byte tokenizer; else a hint that
// names an existing .json file; else the built-in GPT-NeoX-20B.
std::shared_ptr<const Tokenizer> choose_tokenizer(const std::filesystem::path& model_dir,
                                                  std::string_view tokenizer_hint);

// CLI/GUI helper: "byte" → byte tokenizer, otherwise a tokenizer.json path.
std::shared_ptr<const Tokenizer> tokenizer_from_spec(std::string_view spec);

}  // namespace mambascope
