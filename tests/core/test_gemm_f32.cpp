// gemm_f32 (AVX2 + FMA register tiles) against a product summed in double: edge shapes on
// every side of its 6 × 16 tiles, 256-deep blocks and 96-row blocks, the three operand forms
// Linear uses (x·Wᵀ, dy·W, dyᵀ·x), overwrite and accumulate, strided outputs whose other
// columns it must not touch; results that do not depend on how the product is split; the
// refusal when the dispatch is not AVX2; the serial entry point against the threaded one,
// and `serial_product`'s four transpose forms through each instruction set; and Linear's
// forward and both backward products through each instruction set this CPU runs.
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "ssm/core/gemm_f32.hpp"
#include "ssm/layers/linear.hpp"
#include "ssm/train/parameters.hpp"
#include "test_util.hpp"
#include "train/gradient_check.hpp"

namespace test_gemm_f32 {

namespace {

using ssm::GemmOperand;
using ssm::index;

// Float32 sums of K products stay within ~K·2⁻²⁴ of Σ|a·b| (well under 1e-5 for K ≤ 600);
// a product that drops or doubles one term is off by ~1/K of it, over 1e-3.
constexpr double kBound = 1e-5;

struct Problem {
    index M, N, K;
    int form;  // 0: A rows · Bᵀ (x·Wᵀ); 1: A rows · B rows (dy·W); 2: Aᵀ · B rows (dyᵀ·x)
    std::vector<float> a, b;
    GemmOperand A, B;

    Problem(index m, index n, index k, int f, std::uint64_t seed) : M(m), N(n), K(k), form(f) {
        a = ssm::test::random_floats(static_cast<std::size_t>(M * K + 3), -1.0f, 1.0f, seed);
        b = ssm::test::random_floats(static_cast<std::size_t>(N * K + 3), -1.0f, 1.0f, seed + 1);
        A = form == 2 ? GemmOperand::transposed(a.data(), M) : GemmOperand::rows(a.data(), K);
        B = form == 0 ? GemmOperand::transposed(b.data(), K) : GemmOperand::rows(b.data(), N);
    }
    [[nodiscard]] double at_a(index i, index k) const { return A.data[i * A.row_stride + k * A.col_stride]; }
    [[nodiscard]] double at_b(index k, index j) const { return B.data[k * B.row_stride + j * B.col_stride]; }
};

// The worst |c − exact| / Σ|a·b| over C (M, N; ldc), `start` holding C's values before an
// accumulating call (empty: overwritten).
double worst_error(const Problem& p, const std::vector<float>& c, index ldc, const std::vector<float>& start) {
    return ssm::test::worst_product_error(
        p.M, p.N, p.K, [&](index i, index k) { return p.at_a(i, k); }, [&](index k, index j) { return p.at_b(k, j); },
        c, ldc, start);
}

}  // namespace

TEST_CASE("gemm_f32 refuses to run unless the dispatch is AVX2", "[gemm]") {
    const ssm::test::ForceCpuIsa generic(ssm::CpuIsa::Generic);
    CHECK_FALSE(ssm::gemm_f32_available());
    std::vector<float> a(4, 1.0f), c(4);
    CHECK(ssm::test::error_of([&] {
              ssm::gemm_f32(GemmOperand::rows(a.data(), 2), GemmOperand::rows(a.data(), 2), 2, 2, 2, c.data(), 2,
                            false);
          }).find("AVX2") != std::string::npos);
}

TEST_CASE("gemm_f32 equals a double-precision product over edge shapes, operand forms and strides", "[gemm]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx2)) {
        WARN("this CPU has no AVX2 + FMA: gemm_f32 cannot run here, nothing of it was checked");
        return;
    }
    const ssm::test::ForceCpuIsa avx2(ssm::CpuIsa::Avx2);
    REQUIRE(ssm::gemm_f32_available());
    std::uint64_t seed = 100;
    for (const index M : {1, 5, 6, 7, 13, 97, 800})
        for (const index N : {1, 15, 16, 17, 300})
            for (const index K : {1, 7, 256, 257, 600})
                for (const int form : {0, 1, 2})
                    for (const bool accumulate : {false, true}) {
                        INFO("M " << M << " N " << N << " K " << K << " form " << form << " accumulate " << accumulate);
                        const Problem p(M, N, K, form, seed += 2);
                        const index ldc = N + 3;  // three columns it must leave alone
                        std::vector<float> c = ssm::test::random_floats(static_cast<std::size_t>(M * ldc), -1.0f, 1.0f,
                                                                        seed + 7);
                        const std::vector<float> before = c;
                        ssm::gemm_f32(p.A, p.B, M, N, K, c.data(), ldc, accumulate);
                        CHECK(worst_error(p, c, ldc, accumulate ? before : std::vector<float>{}) < kBound);
                        bool outside_kept = true;
                        for (index i = 0; i < M; ++i)
                            for (index j = N; j < ldc; ++j)
                                outside_kept = outside_kept && c[static_cast<std::size_t>(i * ldc + j)] ==
                                                                   before[static_cast<std::size_t>(i * ldc + j)];
                        CHECK(outside_kept);
                    }
    // No depth: C is zeroed, or left as it is when accumulating.
    std::vector<float> a(6, 1.0f), c(6, 5.0f);
    ssm::gemm_f32(GemmOperand::rows(a.data(), 0), GemmOperand::rows(a.data(), 3), 2, 3, 0, c.data(), 3, true);
    CHECK(c == std::vector<float>(6, 5.0f));
    ssm::gemm_f32(GemmOperand::rows(a.data(), 0), GemmOperand::rows(a.data(), 3), 2, 3, 0, c.data(), 3, false);
    CHECK(c == std::vector<float>(6, 0.0f));
}

