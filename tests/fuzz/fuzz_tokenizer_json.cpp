// Fuzzes tokenizer.json loading; a tokenizer that loads then encodes and decodes a few
// fixed texts (ASCII, accents and combining marks, CJK, emoji, NUL, special-token-like
// strings), so what a malformed file sets up is exercised too.
#include "fuzz_util.hpp"
#include "ssm/text/bpe_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("tokenizer.json", data, size);
    ssm::fuzz::refused_or_read([&] {
        const auto tokenizer = ssm::BpeTokenizer::load(path);
        static const std::string texts[] = {
            "Hello world, it's 2026!  New\nlines\tand tabs.",
            "caf\xC3\xA9 cafe\xCC\x81 \xE1\xB9\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80",
            std::string("a\0b<|endoftext|><s></s>", 22),
            "",
        };
        for (const auto& text : texts) {
            ssm::fuzz::refused_or_read([&] {
                const auto ids = tokenizer.encode(text);
                (void)tokenizer.decode(ids);
            });
        }
        for (std::int32_t id = -1; id <= tokenizer.vocab_size() && id < 300; ++id)
            ssm::fuzz::refused_or_read([&] { (void)tokenizer.token_bytes(id); });
    });
    return 0;
}
