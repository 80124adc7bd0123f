// Fuzzes encoding arbitrary bytes (and decoding the ids back) with the bundled
// tokenizers: GPT-NeoX byte-level BPE, a Llama-style SentencePiece BPE and a tokenizer
// with a Split pre-tokenizer. The first byte picks the tokenizer. Valid UTF-8 must
// encode; invalid UTF-8 must be an ssm::Error.
#include <vector>

#include "fuzz_util.hpp"
#include "ssm/text/bpe_tokenizer.hpp"

#ifndef SSM_FUZZ_DATA_DIR
#error "SSM_FUZZ_DATA_DIR (tests/data) must be defined"
#endif

namespace {
const std::vector<ssm::BpeTokenizer>& tokenizers() {
    static const std::vector<ssm::BpeTokenizer> all = [] {
        const std::filesystem::path dir = std::filesystem::path(SSM_FUZZ_DATA_DIR) / "tokenizer";
        std::vector<ssm::BpeTokenizer> t;
        for (const char* name : {"tokenizer.json", "tokenizer_llama.json", "tokenizer_split.json"})
            t.push_back(ssm::BpeTokenizer::load(dir / name));
        return t;
    }();
    return all;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const auto& tokenizer = tokenizers()[data[0] % tokenizers().size()];
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    ssm::fuzz::refused_or_read([&] {
        const auto ids = tokenizer.encode(text);
        (void)tokenizer.decode(ids);
    });
    return 0;
}
