// gemm_bf16 over two float32 operands — what `Linear` multiplies with under
// `MatmulPrecision::Bf16Products` (training's y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x from float32
// masters) — against the double product of the bf16-rounded operands: edge shapes on every
// side of its 6-row tiles, 16-wide vectors, 64-wide blocks, 16-row conversion groups and
// 768-row tasks, odd depths, all four operand forms, overwrite and accumulate, strided
// outputs whose other columns it must not touch; the same bits at any thread count; Linear's
// three products on the unit where it runs and float32's bits where it does not; and the
// default dispatch's choice of the unit.
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "ssm/core/gemm_bf16.hpp"
#include "ssm/layers/linear.hpp"
#include "ssm/train/parameters.hpp"
#include "test_util.hpp"
#include "train/gradient_check.hpp"

namespace test_gemm_bf16 {

namespace {

using ssm::GemmOperand;
using ssm::index;

// Float32 sums of K exact products of bf16 values stay within ~K·2⁻²⁴ of Σ|a·b| (under 1e-5
// here); an operand truncated instead of rounded to nearest, or left float32, moves a product
// by up to 2⁻⁸ of it, and a dropped or doubled term by ~1/K of the sum.
constexpr double kBound = 1e-5;

double rounded(float v) { return static_cast<double>(ssm::bf16_to_f32(ssm::f32_to_bf16(v))); }

/// Sets bf16 products for the scope, back to float32 after.
struct Bf16Products {
    Bf16Products() { ssm::set_matmul_precision(ssm::MatmulPrecision::Bf16Products); }
    ~Bf16Products() { ssm::set_matmul_precision(ssm::MatmulPrecision::Float32); }
    Bf16Products(const Bf16Products&) = delete;
    Bf16Products& operator=(const Bf16Products&) = delete;
};

struct Problem {
    index M, N, K;
    std::vector<float> a, b;
    GemmOperand A, B;

