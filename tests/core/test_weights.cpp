// WeightMatrix: float32 and bfloat16 storage, rounding to nearest even, widening rows.
#include <algorithm>
#include <bit>
#include <cmath>
#include <iterator>
#include <string>
#include <limits>
#include <optional>
#include <vector>

#include "ssm/core/cpu.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/layers/linear.hpp"
#include "test_util.hpp"

namespace test_weights {

TEST_CASE("WeightMatrix::to_bf16 rounds every value as f32_to_bf16 and widens it back exactly", "[weights]") {
    const ssm::test::MultiThreadCheck threaded("to_bf16 at 2 threads");
    const ssm::index rows = 37, cols = 200000 / 37;  // enough elements for 2 threads (2^16 each, at least)
    auto values = ssm::test::random_floats(static_cast<std::size_t>(rows * cols), -3, 3, 5);
    values[0] = 0.0f;
    values[1] = -0.0f;
    values[2] = 1.0f + 0x1p-8f;  // halfway between two bf16 values: rounds to even (1.0)
    values[3] = std::numeric_limits<float>::infinity();
    const ssm::WeightMatrix f32(ssm::Tensor::from({rows, cols}, values));
    REQUIRE_FALSE(f32.is_bf16());
    CHECK(f32.bytes() == static_cast<std::size_t>(rows * cols) * 4);
    for (const int threads : {1, 2}) {
        ssm::set_num_threads(threads);
        const ssm::WeightMatrix bf = f32.to_bf16();
        REQUIRE(bf.is_bf16());
        CHECK(bf.rows() == rows);
        CHECK(bf.cols() == cols);
        CHECK(bf.bytes() == static_cast<std::size_t>(rows * cols) * 2);
        std::vector<float> got(static_cast<std::size_t>(rows * cols));
        bf.rows_f32(0, rows, got.data());
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < got.size(); ++i)
            if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(ssm::bf16_to_f32(ssm::f32_to_bf16(values[i]))))
                ++wrong;
        CHECK(wrong == 0);
        CHECK(got[2] == 1.0f);
        CHECK(std::signbit(got[1]));
        CHECK(std::isinf(got[3]));
        // Rounding moves a value by at most half a bf16 step: 2^-8 of it (8 significant bits).
        for (std::size_t i = 4; i < got.size(); i += 97)
            CHECK(std::abs(got[i] - values[i]) <= std::abs(values[i]) * 0x1p-8f);
        CHECK(bf.to_bf16().bytes() == bf.bytes());  // already bf16: unchanged
    }
    ssm::set_num_threads(0);
    threaded.verify();
    CHECK(ssm::test::error_of([&] { (void)f32.to_bf16().f32(); }).find("bfloat16") != std::string::npos);
}

TEST_CASE("WeightMatrix::rows_f32 copies a block of rows from either storage", "[weights]") {
    const std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // exact in bf16
    const ssm::WeightMatrix f32(ssm::Tensor::from({4, 3}, values));
    for (const auto& w : {f32, f32.to_bf16()}) {
        std::vector<float> out(6, -1.0f);
        w.rows_f32(1, 2, out.data());
        CHECK(out == std::vector<float>{4, 5, 6, 7, 8, 9});
    }
    CHECK(f32.f32()(3, 2) == 12.0f);
    CHECK(ssm::test::error_of([] { (void)ssm::WeightMatrix(ssm::Tensor::zeros({2, 3, 4})); }).find("2-D") != std::string::npos);
}

