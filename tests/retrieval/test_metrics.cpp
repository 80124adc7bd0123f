// Retrieval metrics against pytrec_eval (trec_eval): the seeded 50-query run and graded
// qrels in tests/data/retrieval/metrics (made by generate_metrics_data.py, expected values
// from pytrec_eval) must agree within 1e-9 per query and on the means, and so must the
// hand-made edge cases stored beside them (ties, float32 ties, negative relevance,
// missing and empty queries). Plus analytic values and argument errors.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/retrieval/metrics.hpp"
#include "test_util.hpp"

namespace test_metrics {

namespace fs = std::filesystem;

namespace {

constexpr double tolerance = 1e-9;

fs::path metrics_dir() {
    return ssm::test::data_dir() / "retrieval" / "metrics";
}

nlohmann::json expected_json() {
    std::ifstream f(metrics_dir() / "expected.json");
    REQUIRE(f);
    return nlohmann::json::parse(f);
}

std::vector<int> ints(const nlohmann::json& j) {
    return j.get<std::vector<int>>();
}

/// Checks `ev` against pytrec_eval's values in `expected` ({"queries", "per_query"},
/// optionally "mean"); returns the number of values compared.
std::size_t compare(const ssm::Evaluation& ev, const nlohmann::json& expected) {
    std::size_t compared = 0;
    CHECK(ev.queries == expected.at("queries").get<std::size_t>());
    CHECK(ev.per_query.size() == expected.at("per_query").size());
    for (const auto& [qid, values] : expected.at("per_query").items()) {
        INFO("query " << qid);
        REQUIRE(ev.per_query.count(qid) == 1);
        const auto& ours = ev.per_query.at(qid);
        CHECK(ours.size() == values.size());
        for (const auto& [measure, value] : values.items()) {
            INFO("measure " << measure << ": ours "
                            << (ours.count(measure) ? ours.at(measure) : -1.0) << ", pytrec_eval "
                            << value.get<double>());
            REQUIRE(ours.count(measure) == 1);
            CHECK(std::abs(ours.at(measure) - value.get<double>()) <= tolerance);
            ++compared;
        }
    }
    if (expected.contains("mean")) {
        CHECK(ev.mean.size() == expected.at("mean").size());
        for (const auto& [measure, value] : expected.at("mean").items()) {
            INFO("mean " << measure);
            REQUIRE(ev.mean.count(measure) == 1);
            CHECK(std::abs(ev.mean.at(measure) - value.get<double>()) <= tolerance);
            ++compared;
        }
    }
    return compared;
}

}  // namespace

TEST_CASE("evaluate agrees with pytrec_eval on the seeded run, per query and on the means",
          "[metrics]") {
    const auto expected = expected_json();
    const auto& cutoffs = expected.at("cutoffs");
    const auto ndcg_k = ints(cutoffs.at("ndcg"));
    const auto mrr_k = ints(cutoffs.at("mrr"));
    const auto recall_k = ints(cutoffs.at("recall"));

    const ssm::Run run = ssm::read_trec_run(metrics_dir() / "run.trec");
    for (const char* qrels_file : {"qrels.tsv", "qrels.trec"}) {
        INFO(qrels_file);
        const ssm::Qrels qrels = ssm::read_qrels(metrics_dir() / qrels_file);
        const auto ev = ssm::evaluate(run, qrels, ndcg_k, mrr_k, recall_k);
        // 50 queries x 12 measures, plus 12 means.
        CHECK(compare(ev, expected) == 50 * 12 + 12);
    }
}

TEST_CASE("the order of a query's entries does not matter; per-query helpers agree with evaluate",
          "[metrics]") {
    const auto expected = expected_json();
    const auto ndcg_k = ints(expected.at("cutoffs").at("ndcg"));
    const auto mrr_k = ints(expected.at("cutoffs").at("mrr"));
    const auto recall_k = ints(expected.at("cutoffs").at("recall"));
    const ssm::Run run = ssm::read_trec_run(metrics_dir() / "run.trec");
    const ssm::Qrels qrels = ssm::read_qrels(metrics_dir() / "qrels.tsv");
    const auto ev = ssm::evaluate(run, qrels, ndcg_k, mrr_k, recall_k);

    ssm::Run shuffled = run;
    std::size_t i = 0;
    for (auto& [qid, entries] : shuffled) {
        std::reverse(entries.begin(), entries.end());
        std::rotate(entries.begin(),
                    entries.begin() + static_cast<std::ptrdiff_t>(i++ % entries.size()),
                    entries.end());
    }
    const auto again = ssm::evaluate(shuffled, qrels, ndcg_k, mrr_k, recall_k);
    CHECK(again.per_query == ev.per_query);
    CHECK(again.mean == ev.mean);

    for (const auto& [qid, values] : ev.per_query) {
        INFO(qid);
        const auto& entries = shuffled.at(qid);
        const auto& rel = qrels.at(qid);
        for (const int k : ndcg_k)
            CHECK(ssm::ndcg_at(entries, rel, k) == values.at("ndcg@" + std::to_string(k)));
        for (const int k : mrr_k)
            CHECK(ssm::mrr_at(entries, rel, k) == values.at("mrr@" + std::to_string(k)));
        for (const int k : recall_k) {
            CHECK(ssm::recall_at(entries, rel, k) == values.at("recall@" + std::to_string(k)));
        }
    }
}

TEST_CASE("edge cases agree with pytrec_eval", "[metrics]") {
    const auto expected = expected_json();
    const auto k = ints(expected.at("case_cutoffs"));
    std::size_t cases = 0;
    for (const auto& c : expected.at("cases")) {
        INFO("case: " << c.at("name").get<std::string>());
        ssm::Qrels qrels;
        for (const auto& [qid, judged] : c.at("qrels").items()) {
            auto& docs = qrels[qid];  // an empty judgment list stays an (empty) entry
            for (const auto& [doc, rel] : judged.items()) docs[doc] = rel.get<int>();
        }
        ssm::Run run;
        for (const auto& [qid, entries] : c.at("run").items()) {
            auto& list = run[qid];
            for (const auto& e : entries)
                list.push_back({e.at(0).get<std::string>(), e.at(1).get<double>()});
        }
        (void)compare(ssm::evaluate(run, qrels, k, k, k), c);
        ++cases;
    }
    CHECK(cases == 17);
}

TEST_CASE("analytic values: graded gains, log2 discounts, cutoffs", "[metrics]") {
    // Ranking b (rel 1), x (unjudged), a (rel 2), c (rel 0); ideal: a, b.
    const std::vector<ssm::RunEntry> ranked = {{"a", 0.2}, {"x", 0.5}, {"b", 0.9}, {"c", 0.1}};
    const std::map<std::string, int> rel = {{"a", 2}, {"b", 1}, {"c", 0}, {"z", 1}};
    const double ideal2 = 2.0 + 1.0 / std::log2(3.0);
    const double ideal3 = ideal2 + 1.0 / std::log2(4.0);
    CHECK(std::abs(ssm::ndcg_at(ranked, rel, 1) - 1.0 / 2.0) < 1e-15);
    CHECK(std::abs(ssm::ndcg_at(ranked, rel, 2) - 1.0 / ideal2) < 1e-15);
    CHECK(std::abs(ssm::ndcg_at(ranked, rel, 3) - (1.0 + 2.0 / std::log2(4.0)) / ideal3) < 1e-15);
    CHECK(std::abs(ssm::ndcg_at(ranked, rel, 100) - (1.0 + 2.0 / std::log2(4.0)) / ideal3) < 1e-15);
    CHECK(ssm::mrr_at(ranked, rel, 1) == 1.0);
    CHECK(ssm::mrr_at({{"x", 1.0}, {"c", 0.5}, {"a", 0.1}}, rel, 2) == 0.0);
    CHECK(ssm::mrr_at({{"x", 1.0}, {"c", 0.5}, {"a", 0.1}}, rel, 3) == 1.0 / 3.0);
    CHECK(ssm::recall_at(ranked, rel, 1) == 1.0 / 3.0);  // relevant: a, b, z
    CHECK(ssm::recall_at(ranked, rel, 3) == 2.0 / 3.0);
    CHECK(ssm::recall_at(ranked, {{"a", 0}}, 3) == 0.0);
    CHECK(ssm::ndcg_at({}, rel, 10) == 0.0);
    CHECK(ssm::ndcg_at(ranked, {}, 10) == 0.0);
}

TEST_CASE("bad cutoffs, NaN scores and repeated documents are errors", "[metrics]") {
    const std::vector<ssm::RunEntry> ranked = {{"a", 1.0}};
    const std::map<std::string, int> rel = {{"a", 1}};
    CHECK(ssm::test::error_of([&] { (void)ssm::ndcg_at(ranked, rel, 0); }).find(">= 1") !=
          std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)ssm::mrr_at(ranked, rel, -1); }).find(">= 1") !=
          std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)ssm::recall_at(ranked, rel, 0); }).find(">= 1") !=
          std::string::npos);
    const int good[] = {10}, bad[] = {10, 0};
    const ssm::Run run = {{"q", ranked}};
    const ssm::Qrels qrels = {{"q", rel}};
    CHECK_NOTHROW((void)ssm::evaluate(run, qrels, good, good, good));
    CHECK_THROWS_AS((void)ssm::evaluate(run, qrels, bad, good, good), ssm::Error);
    CHECK_THROWS_AS((void)ssm::evaluate(run, qrels, good, bad, good), ssm::Error);
    CHECK_THROWS_AS((void)ssm::evaluate(run, qrels, good, good, bad), ssm::Error);

    const ssm::Run nan = {{"q7", {{"a", 1.0}, {"b", std::numeric_limits<double>::quiet_NaN()}}}};
    auto msg = ssm::test::error_of([&] {
        (void)ssm::evaluate(nan, {{"q7", rel}}, good, good, good);
    });
    CHECK(msg.find("q7") != std::string::npos);
    CHECK(msg.find("\"b\" has a NaN score") != std::string::npos);
    const ssm::Run twice = {{"q8", {{"a", 1.0}, {"b", 2.0}, {"a", 0.5}}}};
    msg = ssm::test::error_of([&] { (void)ssm::evaluate(twice, {{"q8", rel}}, good, good, good); });
    CHECK(msg.find("q8") != std::string::npos);
    CHECK(msg.find("\"a\" is listed twice") != std::string::npos);
}

TEST_CASE("no evaluated query: zero count, zero means, every measure named", "[metrics]") {
    const int k[] = {10};
    const int r[] = {100, 1000};
    const auto ev = ssm::evaluate({{"q", {{"a", 1.0}}}}, {{"other", {{"a", 1}}}}, k, k, r);
    CHECK(ev.queries == 0);
    CHECK(ev.per_query.empty());
    const std::map<std::string, double> zeros = {
        {"ndcg@10", 0.0}, {"mrr@10", 0.0}, {"recall@100", 0.0}, {"recall@1000", 0.0}};
    CHECK(ev.mean == zeros);
}

}  // namespace test_metrics
