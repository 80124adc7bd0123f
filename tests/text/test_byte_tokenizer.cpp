// Tests for ssm/text/byte_tokenizer.hpp: ids are the bytes (property), decode rejects ids
// outside [0, 256) with the position named, printable_utf8 matches Python's
// bytes.decode("utf-8", errors="replace").
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "ssm/text/byte_tokenizer.hpp"
#include "test_util.hpp"

namespace test_byte_tokenizer {

TEST_CASE("ByteTokenizer: every byte value round-trips", "[text][bytes]") {
    const ssm::ByteTokenizer bytes;
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
    const auto ids = bytes.encode(all);
    REQUIRE(ids.size() == 256);
    for (int b = 0; b < 256; ++b) CHECK(ids[static_cast<std::size_t>(b)] == b);
    CHECK(bytes.decode(ids) == all);

    std::mt19937 rng(3);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string random(10000, '\0');
    for (char& c : random) c = static_cast<char>(byte(rng));
    CHECK(bytes.decode(bytes.encode(random)) == random);

    CHECK(bytes.encode("").empty());
    CHECK(bytes.encode("h\xC3\xA9") == std::vector<std::int32_t>{104, 0xC3, 0xA9});
}

TEST_CASE("ByteTokenizer: ids outside [0, 256) are an error naming position and id",
          "[text][bytes]") {
    const ssm::ByteTokenizer bytes;
    const std::vector<std::int32_t> high{104, 105, 256};
    const std::string msg = ssm::test::error_of([&] { (void)bytes.decode(high); });
    CHECK(msg.find("256") != std::string::npos);
    CHECK(msg.find("position 2") != std::string::npos);
    const std::vector<std::int32_t> negative{-1};
    const std::string msg2 = ssm::test::error_of([&] { (void)bytes.decode(negative); });
    CHECK(msg2.find("-1") != std::string::npos);
    CHECK(msg2.find("position 0") != std::string::npos);
}

TEST_CASE("printable_utf8: valid UTF-8 unchanged, ill-formed parts become U+FFFD",
          "[text][bytes]") {
    const std::string fffd = "\xEF\xBF\xBD";
    CHECK(ssm::printable_utf8("") == "");
    CHECK(ssm::printable_utf8("plain") == "plain");
    CHECK(ssm::printable_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80") == "caf\xC3\xA9 \xF0\x9F\x98\x80");
    // As Python: b"...".decode("utf-8", errors="replace").
    CHECK(ssm::printable_utf8("a\xFF"
                              "b") == "a" + fffd + "b");
    CHECK(ssm::printable_utf8("a\xE2\x82") == "a" + fffd);  // cut short: one U+FFFD
    CHECK(ssm::printable_utf8("\xF0\x9F\x98") == fffd);
    CHECK(ssm::printable_utf8("\xC0\x80") == fffd + fffd);             // overlong: per byte
    CHECK(ssm::printable_utf8("\xED\xA0\x80") == fffd + fffd + fffd);  // surrogate
    CHECK(ssm::printable_utf8("\x80\x80x") == fffd + fffd + "x");
    // Decoding a byte model's output one id at a time shows U+FFFD until a character is
    // complete; the whole sequence is the character.
    const ssm::ByteTokenizer bytes;
    const auto ids = bytes.encode("\xE2\x82\xAC");
    CHECK(ssm::printable_utf8(bytes.decode(std::span(ids).first(2))) == fffd);
    CHECK(ssm::printable_utf8(bytes.decode(ids)) == "\xE2\x82\xAC");
}

}  // namespace test_byte_tokenizer
