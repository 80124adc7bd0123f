// TREC run files: the exact text written (ranks in trec_eval's order, ties by doc id
// descending, shortest round-trip scores), a write/read round trip that keeps every
// double bit for bit, and malformed lines named FILE:LINE.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/retrieval/trec.hpp"
#include "test_util.hpp"

namespace test_trec {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("write_trec_run writes qid Q0 docid rank score tag, ranked as trec_eval ranks",
          "[trec]") {
    const auto dir = ssm::test::scratch_dir("trec-write");
    const auto path = dir / "run.trec";
    ssm::Run run;
    run["q2"] = {{"a", 0.5}, {"b", 2.5}, {"c", 0.5}, {"d12", 1.0}, {"d7", 1.0}};
    run["q1"] = {{"x", -1.0}, {"y", 0.1}};
    run["q3"] = {};  // no entries: no lines
    // Scores equal as float32 are a tie for trec_eval; the higher doc id goes first.
    run["q4"] = {{"p", 1.0 + 1e-9}, {"r", 1.0}};
    ssm::write_trec_run(path, run, "my-tag");
    CHECK(read_text(path) ==
          "q1 Q0 y 1 0.1 my-tag\n"
          "q1 Q0 x 2 -1 my-tag\n"
          "q2 Q0 b 1 2.5 my-tag\n"
          "q2 Q0 d7 2 1 my-tag\n"
          "q2 Q0 d12 3 1 my-tag\n"
          "q2 Q0 c 4 0.5 my-tag\n"
          "q2 Q0 a 5 0.5 my-tag\n"
          "q4 Q0 r 1 1 my-tag\n"
          "q4 Q0 p 2 1.000000001 my-tag\n");
    ssm::write_trec_run(path, {{"q", {{"d", 3.0}}}});
    CHECK(read_text(path) == "q Q0 d 1 3 ssm\n");
    fs::remove_all(dir);
}

TEST_CASE("a run written and read back has the same entries and bit-identical scores", "[trec]") {
    const auto dir = ssm::test::scratch_dir("trec-roundtrip");
    const auto path = dir / "run.trec";
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> uniform(-10.0, 10.0);
    ssm::Run run;
    for (int q = 0; q < 20; ++q) {
        auto& entries = run["query-" + std::to_string(q * 37 % 11) + "-" + std::to_string(q)];
        const int n = q == 0 ? 1 : 1 + static_cast<int>(rng() % 300);
        for (int i = 0; i < n; ++i) {
            double score = uniform(rng);
            if (i % 5 == 0) score = std::round(score);  // ties
            if (i % 17 == 0) score = score * 1e-300;    // subnormal-ish magnitudes
            entries.push_back({std::to_string(rng() % 100000) + "-" + std::to_string(i), score});
        }
    }
    run["special"] = {{"inf", std::numeric_limits<double>::infinity()},
                      {"ninf", -std::numeric_limits<double>::infinity()},
                      {"tiny", std::numeric_limits<double>::denorm_min()},
                      {"third", 1.0 / 3.0},
                      {"big", 1.7976931348623157e308}};
    ssm::write_trec_run(path, run);
    const ssm::Run back = ssm::read_trec_run(path);
    REQUIRE(back.size() == run.size());
    std::size_t lines = 0;
    for (const auto& [qid, entries] : run) {
        INFO(qid);
        REQUIRE(back.count(qid) == 1);
        const auto& read = back.at(qid);
        const auto order = ssm::detail::trec_eval_order(entries, qid);
        REQUIRE(read.size() == entries.size());
        for (std::size_t r = 0; r < order.size(); ++r) {
            CHECK(read[r].doc_id == entries[order[r]].doc_id);
            CHECK(std::memcmp(&read[r].score, &entries[order[r]].score, sizeof(double)) == 0);
        }
        lines += entries.size();
    }
    // Ranks are 1, 2, ... per query, and scores never increase down a query.
    std::ifstream in(path);
    std::string line, last_qid;
    long expected_rank = 0;
    double last_score = 0;
    std::size_t count = 0;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string qid, q0, doc, rank_text, score_text, tag;
        REQUIRE(fields >> qid >> q0 >> doc >> rank_text >> score_text >> tag);
        const long rank = std::stol(rank_text);
        const double score = std::strtod(score_text.c_str(), nullptr);  // "inf" too
        expected_rank = qid == last_qid ? expected_rank + 1 : 1;
        CHECK(rank == expected_rank);
        if (qid == last_qid) CHECK(static_cast<float>(score) <= static_cast<float>(last_score));
        last_qid = qid;
        last_score = score;
        ++count;
    }
    CHECK(count == lines);
    fs::remove_all(dir);
}