TEST_CASE("dot_rows equals a double-precision dot product for every row count, length, storage and kernel",
          "[weights]") {
    std::size_t checked = 0, paths = 0;
    for (const ssm::CpuIsa isa : ssm::test::kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        const ssm::test::ForceCpuIsa force(isa);
        REQUIRE(ssm::cpu_isa() == isa);
        ++paths;
        std::uint64_t seed = 300;
        // Lengths around every kernel's step (8 and 64 for AVX2 + FMA, 16 and 64 for AVX-512
        // and portable), below one vector, and dt_proj's 48 (whole vectors, none of the main
        // loop's steps).
        for (const ssm::index n : {1, 7, 8, 9, 15, 16, 17, 31, 48, 63, 64, 65, 100, 768}) {
            const auto w = ssm::test::random_floats(static_cast<std::size_t>(n), -1, 1, seed++);
            const ssm::index ldx = n + 3;  // rows of x with a stride
            const auto x = ssm::test::random_floats(static_cast<std::size_t>(8 * ldx), -1, 1, seed++);
            std::vector<std::uint16_t> wb(w.size());
            for (std::size_t i = 0; i < w.size(); ++i) wb[i] = ssm::f32_to_bf16(w[i]);
            const auto expect = [&](int r, bool bf16) {
                double e = 0;
                for (ssm::index i = 0; i < n; ++i) {
                    const float wi =
                        bf16 ? ssm::bf16_to_f32(wb[static_cast<std::size_t>(i)]) : w[static_cast<std::size_t>(i)];
                    e += static_cast<double>(wi) * x[static_cast<std::size_t>(r * ldx + i)];
                }
                return e;
            };
            const auto check = [&](const float* got, int rows, bool bf16) {
                for (int r = 0; r < rows; ++r) {
                    INFO("kernel " << ssm::isa_name(isa) << ", n " << n << ", row " << r << " of " << rows
                                   << (bf16 ? ", bf16" : ", f32"));
                    CHECK(std::abs(got[r] - expect(r, bf16)) <= 1e-5 * (1 + std::abs(expect(r, bf16))));
                    ++checked;
                }
            };
            float out[8];
            ssm::dot_rows<1>(w.data(), x.data(), ldx, n, out), check(out, 1, false);
            ssm::dot_rows<2>(w.data(), x.data(), ldx, n, out), check(out, 2, false);
            ssm::dot_rows<4>(w.data(), x.data(), ldx, n, out), check(out, 4, false);
            ssm::dot_rows<8>(w.data(), x.data(), ldx, n, out), check(out, 8, false);
            ssm::dot_rows<1>(wb.data(), x.data(), ldx, n, out), check(out, 1, true);
            ssm::dot_rows<2>(wb.data(), x.data(), ldx, n, out), check(out, 2, true);
            ssm::dot_rows<4>(wb.data(), x.data(), ldx, n, out), check(out, 4, true);
            ssm::dot_rows<8>(wb.data(), x.data(), ldx, n, out), check(out, 8, true);
        }
    }
    REQUIRE(paths >= 1);
    CHECK(checked == paths * 14 * 30);
}

TEST_CASE("WeightMatrix::to_int8 keeps each value within half a step of its block's scale", "[weights]") {
    // 70 columns: two whole blocks of 32 and a partial one of 6, in every row.
    const ssm::index rows = 301, cols = 70;
    auto values = ssm::test::random_floats(static_cast<std::size_t>(rows * cols), -3, 3, 41);
    for (ssm::index i = 32; i < 64; ++i) values[static_cast<std::size_t>(i)] = 0.0f;  // an all-zero block
    values[70] = 1e-30f;                                                              // a tiny block maximum
    const ssm::WeightMatrix f32(ssm::Tensor::from({rows, cols}, values));
    for (const int threads : {1, 2}) {
        ssm::set_num_threads(threads);
        const ssm::WeightMatrix q = f32.to_int8();
        REQUIRE(q.is_int8());
        CHECK(q.format() == ssm::WeightFormat::Int8);
        CHECK(q.int8_blocks_per_row() == 3);
        CHECK(q.bytes() == static_cast<std::size_t>(rows * 3) * (32 + 4));
        std::vector<float> got(values.size());
        q.rows_f32(0, rows, got.data());
        std::size_t outside = 0;
        for (ssm::index r = 0; r < rows; ++r)
            for (ssm::index b = 0; b < 3; ++b) {
                float amax = 0;
                const ssm::index begin = b * 32, end = std::min(cols, begin + 32);
                for (ssm::index i = begin; i < end; ++i) amax = std::max(amax, std::abs(values[static_cast<std::size_t>(r * cols + i)]));
                const float scale = q.int8_scales(r)[b];
                CHECK(scale == amax / 127.0f);
                for (ssm::index i = begin; i < end; ++i) {
                    const auto k = static_cast<std::size_t>(r * cols + i);
                    if (std::abs(got[k] - values[k]) > 0.5f * scale * (1 + 1e-6f)) ++outside;
                    // The stored integer is exactly what the widened value says.
                    CHECK(got[k] == static_cast<float>(q.int8_row(r)[i]) * scale);
                }
                for (ssm::index i = end; i < begin + 32; ++i) CHECK(q.int8_row(r)[i] == 0);  // padding
            }
        CHECK(outside == 0);
        for (ssm::index i = 32; i < 64; ++i) CHECK(got[static_cast<std::size_t>(i)] == 0.0f);
        CHECK(q.to_int8().bytes() == q.bytes());  // already int8: unchanged
        // Through bfloat16 first: quantised from the widened bf16 values.
        const ssm::WeightMatrix qb = f32.to_bf16().to_int8();
        std::vector<float> wb(values.size());
        f32.to_bf16().rows_f32(0, rows, wb.data());
        CHECK(qb.int8_scales(5)[1] == [&] {
            float m = 0;
            for (ssm::index i = 32; i < 64; ++i) m = std::max(m, std::abs(wb[static_cast<std::size_t>(5 * cols + i)]));
            return m / 127.0f;
        }());
    }
    ssm::set_num_threads(0);
    CHECK(ssm::test::error_of([&] { (void)f32.to_int8().f32(); }).find("int8") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)f32.to_int8().to(ssm::WeightFormat::F32); }).find("float32") != std::string::npos);
}