TEST_CASE("gemm_f32 gives the same bits however the product is split over rows, columns and threads", "[gemm]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx2)) {
        WARN("this CPU has no AVX2 + FMA: gemm_f32 cannot run here, nothing of it was checked");
        return;
    }
    const ssm::test::ForceCpuIsa avx2(ssm::CpuIsa::Avx2);
    const index M = 900, N = 530, K = 700;  // several row tasks, column blocks and depth blocks
    const Problem p(M, N, K, 0, 9);
    std::vector<float> whole(static_cast<std::size_t>(M * N)), parts(whole.size());
    ssm::gemm_f32(p.A, p.B, M, N, K, whole.data(), N, false);
    // Rows [0, 301) and [301, M), each in two column ranges: every tile boundary moves.
    for (const index r0 : {index{0}, index{301}})
        for (const index c0 : {index{0}, index{37}}) {
            const index rows = r0 == 0 ? 301 : M - 301, cols = c0 == 0 ? 37 : N - 37;
            const GemmOperand A = GemmOperand::rows(p.a.data() + r0 * K, K);
            const GemmOperand B = GemmOperand::transposed(p.b.data() + c0 * K, K);
            ssm::gemm_f32(A, B, rows, cols, K, parts.data() + r0 * N + c0, N, false);
        }
    CHECK(parts == whole);
    ssm::set_num_threads(1);  // one thread takes every task in turn
    std::vector<float> one(whole.size());
    ssm::gemm_f32(p.A, p.B, M, N, K, one.data(), N, false);
    ssm::set_num_threads(0);
    CHECK(one == whole);
    // dW's form (Aᵀ · B, A copied a block at a time) with rows enough for the wide column
    // blocks at one and two threads, and not at three.
    const index Mt = 3100, Nt = 300, Kt = 70;
    const Problem q(Mt, Nt, Kt, 2, 21);
    std::vector<std::vector<float>> by_threads;
    for (const int threads : {1, 2, 3}) {
        ssm::set_num_threads(threads);
        by_threads.emplace_back(static_cast<std::size_t>(Mt * Nt));
        ssm::gemm_f32(q.A, q.B, Mt, Nt, Kt, by_threads.back().data(), Nt, false);
    }
    ssm::set_num_threads(0);
    CHECK(by_threads[1] == by_threads[0]);
    CHECK(by_threads[2] == by_threads[0]);
    CHECK(worst_error(q, by_threads[0], Nt, {}) < kBound);
}

