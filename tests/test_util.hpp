// tests/test_util.hpp — small helpers shared by the tests (Catch2 v2 and v3 alike).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "catch.hpp"
#include "ssm/core/cpu.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/safetensors.hpp"

namespace ssm::test {

/// Folder of the bundled reference checkpoints (tests/data). The unit-test executable
/// takes it from tests/data_dir.cpp, so no other file of it depends on where the checkout
/// lies (a compiler cache then serves every checkout); other targets define it themselves.
#ifdef SSM_TEST_DATA_DIR
inline std::filesystem::path data_dir() { return SSM_TEST_DATA_DIR; }
#else
std::filesystem::path data_dir();
#endif

/// A fresh, empty scratch folder under the system temp dir, unique per call.
inline std::filesystem::path scratch_dir(const std::string& tag) {
    static std::mt19937_64 rng{std::random_device{}()};
    auto dir = std::filesystem::temp_directory_path() /
               ("ssm-test-" + tag + "-" + std::to_string(rng()));
    std::filesystem::create_directories(dir);
    return dir;
}

/// Writes raw bytes to `path` (test fixtures for malformed files).
inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Runs `f`, which must throw `ssm::Error`; returns its message. Fails the test when
/// `f` returns normally or throws anything else.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ssm::Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        FAIL("expected ssm::Error, got another exception: " << e.what());
    }
    FAIL("expected ssm::Error, but nothing was thrown");
    return {};
}

/// ‖a − b‖ / ‖b‖ in double precision (‖a‖ when b is all zeros). With `floor_rms` > 0 the
/// divisor is max(‖b‖, floor_rms·√n): a reference whose RMS is below the floor is measured
/// against the floor instead of its own (possibly cancelled-out) size.
inline double rel_error(std::span<const float> a, std::span<const float> b, double floor_rms = 0.0) {
    REQUIRE(a.size() == b.size());
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        num += d * d;
        den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
    }
    den = std::max(den, floor_rms * floor_rms * static_cast<double>(a.size()));
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

/// Holds the CPU kernels' dispatch on one instruction set while in scope (tests force each
/// path the CPU supports this way), then gives the choice back to the default.
class ForceCpuIsa {
public:
    explicit ForceCpuIsa(ssm::CpuIsa isa) { ssm::use_cpu_isa(isa); }
    ~ForceCpuIsa() { ssm::use_default_cpu_isa(); }
    ForceCpuIsa(const ForceCpuIsa&) = delete;
    ForceCpuIsa& operator=(const ForceCpuIsa&) = delete;
};

/// The best instruction set below the bf16 dot-product unit this CPU runs: forced, a
/// bfloat16 weight is widened to float32 GEMMs (activations stay float32), so a model
/// with bf16 weights computes what a float32 model with the same rounded weights does.
[[nodiscard]] inline ssm::CpuIsa below_bf16_unit() noexcept {
    const ssm::CpuIsa best = ssm::detected_cpu_isa();
    return best >= ssm::CpuIsa::Avx512Bf16 ? ssm::CpuIsa::Avx512 : best;
}

/// Every instruction set the dispatched kernels have a path for, lowest first.
inline constexpr ssm::CpuIsa kAllCpuIsas[] = {ssm::CpuIsa::Generic, ssm::CpuIsa::Avx2, ssm::CpuIsa::Avx512,
                                              ssm::CpuIsa::Avx512Bf16, ssm::CpuIsa::Amx};

/// The instruction sets that pick different float32 matrix products on this CPU: Generic
/// (Eigen's GEMM) and, where the CPU runs it, AVX2 (`gemm_f32`'s register tiles).
[[nodiscard]] inline std::vector<ssm::CpuIsa> float32_gemm_isas() {
    std::vector<ssm::CpuIsa> isas = {ssm::CpuIsa::Generic};
    if (ssm::cpu_supports(ssm::CpuIsa::Avx2)) isas.push_back(ssm::CpuIsa::Avx2);
    return isas;
}

/// Guards a check that results agree across thread counts. It counts the loops
/// `parallel_for` runs on two or more threads while it lives; `verify()`, called after the
/// check, REQUIREs that there was one — a multi-thread check that ran on one thread checks
/// nothing. In a build without OpenMP every loop runs on the calling thread: `verify()`
/// then WARNs "SKIPPED" with the name of the check instead (Catch2 v2 has no SKIP).
class MultiThreadCheck {
public:
    explicit MultiThreadCheck(std::string what)
        : what_(std::move(what)), start_(ssm::detail::parallel_loops_run().load()) {}