using ssm::test::ForceCpuIsa;
using ssm::test::kAllCpuIsas;

TEST_CASE("dot_rows_int8 equals a double-precision dot product with the widened weights, on every kernel the CPU runs",
          "[weights]") {
    std::size_t checked = 0, paths = 0;
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        const ForceCpuIsa force(isa);
        REQUIRE(ssm::cpu_isa() == isa);
        ++paths;
        INFO("kernel " << ssm::isa_name(isa));
        std::uint64_t seed = 500;
        for (const ssm::index n : {1, 5, 31, 32, 33, 64, 100, 160, 224, 768}) {  // 0 to 24 blocks
            const auto w = ssm::test::random_floats(static_cast<std::size_t>(n), -2, 2, seed++);
            const ssm::WeightMatrix q = ssm::WeightMatrix(ssm::Tensor::from({1, n}, w)).to_int8();
            std::vector<float> widened(static_cast<std::size_t>(n));
            q.rows_f32(0, 1, widened.data());
            const ssm::index ldx = n + 5;
            const auto x = ssm::test::random_floats(static_cast<std::size_t>(8 * ldx), -1, 1, seed++);
            const auto check = [&](const float* got, int count) {
                for (int r = 0; r < count; ++r) {
                    double e = 0, mag = 0;
                    for (ssm::index i = 0; i < n; ++i) {
                        e += static_cast<double>(widened[static_cast<std::size_t>(i)]) * x[static_cast<std::size_t>(r * ldx + i)];
                        mag += std::abs(static_cast<double>(widened[static_cast<std::size_t>(i)]) * x[static_cast<std::size_t>(r * ldx + i)]);
                    }
                    INFO("n " << n << ", row " << r << " of " << count);
                    CHECK(std::abs(got[r] - e) <= 2e-6 * (1 + mag));
                    ++checked;
                }
            };
            float out[8];
            ssm::dot_rows_int8<1>(q.int8_row(0), q.int8_scales(0), x.data(), ldx, n, out), check(out, 1);
            ssm::dot_rows_int8<2>(q.int8_row(0), q.int8_scales(0), x.data(), ldx, n, out), check(out, 2);
            ssm::dot_rows_int8<4>(q.int8_row(0), q.int8_scales(0), x.data(), ldx, n, out), check(out, 4);
            ssm::dot_rows_int8<8>(q.int8_row(0), q.int8_scales(0), x.data(), ldx, n, out), check(out, 8);
        }
    }
    CHECK(paths >= 1);
    CHECK(checked == paths * 10 * 15);  // (avx512bf16 runs the avx512 int8 kernel again)
}

