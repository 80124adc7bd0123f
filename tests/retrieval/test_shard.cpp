// Sharded encoding and search without MPI: the split covers every sequence once, in whole
// encode_sequences batches, with balanced tokens; encoding the parts separately and putting
// the rows back gives exactly (bitwise) the single-call embeddings; merging per-shard
// exact top-k lists gives exactly the whole corpus's exact top-k, ties included (small-
// integer vectors make every dot product exact, so ties are real); ExactIndex models
// VectorIndex and equals exact_top_k.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "ssm/retrieval/shard.hpp"
#include "ssm/retrieval/vector_index.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_shard {

namespace {

std::vector<std::vector<std::int32_t>> random_sequences(int n, int max_len, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::vector<std::int32_t>> seqs;
    for (int i = 0; i < n; ++i) {
        std::vector<std::int32_t> s(1 + rng() % static_cast<unsigned>(max_len));
        for (auto& t : s) t = static_cast<std::int32_t>(rng() % 1000);
        seqs.push_back(std::move(s));
    }
    return seqs;
}

ssm::Matrix small_integers(ssm::index rows, ssm::index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> small(-2, 2);
    ssm::Matrix m(rows, cols);
    for (ssm::index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(small(rng));
    return m;
}

bool bitwise_equal(const ssm::Matrix& a, const ssm::Matrix& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

}  // namespace

TEST_CASE("plan_shards covers every sequence once, in whole batches, with balanced tokens", "[shard]") {
    std::mt19937_64 rng(3);
    for (const int n : {1, 2, 7, 100, 1000}) {
        std::vector<ssm::index> lengths(static_cast<std::size_t>(n));
        for (auto& l : lengths) l = 1 + static_cast<ssm::index>(rng() % 300);
        for (const ssm::index batch : {ssm::index{1}, ssm::index{64}, ssm::index{1000}, ssm::index{1} << 20}) {
            for (const ssm::index parts : {1, 2, 3, 8}) {
                INFO("n " << n << ", batch_tokens " << batch << ", parts " << parts);
                const ssm::ShardPlan plan = ssm::plan_shards(lengths, batch, parts);
                REQUIRE(plan.parts() == parts);
                // order is a stable sort by length
                std::vector<ssm::index> expect(static_cast<std::size_t>(n));
                std::iota(expect.begin(), expect.end(), ssm::index{0});
                std::stable_sort(expect.begin(), expect.end(), [&](ssm::index a, ssm::index b) {
                    return lengths[static_cast<std::size_t>(a)] < lengths[static_cast<std::size_t>(b)];
                });
                REQUIRE(plan.order == expect);
                // the batch starts of one process encoding everything
                std::vector<ssm::index> starts;
                ssm::index in_batch = 0, total = 0;
                for (ssm::index i = 0; i < n; ++i) {
                    const ssm::index len = lengths[static_cast<std::size_t>(expect[static_cast<std::size_t>(i)])];
                    if (i == 0 || in_batch + len > batch) {
                        starts.push_back(i);
                        in_batch = 0;
                    }
                    in_batch += len;
                    total += len;
                }
                starts.push_back(n);
                CHECK(plan.begin(0) == 0);
                CHECK(plan.end(parts - 1) == n);
                ssm::index sum = 0, biggest_batch = 0;
                for (std::size_t b = 0; b + 1 < starts.size(); ++b) {
                    ssm::index t = 0;
                    for (ssm::index i = starts[b]; i < starts[b + 1]; ++i)
                        t += lengths[static_cast<std::size_t>(expect[static_cast<std::size_t>(i)])];
                    biggest_batch = std::max(biggest_batch, t);
                }
                for (ssm::index r = 0; r < parts; ++r) {
                    CHECK(plan.begin(r) <= plan.end(r));
                    if (r > 0) CHECK(plan.begin(r) == plan.end(r - 1));
                    CHECK(std::binary_search(starts.begin(), starts.end(), plan.begin(r)));
                    sum += plan.tokens[static_cast<std::size_t>(r)];
                    // each cut is the batch boundary nearest to its share: a part is off its
                    // share by at most one batch
                    const double share = static_cast<double>(total) / static_cast<double>(parts);
                    CHECK(std::abs(static_cast<double>(plan.tokens[static_cast<std::size_t>(r)]) - share) <=
                          static_cast<double>(biggest_batch) + 1e-9);
                }
                CHECK(sum == total);
            }
        }
    }
    CHECK(ssm::test::error_of([] { (void)ssm::plan_shards(std::vector<ssm::index>{3, 0}, 10, 2); })
              .find("sequence 1 is empty") != std::string::npos);
    CHECK(ssm::plan_shards(std::vector<ssm::index>{}, 10, 3).end(2) == 0);
}

TEST_CASE("encoding the shards separately gives the single-process embeddings bit for bit", "[shard]") {
    const auto model = ssm::MambaRetriever::load(ssm::test::data_dir() / "mamba-tiny");
    const auto seqs = random_sequences(37, 60, 5);
    for (const ssm::index batch : {ssm::index{50}, ssm::index{200}, ssm::index{1} << 20}) {
        const ssm::Matrix whole = ssm::encode_sequences(model, seqs, {batch, nullptr});
        for (const ssm::index parts : {1, 2, 3, 5}) {
            INFO("batch_tokens " << batch << ", parts " << parts);
            const ssm::ShardPlan plan = ssm::plan_shards(ssm::sequence_lengths(seqs), batch, parts);
            ssm::Matrix gathered(0, whole.cols());
            for (ssm::index r = 0; r < parts; ++r) {
                const ssm::Matrix part = ssm::encode_shard(model, seqs, plan, r, {batch, nullptr});
                REQUIRE(part.rows() == plan.size(r));
                if (part.rows() == 0) continue;
                ssm::Matrix grown(gathered.rows() + part.rows(), whole.cols());
                grown << gathered, part;
                gathered = grown;
            }
            CHECK(bitwise_equal(ssm::unshard_rows(gathered, plan), whole));
        }
    }
}

TEST_CASE("merging per-shard exact top-k lists gives the whole corpus's exact top-k, ties included", "[shard]") {
    const ssm::Matrix docs = small_integers(500, 8, 1), queries = small_integers(30, 8, 2);
    for (const ssm::index k : {1, 10, 100, 600}) {
        const ssm::TopK whole = ssm::exact_top_k(queries, docs, k);
        for (const ssm::index parts : {2, 3, 7}) {
            INFO("k " << k << ", parts " << parts);
            // shards of unequal size, and not in document order: every third document to
            // shard 0, the rest split in runs
            std::vector<std::vector<ssm::index>> members(static_cast<std::size_t>(parts));
            for (ssm::index d = 0; d < docs.rows(); ++d)
                members[static_cast<std::size_t>(d % 3 == 0 ? 0 : 1 + (d * (parts - 1)) / docs.rows())].push_back(d);
            std::vector<ssm::TopK> lists;
            for (const auto& m : members) {
                ssm::Matrix shard(static_cast<ssm::index>(m.size()), docs.cols());
                for (std::size_t i = 0; i < m.size(); ++i) shard.row(static_cast<ssm::index>(i)) = docs.row(m[i]);
                ssm::TopK local = ssm::ExactIndex(shard).search(queries, k);
                ssm::to_global_ids(local, m);
                lists.push_back(std::move(local));
            }
            const ssm::TopK merged = ssm::merge_top_k(lists, k);
            REQUIRE(merged.ids.rows() == whole.ids.rows());
            REQUIRE(merged.ids.cols() == whole.ids.cols());
            CHECK(merged.ids == whole.ids);
            CHECK(merged.scores == whole.scores);
        }
    }
}

TEST_CASE("merge_top_k skips padding, pads short rows, breaks ties by the lower id", "[shard]") {
    constexpr float inf = std::numeric_limits<float>::infinity();
    ssm::TopK a, b;
    a.ids.resize(1, 3);
    a.scores.resize(1, 3);
    a.ids << 7, 2, -1;
    a.scores << 0.9f, 0.5f, -inf;
    b.ids.resize(1, 2);
    b.scores.resize(1, 2);
    b.ids << 1, 9;
    b.scores << 0.5f, 0.95f;  // a list need not be sorted
    const std::vector<ssm::TopK> lists{a, b};
    const ssm::TopK m = ssm::merge_top_k(lists, 6);
    REQUIRE(m.ids.cols() == 5);
    CHECK(m.ids(0, 0) == 9);
    CHECK(m.ids(0, 1) == 7);
    CHECK(m.ids(0, 2) == 1);  // 0.5 tie: the lower id first
    CHECK(m.ids(0, 3) == 2);
    CHECK(m.ids(0, 4) == -1);
    CHECK(m.scores(0, 4) == -inf);
    CHECK(ssm::merge_top_k(lists, 2).ids.cols() == 2);
    ssm::TopK c;
    c.ids.resize(2, 1);
    c.scores.resize(2, 1);
    const std::vector<ssm::TopK> mismatched{a, c};
    CHECK(ssm::test::error_of([&] { (void)ssm::merge_top_k(mismatched, 3); }).find("number of queries") !=
          std::string::npos);
}

TEST_CASE("ExactIndex is a VectorIndex equal to exact_top_k, built whole or in pieces", "[shard]") {
    STATIC_REQUIRE(ssm::VectorIndex<ssm::ExactIndex>);
    const ssm::Matrix docs = small_integers(300, 16, 4), queries = small_integers(9, 16, 5);
    ssm::ExactIndex pieces(16);
    pieces.add(docs.topRows(100));
    pieces.add(docs.middleRows(100, 0));
    pieces.add(docs.bottomRows(200));
    const ssm::ExactIndex whole(docs);
    const ssm::TopK expect = ssm::exact_top_k(queries, docs, 20);
    CHECK(whole.search(queries, 20).ids == expect.ids);
    CHECK(pieces.search(queries, 20).ids == expect.ids);
    CHECK(pieces.size() == 300);
    CHECK(ssm::test::error_of([&] { pieces.add(ssm::Matrix(2, 15)); }).find("dimension 15") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)pieces.search(ssm::Matrix(2, 3), 1); }).find("dimension 3") !=
          std::string::npos);
}

}  // namespace test_shard
