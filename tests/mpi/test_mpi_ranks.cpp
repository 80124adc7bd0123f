// MpiRanks under a real `mpirun -np N` (N = 2, 3; CTest label "mpi"): every rank runs
// the same test cases. Rows gathered to the root and to everyone arrive in rank order,
// ranks without rows included; per-rank exact top-k lists merged on the root equal the
// exact top-k of the whole corpus, ties included; a failure on one rank stops every rank
// at the same phase with that rank's message; sharded encoding gathered over MPI is the
// single-process encoding bit for bit.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if __has_include(<catch2/catch.hpp>)  // v2 first, as in tests/catch.hpp
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#else
#include <catch2/catch_session.hpp>
#endif

#include "catch.hpp"
#include "ssm/retrieval/mpi.hpp"
#include "ssm/retrieval/shard.hpp"
#include "ssm/retrieval/vector_index.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace {

ssm::MpiRanks* g_ranks = nullptr;

ssm::Matrix small_integers(ssm::index rows, ssm::index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> small(-2, 2);
    ssm::Matrix m(rows, cols);
    for (ssm::index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(small(rng));
    return m;
}

}  // namespace

TEST_CASE("the job really has several ranks", "[mpi_ranks]") {
    REQUIRE(g_ranks->size() >= 2);
    CHECK(g_ranks->name() == "rank " + std::to_string(g_ranks->rank()) + " of " + std::to_string(g_ranks->size()));
}

TEST_CASE("gather_rows and allgather_rows put the ranks' rows one after another", "[mpi_ranks]") {
    auto& ranks = *g_ranks;
    // rank r holds r + 1 rows, except rank 1, which holds none; row i of rank r is (r, i, 7)
    const ssm::index mine = ranks.rank() == 1 ? 0 : ranks.rank() + 1;
    ssm::Matrix local(mine, 3);
    for (ssm::index i = 0; i < mine; ++i) local.row(i) << static_cast<float>(ranks.rank()), static_cast<float>(i), 7.0f;
    ssm::Matrix expect(0, 3);
    for (int r = 0; r < ranks.size(); ++r)
        for (ssm::index i = 0; i < (r == 1 ? 0 : r + 1); ++i) {
            expect.conservativeResize(expect.rows() + 1, 3);
            expect.row(expect.rows() - 1) << static_cast<float>(r), static_cast<float>(i), 7.0f;
        }
    const ssm::Matrix everywhere = ranks.allgather_rows(local);
    CHECK(everywhere == expect);
    const ssm::Matrix at_root = ranks.gather_rows(local);
    if (ranks.root())
        CHECK(at_root == expect);
    else
        CHECK(at_root.size() == 0);
}