TEST_CASE("quantize_int8_blocks keeps each activation within half a step and pads the last block", "[weights]") {
    for (const ssm::index n : {1, 31, 32, 33, 70}) {
        INFO("n " << n);
        auto x = ssm::test::random_floats(static_cast<std::size_t>(n), -3, 3, 700 + static_cast<std::uint64_t>(n));
        if (n >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
        const ssm::index blocks = (n + ssm::kInt8Block - 1) / ssm::kInt8Block;
        std::vector<std::int8_t> xq(static_cast<std::size_t>(blocks * ssm::kInt8Block), 99);
        std::vector<float> scale(static_cast<std::size_t>(blocks), -1.0f);
        ssm::quantize_int8_blocks(x.data(), n, xq.data(), scale.data());
        for (ssm::index b = 0; b < blocks; ++b) {
            float amax = 0;
            for (ssm::index i = b * ssm::kInt8Block; i < std::min(n, (b + 1) * ssm::kInt8Block); ++i)
                amax = std::max(amax, std::abs(x[static_cast<std::size_t>(i)]));
            CHECK(scale[static_cast<std::size_t>(b)] == amax / 127.0f);
        }
        for (ssm::index i = 0; i < blocks * ssm::kInt8Block; ++i) {
            const auto q = xq[static_cast<std::size_t>(i)];
            REQUIRE(q >= -127);
            REQUIRE(q <= 127);
            if (i >= n) {
                CHECK(q == 0);  // padding
                continue;
            }
            const float s = scale[static_cast<std::size_t>(i / ssm::kInt8Block)];
            CHECK(std::abs(static_cast<float>(q) * s - x[static_cast<std::size_t>(i)]) <= 0.5f * s * (1 + 1e-6f) + 1e-12f);
        }
        if (n >= 64) CHECK(scale[1] == 0.0f);
    }
}

TEST_CASE("quantize_int8_blocks rounds alike on every kernel; a non-finite block is NaN, a tiny one zero",
          "[weights]") {
    // The portable rounding is the reference: every kernel the CPU runs gives the same bits.
    const auto quantize = [](const std::vector<float>& x, ssm::CpuIsa isa) {
        const ForceCpuIsa force(isa);
        const auto n = static_cast<ssm::index>(x.size());
        const ssm::index blocks = (n + ssm::kInt8Block - 1) / ssm::kInt8Block;
        std::pair<std::vector<std::int8_t>, std::vector<float>> out{
            std::vector<std::int8_t>(static_cast<std::size_t>(blocks * ssm::kInt8Block), 99),
            std::vector<float>(static_cast<std::size_t>(blocks), -1.0f)};
        ssm::quantize_int8_blocks(x.data(), n, out.first.data(), out.second.data());
        return out;
    };
    const auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return false;
        return true;
    };
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    std::size_t compared = 0;
    for (const ssm::index n : {32, 64, 100, 768}) {
        auto x = ssm::test::random_floats(static_cast<std::size_t>(n), -3, 3, 1200 + static_cast<std::uint64_t>(n));
        // The first block's maximum is 127, so x · 127 / max is x itself: halves are ties,
        // rounded to even by every kernel.
        for (ssm::index i = 0; i < 32; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i - 16) + 0.5f;
        x[5] = 127.0f;
        const auto reference = quantize(x, ssm::CpuIsa::Generic);
        for (const ssm::CpuIsa isa : kAllCpuIsas) {
            if (!ssm::cpu_supports(isa)) continue;
            INFO("n " << n << ", kernel " << ssm::isa_name(isa));
            const auto got = quantize(x, isa);
            CHECK(got.first == reference.first);
            CHECK(same_bits(got.second, reference.second));
            ++compared;
        }
        CHECK(reference.second[0] == 1.0f);
        CHECK(reference.first[5] == 127);
        CHECK(reference.first[16] == 0);   // 0.5 → 0
        CHECK(reference.first[17] == 2);   // 1.5 → 2
        CHECK(reference.first[18] == 2);   // 2.5 → 2
        CHECK(reference.first[14] == -2);  // -1.5 → -2
    }
    CHECK(compared >= 4);

    // Blocks of 32: finite, NaN, +inf, -inf, tiny (1e-38), finite again, and a partial block with a NaN.
    auto x = ssm::test::random_floats(6 * 32 + 7, -1, 1, 1300);
    x[40] = nan;
    x[64 + 31] = inf;
    x[96] = -inf;
    for (ssm::index i = 128; i < 160; ++i) x[static_cast<std::size_t>(i)] = i % 2 ? 1e-38f : -3e-39f;
    x[6 * 32 + 3] = nan;
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        INFO("kernel " << ssm::isa_name(isa));
        const auto [xq, scale] = quantize(x, isa);
        for (const int b : {1, 2, 3, 6}) {
            CHECK(std::isnan(scale[static_cast<std::size_t>(b)]));
            for (int i = 0; i < 32; ++i) CHECK(xq[static_cast<std::size_t>(b * 32 + i)] == 0);
        }
        CHECK(scale[4] == 0.0f);  // 127 / 1e-38 overflows: counted as zero
        for (int i = 0; i < 32; ++i) CHECK(xq[static_cast<std::size_t>(4 * 32 + i)] == 0);
        // The finite blocks are what they are alone.
        for (const int b : {0, 5}) {
            const std::vector<float> alone(x.begin() + b * 32, x.begin() + (b + 1) * 32);
            const auto single = quantize(alone, ssm::CpuIsa::Generic);
            CHECK(scale[static_cast<std::size_t>(b)] == single.second[0]);
            CHECK(std::equal(single.first.begin(), single.first.end(), xq.begin() + b * 32));
        }
        // A product with a non-finite block is NaN, as it would be in float32.
        const ssm::WeightMatrix w = ssm::WeightMatrix(ssm::Tensor::from({1, 6 * 32 + 7}, std::vector<float>(6 * 32 + 7, 0.5f))).to_int8();
        float out = 0;
        ssm::dot_rows_q8<1>(w.int8_row(0), w.int8_scales(0), xq.data(), scale.data(), 7 * 32, 7, 7, &out);
        CHECK(std::isnan(out));
    }

    // Weights go through the same rounding: an infinite or NaN weight makes its block NaN
    // (widened and in products), never an integer cast from a non-finite value.
    std::vector<float> wv(2 * 64, 0.25f);
    wv[3] = inf;
    wv[64 + 40] = nan;
    const ssm::WeightMatrix q = ssm::WeightMatrix(ssm::Tensor::from({2, 64}, wv)).to_int8();
    CHECK(std::isnan(q.int8_scales(0)[0]));
    CHECK(q.int8_scales(0)[1] == 0.25f / 127.0f);
    CHECK(std::isnan(q.int8_scales(1)[1]));
    std::vector<float> widened(2 * 64);
    q.rows_f32(0, 2, widened.data());
    CHECK(std::isnan(widened[0]));
    CHECK(widened[40] == 0.25f);
    CHECK(std::isnan(widened[64 + 33]));
    const std::vector<float> ones(64, 1.0f);
    float d[1] = {0};
    ssm::dot_rows_int8<1>(q.int8_row(1), q.int8_scales(1), ones.data(), 64, 64, d);
    CHECK(std::isnan(d[0]));
}

