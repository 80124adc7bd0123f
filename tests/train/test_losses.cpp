// The training losses against (1) closed forms on small cases, (2) a naive double-precision
// evaluation written from the definitions, and (3) central finite differences of the loss
// itself for every input entry. Inputs are multiples of 2⁻¹² and the step is 2⁻¹⁰, so
// x ± h is exact in float32 and the difference quotient is exact up to O(h²).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/threads.hpp"
#include "ssm/train/losses.hpp"
#include "test_util.hpp"

namespace test_losses {

namespace {

using ssm::Matrix;

/// |a − b| ≤ rel·|b|, with both values in the failure message.
void check_rel(double a, double b, double rel) {
    INFO("got " << a << ", expected " << b);
    CHECK(std::abs(a - b) <= rel * std::abs(b));
}
/// |a − b| ≤ tol.
void check_abs(double a, double b, double tol) {
    INFO("got " << a << ", expected " << b);
    CHECK(std::abs(a - b) <= tol);
}
/// `f` throws ssm::Error whose message contains `part`.
template <class F>
void check_error(F&& f, const std::string& part) {
    const std::string message = ssm::test::error_of(f);
    INFO("message: " << message);
    CHECK(message.find(part) != std::string::npos);
}

constexpr float kStep = 1.0f / 1024.0f;

/// A (rows, cols) matrix of multiples of 2⁻¹² in [−range, range].
Matrix grid_matrix(ssm::index rows, ssm::index cols, float range, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int steps = static_cast<int>(range * 4096.0f);
    std::uniform_int_distribution<int> dist(-steps, steps);
    Matrix m(rows, cols);
    for (ssm::index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(dist(rng)) / 4096.0f;
    return m;
}

/// Central difference of `loss` w.r.t. every entry of `x` (x is restored afterwards).
template <class Loss>
std::vector<float> finite_differences(std::span<float> x, Loss&& loss) {
    std::vector<float> g(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
        const float keep = x[i];
        x[i] = keep + kStep;
        const double up = loss();
        x[i] = keep - kStep;
        const double down = loss();
        x[i] = keep;
        g[i] = static_cast<float>((up - down) / (2.0 * static_cast<double>(kStep)));
    }
    return g;
}

std::span<float> all_of(Matrix& m) {
    return {m.data(), static_cast<std::size_t>(m.size())};
}

double log_sum_exp(const std::vector<double>& v) {
    double m = -std::numeric_limits<double>::infinity();
    for (double x : v) m = std::max(m, x);
    double s = 0;
    for (double x : v) s += std::exp(x - m);
    return m + std::log(s);
}

/// Causal LM loss from the definition: every sequence alone, every next token.
double naive_lm(const Matrix& logits, const std::vector<std::int32_t>& ids,
                const std::vector<ssm::index>& offsets) {
    double total = 0;
    ssm::index count = 0;
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s)
        for (ssm::index t = offsets[s]; t + 1 < offsets[s + 1]; ++t) {
            std::vector<double> row(static_cast<std::size_t>(logits.cols()));
            for (ssm::index v = 0; v < logits.cols(); ++v)
                row[static_cast<std::size_t>(v)] = logits(t, v);
            total += log_sum_exp(row) - logits(t, ids[static_cast<std::size_t>(t + 1)]);
            ++count;
        }
    return total / static_cast<double>(count);
}

/// InfoNCE from the definition: scores against every passage, target i·G.
double naive_info_nce(const Matrix& q, const Matrix& p, ssm::index g, double tau) {
    double total = 0;
    for (ssm::index i = 0; i < q.rows(); ++i) {
        std::vector<double> s(static_cast<std::size_t>(p.rows()));
        for (ssm::index j = 0; j < p.rows(); ++j) {
            double dot = 0;
            for (ssm::index k = 0; k < q.cols(); ++k) dot += static_cast<double>(q(i, k)) * p(j, k);
            s[static_cast<std::size_t>(j)] = dot / tau;
        }
        total += log_sum_exp(s) - s[static_cast<std::size_t>(i * g)];
    }
    return total / static_cast<double>(q.rows());
}

}  // namespace

TEST_CASE("causal_lm_loss: uniform logits give log V and (1/V − one-hot)/count") {
    const ssm::index V = 5;
    const std::vector<std::int32_t> ids = {1, 3, 0, 4, 2};  // sequences [1 3 0] and [4 2]
    const std::vector<ssm::index> offsets = {0, 3, 5};
    const Matrix logits = Matrix::Constant(5, V, 0.75f);
    Matrix d;
    const double loss = ssm::train::causal_lm_loss(logits, ids, offsets, d);
    check_rel(loss, std::log(5.0), 1e-12);
    // 3 predictions: rows 0, 1 (targets 3, 0) and row 3 (target 2); rows 2 and 4 end a sequence.
    for (ssm::index t = 0; t < 5; ++t)
        for (ssm::index v = 0; v < V; ++v) {
            double expect = 0;
            if (t == 0) expect = (0.2 - (v == 3)) / 3;
            if (t == 1) expect = (0.2 - (v == 0)) / 3;
            if (t == 3) expect = (0.2 - (v == 2)) / 3;
            INFO("t " << t << " v " << v);
            check_abs(d(t, v), expect, 5e-8);
        }
}

TEST_CASE(
    "causal_lm_loss: equals the definition and its finite differences; no prediction crosses a "
    "boundary") {
    const ssm::index V = 7;
    const std::vector<std::int32_t> ids = {2, 6, 6, 0, 1, 5, 3, 4, 0, 2};
    const std::vector<ssm::index> offsets = {0, 4, 5,
                                             10};  // lengths 4, 1, 5 → 3 + 0 + 4 predictions
    Matrix logits = grid_matrix(10, V, 3.0f, 11);
    Matrix d;
    const double loss = ssm::train::causal_lm_loss(logits, ids, offsets, d);
    check_rel(loss, naive_lm(logits, ids, offsets), 1e-12);

    Matrix scratch;
    const auto fd = finite_differences(
        all_of(logits), [&] { return ssm::train::causal_lm_loss(logits, ids, offsets, scratch); });
    CHECK(ssm::test::rel_error(ssm::test::span_of(d), fd) < 1e-5);
    // the last row of each sequence predicts nothing, so its gradient is exactly zero
    for (ssm::index t : {3, 4, 9}) CHECK(d.row(t).isZero(0.0f));
    // each predicting row's gradient sums to zero (softmax − one-hot)
    for (ssm::index t : {0, 1, 2, 5, 6, 7, 8}) CHECK(std::abs(d.row(t).sum()) < 1e-7f);
}

TEST_CASE("causal_lm_loss: a packed batch is the prediction-weighted mean of its sequences alone") {
    const ssm::index V = 6;
    const std::vector<std::int32_t> a = {1, 2, 3, 4}, b = {5, 0, 1};
    std::vector<std::int32_t> ab = a;
    ab.insert(ab.end(), b.begin(), b.end());
    const Matrix logits = grid_matrix(7, V, 2.0f, 5);
    Matrix d_ab, d_a, d_b;
    const std::vector<ssm::index> off_ab = {0, 4, 7}, off_a = {0, 4}, off_b = {0, 3};
    const double l_ab = ssm::train::causal_lm_loss(logits, ab, off_ab, d_ab);
    const double l_a = ssm::train::causal_lm_loss(Matrix(logits.topRows(4)), a, off_a, d_a);
    const double l_b = ssm::train::causal_lm_loss(Matrix(logits.bottomRows(3)), b, off_b, d_b);
    check_rel(l_ab, (3 * l_a + 2 * l_b) / 5, 1e-12);
    // gradients: each part scaled by its share of the predictions
    CHECK(ssm::test::rel_error(ssm::test::span_of(Matrix(d_ab.topRows(4) * (5.0f / 3.0f))),
                               ssm::test::span_of(d_a)) < 1e-6);
    CHECK(ssm::test::rel_error(ssm::test::span_of(Matrix(d_ab.bottomRows(3) * (5.0f / 2.0f))),
                               ssm::test::span_of(d_b)) < 1e-6);
}

TEST_CASE("causal_lm_loss: stable for huge logits, same for any thread count, strided views") {
    const ssm::index V = 300;
    std::vector<std::int32_t> ids(64);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 37) % V);
    const std::vector<ssm::index> offsets = {0, 20, 64};
    const Matrix logits = grid_matrix(64, V, 4.0f, 3);
    Matrix d1, d2;
    ssm::set_num_threads(1);
    const double l1 = ssm::train::causal_lm_loss(logits, ids, offsets, d1);
    ssm::set_num_threads(2);
    const double l2 = ssm::train::causal_lm_loss(logits, ids, offsets, d2);
    ssm::set_num_threads(0);
    CHECK(l1 == l2);
    CHECK(d1 == d2);
    check_rel(l1, naive_lm(logits, ids, offsets), 1e-12);

    // adding 5000 to every logit changes nothing (no overflow in exp); float32 spacing at
    // 5000 is 2⁻¹¹, and our logits are multiples of 2⁻¹², so compare to the rounded input
    Matrix shifted = logits.array() + 5000.0f;
    Matrix ds;
    const double ls = ssm::train::causal_lm_loss(shifted, ids, offsets, ds);
    Matrix rounded = shifted.array() - 5000.0f;
    check_rel(ls, naive_lm(rounded, ids, offsets), 1e-12);
    CHECK(std::isfinite(ls));

    // a column slice of a wider matrix (outer stride > V)
    Matrix wide = Matrix::Zero(64, V + 9);
    wide.leftCols(V) = logits;
    Matrix dwide = Matrix::Constant(64, V + 9, 7.0f);
    const double lw = ssm::train::causal_lm_loss(
        ssm::ConstStridedMap(wide.data(), 64, V, Eigen::OuterStride<>(V + 9)), ids, offsets,
        ssm::StridedMap(dwide.data(), 64, V, Eigen::OuterStride<>(V + 9)));
    CHECK(lw == l1);
    CHECK(Matrix(dwide.leftCols(V)) == d1);
    CHECK((dwide.rightCols(9).array() == 7.0f).all());  // untouched beyond the view
}

