// Exact top-k inner-product search against a brute-force reference (every score in
// double, a full sort by score descending then doc index ascending) over many shapes
// (queries 1..70, documents 1..3000, k = 1, 10 and more than there are documents), tile
// shapes, thread counts 1 and 2, and both float32 products (Eigen's, gemm_f32's).
// Small-integer data makes every dot product exact in float, so ties are real and ids must
// match exactly; continuous data is checked for optimality within float rounding.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ssm/retrieval/top_k.hpp"
#include "test_util.hpp"

namespace test_top_k {

namespace {

/// (nrows, cols) with entries drawn uniformly from {-2, ..., 2} (integers) or [-1, 1).
ssm::Matrix random_matrix(ssm::index rows, ssm::index cols, bool integers, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> small(-2, 2);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    ssm::Matrix m(rows, cols);
    for (ssm::index i = 0; i < m.size(); ++i) {
        m.data()[i] = integers ? static_cast<float>(small(rng)) : uniform(rng);
    }
    return m;
}

struct Scored {
    double score;
    ssm::index doc;
};

/// For every query, all documents with their double-precision scores, best first, ties
/// by lower index.
std::vector<std::vector<Scored>> brute_force(const ssm::Matrix& queries, const ssm::Matrix& docs) {
    std::vector<std::vector<Scored>> ranked(static_cast<std::size_t>(queries.rows()));
    for (ssm::index q = 0; q < queries.rows(); ++q) {
        auto& r = ranked[static_cast<std::size_t>(q)];
        for (ssm::index d = 0; d < docs.rows(); ++d) {
            double s = 0;
            for (ssm::index c = 0; c < docs.cols(); ++c)
                s += double{queries(q, c)} * double{docs(d, c)};
            r.push_back({s, d});
        }
        std::sort(r.begin(), r.end(), [](const Scored& a, const Scored& b) {
            return a.score > b.score || (a.score == b.score && a.doc < b.doc);
        });
    }
    return ranked;
}

/// Integer data: every score is exact, so ids and scores must equal the reference's.
/// Returns the first difference, or "" when there is none.
std::string exact_mismatch(const ssm::TopK& got, const std::vector<std::vector<Scored>>& ref,
                           ssm::index k) {
    std::ostringstream why;
    for (std::size_t q = 0; q < ref.size(); ++q) {
        const auto qi = static_cast<ssm::index>(q);
        const ssm::index kk = std::min<ssm::index>(k, static_cast<ssm::index>(ref[q].size()));
        if (got.ids.cols() != kk || got.scores.cols() != kk) return "wrong number of columns";
        for (ssm::index j = 0; j < kk; ++j) {
            const auto& want = ref[q][static_cast<std::size_t>(j)];
            if (got.ids(qi, j) != want.doc || got.scores(qi, j) != static_cast<float>(want.score)) {
                why << "query " << q << ", rank " << j << ": got doc " << got.ids(qi, j)
                    << " score " << got.scores(qi, j) << ", want doc " << want.doc << " score "
                    << want.score;
                return why.str();
            }
        }
    }
    return {};
}

/// Continuous data: ids distinct and in range, scores their dot products, best first with
/// ties by lower index, and position by position as good as the reference's, all within
/// float rounding. Returns the first violation, or "".
std::string close_mismatch(const ssm::TopK& got, const std::vector<std::vector<Scored>>& ref,
                           ssm::index k, const ssm::Matrix& queries, const ssm::Matrix& docs) {
    constexpr double tol = 1e-5;
    std::ostringstream why;
    for (std::size_t q = 0; q < ref.size(); ++q) {
        const auto qi = static_cast<ssm::index>(q);
        const ssm::index kk = std::min<ssm::index>(k, static_cast<ssm::index>(ref[q].size()));
        if (got.ids.cols() != kk || got.scores.cols() != kk) return "wrong number of columns";
        std::vector<ssm::index> ids;
        for (ssm::index j = 0; j < kk; ++j) {
            why << "query " << q << ", rank " << j << ": ";
            const ssm::index id = got.ids(qi, j);
            const float score = got.scores(qi, j);
            if (id < 0 || id >= docs.rows()) return why.str() + "doc index out of range";
            ids.push_back(id);
            double exact = 0;
            for (ssm::index c = 0; c < docs.cols(); ++c)
                exact += double{queries(qi, c)} * double{docs(id, c)};
            if (std::abs(score - exact) > tol)
                return why.str() + "score is not the doc's dot product";
            if (std::abs(score - ref[q][static_cast<std::size_t>(j)].score) > tol) {
                return why.str() + "a better document was missed";
            }
            if (j > 0 && score > got.scores(qi, j - 1)) return why.str() + "scores increase";
            if (j > 0 && score == got.scores(qi, j - 1) && id < got.ids(qi, j - 1)) {
                return why.str() + "tie not broken by lower index";
            }
            why.str("");
        }
        std::sort(ids.begin(), ids.end());
        if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
            return "a document listed twice";
    }
    return {};
}

bool same(const ssm::TopK& a, const ssm::TopK& b) {
    return a.ids == b.ids && a.scores.rows() == b.scores.rows() &&
           a.scores.cols() == b.scores.cols() &&
           std::equal(a.scores.data(), a.scores.data() + a.scores.size(), b.scores.data());
}

}  // namespace

TEST_CASE("exact_top_k matches a brute-force full sort over shapes, tiles and thread counts",
          "[top_k]") {
    const ssm::test::MultiThreadCheck threaded("exact_top_k at 2 and 3 threads");
    const ssm::index query_counts[] = {1, 2, 5, 63, 64, 65, 70};
    const ssm::index doc_counts[] = {1, 2, 7, 100, 1000, 2047, 2048, 2049, 3000};
    const ssm::index dims[] = {1, 8, 33};
    std::size_t calls = 0;
    std::uint64_t seed = 100;
    const auto isas = ssm::test::float32_gemm_isas();
    for (const bool integers : {true, false}) {
        // Eigen's products and gemm_f32's: the ISA is forced per shape, alternating, so
        // both meet every shape kind without doubling the test's time.
        for (const ssm::index nq : query_counts) {
            for (const ssm::index nd : doc_counts) {
                const ssm::index dim = dims[static_cast<std::size_t>(nq + nd) % 3];
                const ssm::CpuIsa isa = isas[static_cast<std::size_t>(seed / 2) % isas.size()];
                const ssm::test::ForceCpuIsa hold(isa);
                INFO((integers ? "integer" : "continuous") << " data, nq " << nq << ", nd " << nd << ", D "
                                                           << dim << ", " << ssm::isa_name(isa));
                const ssm::Matrix queries = random_matrix(nq, dim, integers, seed++);
                const ssm::Matrix docs = random_matrix(nd, dim, integers, seed++);
                const auto ref = brute_force(queries, docs);
                std::vector<ssm::TopKTiles> tiles = {{}, {5, 37}};
                if (nq * nd <= 10000) tiles.push_back({1, 1});
                for (const ssm::index k : {ssm::index{1}, ssm::index{10}, nd + 3}) {
                    ssm::TopK first;
                    for (const int threads : {1, 2, 3}) {
                        ssm::set_num_threads(threads);
                        for (const auto& t : tiles) {
                            INFO("k " << k << ", threads " << threads << ", tiles (" << t.query_rows
                                      << ", " << t.doc_rows << ")");
                            const ssm::TopK got = ssm::exact_top_k(queries, docs, k, t);
                            REQUIRE(got.ids.rows() == nq);
                            REQUIRE(got.scores.rows() == nq);
                            REQUIRE(got.scores.cols() == std::min(k, nd));
                            CHECK((integers ? exact_mismatch(got, ref, k)
                                            : close_mismatch(got, ref, k, queries, docs)) == "");
                            // The default tile shape gives the same bits whatever the thread count.
                            if (threads == 1 && t.query_rows == 64) first = got;
                            if (threads > 1 && t.query_rows == 64) CHECK(same(got, first));
                            ++calls;
                        }
                    }
                }
            }
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
    CHECK(calls > 1000);
    const auto ids =
        ssm::exact_top_k(random_matrix(3, 4, true, 1), random_matrix(9, 4, true, 2), 4).ids;
    CHECK(ids.rows() == 3);
}

TEST_CASE("ties rank the lower document index first", "[top_k]") {
    const ssm::test::MultiThreadCheck threaded("exact_top_k with ties at 2 threads");
    ssm::Matrix docs = random_matrix(3000, 16, true, 5);
    // Copies of row 2999 and 1500 scattered through the collection.
    for (const ssm::index r : {0, 17, 2048, 2047, 2500}) docs.row(r) = docs.row(2999);
    for (const ssm::index r : {1, 999}) docs.row(r) = docs.row(1500);
    const ssm::Matrix queries = random_matrix(70, 16, true, 6);
    const auto ref = brute_force(queries, docs);
    for (const int threads : {1, 2}) {
        ssm::set_num_threads(threads);
        CHECK(exact_mismatch(ssm::exact_top_k(queries, docs, 50), ref, 50) == "");
        CHECK(exact_mismatch(ssm::exact_top_k(queries, docs, 50, {7, 100}), ref, 50) == "");
    }
    ssm::set_num_threads(0);
    threaded.verify();

    // Every score equal: the first k documents, in order.
    const ssm::Matrix ones = ssm::Matrix::Ones(500, 4);
    const auto all = ssm::exact_top_k(ssm::Matrix::Ones(3, 4), ones, 20, {2, 64});
    for (ssm::index q = 0; q < 3; ++q)
        for (ssm::index j = 0; j < 20; ++j) {
            CHECK(all.ids(q, j) == j);
            CHECK(all.scores(q, j) == 4.0f);
        }
    // Zero-width embeddings: all scores 0, same order.
    const auto empty = ssm::exact_top_k(ssm::Matrix(2, 0), ssm::Matrix(6, 0), 4);
    for (ssm::index j = 0; j < 4; ++j) CHECK(empty.ids(1, j) == j);
    CHECK(empty.scores.isZero());
}

TEST_CASE("edge shapes, NaN scores and bad arguments", "[top_k]") {
    const ssm::Matrix q = random_matrix(4, 3, false, 8);
    const ssm::Matrix d = random_matrix(10, 3, false, 9);
    auto r = ssm::exact_top_k(q, d, 0);
    CHECK(r.ids.rows() == 4);
    CHECK(r.ids.cols() == 0);
    r = ssm::exact_top_k(q, ssm::Matrix(0, 3), 5);
    CHECK(r.ids.rows() == 4);
    CHECK(r.ids.cols() == 0);
    r = ssm::exact_top_k(ssm::Matrix(0, 3), d, 5);
    CHECK(r.ids.rows() == 0);
    CHECK(r.scores.cols() == 5);

    // A document scoring NaN ranks last, reported as -inf, and never displaces another.
    ssm::Matrix with_nan = ssm::Matrix::Ones(5, 2);
    with_nan(1, 0) = std::numeric_limits<float>::quiet_NaN();
    with_nan(3, 1) = 2.0f;
    r = ssm::exact_top_k(ssm::Matrix::Ones(1, 2), with_nan, 5);
    CHECK(r.ids(0, 0) == 3);
    CHECK(r.ids(0, 4) == 1);
    CHECK(r.scores(0, 4) == -std::numeric_limits<float>::infinity());
    r = ssm::exact_top_k(ssm::Matrix::Ones(1, 2), with_nan, 4);
    CHECK((r.ids.array() != 1).all());

    auto msg =
        ssm::test::error_of([&] { (void)ssm::exact_top_k(q, random_matrix(10, 4, false, 1), 3); });
    CHECK(msg.find("3 columns") != std::string::npos);
    CHECK(msg.find("4") != std::string::npos);
    msg = ssm::test::error_of([&] { (void)ssm::exact_top_k(q, d, -1); });
    CHECK(msg.find("k must be >= 0") != std::string::npos);
    msg = ssm::test::error_of([&] { (void)ssm::exact_top_k(q, d, 3, {0, 10}); });
    CHECK(msg.find("tile") != std::string::npos);
}

TEST_CASE("normalize_rows gives unit rows in the same direction; zero rows stay zero", "[top_k]") {
    const ssm::test::MultiThreadCheck threaded("normalize_rows at 2 threads");
    for (const int threads : {1, 2}) {
        ssm::set_num_threads(threads);
        ssm::Matrix m = random_matrix(5000, 24, false, 11) * 30.0f;
        m.row(3).setZero();
        m.row(4000).setZero();
        const ssm::Matrix before = m;
        ssm::normalize_rows(m);
        for (ssm::index r = 0; r < m.rows(); ++r) {
            if (r == 3 || r == 4000) {
                CHECK(m.row(r).isZero(0.0f));
                continue;
            }
            REQUIRE(std::abs(m.row(r).norm() - 1.0f) < 1e-6f);
            REQUIRE((m.row(r) * before.row(r).norm() - before.row(r)).norm() <
                    1e-4f * before.row(r).norm());
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

}  // namespace test_top_k