/// The exact value, in double, of an int8 weight row against an int8 activation row (both
/// `blocks` blocks): Σ_b wscale[b] · xscale[b] · Σ q·xq, and the same sum of magnitudes
/// (what float32 rounding of the scaled block sums is measured against).
struct ExactQ8 {
    double value = 0, magnitude = 0;
};
ExactQ8 exact_q8(const std::int8_t* q, const float* wscale, const std::int8_t* xq, const float* xscale,
                 ssm::index blocks) {
    ExactQ8 e;
    for (ssm::index b = 0; b < blocks; ++b) {
        long long s = 0;
        for (ssm::index i = b * ssm::kInt8Block; i < (b + 1) * ssm::kInt8Block; ++i)
            s += static_cast<long long>(q[i]) * xq[i];
        const double scale = static_cast<double>(wscale[b]) * xscale[b];
        e.value += static_cast<double>(s) * scale;
        e.magnitude += std::abs(static_cast<double>(s)) * scale;
    }
    return e;
}

TEST_CASE("dot_rows_q8 equals the exact sum of the int8 products, on every kernel the CPU runs", "[weights]") {
    std::size_t checked = 0, paths = 0, extra = 0;
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        const ForceCpuIsa force(isa);
        ++paths;
        INFO("kernel " << ssm::isa_name(isa));
        std::uint64_t seed = 800;
        for (const ssm::index n : {1, 31, 32, 33, 64, 100, 160, 224, 768}) {
            auto w = ssm::test::random_floats(static_cast<std::size_t>(n), -2, 2, seed++);
            w[0] = -2.5f;  // a weight at -127 after rounding: the largest pair product
            const ssm::WeightMatrix q = ssm::WeightMatrix(ssm::Tensor::from({1, n}, w)).to_int8();
            const ssm::index blocks = q.int8_blocks_per_row(), ldq = (blocks + 1) * ssm::kInt8Block;
            // 8 rows of activations, each rounded to int8 blocks at stride ldq.
            std::vector<std::int8_t> xq(static_cast<std::size_t>(8 * ldq));
            std::vector<float> xs(static_cast<std::size_t>(8 * (blocks + 1)));
            for (int r = 0; r < 8; ++r) {
                auto x = ssm::test::random_floats(static_cast<std::size_t>(n), -1, 1, seed++);
                x[0] = r % 2 ? 1.5f : -1.5f;  // ±127
                ssm::quantize_int8_blocks(x.data(), n, xq.data() + r * ldq, xs.data() + r * (blocks + 1));
            }
            const auto check = [&](const float* got, int count) {
                for (int r = 0; r < count; ++r) {
                    const ExactQ8 e = exact_q8(q.int8_row(0), q.int8_scales(0), xq.data() + r * ldq,
                                               xs.data() + r * (blocks + 1), blocks);
                    INFO("n " << n << ", row " << r << " of " << count);
                    CHECK(std::abs(got[r] - e.value) <= 2e-6 * (1 + e.magnitude));
                    ++checked;
                }
            };
            float out[8];
            const std::int8_t* qr = q.int8_row(0);
            const float* qs = q.int8_scales(0);
            ssm::dot_rows_q8<1>(qr, qs, xq.data(), xs.data(), ldq, blocks + 1, blocks, out), check(out, 1);
            ssm::dot_rows_q8<2>(qr, qs, xq.data(), xs.data(), ldq, blocks + 1, blocks, out), check(out, 2);
            ssm::dot_rows_q8<4>(qr, qs, xq.data(), xs.data(), ldq, blocks + 1, blocks, out), check(out, 4);
            ssm::dot_rows_q8<8>(qr, qs, xq.data(), xs.data(), ldq, blocks + 1, blocks, out), check(out, 8);
#if SSM_X86_DISPATCH
            if (isa == ssm::CpuIsa::Avx2) {
                // What an AVX-512 dispatch runs on a CPU without AVX512-VNNI: the AVX2 kernel
                // asking for the weights kDecodePrefetchBytes ahead (this CPU may have VNNI,
                // so the dispatch would not pick it here; it is called by name). The kernel adds
                // to its sums, as dot_rows_q8 gives it zeros.
                using ssm::detail::kDecodePrefetchBytes;
                std::fill(std::begin(out), std::end(out), 0.0f);
                ssm::detail::dot_rows_q8_avx2<1, kDecodePrefetchBytes>(qr, qs, xq.data(), xs.data(), ldq,
                                                                       blocks + 1, blocks, out);
                check(out, 1);
                std::fill(std::begin(out), std::end(out), 0.0f);
                ssm::detail::dot_rows_q8_avx2<8, kDecodePrefetchBytes>(qr, qs, xq.data(), xs.data(), ldq,
                                                                       blocks + 1, blocks, out);
                check(out, 8);
                extra += 9;
            }
#endif
        }
    }
    CHECK(paths >= 1);
    CHECK(checked == paths * 9 * 15 + extra);
}