TEST_CASE("cross_entropy_rows over blocks of rows gives causal_lm_loss and its gradient") {
    const ssm::index V = 11, T = 14;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(T));
    for (std::size_t i = 0; i < ids.size(); ++i)
        ids[i] = static_cast<std::int32_t>((i * 7 + 3) % V);
    const std::vector<ssm::index> offsets = {0, 5, 6, 14};
    const Matrix logits = grid_matrix(T, V, 3.0f, 51);
    Matrix d_whole;
    const double whole = ssm::train::causal_lm_loss(logits, ids, offsets, d_whole);

    const auto targets = ssm::train::next_token_targets(ids, offsets, V);
    CHECK(targets.count == 4 + 0 + 7);
    CHECK(targets.target[4] == -1);  // last token of the first sequence
    CHECK(targets.target[5] == -1);  // a sequence of one token
    CHECK(targets.target[6] == ids[7]);
    const double scale = 1.0 / static_cast<double>(targets.count);
    Matrix d_blocks(T, V);
    double sum = 0;
    for (ssm::index b = 0; b < T; b += 4) {  // blocks of 4 rows cut across sequences
        const ssm::index n = std::min<ssm::index>(4, T - b);
        sum += ssm::train::cross_entropy_rows(
            ssm::ConstStridedMap(logits.data() + b * V, n, V, Eigen::OuterStride<>(V)),
            std::span(targets.target)
                .subspan(static_cast<std::size_t>(b), static_cast<std::size_t>(n)),
            scale, ssm::StridedMap(d_blocks.data() + b * V, n, V, Eigen::OuterStride<>(V)));
    }
    check_rel(sum * scale, whole, 1e-14);
    CHECK(d_blocks == d_whole);  // row by row the same arithmetic

    Matrix d(2, V);
    check_error(
        [&] {
            (void)ssm::train::cross_entropy_rows(ssm::cview(Matrix(logits.topRows(2))),
                                                 std::vector<std::int32_t>{3, 11}, 1.0,
                                                 ssm::view(d));
        },
        "target 11 of row 1 is outside the vocabulary of 11");
}

