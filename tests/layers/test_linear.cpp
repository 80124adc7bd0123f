// Linear against a naive double-precision product: the GEMM path (many rows), the
// matrix-vector path (few rows), bias, accumulate, strided inputs, thread counts.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <initializer_list>
#include <vector>

#include "ssm/layers/linear.hpp"
#include "test_util.hpp"

namespace test_linear {

namespace {

std::vector<float> naive(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>* b,
                         ssm::index rows, ssm::index in, ssm::index out) {
    std::vector<float> y(static_cast<std::size_t>(rows * out));
    for (ssm::index r = 0; r < rows; ++r)
        for (ssm::index o = 0; o < out; ++o) {
            double acc = b ? (*b)[static_cast<std::size_t>(o)] : 0.0;
            for (ssm::index i = 0; i < in; ++i)
                acc += static_cast<double>(x[static_cast<std::size_t>(r * in + i)]) * w[static_cast<std::size_t>(o * in + i)];
            y[static_cast<std::size_t>(r * out + o)] = static_cast<float>(acc);
        }
    return y;
}


/// lin.forward, plain and accumulating, equals the naive product with weight `w` (what
/// the layer should compute with) for each row count and thread count. With
/// `bf16_gemm_rows` > 0, inputs of at least that many rows are rounded to bf16 in the
/// reference (what the bf16 dot-product unit multiplies).
void check_against_naive(const ssm::Linear& lin, const std::vector<float>& w, const std::vector<float>* b,
                         std::initializer_list<ssm::index> row_counts, unsigned seed, ssm::index bf16_gemm_rows = 0) {
    const ssm::test::MultiThreadCheck threaded("Linear at 2 and 3 threads");
    const ssm::index in = lin.in_features(), out = lin.out_features();
    for (ssm::index rows : row_counts) {
        for (int threads : {1, 2, 3}) {
            ssm::set_num_threads(threads);
            INFO("rows " << rows << " bias " << (b != nullptr) << " threads " << threads);
            const auto x = ssm::test::random_floats(static_cast<std::size_t>(rows * in), -1, 1, seed + static_cast<unsigned>(rows));
            std::vector<float> x_ref = x;
            if (bf16_gemm_rows > 0 && rows >= bf16_gemm_rows)
                for (auto& v : x_ref) v = ssm::bf16_to_f32(ssm::f32_to_bf16(v));
            const auto expect = naive(x_ref, w, b, rows, in, out);
            ssm::Matrix xm = ssm::ConstMatrixMap(x.data(), rows, in);
            ssm::Matrix y = ssm::Matrix::Constant(rows, out, std::nanf(""));
            lin.forward(xm, y);
            CHECK(ssm::test::rel_error({y.data(), static_cast<std::size_t>(y.size())}, expect) < 1e-6);
            // accumulate: y += x·Wᵀ + b
            ssm::Matrix y2 = ssm::Matrix::Constant(rows, out, 0.5f);
            lin.forward(xm, y2, true);
            std::vector<float> expect2 = expect;
            for (auto& v : expect2) v += 0.5f;
            CHECK(ssm::test::rel_error({y2.data(), static_cast<std::size_t>(y2.size())}, expect2) < 1e-6);
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

}  // namespace

TEST_CASE("Linear equals x·Wᵀ + b for few and many rows", "[linear]") {
    const ssm::index in = 67, out = 2001;  // few rows: 64K weights (978 rows of 67) a thread, at least
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(in * out), -1, 1, 1);
    const auto b = ssm::test::random_floats(static_cast<std::size_t>(out), -1, 1, 2);
    for (bool with_bias : {false, true}) {
        const ssm::Linear lin(ssm::Tensor::from({out, in}, w),
                              with_bias ? std::optional(ssm::Tensor::from({out}, b)) : std::nullopt);
        check_against_naive(lin, w, with_bias ? &b : nullptr, {1, 2, 7, 8, 9, 64}, 3);
    }
}

TEST_CASE("Linear with a bfloat16 weight equals x·W_bf16ᵀ + b on every path", "[linear]") {
    // More output features than one widened GEMM block (1024 rows).
    const ssm::index in = 67, out = 2100;
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(in * out), -1, 1, 11);
    const auto b = ssm::test::random_floats(static_cast<std::size_t>(out), -1, 1, 12);
    std::vector<float> w_rounded(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) w_rounded[i] = ssm::bf16_to_f32(ssm::f32_to_bf16(w[i]));
    // Every path this CPU runs: widened to float32 (below AVX512-BF16), and the bf16
    // dot-product unit from 32 rows on (x rounded to bf16, float32 sums).
    for (const ssm::CpuIsa isa : ssm::test::kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        const ssm::test::ForceCpuIsa force(isa);
        const bool unit = ssm::gemm_bf16_available();
        INFO("kernels " << ssm::isa_name(isa) << (unit ? " (bf16 unit)" : ""));
        for (bool with_bias : {false, true}) {
            ssm::Linear lin(ssm::Tensor::from({out, in}, w),
                            with_bias ? std::optional(ssm::Tensor::from({out}, b)) : std::nullopt);
            lin.store_bf16();
            REQUIRE(lin.weight().is_bf16());
            check_against_naive(lin, w_rounded, with_bias ? &b : nullptr, {1, 2, 7, 31, 32, 100}, 20, unit ? 32 : 0);
        }
    }
}

TEST_CASE("gemm_bf16 equals the double product of the bf16-rounded operands, for every edge", "[linear]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        WARN("SKIPPED: this CPU has no AVX512-BF16 unit (" << ssm::isa_name(ssm::detected_cpu_isa()) << ")");
        CHECK(ssm::test::error_of([] {
                  ssm::gemm_bf16(nullptr, 1, 1, 1, nullptr, 1, 1, nullptr, 1, false);
              }).find("AVX512-BF16") != std::string::npos);
        return;
    }
    for (const ssm::CpuIsa unit_isa : {ssm::CpuIsa::Avx512Bf16, ssm::CpuIsa::Amx}) {  // vdpbf16ps, AMX's tiles
        if (!ssm::cpu_supports(unit_isa)) {
            WARN("SKIPPED: this CPU offers no " << ssm::isa_name(unit_isa) << ": gemm_bf16 on it did not run here");
            continue;
        }
        INFO(ssm::isa_name(unit_isa));
        const ssm::test::ForceCpuIsa force(unit_isa);
        REQUIRE(ssm::gemm_bf16_available());
        unsigned seed = 40;
        // Rows around the 6-row tile, features around the 16-wide vectors and 64-wide blocks, odd
        // and even input widths, and row strides wider than the rows.
        for (const ssm::index M : {1, 5, 6, 7, 13, 40})
            for (const ssm::index N : {1, 15, 16, 17, 64, 65, 130})
                for (const ssm::index K : {1, 2, 31, 64, 97}) {
                    INFO("M " << M << " N " << N << " K " << K);
                    const ssm::index ldx = K + 3, ldw = K + 1, ldy = N + 2;
                    const auto x = ssm::test::random_floats(static_cast<std::size_t>(M * ldx), -1, 1, seed++);
                    const auto wf = ssm::test::random_floats(static_cast<std::size_t>(N * ldw), -1, 1, seed++);
                    std::vector<std::uint16_t> wb(wf.size());
                    for (std::size_t i = 0; i < wf.size(); ++i) wb[i] = ssm::f32_to_bf16(wf[i]);
                    for (const bool accumulate : {false, true}) {
                        std::vector<float> y(static_cast<std::size_t>(M * ldy), 0.25f);
                        ssm::gemm_bf16(x.data(), ldx, M, K, wb.data(), ldw, N, y.data(), ldy, accumulate);
                        double worst = 0;
                        for (ssm::index r = 0; r < M; ++r)
                            for (ssm::index c = 0; c < ldy; ++c) {
                                const float got = y[static_cast<std::size_t>(r * ldy + c)];
                                if (c >= N) {  // past the row: untouched
                                    CHECK(got == 0.25f);
                                    continue;
                                }
                                double e = accumulate ? 0.25 : 0.0, mag = 0;
                                for (ssm::index k = 0; k < K; ++k) {
                                    const double p =
                                        static_cast<double>(ssm::bf16_to_f32(ssm::f32_to_bf16(x[static_cast<std::size_t>(r * ldx + k)]))) *
                                        ssm::bf16_to_f32(wb[static_cast<std::size_t>(c * ldw + k)]);
                                    e += p;
                                    mag += std::abs(p);
                                }
                                worst = std::max(worst, std::abs(got - e) / (1 + mag));
                            }
                        CHECK(worst < 1e-6);  // float32 sums of exact products
                    }
                }
    }
}

TEST_CASE("Linear with an int8 weight equals x·W_int8ᵀ + b on every path", "[linear]") {
    // More output features than one widened GEMM block, and an input width with a partial block.
    const ssm::index in = 67, out = 2100;
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(in * out), -1, 1, 13);
    const auto b = ssm::test::random_floats(static_cast<std::size_t>(out), -1, 1, 14);
    for (bool with_bias : {false, true}) {
        ssm::Linear lin(ssm::Tensor::from({out, in}, w),
                        with_bias ? std::optional(ssm::Tensor::from({out}, b)) : std::nullopt);
        lin.store_weights(ssm::WeightFormat::Int8);
        REQUIRE(lin.weight().is_int8());
        std::vector<float> widened(w.size());
        lin.weight().rows_f32(0, out, widened.data());
        check_against_naive(lin, widened, with_bias ? &b : nullptr, {1, 2, 7, 31, 32, 100}, 21);
    }
}

