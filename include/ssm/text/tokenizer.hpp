// ssm/text/tokenizer.hpp — the tokenizer that goes with a checkpoint folder: its
// tokenizer.json (byte-level BPE) when it has one, else raw bytes for MambaByte.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/text/bpe_tokenizer.hpp"
#include "ssm/text/byte_tokenizer.hpp"

namespace ssm {

/// Text <-> token ids for one model, whichever kind of tokenizer it uses.
class Tokenizer {
public:
    explicit Tokenizer(ByteTokenizer bytes) : impl_(bytes) {}
    explicit Tokenizer(BpeTokenizer bpe) : impl_(std::move(bpe)) {}

    /// The tokenizer for a checkpoint folder: `DIR/tokenizer.json` (BPE) when present,
    /// else bytes when `vocab_size == 256` (MambaByte), else an ssm::Error that says the
    /// folder has no tokenizer.json and suggests giving token ids instead. A tokenizer.json
    /// whose ids do not fit the model's `vocab_size` is an ssm::Error too.
    [[nodiscard]] static Tokenizer for_checkpoint(const std::filesystem::path& dir,
                                                  std::int64_t vocab_size) {
        const auto file = dir / "tokenizer.json";
        std::error_code ec;
        if (std::filesystem::exists(file, ec)) {
            BpeTokenizer bpe = BpeTokenizer::load(file);
            if (bpe.vocab_size() > vocab_size) {
                fail(file.string(), ": the tokenizer has ids up to ", bpe.vocab_size() - 1,
                     " but the model's vocab_size is ", vocab_size);
            }
            return Tokenizer(std::move(bpe));
        }
        if (vocab_size == ByteTokenizer::vocab_size) return Tokenizer(ByteTokenizer{});
        fail(dir.string(), ": the checkpoint folder has no tokenizer.json (and vocab_size ",
             vocab_size, " is not the 256 of a byte-level model), so text cannot be tokenized; ",
             "give token ids instead");
    }

    [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
        return std::visit([&](const auto& t) { return t.encode(text); }, impl_);
    }

    /// The bytes of `ids` (special tokens kept); may end inside a UTF-8 sequence, so
    /// streaming output should hold back an incomplete tail (or use printable_utf8).
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
        return std::visit([&](const auto& t) { return t.decode(ids); }, impl_);
    }

    /// The bytes token `id` adds after earlier tokens: the first token's `decode` followed
    /// by the later tokens' `token_bytes` is the whole text's `decode` (for streaming).
    [[nodiscard]] std::string token_bytes(std::int32_t id) const {
        if (const auto* bpe = std::get_if<BpeTokenizer>(&impl_)) return bpe->token_bytes(id);
        return std::get<ByteTokenizer>(impl_).decode({&id, 1});
    }

    /// Whether this is the byte-level tokenizer (ids are bytes).
    [[nodiscard]] bool is_bytes() const noexcept {
        return std::holds_alternative<ByteTokenizer>(impl_);
    }

    /// The BPE tokenizer, or nullptr for bytes.
    [[nodiscard]] const BpeTokenizer* bpe() const noexcept {
        return std::get_if<BpeTokenizer>(&impl_);
    }

private:
    std::variant<ByteTokenizer, BpeTokenizer> impl_;
};

}  // namespace ssm
