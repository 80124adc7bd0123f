// Tests for ssm/text/unicode.hpp: UTF-8 against Python's decoder (errors="replace"),
// character classes and NFC against values from Python's unicodedata / the Unicode
// standard's examples, and the Unicode 9.0 NFC data that HF `tokenizers` uses.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "catch.hpp"
#include "ssm/text/unicode.hpp"
#include "test_util.hpp"

namespace test_unicode {

namespace {

namespace u = ssm::unicode;

/// Code points of `bytes` decoded with U+FFFD replacement.
std::u32string decoded(std::string_view bytes) {
    return u::decode_utf8(bytes);
}

std::string nfc8(std::u32string_view text) {
    return u::encode_utf8(u::nfc(text));
}

}  // namespace

TEST_CASE("UTF-8: every scalar value round-trips through encode and decode", "[unicode]") {
    std::u32string all;
    for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
        if (u::is_scalar_value(cp)) all.push_back(cp);
    }
    const std::string bytes = u::encode_utf8(all);
    CHECK(u::is_valid_utf8(bytes));
    CHECK(u::decode_utf8(bytes) == all);
    // Lengths: 1, 2, 3 and 4 bytes at the boundaries.
    CHECK(u::encode_utf8(U"\u007F").size() == 1);
    CHECK(u::encode_utf8(U"\u0080").size() == 2);
    CHECK(u::encode_utf8(U"\u07FF").size() == 2);
    CHECK(u::encode_utf8(U"\u0800").size() == 3);
    CHECK(u::encode_utf8(U"\uFFFF").size() == 3);
    CHECK(u::encode_utf8(U"\U00010000").size() == 4);
    CHECK(u::encode_utf8(U"\U0010FFFF") == "\xF4\x8F\xBF\xBF");
}

TEST_CASE("UTF-8: ill-formed input decodes as Python's errors=\"replace\" does", "[unicode]") {
    // Expected values from Python 3.11 bytes.decode("utf-8", "replace").
    const char32_t r = u::replacement_character;
    CHECK(decoded("\x80") == std::u32string{r});
    CHECK(decoded("\xC0\x80") == std::u32string{r, r});  // overlong lead C0
    CHECK(decoded("\xE2\x82") == std::u32string{r});     // truncated: one U+FFFD
    CHECK(decoded("\xE2\x82"
                  "A") == std::u32string{r, U'A'});
    CHECK(decoded("\xED\xA0\x80") == std::u32string{r, r, r});         // a surrogate
    CHECK(decoded("\xF4\x90\x80\x80") == std::u32string{r, r, r, r});  // above U+10FFFF
    CHECK(decoded("\xF0\x9F\x98") == std::u32string{r});
    CHECK(decoded("\xFF") == std::u32string{r});
    CHECK(decoded("\xF8\x88\x80\x80\x80") == std::u32string(5, r));
    CHECK(decoded("\xE0\x80\xAF") == std::u32string{r, r, r});  // overlong 3-byte
    CHECK(decoded("a\xC3") == std::u32string{U'a', r});
    CHECK(decoded("\xF0\x9F\x98\x80\x80") == std::u32string{U'\U0001F600', r});
    CHECK(decoded("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") == U"\u00E9\u20AC\U0001F600");

    CHECK(u::find_invalid_utf8("abc") == std::nullopt);
    CHECK(u::find_invalid_utf8("ab\xC3") == 2u);
    CHECK(u::find_invalid_utf8("\xC3\xA9x\xFF") == 3u);
    CHECK_FALSE(u::is_valid_utf8("\xED\xBF\xBF"));
    CHECK(u::replace_invalid_utf8("a\xFF"
                                  "b") ==
          "a\xEF\xBF\xBD"
          "b");
    CHECK(u::replace_invalid_utf8("\xC3\xA9") == "\xC3\xA9");
    // Encoding something that is not a scalar value writes U+FFFD.
    CHECK(u::encode_utf8(std::u32string{char32_t{0xD800}}) == "\xEF\xBF\xBD");
    CHECK(u::encode_utf8(std::u32string{char32_t{0x110000}}) == "\xEF\xBF\xBD");
}