    // form 0: A rows · Bᵀ (x·Wᵀ); 1: A rows · B rows (dy·W); 2: Aᵀ · B rows (dyᵀ·x); 3: Aᵀ · Bᵀ.
    // Every row stride is wider than its rows (3 values past each), and each buffer ends at
    // the last value the product may read, so that a read past it is an ASan error.
    Problem(index m, index n, index k, int form, std::uint64_t seed) : M(m), N(n), K(k) {
        const bool at = form >= 2, bt = form == 0 || form == 3;
        const index lda = (at ? M : K) + 3, ldb = (bt ? K : N) + 3;
        const index a_rows = at ? K : M, b_rows = bt ? N : K;
        a = ssm::test::random_floats(static_cast<std::size_t>((a_rows - 1) * lda + (at ? M : K)), -1.0f, 1.0f, seed);
        b = ssm::test::random_floats(static_cast<std::size_t>((b_rows - 1) * ldb + (bt ? K : N)), -1.0f, 1.0f,
                                     seed + 1);
        A = at ? GemmOperand::transposed(a.data(), lda) : GemmOperand::rows(a.data(), lda);
        B = bt ? GemmOperand::transposed(b.data(), ldb) : GemmOperand::rows(b.data(), ldb);
    }
    [[nodiscard]] float at_a(index i, index k) const { return A.data[i * A.row_stride + k * A.col_stride]; }
    [[nodiscard]] float at_b(index k, index j) const { return B.data[k * B.row_stride + j * B.col_stride]; }
};

/// The worst |c − exact| / Σ|a·b| over C (M, N; ldc) for the product of the rounded operands
/// (`round` true) or of the float32 ones, `start` holding C's values before an accumulating call.
double worst_error(const Problem& p, const std::vector<float>& c, index ldc, const std::vector<float>& start,
                   bool round = true) {
    const auto value = [round](float v) { return round ? rounded(v) : static_cast<double>(v); };
    return ssm::test::worst_product_error(
        p.M, p.N, p.K, [&](index i, index k) { return value(p.at_a(i, k)); },
        [&](index k, index j) { return value(p.at_b(k, j)); }, c, ldc, start);
}

}  // namespace

TEST_CASE("gemm_bf16 over float32 operands equals the double product of the bf16-rounded operands", "[gemm]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        WARN("this CPU has no AVX512-BF16 unit (" << ssm::isa_name(ssm::detected_cpu_isa())
                                                  << "): gemm_bf16 cannot run here, only its refusal was checked");
        float c = 0;
        CHECK(ssm::test::error_of([&] {
                  ssm::gemm_bf16(GemmOperand::rows(&c, 1), GemmOperand::rows(&c, 1), 1, 1, 1, &c, 1, false);
              }).find("AVX512-BF16") != std::string::npos);
        return;
    }
    const ssm::test::ForceCpuIsa unit(ssm::CpuIsa::Avx512Bf16);
    REQUIRE(ssm::gemm_bf16_available());
    std::uint64_t seed = 70;
    const auto check = [&](index M, index N, index K, int form) {
        INFO("M " << M << " N " << N << " K " << K << " form " << form);
        const Problem p(M, N, K, form, seed);
        seed += 2;
        const index ldc = N + 3;  // three columns past each row that must stay as they were
        for (const bool accumulate : {false, true}) {
            INFO("accumulate " << accumulate);
            std::vector<float> c = ssm::test::random_floats(static_cast<std::size_t>(M * ldc), -1, 1, seed++);
            const std::vector<float> before = c;
            ssm::gemm_bf16(p.A, p.B, M, N, K, c.data(), ldc, accumulate);
            CHECK(worst_error(p, c, ldc, accumulate ? before : std::vector<float>{}) < kBound);
            bool untouched = true;
            for (index i = 0; i < M; ++i)
                for (index j = N; j < ldc; ++j)
                    untouched = untouched && c[static_cast<std::size_t>(i * ldc + j)] ==
                                                 before[static_cast<std::size_t>(i * ldc + j)];
            CHECK(untouched);
        }
    };
    for (int form = 0; form < 4; ++form) {
        for (const index M : {1, 6, 15, 16, 17, 45})
            for (const index N : {1, 16, 17, 64, 65, 130})
                for (const index K : {1, 2, 3, 32, 97}) check(M, N, K, form);
        check(800, 70, 41, form);  // two row tasks of 768
    }
    // The rounding is to bf16, not a float32 product: the same call is off the float32 product
    // by far more than the bound.
    const Problem p(40, 40, 64, 0, 5);
    std::vector<float> c(40 * 40);
    ssm::gemm_bf16(p.A, p.B, 40, 40, 64, c.data(), 40, false);
    CHECK(worst_error(p, c, 40, {}, false) > 10 * kBound);
    // K = 0 overwrites with zeros, or leaves C as it was.
    std::vector<float> z(6, 2.0f);
    ssm::gemm_bf16(p.A, p.B, 2, 3, 0, z.data(), 3, true);
    CHECK(z == std::vector<float>(6, 2.0f));
    ssm::gemm_bf16(p.A, p.B, 2, 3, 0, z.data(), 3, false);
    CHECK(z == std::vector<float>(6, 0.0f));
    CHECK(ssm::test::error_of([&] { ssm::gemm_bf16(p.A, p.B, 2, 3, 4, z.data(), 2, false); }).find("bad sizes") !=
          std::string::npos);
}

TEST_CASE("gemm_bf16 over float32 operands gives the same bits at any thread count", "[gemm]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        WARN("this CPU has no AVX512-BF16 unit: gemm_bf16 cannot run here, nothing of it was checked");
        return;
    }
    const ssm::test::ForceCpuIsa unit(ssm::CpuIsa::Avx512Bf16);
    for (const int form : {0, 2}) {
        const index M = 900, N = 530, K = 301;  // several row tasks, column blocks, an odd depth
        const Problem p(M, N, K, form, 9);
        std::vector<float> whole(static_cast<std::size_t>(M * N)), one(whole.size()), three(whole.size());
        ssm::gemm_bf16(p.A, p.B, M, N, K, whole.data(), N, false);
        ssm::set_num_threads(1);
        ssm::gemm_bf16(p.A, p.B, M, N, K, one.data(), N, false);
        ssm::set_num_threads(3);
        ssm::gemm_bf16(p.A, p.B, M, N, K, three.data(), N, false);
        ssm::set_num_threads(0);
        CHECK(one == whole);
        CHECK(three == whole);
    }
}

