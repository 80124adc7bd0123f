// BEIR folders: the hand-made tests/data/retrieval/beir-tiny read field by field; qrels in
// BEIR TSV and TREC formats agreeing; malformed lines and fields named FILE:LINE.
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/retrieval/beir.hpp"
#include "test_util.hpp"

namespace test_beir {

namespace fs = std::filesystem;

namespace {

fs::path tiny_dir() {
    return ssm::test::data_dir() / "retrieval" / "beir-tiny";
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

/// `f` fails with a message holding "PATH:LINE:" and `what`.
template <class F>
void expect_error_at(F&& f, const fs::path& path, int line, const std::string& what) {
    const auto msg = ssm::test::error_of(f);
    INFO(msg);
    CHECK(contains(msg, path.string() + ":" + std::to_string(line) + ":"));
    CHECK(contains(msg, what));
}

}  // namespace

TEST_CASE("the tiny BEIR folder reads as written", "[beir]") {
    const auto data = ssm::read_beir(tiny_dir());

    REQUIRE(data.corpus.size() == 6);
    CHECK(data.corpus[0].id == "d1");
    CHECK(data.corpus[0].title == "Selective state spaces");
    CHECK(data.corpus[0].text == "Mamba makes the SSM parameters functions of the input.");
    CHECK(data.corpus[1].title.empty());
    CHECK(data.corpus[2].id == "007");  // digits stay a string, leading zeros kept
    CHECK(data.corpus[3].id == "d4");   // after a blank line; no "title" field
    CHECK(data.corpus[3].title.empty());
    CHECK(data.corpus[4].id == "d5");  // "id" instead of "_id"; "title": null
    CHECK(data.corpus[4].title.empty());
    CHECK(data.corpus[5].title ==
          "\xC3\x9Cn\xC3\xAF"
          "code");
    CHECK(data.corpus[5].text ==
          "Z\xC3\xBCrich \xE2\x80\x94 na\xC3\xAFve caf\xC3\xA9 \xE2\x98\x95");

    REQUIRE(data.queries.size() == 4);
    CHECK(data.queries[0].id == "q1");
    CHECK(data.queries[0].text == "what makes mamba selective");
    CHECK(data.queries[1].id == "42");
    CHECK(data.queries[3].id == "q4");  // kept although nobody judged it

    const ssm::Qrels expected = {
        {"q1", {{"d1", 2}, {"d2", 0}}},
        {"42", {{"d4", 1}, {"007", 1}}},
        {"q3", {{"d2", 1}, {"d1", 1}}},
    };
    CHECK(data.qrels == expected);
    CHECK(data.qrels.count("q4") == 0);
}

TEST_CASE("document_text joins title and text with a space, or gives the text alone", "[beir]") {
    CHECK(ssm::document_text({"d", "A title", "the text"}) == "A title the text");
    CHECK(ssm::document_text({"d", "", "the text"}) == "the text");
    CHECK(ssm::document_text({"d", "Title only", ""}) == "Title only ");
}

TEST_CASE("a folder without qrels/test.tsv has empty qrels; a missing folder or file is named",
          "[beir]") {
    const auto dir = ssm::test::scratch_dir("beir-noqrels");
    fs::copy_file(tiny_dir() / "corpus.jsonl", dir / "corpus.jsonl");
    fs::copy_file(tiny_dir() / "queries.jsonl", dir / "queries.jsonl");
    const auto data = ssm::read_beir(dir);
    CHECK(data.corpus.size() == 6);
    CHECK(data.queries.size() == 4);
    CHECK(data.qrels.empty());

    auto msg = ssm::test::error_of([&] { (void)ssm::read_beir(dir / "absent"); });
    CHECK(contains(msg, (dir / "absent").string()));
    fs::remove(dir / "queries.jsonl");
    msg = ssm::test::error_of([&] { (void)ssm::read_beir(dir); });
    CHECK(contains(msg, (dir / "queries.jsonl").string()));
    fs::remove_all(dir);
}

TEST_CASE("qrels: BEIR TSV and TREC formats give the same judgments", "[beir]") {
    // The metrics test data holds the same 727 judgments in both formats.
    const auto metrics = ssm::test::data_dir() / "retrieval" / "metrics";
    const auto tsv = ssm::read_qrels(metrics / "qrels.tsv");
    const auto trec = ssm::read_qrels(metrics / "qrels.trec");
    CHECK(tsv == trec);
    std::size_t judgments = 0;
    for (const auto& [q, docs] : tsv) judgments += docs.size();
    CHECK(judgments == 727);

    const auto dir = ssm::test::scratch_dir("qrels");
    const auto path = dir / "qrels";
    // No header; blank lines; CRLF; tab-separated TREC qrels; negative relevance kept.
    ssm::test::write_bytes(path, "q1\td1\t1\r\n\nq1\td2\t-1\nq2\t007\t3\n");
    const ssm::Qrels expected = {{"q1", {{"d1", 1}, {"d2", -1}}}, {"q2", {{"007", 3}}}};
    CHECK(ssm::read_qrels(path) == expected);
    ssm::test::write_bytes(path, "q1 0 d1 1\nq1\t0\td2\t-1\n\n  q2   Q0  007  3  \n");
    CHECK(ssm::read_qrels(path) == expected);
    // The same judgment twice is accepted.
    ssm::test::write_bytes(
        path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t-1\nq2\t007\t3\nq1\td1\t1\n");
    CHECK(ssm::read_qrels(path) == expected);
    ssm::test::write_bytes(path, "");
    CHECK(ssm::read_qrels(path).empty());
    fs::remove_all(dir);
}

TEST_CASE("qrels: malformed lines are errors naming FILE:LINE", "[beir]") {
    const auto dir = ssm::test::scratch_dir("qrels-bad");
    const auto path = dir / "test.tsv";
    const auto expect = [&](const std::string& bytes, int line, const std::string& what) {
        ssm::test::write_bytes(path, bytes);
        expect_error_at([&] { (void)ssm::read_qrels(path); }, path, line, what);
    };
    const std::string header = "query-id\tcorpus-id\tscore\n";
    expect(header + "q1\td1\t1\nq1\td2\thigh\n", 3, "relevance \"high\" is not an integer");
    expect(header + "q1\td1\t1\n\nq1\td2\n", 4, "expected 3 tab-separated fields");
    expect(header + "q1\td1\t1\nq1\td2\t1\textra\n", 3, "got 4");
    expect(header + "q1\td1\t1.5\n", 2, "not an integer");
    expect(header + "\td1\t1\n", 2, "empty query or document id");
    expect(header + "q1\td1\t1\nq1\td1\t2\n", 3, "different relevance (1, now 2)");
    expect("q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 fields");
    expect("q1 0 d1 1\nq1 0 d2 x\n", 2, "not an integer");
    expect("\nq1 d1\n", 2, "expected a BEIR qrels line");
    const auto msg = ssm::test::error_of([&] { (void)ssm::read_qrels(dir / "absent.tsv"); });
    CHECK(msg == (dir / "absent.tsv").string() + ": no such file");
    fs::remove_all(dir);
}

TEST_CASE("corpus and queries: malformed lines and fields are errors naming FILE:LINE", "[beir]") {
    const auto dir = ssm::test::scratch_dir("beir-bad");
    const auto corpus = dir / "corpus.jsonl";
    const auto queries = dir / "queries.jsonl";
    const auto expect_corpus = [&](const std::string& bytes, int line, const std::string& what) {
        ssm::test::write_bytes(corpus, bytes);
        expect_error_at([&] { (void)ssm::read_corpus(corpus); }, corpus, line, what);
    };
    const auto expect_queries = [&](const std::string& bytes, int line, const std::string& what) {
        ssm::test::write_bytes(queries, bytes);
        expect_error_at([&] { (void)ssm::read_queries(queries); }, queries, line, what);
    };
    const std::string ok = "{\"_id\": \"d0\", \"text\": \"fine\"}\n";
    expect_corpus(ok + ok.substr(0, 10) + "\n", 2, "not valid JSON");
    expect_corpus(ok + "\n{\"_id\": \"d1\", \"title\": \"t\"}\n", 3, "missing \"text\"");
    expect_corpus(ok + "{\"title\": \"t\", \"text\": \"x\"}\n", 2, "missing \"_id\"");
    expect_corpus(ok + "{\"_id\": 1.5, \"text\": \"x\"}\n", 2, "must be a string or an integer");
    expect_corpus(ok + "{\"_id\": \"\", \"text\": \"x\"}\n", 2, "is empty");
    expect_corpus(ok + "{\"_id\": \"d1\", \"text\": 3}\n", 2, "\"text\" must be a string");
    expect_corpus(ok + "{\"_id\": \"d1\", \"title\": [], \"text\": \"x\"}\n", 2,
                  "\"title\" must be a string");
    expect_corpus(ok + "{\"_id\": \"d1\", \"text\": null}\n", 2, "\"text\" must be a string");
    expect_corpus(ok + "{\"_id\": \"d1\", \"text\": \"a\"}\n" + ok, 3,
                  "duplicate id \"d0\" (first on line 1)");
    expect_corpus("[\"d0\", \"text\"]\n", 1, "expected a JSON object");
    expect_queries("{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q2\"}\n", 2,
                   "missing \"text\"");
    expect_queries("{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q1\", \"text\": \"b\"}\n", 2,
                   "duplicate id");

    // Integer ids are read as their digits.
    ssm::test::write_bytes(queries,
                           "{\"_id\": 12, \"text\": \"a\"}\n{\"id\": -3, \"text\": \"b\"}\n");
    const auto q = ssm::read_queries(queries);
    REQUIRE(q.size() == 2);
    CHECK(q[0].id == "12");
    CHECK(q[1].id == "-3");
    fs::remove_all(dir);
}

}  // namespace test_beir