TEST_CASE("a Linear with Int8Activations rounds its few input rows to int8 blocks; many rows stay float32",
          "[weights]") {
    const ssm::index in = 200, out = 700;  // 328+ output rows a thread (64K weights): two threads
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(out * in), -1, 1, 910);
    ssm::Linear lin(ssm::WeightMatrix(ssm::Tensor::from({out, in}, w)), std::nullopt);
    ssm::Linear int8 = lin;
    int8.store_weights(ssm::WeightFormat::Int8);
    lin.store_weights(ssm::WeightFormat::Int8Activations);
    CHECK(lin.weight().format() == ssm::WeightFormat::Int8Activations);
    CHECK(lin.weight().to_int8().format() == ssm::WeightFormat::Int8);
    CHECK(int8.weight().to(ssm::WeightFormat::Int8Activations).format() == ssm::WeightFormat::Int8Activations);
    const ssm::index blocks = lin.weight().int8_blocks_per_row(), ldq = blocks * ssm::kInt8Block;
    for (const ssm::index rows : {1, 3, 8, 31, 32}) {
        INFO("rows " << rows);
        const auto xv = ssm::test::random_floats(static_cast<std::size_t>(rows * in), -1, 1, 920 + static_cast<std::uint64_t>(rows));
        const ssm::Matrix x = Eigen::Map<const ssm::Matrix>(xv.data(), rows, in);
        ssm::Matrix y(rows, out), y8(rows, out);
        if (rows < 32) {  // each thread rounds the rows into its own buffer
            const ssm::test::MultiThreadCheck threads("Linear Int8Activations at 2 threads");
            ssm::set_num_threads(2);
            lin.forward(x, y);
            ssm::set_num_threads(0);
            threads.verify();
        } else {
            lin.forward(x, y);
        }
        int8.forward(x, y8);
        if (rows >= 32) {  // the GEMM path: float32 activations, as with Int8
            CHECK((y - y8).cwiseAbs().maxCoeff() <= 1e-5f * (1 + y8.cwiseAbs().maxCoeff()));
            continue;
        }
        // Few rows: the exact int8 products of the rounded activations.
        double worst = 0, moved = 0;
        for (ssm::index r = 0; r < rows; ++r) {
            std::vector<std::int8_t> xq(static_cast<std::size_t>(ldq));
            std::vector<float> xs(static_cast<std::size_t>(blocks));
            ssm::quantize_int8_blocks(x.row(r).data(), in, xq.data(), xs.data());
            for (ssm::index o = 0; o < out; ++o) {
                const ExactQ8 e = exact_q8(lin.weight().int8_row(o), lin.weight().int8_scales(o), xq.data(), xs.data(), blocks);
                worst = std::max(worst, std::abs(y(r, o) - e.value) / (1 + e.magnitude));
                moved = std::max(moved, static_cast<double>(std::abs(y(r, o) - y8(r, o))));
            }
        }
        CHECK(worst <= 2e-6);
        CHECK(moved > 1e-6);  // the activations were rounded: not the float32-activation result
        // ... and within the rounding's reach of it: |Δx| ≤ scale/2 per value.
        CHECK((y - y8).cwiseAbs().maxCoeff() <= 0.02f * (1 + y8.cwiseAbs().maxCoeff()));
    }
}