TEST_CASE("causal_lm_loss: bad input is an error naming it") {
    const Matrix logits = Matrix::Zero(4, 5);
    Matrix d;
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, 2, 5, 0},
                                             std::vector<ssm::index>{0, 4}, d);
        },
        "token id 5 at position 2");
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, -1, 2, 0},
                                             std::vector<ssm::index>{0, 4}, d);
        },
        "token id -1 at position 1");
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, 2, 3, 0},
                                             std::vector<ssm::index>{0, 2, 2, 4}, d);
        },
        "sequence 1 is empty");
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, 2, 3, 0},
                                             std::vector<ssm::index>{0, 1, 2, 3, 4}, d);
        },
        "nothing to predict");
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, 2, 3},
                                             std::vector<ssm::index>{0, 3}, d);
        },
        "ids has 3 tokens");
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(logits, std::vector<std::int32_t>{1, 2, 3, 0},
                                             std::vector<ssm::index>{0, 3}, d);
        },
        "offsets must run from 0 to the token count 4");
    Matrix nan_logits = Matrix::Zero(4, 5);
    nan_logits(1, 3) = std::numeric_limits<float>::quiet_NaN();
    check_error(
        [&] {
            (void)ssm::train::causal_lm_loss(nan_logits, std::vector<std::int32_t>{1, 2, 3, 0},
                                             std::vector<ssm::index>{0, 4}, d);
        },
        "logits row 1 is not finite");
}