TEST_CASE("Character classes: spot checks against Unicode 16.0 categories", "[unicode]") {
    for (const char32_t c :
         U"aZ\u00E9\u00DF\u03A9\u044F\u0627\u05D0\u0915\u4E2D\uAC00\u0E01\u02B0"
         U"\u1C89\U0001E030\U00020000") {
        if (c == 0) continue;
        INFO("U+" << std::hex << static_cast<std::uint32_t>(c));
        CHECK(u::is_letter(c));
        CHECK_FALSE(u::is_number(c));
        CHECK_FALSE(u::is_white_space(c));
    }
    // Marks are not letters: a Devanagari vowel sign or virama, a combining acute.
    for (const char32_t c :
         {char32_t{0x0301}, char32_t{0x093F}, char32_t{0x094D}, char32_t{0x0E31}}) {
        CHECK_FALSE(u::is_letter(c));
        CHECK(u::is_word_character(c));
    }
    for (const char32_t c : {U'0', U'9', U'\u0663', U'\u0967', U'\u00BD', U'\u00B2', U'\u216B',
                             U'\u2460', U'\U0001D7CE', U'\U00010D40'}) {
        INFO("U+" << std::hex << static_cast<std::uint32_t>(c));
        CHECK(u::is_number(c));
        CHECK_FALSE(u::is_letter(c));
    }
    // \s is White_Space: these 25 and nothing else.
    int white = 0;
    for (char32_t c = 0; c <= 0x10FFFF; ++c) white += u::is_white_space(c) ? 1 : 0;
    CHECK(white == 25);
    for (const char32_t c :
         {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00A0', U'\u1680', U'\u2000',
          U'\u200A', U'\u2028', U'\u2029', U'\u202F', U'\u205F', U'\u3000'}) {
        CHECK(u::is_white_space(c));
    }
    for (const char32_t c : {U'\u200B', U'\uFEFF', U'\u180E', U'\u001C', U'\u001F', U'a', U'_'}) {
        CHECK_FALSE(u::is_white_space(c));
    }
    for (const char32_t c : {U'!', U'\'', U'-', U'\u20AC', U'\U0001F600', U'\u00B7'}) {
        CHECK_FALSE(u::is_letter(c));
        CHECK_FALSE(u::is_number(c));
        CHECK_FALSE(u::is_white_space(c));
    }
    // \w of Rust's regex (for single_word added tokens).
    for (const char32_t c : {U'a', U'_', U'7', U'\u200D', U'\u24B6', U'\u203F', U'\u2160'}) {
        CHECK(u::is_word_character(c));
    }
    for (const char32_t c : {U'-', U' ', U'\u00BD', U'!', U'\U0001F600'}) {
        CHECK_FALSE(u::is_word_character(c));
    }
}