TEST_CASE("Linear under bf16 products: the unit where it runs, float32's bits where it does not", "[gemm]") {
    const index rows = 70, in = 301, out = 90;  // many rows: the GEMM paths; an odd depth
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(out * in), -0.5f, 0.5f, 13);
    const ssm::Matrix x = ssm::test::random_matrix(rows, in, -1, 1, 14);
    const ssm::Matrix g = ssm::test::random_matrix(rows, out, -1, 1, 15);
    struct Products {
        ssm::Matrix y, dx;
        std::vector<float> dw;
    };
    const auto run = [&] {
        ssm::Linear lin(ssm::Tensor::from({out, in}, w), std::nullopt);
        ssm::train::Parameters params;
        lin.register_parameters(params, "proj");
        Products r{ssm::Matrix(rows, out), ssm::Matrix(rows, in), {}};
        lin.forward(x, r.y);
        lin.backward(ssm::cview(x), ssm::cview(g), ssm::view(r.dx));
        const std::span<const float> dw = params.at("proj.weight").grad;
        r.dw.assign(dw.begin(), dw.end());
        return r;
    };
    for (const ssm::CpuIsa isa : ssm::test::kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        INFO(ssm::isa_name(isa));
        const ssm::test::ForceCpuIsa force(isa);
        const Products f32 = run();
        const Bf16Products asked;
        const bool unit = isa >= ssm::CpuIsa::Avx512Bf16;  // the vdpbf16ps kernels, or AMX's tiles
        CHECK(ssm::bf16_products() == unit);
        const Products got = run();
        if (!unit) {  // the request falls back to float32, bit for bit
            CHECK(got.y == f32.y);
            CHECK(got.dx == f32.dx);
            CHECK(got.dw == f32.dw);
            continue;
        }
        // y = x·Wᵀ, dx = g·W, dW = gᵀ·x, each against the double product of the rounded operands.
        double ey = 0, edx = 0, edw = 0, moved = 0;
        for (index r = 0; r < rows; ++r)
            for (index o = 0; o < out; ++o) {
                double s = 0, m = 0;
                for (index i = 0; i < in; ++i) {
                    const double t = rounded(x(r, i)) * rounded(w[static_cast<std::size_t>(o * in + i)]);
                    s += t;
                    m += std::fabs(t);
                }
                ey = std::max(ey, std::fabs(s - got.y(r, o)) / m);
                moved = std::max(moved, std::fabs(static_cast<double>(got.y(r, o)) - f32.y(r, o)) / m);
            }
        for (index r = 0; r < rows; ++r)
            for (index i = 0; i < in; ++i) {
                double s = 0, m = 0;
                for (index o = 0; o < out; ++o) {
                    const double t = rounded(g(r, o)) * rounded(w[static_cast<std::size_t>(o * in + i)]);
                    s += t;
                    m += std::fabs(t);
                }
                edx = std::max(edx, std::fabs(s - got.dx(r, i)) / m);
            }
        for (index o = 0; o < out; ++o)
            for (index i = 0; i < in; ++i) {
                double s = 0, m = 0;
                for (index r = 0; r < rows; ++r) {
                    const double t = rounded(g(r, o)) * rounded(x(r, i));
                    s += t;
                    m += std::fabs(t);
                }
                edw = std::max(edw, std::fabs(s - got.dw[static_cast<std::size_t>(o * in + i)]) / m);
            }
        CHECK(ey < kBound);
        CHECK(edx < kBound);
        CHECK(edw < kBound);
        CHECK(moved > 10 * kBound);  // the unit ran: not float32's products
        CHECK(moved < 1e-2);         // and within bf16's reach of them
    }
}

TEST_CASE("the default dispatch takes the bf16 unit only where it outruns the FMA units", "[gemm]") {
    const ssm::CpuIsa best = ssm::detected_cpu_isa(), chosen = ssm::default_cpu_isa();
    INFO("detected " << ssm::isa_name(best) << ", default " << ssm::isa_name(chosen));
    CHECK(ssm::cpu_supports(chosen));
    if (best == ssm::CpuIsa::Avx512Bf16)
        CHECK(chosen == (ssm::bf16_unit_outruns_fma() ? ssm::CpuIsa::Avx512Bf16 : ssm::CpuIsa::Avx512));
    else if (best == ssm::CpuIsa::Amx)  // the tiles run where asked for until measured on a CPU with them
        CHECK(chosen == ssm::CpuIsa::Avx512);
    else
        CHECK(chosen == best);
    const char* env = std::getenv("SSM_CPU_ISA");
    if (!env || !*env) {
        ssm::use_default_cpu_isa();
        CHECK(ssm::cpu_isa() == chosen);
    }
    // Forcing the unit stays possible wherever the CPU has it (tests, benchmarks, SSM_CPU_ISA).
    for (const ssm::CpuIsa unit_isa : {ssm::CpuIsa::Avx512Bf16, ssm::CpuIsa::Amx})
        if (ssm::cpu_supports(unit_isa)) {
            const ssm::test::ForceCpuIsa unit(unit_isa);
            CHECK(ssm::gemm_bf16_available());
        }
}

}  // namespace test_gemm_bf16
