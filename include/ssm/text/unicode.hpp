// ssm/text/unicode.hpp — UTF-8 decoding and encoding, the character classes that the
// GPT-2 pre-tokenization regex uses (\p{L}, \p{N}, \s), and NFC normalization, each as
// HuggingFace `tokenizers` sees them (see unicode_tables.hpp for the Unicode versions).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "ssm/text/unicode_tables.hpp"

namespace ssm::unicode {

/// U+FFFD, what an ill-formed UTF-8 sequence decodes to.
inline constexpr char32_t replacement_character = U'\uFFFD';

/// Whether `cp` is a Unicode scalar value (a code point that UTF-8 may encode).
[[nodiscard]] constexpr bool is_scalar_value(char32_t cp) noexcept {
    return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/// One step of UTF-8 decoding.
struct DecodedCodePoint {
    char32_t code_point;  // U+FFFD where `valid` is false
    std::size_t length;   // bytes consumed, at least 1
    bool valid;
};

/// Decodes the UTF-8 sequence that starts at `bytes[pos]` (requires pos < size). An
/// ill-formed sequence consumes its maximal subpart — the longest prefix of some
/// well-formed sequence, at least one byte — and yields U+FFFD, the Unicode standard's
/// recommended practice and what Python's `bytes.decode("utf-8", errors="replace")` does.
[[nodiscard]] constexpr DecodedCodePoint decode_utf8_at(std::string_view bytes,
                                                        std::size_t pos) noexcept {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
    const unsigned char lead = byte(pos);
    if (lead < 0x80) return {lead, 1, true};
    std::size_t need = 0;                // continuation bytes after the lead
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    char32_t cp = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
        cp = lead & 0x1Fu;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        need = 2;
        cp = lead & 0x0Fu;
        if (lead == 0xE0) lo = 0xA0;  // no overlong forms
        if (lead == 0xED) hi = 0x9F;  // no surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        need = 3;
        cp = lead & 0x07u;
        if (lead == 0xF0) lo = 0x90;  // no overlong forms
        if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return {replacement_character, 1, false};  // 0x80..0xC1, 0xF5..0xFF never lead
    }
    for (std::size_t k = 1; k <= need; ++k) {
        if (pos + k >= bytes.size()) return {replacement_character, k, false};
        const unsigned char c = byte(pos + k);
        const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
        if (c < min || c > max) return {replacement_character, k, false};
        cp = (cp << 6) | (c & 0x3Fu);
    }
    return {cp, need + 1, true};
}

/// Appends the UTF-8 form of `cp` to `out` (U+FFFD's for a surrogate or anything
/// above U+10FFFF).
inline void append_utf8(std::string& out, char32_t cp) {
    if (!is_scalar_value(cp)) cp = replacement_character;
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

/// UTF-8 of a sequence of code points.
[[nodiscard]] inline std::string encode_utf8(std::u32string_view code_points) {
    std::string out;
    out.reserve(code_points.size());
    for (const char32_t cp : code_points) append_utf8(out, cp);
    return out;
}

/// Code points of UTF-8 `bytes`; each ill-formed subpart becomes U+FFFD.
[[nodiscard]] inline std::u32string decode_utf8(std::string_view bytes) {
    std::u32string out;
    out.reserve(bytes.size());
    for (std::size_t pos = 0; pos < bytes.size();) {
        const auto d = decode_utf8_at(bytes, pos);
        out.push_back(d.code_point);
        pos += d.length;
    }
    return out;
}

/// Byte offset of the first ill-formed UTF-8 sequence in `bytes`, or nullopt if none.
[[nodiscard]] constexpr std::optional<std::size_t> find_invalid_utf8(
    std::string_view bytes) noexcept {
    for (std::size_t pos = 0; pos < bytes.size();) {
        if (static_cast<unsigned char>(bytes[pos]) < 0x80) {
            ++pos;
            continue;
        }
        const auto d = decode_utf8_at(bytes, pos);
        if (!d.valid) return pos;
        pos += d.length;
    }
    return std::nullopt;
}

[[nodiscard]] constexpr bool is_valid_utf8(std::string_view bytes) noexcept {
    return !find_invalid_utf8(bytes).has_value();
}

/// `bytes` with each ill-formed subpart replaced by U+FFFD; valid UTF-8 is unchanged.
[[nodiscard]] inline std::string replace_invalid_utf8(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (std::size_t pos = 0; pos < bytes.size();) {
        const auto d = decode_utf8_at(bytes, pos);
        if (d.valid) {
            out.append(bytes.substr(pos, d.length));
        } else {
            append_utf8(out, replacement_character);
        }
        pos += d.length;
    }
    return out;
}

// ---- character classes -----------------------------------------------------------------

/// Whether `cp` lies in one of the sorted, disjoint `ranges`.
[[nodiscard]] constexpr bool in_ranges(std::span<const tables::CodePointRange> ranges,
                                       char32_t cp) noexcept {
    const auto it =
        std::upper_bound(ranges.begin(), ranges.end(), cp,
                         [](char32_t c, const tables::CodePointRange& r) { return c < r.first; });
    return it != ranges.begin() && cp <= std::prev(it)->last;
}

/// \p{L}: a letter (general category Lu, Ll, Lt, Lm or Lo).
[[nodiscard]] constexpr bool is_letter(char32_t cp) noexcept {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(tables::letter_ranges, cp);
}

/// \p{N}: a number (general category Nd, Nl or No).
[[nodiscard]] constexpr bool is_number(char32_t cp) noexcept {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(tables::number_ranges, cp);
}

/// \s: the White_Space property (as Oniguruma and Rust's `regex` read \s).
[[nodiscard]] constexpr bool is_white_space(char32_t cp) noexcept {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return in_ranges(tables::white_space_ranges, cp);
}

/// \w of Rust's `regex`: Alphabetic, marks, decimal digits, connector punctuation,
/// Join_Control.
[[nodiscard]] constexpr bool is_word_character(char32_t cp) noexcept {
    if (cp < 0x80) return is_letter(cp) || is_number(cp) || cp == '_';
    return in_ranges(tables::word_ranges, cp);
}

// ---- NFC ---------------------------------------------------------------------------------

/// Canonical combining class of `cp` (0 for starters), in the NFC tables' Unicode version.
[[nodiscard]] constexpr std::uint8_t combining_class(char32_t cp) noexcept {
    if (cp < 0x300) return 0;
    const std::span<const tables::CombiningClassRange> ranges = tables::combining_classes;
    const auto it = std::upper_bound(
        ranges.begin(), ranges.end(), cp,
        [](char32_t c, const tables::CombiningClassRange& r) { return c < r.first; });
    if (it == ranges.begin() || cp > std::prev(it)->last) return 0;
    return std::prev(it)->combining_class;
}

namespace detail {

// Hangul syllables decompose and compose by arithmetic (Unicode §3.12).
inline constexpr char32_t hangul_s_base = 0xAC00, hangul_l_base = 0x1100, hangul_v_base = 0x1161,
                          hangul_t_base = 0x11A7;
inline constexpr char32_t hangul_l_count = 19, hangul_v_count = 21, hangul_t_count = 28;
inline constexpr char32_t hangul_n_count = hangul_v_count * hangul_t_count;  // 588
inline constexpr char32_t hangul_s_count = hangul_l_count * hangul_n_count;  // 11172

/// Appends the full canonical decomposition of `cp` to `out`.
inline void append_canonical_decomposition(char32_t cp, std::u32string& out) {
    if (cp < 0xC0) {
        out.push_back(cp);
        return;
    }
    if (cp >= hangul_s_base && cp < hangul_s_base + hangul_s_count) {
        const char32_t s = cp - hangul_s_base;
        out.push_back(hangul_l_base + s / hangul_n_count);
        out.push_back(hangul_v_base + (s % hangul_n_count) / hangul_t_count);
        if (s % hangul_t_count != 0) out.push_back(hangul_t_base + s % hangul_t_count);
        return;
    }
    const std::span<const tables::Decomposition> table = tables::decompositions;
    const auto it = std::lower_bound(
        table.begin(), table.end(), cp,
        [](const tables::Decomposition& d, char32_t c) { return d.code_point < c; });
    if (it == table.end() || it->code_point != cp) {
        out.push_back(cp);
        return;
    }
    append_canonical_decomposition(it->first, out);
    if (it->second != 0) append_canonical_decomposition(it->second, out);
}

/// The primary composite of `first` + `second`, or 0 when they do not compose.
[[nodiscard]] inline char32_t compose_pair(char32_t first, char32_t second) noexcept {
    if (first >= hangul_l_base && first < hangul_l_base + hangul_l_count &&
        second >= hangul_v_base && second < hangul_v_base + hangul_v_count) {
        return hangul_s_base +
               ((first - hangul_l_base) * hangul_v_count + (second - hangul_v_base)) *
                   hangul_t_count;
    }
    if (first >= hangul_s_base && first < hangul_s_base + hangul_s_count &&
        (first - hangul_s_base) % hangul_t_count == 0 && second > hangul_t_base &&
        second < hangul_t_base + hangul_t_count) {
        return first + (second - hangul_t_base);
    }
    const std::span<const tables::Composition> table = tables::compositions;
    const auto before = [](const tables::Composition& c, std::pair<char32_t, char32_t> key) {
        return std::pair{c.first, c.second} < key;
    };
    const auto it = std::lower_bound(table.begin(), table.end(), std::pair{first, second}, before);
    if (it == table.end() || it->first != first || it->second != second) return 0;
    return it->composite;
}

}  // namespace detail

/// Normalization Form C of a sequence of code points: canonical decomposition, canonical
/// ordering of combining marks, canonical composition (UAX #15).
[[nodiscard]] inline std::u32string nfc(std::u32string_view text) {
    std::u32string decomposed;
    decomposed.reserve(text.size());
    for (const char32_t cp : text) detail::append_canonical_decomposition(cp, decomposed);

    // Canonical ordering: stable sort of each run of non-starters by combining class.
    std::vector<std::uint8_t> classes(decomposed.size());
    for (std::size_t i = 0; i < decomposed.size(); ++i) {
        classes[i] = combining_class(decomposed[i]);
    }
    for (std::size_t i = 0; i < decomposed.size();) {
        if (classes[i] == 0) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < decomposed.size() && classes[end] != 0) ++end;
        if (end - i <= 32) {  // insertion sort: runs are short in real text
            for (std::size_t j = i + 1; j < end; ++j) {
                for (std::size_t k = j; k > i && classes[k - 1] > classes[k]; --k) {
                    std::swap(classes[k - 1], classes[k]);
                    std::swap(decomposed[k - 1], decomposed[k]);
                }
            }
        } else {  // a long run (hostile or odd input): O(n log n), the same stable order
            std::vector<std::pair<std::uint8_t, char32_t>> run(end - i);
            for (std::size_t k = i; k < end; ++k) run[k - i] = {classes[k], decomposed[k]};
            std::stable_sort(run.begin(), run.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
            for (std::size_t k = i; k < end; ++k) std::tie(classes[k], decomposed[k]) = run[k - i];
        }
        i = end;
    }

    // Canonical composition: each character joins the last starter unless blocked by a
    // character between them of class 0 or of a class not below its own.
    std::u32string out;
    out.reserve(decomposed.size());
    std::optional<std::size_t> starter;  // index in `out` of the last starter
    std::uint8_t last_class = 0;         // class of the last character kept after it
    for (std::size_t i = 0; i < decomposed.size(); ++i) {
        const char32_t cp = decomposed[i];
        const std::uint8_t cls = classes[i];
        if (starter) {
            const bool adjacent = *starter + 1 == out.size();
            if (adjacent || (last_class != 0 && last_class < cls)) {
                if (const char32_t composite = detail::compose_pair(out[*starter], cp)) {
                    out[*starter] = composite;
                    continue;
                }
            }
        }
        if (cls == 0) starter = out.size();
        last_class = cls;
        out.push_back(cp);
    }
    return out;
}

/// NFC of UTF-8 text (ill-formed subparts become U+FFFD first). ASCII is returned as is.
[[nodiscard]] inline std::string nfc(std::string_view utf8) {
    const bool ascii = std::all_of(utf8.begin(), utf8.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) return std::string(utf8);
    return encode_utf8(nfc(std::u32string_view(decode_utf8(utf8))));
}

}  // namespace ssm::unicode