TEST_CASE("info_nce_loss: a closed form with one query") {
    // q = (1, 0); passages (1, 0) positive, (0, 1) negative; τ = 0.5 → scores (2, 0)
    Matrix q(1, 2), p(2, 2);
    q << 1, 0;
    p << 1, 0, 0, 1;
    Matrix dq, dp;
    const double loss = ssm::train::info_nce_loss(q, p, 2, 0.5, dq, dp);
    check_rel(loss, std::log(std::exp(2.0) + 1.0) - 2.0, 1e-12);
    const double s0 = std::exp(2.0) / (std::exp(2.0) + 1.0), s1 = 1.0 - s0;
    // dL/dS = (s0 − 1, s1); dq = dS·p / τ, dp = dSᵀ·q / τ
    check_rel(dq(0, 0), (s0 - 1) / 0.5, 1e-6);
    check_rel(dq(0, 1), s1 / 0.5, 1e-6);
    check_rel(dp(0, 0), (s0 - 1) / 0.5, 1e-6);
    check_rel(dp(1, 0), s1 / 0.5, 1e-6);
    CHECK(dp(0, 1) == 0.0f);
    CHECK(dp(1, 1) == 0.0f);
}

TEST_CASE(
    "info_nce_loss: equals the definition with in-batch negatives and its finite differences") {
    const ssm::index nq = 3, G = 4, D = 5;
    const double tau = 0.25;
    Matrix q = grid_matrix(nq, D, 1.0f, 21), p = grid_matrix(nq * G, D, 1.0f, 22);
    Matrix dq, dp;
    const double loss = ssm::train::info_nce_loss(q, p, G, tau, dq, dp);
    check_rel(loss, naive_info_nce(q, p, G, tau), 1e-12);
    // in-batch negatives matter: each query against its own group alone gives another loss
    double own_groups = 0;
    for (ssm::index i = 0; i < nq; ++i)
        own_groups += naive_info_nce(Matrix(q.row(i)), Matrix(p.middleRows(i * G, G)), G, tau);
    CHECK(std::abs(loss - own_groups / nq) > 1e-3);

    Matrix sq, sp;
    const auto fq = finite_differences(
        all_of(q), [&] { return ssm::train::info_nce_loss(q, p, G, tau, sq, sp); });
    const auto fp = finite_differences(
        all_of(p), [&] { return ssm::train::info_nce_loss(q, p, G, tau, sq, sp); });
    CHECK(ssm::test::rel_error(ssm::test::span_of(dq), fq) < 1e-5);
    CHECK(ssm::test::rel_error(ssm::test::span_of(dp), fp) < 1e-5);
}

