// Fuzzes a BEIR folder: the input is corpus.jsonl, queries.jsonl and qrels/test.tsv
// joined by kFileSeparator ("\n=====\n"); a missing part leaves that file out.
#include "fuzz_util.hpp"
#include "ssm/retrieval/beir.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const auto [corpus, rest] = ssm::fuzz::split_once(input, ssm::fuzz::kFileSeparator);
    const auto [queries, qrels] = ssm::fuzz::split_once(rest, ssm::fuzz::kFileSeparator);
    const auto dir = ssm::fuzz::scratch() / "beir";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "qrels");
    ssm::fuzz::write_file(dir / "corpus.jsonl", corpus);
    if (!queries.empty()) ssm::fuzz::write_file(dir / "queries.jsonl", queries);
    if (!qrels.empty()) ssm::fuzz::write_file(dir / "qrels" / "test.tsv", qrels);
    ssm::fuzz::refused_or_read([&] {
        const auto set = ssm::read_beir(dir);
        for (const auto& d : set.corpus) (void)ssm::document_text(d);
    });
    return 0;
}