TEST_CASE("gemm_f32_serial, on the calling thread, gives gemm_f32's bits", "[gemm]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx2)) {
        WARN("this CPU has no AVX2 + FMA: gemm_f32 cannot run here, nothing of it was checked");
        return;
    }
    const ssm::test::ForceCpuIsa avx2(ssm::CpuIsa::Avx2);
    // Past 256 columns, 768 rows and 256 deep: every block boundary of both entry points.
    for (const auto& [M, N, K] : {std::array<index, 3>{900, 530, 700}, {64, 2112, 128}, {64, 128, 2112}, {5, 3, 1}})
        for (const int form : {0, 1, 2})
            for (const bool accumulate : {false, true}) {
                INFO("M " << M << ", N " << N << ", K " << K << ", form " << form << ", accumulate " << accumulate);
                const Problem p(M, N, K, form, static_cast<std::uint64_t>(M + N + K + form));
                const auto start = ssm::test::random_floats(static_cast<std::size_t>(M * N), -1.0f, 1.0f, 17);
                std::vector<float> serial = start;
                ssm::gemm_f32_serial(p.A, p.B, M, N, K, serial.data(), N, accumulate);
                for (const int threads : {2, 3}) {  // different column blocks from the serial 256
                    ssm::set_num_threads(threads);
                    std::vector<float> threaded = start;
                    ssm::gemm_f32(p.A, p.B, M, N, K, threaded.data(), N, accumulate);
                    CHECK(serial == threaded);
                }
                ssm::set_num_threads(0);
                CHECK(worst_error(p, serial, N, accumulate ? start : std::vector<float>{}) < kBound);
            }
}

TEST_CASE("serial_product computes op(A)·op(B) into row-major blocks through each instruction set", "[gemm]") {
    // Strided blocks of larger matrices, as the attention and retrieval tiles pass them.
    const index M = 70, N = 45, K = 300;
    const ssm::Matrix a = ssm::test::random_matrix(M + 3, K + 5, -1, 1, 21);   // A = a(1.., 2..)
    const ssm::Matrix at = ssm::test::random_matrix(K + 2, M + 4, -1, 1, 22);  // Aᵀ stored
    const ssm::Matrix b = ssm::test::random_matrix(K + 1, N + 6, -1, 1, 23);
    const ssm::Matrix bt = ssm::test::random_matrix(N + 2, K + 3, -1, 1, 24);
    for (const ssm::CpuIsa isa : ssm::test::float32_gemm_isas())
        for (const bool ta : {false, true})
            for (const bool tb : {false, true})
                for (const bool accumulate : {false, true}) {
                    INFO(ssm::isa_name(isa) << ", ta " << ta << ", tb " << tb << ", accumulate " << accumulate);
                    const ssm::test::ForceCpuIsa hold(isa);
                    const auto A = ta ? at.block(1, 2, K, M) : a.block(1, 2, M, K);
                    const auto B = tb ? bt.block(2, 1, N, K) : b.block(1, 3, K, N);
                    const ssm::Matrix start = ssm::test::random_matrix(M + 2, N + 8, -1, 1, 25);
                    ssm::Matrix c = start;
                    ssm::serial_product(c.block(2, 4, M, N), A, ta, B, tb, accumulate);
                    double worst = 0.0;
                    bool outside_kept = true;
                    for (index i = 0; i < c.rows(); ++i)
                        for (index j = 0; j < c.cols(); ++j) {
                            if (i < 2 || i >= M + 2 || j < 4 || j >= N + 4) {
                                outside_kept = outside_kept && c(i, j) == start(i, j);
                                continue;
                            }
                            double sum = accumulate ? start(i, j) : 0.0, mag = std::fabs(sum);
                            for (index k = 0; k < K; ++k) {
                                const double t = double{ta ? A(k, i - 2) : A(i - 2, k)} *
                                                 double{tb ? B(j - 4, k) : B(k, j - 4)};
                                sum += t;
                                mag += std::fabs(t);
                            }
                            worst = std::max(worst, std::fabs(sum - c(i, j)) / mag);
                        }
                    CHECK(outside_kept);
                    CHECK(worst < kBound);
                }
    // No depth (embeddings of width 0): the product is zero, whatever the operands point at.
    for (const ssm::CpuIsa isa : ssm::test::float32_gemm_isas()) {
        const ssm::test::ForceCpuIsa hold(isa);
        const ssm::Matrix none_a(3, 0), none_b(5, 0);
        ssm::Matrix z = ssm::Matrix::Constant(3, 5, 2.0f);
        ssm::serial_product(z, none_a, false, none_b, true, false);
        CHECK(z.isZero(0.0f));
    }
    ssm::Matrix wrong(3, 4);
    const std::string why = ssm::test::error_of(
        [&] { ssm::serial_product(wrong, a.block(0, 0, 3, 5), false, b.block(0, 0, 6, 4), false, false); });
    CHECK(why.find("serial_product: shapes (3, 4) = (3, 5) · (6, 4)") != std::string::npos);
}

