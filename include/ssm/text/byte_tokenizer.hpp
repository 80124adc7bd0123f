// ssm/text/byte_tokenizer.hpp — the byte-level "tokenizer" of MambaByte: each UTF-8 byte
// is its own token id (vocabulary 256, no special tokens).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/text/unicode.hpp"

namespace ssm {

/// UTF-8 bytes <-> ids 0..255 (MambaByte: vocab 256, no special tokens).
class ByteTokenizer {
public:
    static constexpr std::int32_t vocab_size = 256;

    /// One id per byte of `text` (any bytes, UTF-8 or not).
    [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
        std::vector<std::int32_t> ids(text.size());
        for (std::size_t i = 0; i < text.size(); ++i) {
            ids[i] = static_cast<unsigned char>(text[i]);
        }
        return ids;
    }

    /// The raw bytes of `ids` (which may end inside a UTF-8 sequence). ids must be in
    /// [0, 256): otherwise ssm::Error naming the position and id.
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
        std::string bytes(ids.size(), '\0');
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (ids[i] < 0 || ids[i] >= vocab_size) {
                fail("byte tokenizer: token id ", ids[i], " at position ", i,
                     " is outside the byte vocabulary [0, 256)");
            }
            bytes[i] = static_cast<char>(static_cast<unsigned char>(ids[i]));
        }
        return bytes;
    }
};

/// Bytes that may not be valid UTF-8, made safe to print: valid UTF-8 passes through;
/// each ill-formed sequence becomes U+FFFD (the replacement character), like Python's
/// `errors="replace"`: one U+FFFD per maximal ill-formed subpart, so a stray byte gives
/// one U+FFFD, and so does a multi-byte sequence cut short.
[[nodiscard]] inline std::string printable_utf8(std::string_view bytes) {
    return unicode::replace_invalid_utf8(bytes);
}

}  // namespace ssm