TEST_CASE("Linear reads and writes column slices of wider matrices", "[linear]") {
    const ssm::index in = 16, out = 24, rows = 11;
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(in * out), -1, 1, 7);
    const ssm::Linear lin(ssm::Tensor::from({out, in}, w), std::nullopt);
    ssm::Matrix wide_x = ssm::Matrix::Random(rows, in + 5);
    ssm::Matrix wide_y = ssm::Matrix::Constant(rows, out + 3, 9.0f);
    lin.forward(ssm::ConstStridedMap(wide_x.data() + 2, rows, in, Eigen::OuterStride<>(in + 5)),
                ssm::StridedMap(wide_y.data() + 1, rows, out, Eigen::OuterStride<>(out + 3)));
    const ssm::Matrix expect = wide_x.middleCols(2, in) * ssm::ConstMatrixMap(w.data(), out, in).transpose();
    CHECK((wide_y.middleCols(1, out) - expect).norm() / expect.norm() < 1e-6);
    CHECK((wide_y.col(0).array() == 9.0f).all());  // untouched outside the slice
    CHECK((wide_y.rightCols(2).array() == 9.0f).all());
}

TEST_CASE("Linear rejects mismatched shapes", "[linear]") {
    const ssm::Linear lin(ssm::Tensor::zeros({4, 3}), std::nullopt);
    ssm::Matrix x(2, 5), y(2, 4);
    const auto msg = ssm::test::error_of([&] { lin.forward(x, y); });
    CHECK(msg.find("Linear") != std::string::npos);
    CHECK(ssm::test::error_of([] { ssm::Linear(ssm::Tensor::zeros({4, 3}), ssm::Tensor::zeros({5})); })
              .find("bias") != std::string::npos);
}

}  // namespace test_linear
