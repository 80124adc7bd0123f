// ssm-rerank end to end: scores equal transformers' `rerank.scores`; reranking a run
// scores each (query, document) pair exactly as --input does and orders it; errors.
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "run_program.hpp"
#include "ssm/retrieval/trec.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace {

ssm::test::ProgramRun rerank(const std::string& args, bool merge_stderr = false) {
    return ssm::test::run_program(SSM_RERANK_EXE, args, merge_stderr);
}

std::vector<double> numbers(const std::string& out) {
    std::istringstream in(out);
    std::vector<double> v;
    double x = 0;
    while (in >> x) v.push_back(x);
    return v;
}

}  // namespace

TEST_CASE("ssm-rerank --input: transformers' scores, one per line in input order", "[ssm-rerank]") {
    const auto scratch = ssm::test::scratch_dir("rerank");
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded", "mamba2-tiny",
                               "mamba2-tiny-long", "falcon-mamba-tiny"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        std::string lines;
        for (int k = 0; k < 4; ++k) {
            const auto ids = ref.load_i64("embed" + std::to_string(k) + ".input_ids");
            const auto without_eos = std::span(ids).first(ids.size() - 1);  // the program appends it
            lines += "{\"input_ids\": [" + ssm::test::join_ids(without_eos) + "]}\n";
        }
        ssm::test::write_bytes(scratch / "in.jsonl", lines);
        const auto head = ssm::test::write_score_head(ref, scratch / "head.safetensors");
        const auto r = rerank("--model " + dir.string() + " --head " + head.string() + " --input " +
                              (scratch / "in.jsonl").string() + " --batch-tokens 16");
        INFO(r.output);
        REQUIRE(r.status == 0);
        const auto got = numbers(r.output);
        REQUIRE(got.size() == 4);
        const std::vector<float> gotf(got.begin(), got.end());
        CHECK(ssm::test::rel_error(gotf, ref.load_f32("rerank.scores").values()) < 1e-5);
    }
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-rerank --run: each pair scored as --input scores it, best first", "[ssm-rerank]") {
    const auto scratch = ssm::test::scratch_dir("rerank-run");
    const auto dir = ssm::test::data_dir() / "mambabyte-tiny";  // bytes: text needs no tokenizer.json
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto head = ssm::test::write_score_head(ref, scratch / "head.safetensors").string();
    const std::vector<std::pair<std::string, std::string>> docs = {
        {"d1", "State space models scan in linear time."}, {"d2", "Attention is quadratic in length."},
        {"d3", "Bytes need no tokenizer."}, {"d4", "Retrieval ranks documents for a query."}};
    const std::vector<std::pair<std::string, std::string>> queries = {{"q1", "linear time models"},
                                                                      {"q2", "ranking documents"}};
    std::string corpus, qs, pairs;
    for (const auto& [id, text] : docs) corpus += "{\"_id\": \"" + id + "\", \"title\": \"\", \"text\": \"" + text + "\"}\n";
    for (const auto& [id, text] : queries) qs += "{\"_id\": \"" + id + "\", \"text\": \"" + text + "\"}\n";
    // The first-stage run: q1 -> d2 d1 d3, q2 -> d4 d3 d1 d2 (--depth 3 keeps the top 3).
    ssm::test::write_bytes(scratch / "first.trec",
                           "q1 Q0 d2 1 9.0 bm25\nq1 Q0 d1 2 8.0 bm25\nq1 Q0 d3 3 7.0 bm25\n"
                           "q2 Q0 d4 1 4.0 bm25\nq2 Q0 d3 2 3.0 bm25\nq2 Q0 d1 3 2.0 bm25\nq2 Q0 d2 4 1.0 bm25\n");
    ssm::test::write_bytes(scratch / "corpus.jsonl", corpus);
    ssm::test::write_bytes(scratch / "queries.jsonl", qs);
    ssm::test::write_bytes(scratch / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\n");
    const auto out = scratch / "reranked.trec";
    const auto r = rerank("--model " + dir.string() + " --head " + head + " --run " + (scratch / "first.trec").string() +
                              " --queries " + (scratch / "queries.jsonl").string() + " --corpus " +
                              (scratch / "corpus.jsonl").string() + " --out " + out.string() + " --depth 3 --qrels " +
                              (scratch / "qrels.tsv").string(),
                          true);
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(r.output.find("before") != std::string::npos);
    CHECK(r.output.find("after") != std::string::npos);
    const ssm::Run run = ssm::read_trec_run(out);
    REQUIRE(run.size() == 2);
    std::map<std::string, std::string> doc_text(docs.begin(), docs.end());
    for (const auto& [qid, text] : queries) {
        const auto& entries = run.at(qid);
        REQUIRE(entries.size() == 3);
        // Score the same pairs with --input and compare.
        std::string lines;
        for (const auto& e : entries)
            lines += "{\"query\": \"" + text + "\", \"document\": \"" + doc_text.at(e.doc_id) + "\"}\n";
        ssm::test::write_bytes(scratch / "pairs.jsonl", lines);
        const auto s = rerank("--model " + dir.string() + " --head " + head + " --input " + (scratch / "pairs.jsonl").string());
        REQUIRE(s.status == 0);
        const auto expected = numbers(s.output);
        REQUIRE(expected.size() == 3);
        for (std::size_t j = 0; j < 3; ++j) CHECK(std::abs(entries[j].score - expected[j]) <= 1e-6 * (1 + std::abs(expected[j])));
    }
    CHECK(run.at("q2").end() == std::find_if(run.at("q2").begin(), run.at("q2").end(),
                                             [](const auto& e) { return e.doc_id == "d2"; }));  // beyond --depth
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-rerank: one clear line and exit != 0 on bad input", "[ssm-rerank]") {
    const auto scratch = ssm::test::scratch_dir("rerank-bad");
    const auto tiny = (ssm::test::data_dir() / "mamba-tiny").string();
    const auto ref = ssm::SafetensorsFile::open(ssm::test::data_dir() / "mamba-tiny" / "reference.safetensors");
    const auto head = ssm::test::write_score_head(ref, scratch / "head.safetensors").string();
    const auto in = (scratch / "in.jsonl").string();
    const auto err = [](const ssm::test::ProgramRun& r, int status, const std::string& needle) {
        ssm::test::check_one_line_error(r, "ssm-rerank", status, needle);
    };
    CHECK(rerank("--help").output.find("usage: ssm-rerank") != std::string::npos);
    ssm::test::write_bytes(in, "{\"input_ids\": [1, 2]}\n");
    err(rerank("--model " + tiny + " --input " + in, true), 1, "score.weight");  // no head anywhere
    err(rerank("--model " + tiny, true), 2, "--input");
    err(rerank("--model " + tiny + " --head " + head + " --run x.trec --input " + in, true), 2, "not both");
    err(rerank("--model " + tiny + " --head " + head + " --run x.trec", true), 2, "--queries");
    ssm::test::write_bytes(in, "{\"input_ids\": [1, 2]}\n{\"query\": \"only a query\"}\n");
    err(rerank("--model " + tiny + " --head " + head + " --input " + in, true), 1, in + ":2:");
    ssm::test::write_bytes(in, "{\"input_ids\": [1, 5000]}\n");
    err(rerank("--model " + tiny + " --head " + head + " --input " + in, true), 1, in + ":1:");
    err(rerank("--model " + tiny + " --head " + (scratch / "nohead.safetensors").string() + " --input " + in, true), 1,
        "nohead.safetensors");
    std::filesystem::remove_all(scratch);
}
