// Fuzzes the TREC readers. An input holding kFileSeparator ("\n=====\n") is a run
// ("qid Q0 docid rank score tag") then qrels (TREC "qid 0 docid rel" or BEIR's TSV), and
// what both readers accept is evaluated; any other input is read as a run and as qrels.
#include <array>

#include "fuzz_util.hpp"
#include "ssm/retrieval/beir.hpp"
#include "ssm/retrieval/metrics.hpp"
#include "ssm/retrieval/trec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    auto [run_text, qrels_text] = ssm::fuzz::split_once(input, ssm::fuzz::kFileSeparator);
    if (qrels_text.empty()) qrels_text = run_text;
    const auto run_path = ssm::fuzz::scratch() / "run.trec";
    const auto qrels_path = ssm::fuzz::scratch() / "qrels.trec";
    ssm::fuzz::write_file(run_path, run_text);
    ssm::fuzz::write_file(qrels_path, qrels_text);
    ssm::fuzz::refused_or_read([&] {
        const auto run = ssm::read_trec_run(run_path);
        const auto qrels = ssm::read_qrels(qrels_path);
        constexpr std::array<int, 2> ks{1, 10};
        (void)ssm::evaluate(run, qrels, ks, ks, ks);
    });
    ssm::fuzz::refused_or_read([&] { (void)ssm::read_qrels(run_path); });
    return 0;
}