TEST_CASE("info_nce_loss: τ = 0.01 on unit vectors stays finite and exact") {
    const ssm::index nq = 4, G = 3, D = 8;
    Matrix q = grid_matrix(nq, D, 1.0f, 31), p = grid_matrix(nq * G, D, 1.0f, 32);
    q.rowwise().normalize();
    p.rowwise().normalize();
    Matrix dq, dp;
    const double loss = ssm::train::info_nce_loss(q, p, G, 0.01, dq, dp);
    CHECK(std::isfinite(loss));
    check_rel(loss, naive_info_nce(q, p, G, 0.01), 1e-12);
    CHECK(dq.allFinite());
    CHECK(dp.allFinite());
}

TEST_CASE("info_nce_loss: bad input is an error naming it") {
    const Matrix q = Matrix::Ones(3, 4), p = Matrix::Ones(8, 4), p5 = Matrix::Ones(9, 5);
    Matrix dq, dp;
    check_error([&] { (void)ssm::train::info_nce_loss(q, p, 3, 0.01, dq, dp); },
                "8 passages for 3 queries and group size 3");
    check_error([&] { (void)ssm::train::info_nce_loss(q, p, 0, 0.01, dq, dp); },
                "group size must be at least 1, got 0");
    check_error([&] { (void)ssm::train::info_nce_loss(q, p5, 3, 0.01, dq, dp); },
                "width 4 but passages 5");
    check_error(
        [&] { (void)ssm::train::info_nce_loss(q, Matrix(Matrix::Ones(9, 4)), 3, 0.0, dq, dp); },
        "temperature must be positive");
    check_error(
        [&] { (void)ssm::train::info_nce_loss(Matrix(0, 4), Matrix(0, 4), 3, 0.01, dq, dp); },
        "no queries");
    Matrix pn = Matrix::Ones(9, 4);
    pn(7, 2) = std::numeric_limits<float>::infinity();
    check_error([&] { (void)ssm::train::info_nce_loss(q, pn, 3, 0.01, dq, dp); },
                "passages row 7 is not finite");
}

TEST_CASE("listwise_softmax_loss: closed forms, the definition and finite differences") {
    {  // equal scores: log G, gradient (1/G − one-hot)/ngroups
        const std::vector<float> s(8, 1.5f);
        std::vector<float> d(8);
        check_rel(ssm::train::listwise_softmax_loss(s, 4, d), std::log(4.0), 1e-12);
        for (std::size_t j = 0; j < 8; ++j) check_abs(d[j], (0.25 - (j % 4 == 0)) / 2, 5e-8);
    }
    const ssm::index G = 4, groups = 3;
    Matrix s = grid_matrix(1, groups * G, 6.0f, 41);
    std::vector<float> d(static_cast<std::size_t>(groups * G));
    const double loss = ssm::train::listwise_softmax_loss(all_of(s), G, d);
    double expect = 0;
    for (ssm::index g = 0; g < groups; ++g) {
        std::vector<double> v;
        for (ssm::index j = 0; j < G; ++j) v.push_back(s(0, g * G + j));
        expect += log_sum_exp(v) - v[0];
    }
    check_rel(loss, expect / groups, 1e-12);
    std::vector<float> scratch(d.size());
    const auto fd = finite_differences(
        all_of(s), [&] { return ssm::train::listwise_softmax_loss(all_of(s), G, scratch); });
    CHECK(ssm::test::rel_error(d, fd) < 1e-5);
    // large scores: the same loss after a shift (exact in float32: spacing 2⁻¹³ near 1024)
    Matrix big = s.array() + 1024.0f;
    check_rel(ssm::train::listwise_softmax_loss(all_of(big), G, scratch), loss, 1e-12);
}

TEST_CASE("listwise_softmax_loss: bad input is an error naming it") {
    std::vector<float> s(10, 0.0f), d(10);
    check_error([&] { (void)ssm::train::listwise_softmax_loss(s, 4, d); },
                "10 scores do not form whole groups of 4");
    check_error([&] { (void)ssm::train::listwise_softmax_loss(s, 1, d); },
                "group size must be at least 2");
    std::vector<float> d3(3);
    check_error([&] { (void)ssm::train::listwise_softmax_loss(s, 5, d3); },
                "dscores has 3 entries");
    s[6] = std::numeric_limits<float>::quiet_NaN();
    check_error([&] { (void)ssm::train::listwise_softmax_loss(s, 5, d); },
                "score 6 (group 1) is nan");
}

}  // namespace test_losses