TEST_CASE("sum_everywhere leaves the same sum on every rank", "[mpi_ranks]") {
    auto& ranks = *g_ranks;
    const int n = ranks.size(), r = ranks.rank();
    // floats that do not add exactly in every order: the result must still be identical
    // bits on every rank (the root's sum, broadcast)
    std::vector<float> f(1000);
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = 1.0f / static_cast<float>(3 + i + 7 * static_cast<std::size_t>(r));
    ranks.sum_everywhere(std::span<float>(f));
    for (std::size_t i = 0; i < f.size(); ++i) {
        double expect = 0;
        for (int k = 0; k < n; ++k) expect += 1.0 / static_cast<double>(3 + i + 7 * static_cast<std::size_t>(k));
        CHECK(std::abs(f[i] - expect) <= 1e-6 * expect);  // CHECK: every rank reaches the broadcast below
    }
    std::vector<float> root_copy = f;
    MPI_Bcast(root_copy.data(), static_cast<int>(root_copy.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(root_copy == f);
    double d = 0.5 * r;
    std::int64_t count = r + 1;
    ranks.sum_everywhere(std::span<double>(&d, 1));
    ranks.sum_everywhere(std::span<std::int64_t>(&count, 1));
    CHECK(d == 0.25 * n * (n - 1));
    CHECK(count == static_cast<std::int64_t>(n) * (n + 1) / 2);
}

TEST_CASE("per-rank top-k lists merge into the whole corpus's exact top-k", "[mpi_ranks]") {
    auto& ranks = *g_ranks;
    const ssm::Matrix docs = small_integers(700, 8, 1), queries = small_integers(25, 8, 2);
    for (const ssm::index k : {1, 10, 300, 1000}) {
        INFO("k " << k);
        // rank r holds the documents d with d % N == r: interleaved, not in runs
        std::vector<ssm::index> rows;
        for (ssm::index d = ranks.rank(); d < docs.rows(); d += ranks.size()) rows.push_back(d);
        ssm::Matrix shard(static_cast<ssm::index>(rows.size()), docs.cols());
        for (std::size_t i = 0; i < rows.size(); ++i) shard.row(static_cast<ssm::index>(i)) = docs.row(rows[i]);
        ssm::TopK local = ssm::ExactIndex(std::move(shard)).search(queries, k);
        ssm::to_global_ids(local, rows);
        const ssm::TopK merged = ranks.gather_top_k(local, k);
        if (!ranks.root()) continue;
        const ssm::TopK whole = ssm::exact_top_k(queries, docs, k);
        REQUIRE(merged.ids.cols() == whole.ids.cols());
        CHECK(merged.ids == whole.ids);  // small integers: exact scores, real ties
        CHECK(merged.scores == whole.scores);
    }
}

TEST_CASE("a failure on one rank stops every rank with that rank's message", "[mpi_ranks]") {
    auto& ranks = *g_ranks;
    const int failing = ranks.size() - 1;
    std::string message;
    try {
        ranks.phase([&] {
            if (ranks.rank() == failing) ssm::fail("disk full while writing shard ", failing);
        });
    } catch (const ssm::PeerFailure& e) {
        message = e.what();
    }
    CHECK(message == "rank " + std::to_string(failing) + " of " + std::to_string(ranks.size()) +
                         ": disk full while writing shard " + std::to_string(failing) + " (all ranks stopped)");
    // Two ranks failing: the lower one's message wins; phases keep working afterwards.
    try {
        ranks.phase([&] {
            if (ranks.rank() >= 1) ssm::fail("bad input on ", ranks.rank());
        });
        message.clear();
    } catch (const ssm::PeerFailure& e) {
        message = e.what();
    }
    CHECK(message.find("rank 1 of") == 0);
    CHECK(message.find("bad input on 1") != std::string::npos);
    CHECK(ranks.phase([&] { return ranks.rank() * 2; }) == ranks.rank() * 2);
}

TEST_CASE("sharded encoding gathered over MPI is the single-process encoding bit for bit", "[mpi_ranks]") {
    auto& ranks = *g_ranks;
    const auto model = ssm::MambaRetriever::load(ssm::test::data_dir() / "mamba-tiny");
    std::mt19937_64 rng(9);
    std::vector<std::vector<std::int32_t>> seqs;
    for (int i = 0; i < 41; ++i) {
        std::vector<std::int32_t> s(1 + rng() % 70);
        for (auto& t : s) t = static_cast<std::int32_t>(rng() % 1000);
        seqs.push_back(std::move(s));
    }
    const ssm::index batch = 120;
    const ssm::ShardPlan plan = ssm::plan_shards(ssm::sequence_lengths(seqs), batch, ranks.size());
    const ssm::Matrix mine = ssm::encode_shard(model, seqs, plan, ranks.rank(), {batch, nullptr});
    const ssm::Matrix everywhere = ssm::unshard_rows(ranks.allgather_rows(mine), plan);
    const ssm::Matrix whole = ssm::encode_sequences(model, seqs, {batch, nullptr});
    REQUIRE(everywhere.rows() == whole.rows());
    REQUIRE(everywhere.cols() == whole.cols());
    CHECK(std::memcmp(everywhere.data(), whole.data(), sizeof(float) * static_cast<std::size_t>(whole.size())) == 0);
}

int main(int argc, char* argv[]) {
    ssm::MpiRanks ranks(argc, argv);
    g_ranks = &ranks;
    // Every rank runs and reports the same test cases; the job fails if any rank failed.
    const int failed = Catch::Session().run(argc, argv);
    int any = failed != 0 ? 1 : 0;
    if (ranks.size() > 1) MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}