TEST_CASE("the CPU kernels' instruction set is chosen at run time and can be forced", "[weights]") {
    const ssm::CpuIsa best = ssm::detected_cpu_isa();
    CHECK(ssm::cpu_supports(ssm::CpuIsa::Generic));
    CHECK(ssm::cpu_supports(best));
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        INFO(ssm::isa_name(isa));
        if (ssm::cpu_supports(isa)) {
            const ForceCpuIsa force(isa);
            CHECK(ssm::cpu_isa() == isa);
        } else {  // refused with the set's name, and the choice is left as it was
            const auto before = ssm::cpu_isa();
            CHECK(ssm::test::error_of([&] { ssm::use_cpu_isa(isa); }).find(ssm::isa_name(isa)) != std::string::npos);
            CHECK(ssm::cpu_isa() == before);
        }
    }
    // Every kernel gives an int8 Linear the same outputs to float32 rounding.
    const ssm::index rows = 3, in = 200, out = 37;
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(out * in), -1, 1, 900);
    const auto xv = ssm::test::random_floats(static_cast<std::size_t>(rows * in), -1, 1, 901);
    ssm::Linear lin(ssm::WeightMatrix(ssm::Tensor::from({out, in}, w)), std::nullopt);
    lin.store_weights(ssm::WeightFormat::Int8);
    const ssm::Matrix x = Eigen::Map<const ssm::Matrix>(xv.data(), rows, in);
    ssm::Matrix reference(rows, out);
    {
        const ForceCpuIsa force(ssm::CpuIsa::Generic);
        lin.forward(x, reference);
    }
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        INFO(ssm::isa_name(isa));
        const ForceCpuIsa force(isa);
        ssm::Matrix y(rows, out);
        lin.forward(x, y);
        CHECK((y - reference).cwiseAbs().maxCoeff() <= 1e-5f * (1.0f + reference.cwiseAbs().maxCoeff()));
    }
    // ... and the int8-activation kernels too.
    lin.store_weights(ssm::WeightFormat::Int8Activations);
    {
        const ForceCpuIsa force(ssm::CpuIsa::Generic);
        lin.forward(x, reference);
    }
    for (const ssm::CpuIsa isa : kAllCpuIsas) {
        if (!ssm::cpu_supports(isa)) continue;
        INFO("int8 activations, " << ssm::isa_name(isa));
        const ForceCpuIsa force(isa);
        ssm::Matrix y(rows, out);
        lin.forward(x, y);
        CHECK((y - reference).cwiseAbs().maxCoeff() <= 1e-5f * (1.0f + reference.cwiseAbs().maxCoeff()));
    }
}

}  // namespace test_weights