    /// True when this build can run parallel loops on several threads.
    [[nodiscard]] static constexpr bool available() noexcept {
#if defined(_OPENMP)
        return true;
#else
        return false;
#endif
    }

    /// Loops run on two or more threads since construction.
    [[nodiscard]] std::int64_t loops() const { return ssm::detail::parallel_loops_run().load() - start_; }

    void verify() const {
        if (!available()) {
            WARN("SKIPPED: " << what_ << " ran on one thread only (built without OpenMP)");
            return;
        }
        INFO(what_ << ": parallel loops run on 2+ threads: " << loops());
        REQUIRE(loops() > 0);
    }

private:
    std::string what_;
    std::int64_t start_;
};

/// `n` floats uniform in [lo, hi) from a seeded generator.
inline std::vector<float> random_floats(std::size_t n, float lo, float hi, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

/// The four `embed{k}.input_ids` sequences of a reference file (each ends in the EOS).
inline std::vector<std::vector<std::int32_t>> embed_inputs(const SafetensorsFile& ref) {
    std::vector<std::vector<std::int32_t>> seqs;
    for (int k = 0; k < 4; ++k) {
        const auto v = ref.load_i64("embed" + std::to_string(k) + ".input_ids");
        seqs.emplace_back(v.begin(), v.end());
    }
    return seqs;
}

/// Writes the reranker head of a reference file (`rerank.score.weight`, and
/// `rerank.score.bias` when `with_bias`) as `score.weight` / `score.bias` into `path`.
inline std::filesystem::path write_score_head(const SafetensorsFile& ref, const std::filesystem::path& path,
                                              bool with_bias = true) {
    const Tensor w = ref.load_f32("rerank.score.weight");
    const Tensor b = ref.load_f32("rerank.score.bias");
    std::vector<TensorToWrite> t = {f32_tensor("score.weight", {w.shape().begin(), w.shape().end()}, w.values())};
    if (with_bias) t.push_back(f32_tensor("score.bias", {b.shape().begin(), b.shape().end()}, b.values()));
    write_safetensors(path, t);
    return path;
}

/// Token ids stored as I64 in a reference file, as the model takes them.
inline std::vector<std::int32_t> ids_of(const SafetensorsFile& ref, const std::string& name) {
    const auto v = ref.load_i64(name);
    return {v.begin(), v.end()};
}

/// All of `m`, or `count` rows from `first`, as a flat span (for rel_error).
inline std::span<const float> span_of(const Matrix& m) { return {m.data(), static_cast<std::size_t>(m.size())}; }
inline std::span<const float> rows_of(const Matrix& m, index first, index count) {
    return {m.data() + first * m.cols(), static_cast<std::size_t>(count * m.cols())};
}

/// The worst |c − Σ_k a(i, k)·b(k, j)| / Σ|terms| over C (M, N; row stride ldc) for a GEMM's
/// result c, summed in double from `start` (C's values before an accumulating call; empty:
/// from zero); `a(i, k)` and `b(k, j)` give the operands' values as doubles.
template <class OperandA, class OperandB>
double worst_product_error(index M, index N, index K, const OperandA& a, const OperandB& b,
                           const std::vector<float>& c, index ldc, const std::vector<float>& start) {
    double worst = 0.0;
    for (index i = 0; i < M; ++i)
        for (index j = 0; j < N; ++j) {
            double sum = start.empty() ? 0.0 : start[static_cast<std::size_t>(i * ldc + j)];
            double mag = std::fabs(sum);
            for (index k = 0; k < K; ++k) {
                const double t = a(i, k) * b(k, j);
                sum += t;
                mag += std::fabs(t);
            }
            const double err = std::fabs(sum - c[static_cast<std::size_t>(i * ldc + j)]);
            // A NaN is the worst of errors (std::max would pass over it, as it compares false).
            if (std::isnan(err)) return std::numeric_limits<double>::infinity();
            worst = std::max(worst, mag > 0 ? err / mag : err);
        }
    return worst;
}

}  // namespace ssm::test