TEST_CASE("Linear's forward and backward products agree with the exact ones through each instruction set",
          "[gemm]") {
    const index rows = 70, in = 300, out = 90;  // many rows: the GEMM paths
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(out * in), -0.5f, 0.5f, 3);
    const ssm::Matrix x = ssm::test::random_matrix(rows, in, -1, 1, 4);
    const ssm::Matrix g = ssm::test::random_matrix(rows, out, -1, 1, 5);
    std::vector<ssm::CpuIsa> isas = {ssm::CpuIsa::Generic};
    if (ssm::cpu_supports(ssm::CpuIsa::Avx2)) isas.push_back(ssm::CpuIsa::Avx2);
    if (ssm::detected_cpu_isa() != ssm::CpuIsa::Generic && ssm::detected_cpu_isa() != ssm::CpuIsa::Avx2)
        isas.push_back(ssm::detected_cpu_isa());
    for (const ssm::CpuIsa isa : isas) {
        INFO(ssm::isa_name(isa));
        const ssm::test::ForceCpuIsa hold(isa);
        CHECK(ssm::gemm_f32_available() == (isa == ssm::CpuIsa::Avx2));
        ssm::Linear lin(ssm::Tensor::from({out, in}, w), std::nullopt);
        ssm::train::Parameters params;
        lin.register_parameters(params, "proj");
        ssm::Matrix y(rows, out), dx(rows, in);
        lin.forward(x, y);
        lin.backward(ssm::cview(x), ssm::cview(g), ssm::view(dx));
        const std::span<const float> dw = params.at("proj.weight").grad;
        double ey = 0, edx = 0, edw = 0;
        for (index r = 0; r < rows; ++r)
            for (index o = 0; o < out; ++o) {
                double s = 0, m = 0;
                for (index i = 0; i < in; ++i) {
                    const double t = static_cast<double>(x(r, i)) * w[static_cast<std::size_t>(o * in + i)];
                    s += t;
                    m += std::fabs(t);
                }
                ey = std::max(ey, std::fabs(s - y(r, o)) / m);
            }
        for (index r = 0; r < rows; ++r)
            for (index i = 0; i < in; ++i) {
                double s = 0, m = 0;
                for (index o = 0; o < out; ++o) {
                    const double t = static_cast<double>(g(r, o)) * w[static_cast<std::size_t>(o * in + i)];
                    s += t;
                    m += std::fabs(t);
                }
                edx = std::max(edx, std::fabs(s - dx(r, i)) / m);
            }
        for (index o = 0; o < out; ++o)
            for (index i = 0; i < in; ++i) {
                double s = 0, m = 0;
                for (index r = 0; r < rows; ++r) {
                    const double t = static_cast<double>(g(r, o)) * x(r, i);
                    s += t;
                    m += std::fabs(t);
                }
                edw = std::max(edw, std::fabs(s - dw[static_cast<std::size_t>(o * in + i)]) / m);
            }
        CHECK(ey < kBound);
        CHECK(edx < kBound);
        CHECK(edw < kBound);
    }
}

}  // namespace test_gemm_f32