TEST_CASE("NFC: known values (Python unicodedata, UAX #15 examples)", "[unicode]") {
    CHECK(nfc8(U"e\u0301") == u::encode_utf8(U"\u00E9"));
    CHECK(nfc8(U"\u212B") == u::encode_utf8(U"\u00C5"));              // Angstrom sign: singleton
    CHECK(nfc8(U"\u2126") == u::encode_utf8(U"\u03A9"));              // Ohm sign
    CHECK(nfc8(U"\u1100\u1161\u11A8") == u::encode_utf8(U"\uAC01"));  // Hangul L V T
    CHECK(nfc8(U"\uAC00\u11A8") == u::encode_utf8(U"\uAC01"));        // LV + T
    CHECK(nfc8(U"\u1100\u1161\u11A7") == u::encode_utf8(U"\uAC00\u11A7"));  // not a T
    CHECK(nfc8(U"a\u0323\u0302") == u::encode_utf8(U"\u1EAD"));
    CHECK(nfc8(U"a\u0302\u0323") == u::encode_utf8(U"\u1EAD"));  // reordered, then composed
    CHECK(nfc8(U"\u0958") == u::encode_utf8(U"\u0915\u093C"));   // composition exclusion
    CHECK(nfc8(U"\u0344") == u::encode_utf8(U"\u0308\u0301"));   // non-starter decomposition
    CHECK(nfc8(U"\u1E9B\u0323") == u::encode_utf8(U"\u1E9B\u0323"));
    CHECK(nfc8(U"\u1E0B\u0323") == u::encode_utf8(U"\u1E0D\u0307"));
    CHECK(nfc8(U"q\u0307\u0323") == u::encode_utf8(U"q\u0323\u0307"));
    CHECK(nfc8(U"\u00C5\u0327") == u::encode_utf8(U"\u00C5\u0327"));
    CHECK(nfc8(U"\u0301e") == u::encode_utf8(U"\u0301e"));                  // leading mark stays
    CHECK(nfc8(U"\u0B47\u0B3E") == u::encode_utf8(U"\u0B4B"));              // two starters compose
    CHECK(nfc8(U"\U0001D15E") == u::encode_utf8(U"\U0001D157\U0001D165"));  // excluded
    CHECK(nfc8(U"\u2ADC") == u::encode_utf8(U"\u2ADD\u0338"));
    // HF tokenizers' NFC knows Unicode 9.0 only: U+0897 (Unicode 16, class 230) is a
    // starter there, so it is not moved before U+0345 (class 240) as Unicode 16 would.
    CHECK(nfc8(U"a\u0345\u0897") == u::encode_utf8(U"a\u0345\u0897"));
    CHECK(u::combining_class(U'\u0897') == 0);
    CHECK(u::combining_class(U'\u0301') == 230);
    CHECK(u::combining_class(U'\u0345') == 240);
    CHECK(u::combining_class(U'a') == 0);
    // The UTF-8 overload: ASCII unchanged, others normalized.
    CHECK(u::nfc(std::string_view("plain ascii")) == "plain ascii");
    CHECK(u::nfc(std::string_view("caf\x65\xCC\x81")) == "caf\xC3\xA9");
}

TEST_CASE("NFC: idempotent and stable on composed text for every code point", "[unicode]") {
    // Property: NFC(NFC(x)) == NFC(x), and NFC of a decomposed character gives the same as
    // NFC of the character.
    for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
        if (!u::is_scalar_value(cp)) continue;
        const std::u32string one(1, cp);
        const std::u32string once = u::nfc(one);
        if (u::nfc(once) != once) FAIL("NFC not idempotent at U+" << std::hex << std::uint32_t{cp});
        std::u32string decomposed;
        u::detail::append_canonical_decomposition(cp, decomposed);
        if (u::nfc(decomposed) != once) {
            FAIL("NFC(NFD(x)) != NFC(x) at U+" << std::hex << std::uint32_t{cp});
        }
    }
}

// Regression: canonical ordering sorted each run of combining marks by insertion, which is
// quadratic on long runs of alternating classes (320 KB of text took 35 s). The stable
// order is known: the class-220 marks (U+0323), then the class-230 ones (U+0301), each in
// text order; 'q' composes with neither. Short runs, reordered both ways, are checked
// against Python's unicodedata above.
TEST_CASE("NFC: a long run of combining marks is ordered fast and stably", "[unicode]") {
    const std::size_t n = 100000;  // 200,000 marks
    std::u32string text = U"q", expect = U"q";
    for (std::size_t i = 0; i < n; ++i) text += U"\u0301\u0323";
    expect.append(n, U'\u0323');
    expect.append(n, U'\u0301');
    const auto start = std::chrono::steady_clock::now();
    const std::u32string got = u::nfc(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(seconds << " s");
    CHECK(got == expect);
    CHECK(seconds < 5.0);  // generous (sanitizers); -O2 takes milliseconds
    // Stability with more classes: a run of 1000 marks of classes 230, 220, 202 (U+0327,
    // which composes with nothing after 'q'), 216 (U+031B), in a repeating pattern; Python's
    // unicodedata.normalize("NFC") gives the same.
    std::u32string mixed = U"q", mixed_expect = U"q";
    const char32_t marks[] = {U'\u0301', U'\u0323', U'\u0327', U'\u031B', U'\u0300'};
    for (int i = 0; i < 1000; ++i) mixed += marks[i % 5];
    for (const char32_t m : {U'\u0327', U'\u031B', U'\u0323'}) mixed_expect.append(200, m);
    for (int i = 0; i < 400; ++i) mixed_expect += (i % 2 == 0) ? U'\u0301' : U'\u0300';
    CHECK(u::nfc(mixed) == mixed_expect);
}

}  // namespace test_unicode