TEST_CASE("read_trec_run keeps file order, skips blank lines, accepts tabs", "[trec]") {
    const auto dir = ssm::test::scratch_dir("trec-read");
    const auto path = dir / "run.trec";
    ssm::test::write_bytes(path,
                           "q1 Q0 b 2 0.5 t\r\n\n q1\tQ0\ta\t1\t1e-3\tt \nq0 0 z 1 -7 other\n");
    const ssm::Run run = ssm::read_trec_run(path);
    REQUIRE(run.size() == 2);
    REQUIRE(run.at("q1").size() == 2);
    CHECK(run.at("q1")[0].doc_id == "b");
    CHECK(run.at("q1")[0].score == 0.5);
    CHECK(run.at("q1")[1].doc_id == "a");
    CHECK(run.at("q1")[1].score == 1e-3);
    CHECK(run.at("q0")[0].score == -7.0);
    fs::remove_all(dir);
}

TEST_CASE("read_trec_run: malformed lines are errors naming FILE:LINE", "[trec]") {
    const auto dir = ssm::test::scratch_dir("trec-bad");
    const auto path = dir / "run.trec";
    const auto expect = [&](const std::string& bytes, const std::string& where,
                            const std::string& what) {
        ssm::test::write_bytes(path, bytes);
        const auto msg = ssm::test::error_of([&] { (void)ssm::read_trec_run(path); });
        INFO(msg);
        CHECK(contains(msg, path.string() + ":" + where + ":"));
        CHECK(contains(msg, what));
    };
    const std::string ok = "q1 Q0 d1 1 0.5 tag\n";
    expect(ok + "q1 Q0 d2 2 0.4\n", "2", "expected 6 fields");
    expect(ok + "\nq1 Q0 d2 2 0.4 tag extra\n", "3", "got 7");
    expect(ok + "q1 Q0 d2 two 0.4 tag\n", "2", "rank \"two\" is not an integer");
    expect(ok + "q1 Q0 d2 2 high tag\n", "2", "score \"high\" is not a number");
    expect(ok + "q1 Q0 d2 2 0.4x tag\n", "2", "score \"0.4x\" is not a number");
    expect(ok + "q1 Q0 d2 2 nan tag\n", "2", "not a number");
    expect(ok + "q2 Q0 d1 1 0.5 tag\nq1 Q0 d1 2 0.4 tag\n", "3",
           "document \"d1\" listed again for query \"q1\" (first on line 1)");
    const auto msg = ssm::test::error_of([&] { (void)ssm::read_trec_run(dir / "absent.trec"); });
    CHECK(contains(msg, (dir / "absent.trec").string()));
    fs::remove_all(dir);
}

TEST_CASE("write_trec_run refuses runs it could not write faithfully and leaves the file as it was",
          "[trec]") {
    const auto dir = ssm::test::scratch_dir("trec-write-bad");
    const auto path = dir / "run.trec";
    ssm::test::write_bytes(path, "old contents\n");
    const auto expect = [&](const ssm::Run& run, const std::string& tag, const std::string& what) {
        const auto msg = ssm::test::error_of([&] { ssm::write_trec_run(path, run, tag); });
        INFO(msg);
        CHECK(contains(msg, path.string()));
        CHECK(contains(msg, what));
        CHECK(read_text(path) == "old contents\n");
    };
    expect({{"q", {{"d", std::numeric_limits<double>::quiet_NaN()}}}}, "t", "NaN");
    expect({{"q", {{"d", 1.0}, {"e", 2.0}, {"d", 3.0}}}}, "t", "\"d\" is listed twice");
    expect({{"q 1", {{"d", 1.0}}}}, "t", "query id \"q 1\"");
    expect({{"q", {{"d\t2", 1.0}}}}, "t", "document id");
    expect({{"q", {{"", 1.0}}}}, "t", "document id");
    expect({{"q", {{"d", 1.0}}}}, "", "tag");
    expect({{"q", {{"d", 1.0}}}}, "two words", "tag");
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
    fs::remove_all(dir);
}

}  // namespace test_trec
