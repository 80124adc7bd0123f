// Fuzzes ssm-train's BEIR training reader: the input is corpus.jsonl, queries.jsonl,
// qrels/train.tsv and a TREC run joined by kFileSeparator ("\n=====\n"); a missing part
// leaves that file out. Negatives are mined from the run as `--negatives` does.
#include "fuzz_util.hpp"
#include "ssm/train/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const auto [corpus, rest1] = ssm::fuzz::split_once(input, ssm::fuzz::kFileSeparator);
    const auto [queries, rest2] = ssm::fuzz::split_once(rest1, ssm::fuzz::kFileSeparator);
    const auto [qrels, run] = ssm::fuzz::split_once(rest2, ssm::fuzz::kFileSeparator);
    const auto dir = ssm::fuzz::scratch() / "beir-train";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "qrels");
    ssm::fuzz::write_file(dir / "corpus.jsonl", corpus);
    if (!queries.empty()) ssm::fuzz::write_file(dir / "queries.jsonl", queries);
    if (!qrels.empty()) ssm::fuzz::write_file(dir / "qrels" / "train.tsv", qrels);
    const auto run_path = ssm::fuzz::scratch() / "negatives.trec";
    ssm::fuzz::write_file(run_path, run);
    ssm::fuzz::refused_or_read([&] {
        const auto groups = ssm::train::read_beir_training(dir, run_path, 3);
        for (std::size_t i = 0; i < groups.size(); ++i)
            (void)ssm::train::draw_group(groups[i], 2, 1, 0, static_cast<ssm::index>(i));
    });
    return 0;
}
