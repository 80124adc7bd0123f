// Tests for ssm/text/tokenizer.hpp: which tokenizer a checkpoint folder gets (BPE when it
// has a tokenizer.json, bytes for vocab 256, an error otherwise), checked against the BPE
// and byte tokenizers used directly.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "catch.hpp"
#include "ssm/text/tokenizer.hpp"
#include "test_util.hpp"

namespace test_tokenizer {

namespace fs = std::filesystem;

TEST_CASE("Tokenizer::for_checkpoint uses tokenizer.json when the folder has one", "[text]") {
    const auto source = ssm::test::data_dir() / "tokenizer" / "tokenizer.json";
    const auto dir = ssm::test::scratch_dir("tok-bpe");
    fs::copy_file(source, dir / "tokenizer.json");

    const auto tok = ssm::Tokenizer::for_checkpoint(dir, 1000);
    CHECK_FALSE(tok.is_bytes());
    REQUIRE(tok.bpe() != nullptr);
    const auto direct = ssm::BpeTokenizer::load(source);
    const std::string text = "The selective scan<|endoftext|> caf\xC3\xA9 123";
    CHECK(tok.encode(text) == direct.encode(text));
    CHECK(tok.decode(tok.encode(text)) == text);
    // A padded embedding (more ids than the tokenizer uses) is fine; fewer is not.
    CHECK_FALSE(ssm::Tokenizer::for_checkpoint(dir, 1024).is_bytes());
    const std::string msg =
        ssm::test::error_of([&] { (void)ssm::Tokenizer::for_checkpoint(dir, 512); });
    CHECK(msg.find("512") != std::string::npos);
    CHECK(msg.find("tokenizer.json") != std::string::npos);
    // tokenizer.json wins even for vocab 256.
    ssm::test::write_bytes(dir / "tokenizer.json", "not json");
    CHECK(ssm::test::error_of([&] {
              (void)ssm::Tokenizer::for_checkpoint(dir, 256);
          }).find((dir / "tokenizer.json").string()) != std::string::npos);
    fs::remove_all(dir);
}

TEST_CASE("Tokenizer::for_checkpoint gives bytes for vocab 256 without tokenizer.json", "[text]") {
    const auto dir = ssm::test::scratch_dir("tok-bytes");
    const auto tok = ssm::Tokenizer::for_checkpoint(dir, 256);
    CHECK(tok.is_bytes());
    CHECK(tok.bpe() == nullptr);
    CHECK(tok.encode("hi\xC3\xA9") == std::vector<std::int32_t>{104, 105, 0xC3, 0xA9});
    const std::vector<std::int32_t> partial{0xE2, 0x82};
    CHECK(tok.decode(partial) == "\xE2\x82");  // partial UTF-8 passes through
    const std::vector<std::int32_t> bad{300};
    CHECK(ssm::test::error_of([&] { (void)tok.decode(bad); }).find("300") != std::string::npos);
    // The bundled MambaByte checkpoint has no tokenizer.json.
    CHECK(ssm::Tokenizer::for_checkpoint(ssm::test::data_dir() / "mambabyte-tiny", 256).is_bytes());
    fs::remove_all(dir);
}

TEST_CASE("Tokenizer::for_checkpoint: no tokenizer.json and not bytes is an error", "[text]") {
    const auto dir = ssm::test::scratch_dir("tok-none");
    const std::string msg =
        ssm::test::error_of([&] { (void)ssm::Tokenizer::for_checkpoint(dir, 50280); });
    CHECK(msg.find(dir.string()) != std::string::npos);
    CHECK(msg.find("no tokenizer.json") != std::string::npos);
    CHECK(msg.find("token ids") != std::string::npos);
    fs::remove_all(dir);
}

}  // namespace test_tokenizer
