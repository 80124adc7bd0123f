// gemm_bf16 on AMX's tiles. The tile kernel (`amx_block`, and the two GEMMs around it that
// pad, pack and split the work) is a template over the tile instructions, so it runs here
// under an emulation of them written from the instruction set reference: a tile is 16 rows
// of 64 bytes; tileloadd reads row r from base + r·stride; tdpbf16ps adds, for every row m
// and column n of the sums, over the 16 pairs k, a[m][2k]·b[k][2n] then a[m][2k+1]·b[k][2n+1]
// (bf16 values widened to float32, products exact, float32 sums); tilestored writes rows the
// same way (the hardware may order the float32 additions otherwise, and flushes subnormal
// values: differences of rounding, inside the bound). The emulation also records a tile used
// outside begin() / end() and counts the products, so a test knows the tiles ran. Against the double product of the bf16-rounded
// operands: shapes on every side of the 16-row and 16-pair tiles, 32 × 32 tile blocks and
// 64-feature blocks, overwrite and accumulate, columns past the output untouched, the same
// bits at any thread count. On a CPU with AMX the same products run on the instructions
// themselves; elsewhere that part says it did not run, and the dispatch's refusal is checked.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "ssm/core/gemm_bf16.hpp"
#include "test_util.hpp"

namespace test_gemm_amx {

namespace {

using ssm::index;

constexpr double kBound = 1e-5;  // as test_gemm_bf16's: float32 sums of exact bf16 products

double rounded(float v) { return static_cast<double>(ssm::bf16_to_f32(ssm::f32_to_bf16(v))); }

/// The tile instructions in C++, per thread (a tile configuration is a thread's own state).
struct EmulatedTiles {
    struct State {
        bool configured = false;
        std::array<std::array<unsigned char, 16 * 64>, 8> tile{};
    };
    static State& state() {
        thread_local State s;
        return s;
    }
    static std::atomic<long>& misuse() {  // a tile op outside begin() / end(), or nested begin()
        static std::atomic<long> n{0};
        return n;
    }
    static std::atomic<long>& products() {  // tdpbf16ps executed
        static std::atomic<long> n{0};
        return n;
    }
    static void used() {
        if (!state().configured) misuse().fetch_add(1);
    }

    static void begin() {
        if (state().configured) misuse().fetch_add(1);
        state().configured = true;
        for (auto& t : state().tile) t.fill(0xAB);  // garbage until zeroed or loaded
    }
    static void end() {
        used();
        state().configured = false;
    }
    template <int T>
    static void zero() {
        used();
        state().tile[T].fill(0);
    }
    template <int T>
    static void load(const void* p, index stride) {
        used();
        for (int r = 0; r < 16; ++r)
            std::memcpy(state().tile[T].data() + 64 * r, static_cast<const unsigned char*>(p) + r * stride, 64);
    }
    template <int T>
    static void store(void* p, index stride) {
        used();
        for (int r = 0; r < 16; ++r)
            std::memcpy(static_cast<unsigned char*>(p) + r * stride, state().tile[T].data() + 64 * r, 64);
    }
    template <int C, int A, int B>
    static void dot() {
        used();
        products().fetch_add(1, std::memory_order_relaxed);
        float c[16][16];
        std::uint16_t a[16][32], b[16][32];
        std::memcpy(c, state().tile[C].data(), sizeof c);
        std::memcpy(a, state().tile[A].data(), sizeof a);
        std::memcpy(b, state().tile[B].data(), sizeof b);
        for (int m = 0; m < 16; ++m)
            for (int k = 0; k < 16; ++k)
                for (int n = 0; n < 16; ++n) {
                    c[m][n] += ssm::bf16_to_f32(a[m][2 * k]) * ssm::bf16_to_f32(b[k][2 * n]);
                    c[m][n] += ssm::bf16_to_f32(a[m][2 * k + 1]) * ssm::bf16_to_f32(b[k][2 * n + 1]);
                }
        std::memcpy(state().tile[C].data(), c, sizeof c);
    }
};

/// X (M, K) and W (N, K) random, the output's row stride N + 3 (columns that must stay).
struct Problem {
    index M, N, K;
    std::vector<float> x, w;
    std::vector<std::uint16_t> wb;  // W rounded to bf16
    Problem(index m, index n, index k, std::uint64_t seed) : M(m), N(n), K(k) {
        x = ssm::test::random_floats(static_cast<std::size_t>(M * K), -1, 1, seed);
        w = ssm::test::random_floats(static_cast<std::size_t>(N * K), -1, 1, seed + 1);
        wb.resize(w.size());
        for (std::size_t i = 0; i < w.size(); ++i) wb[i] = ssm::f32_to_bf16(w[i]);
    }
    /// X rounded to bf16 in rows of 2·P values, `stored` rows, zeros past the data (the
    /// layout `amx_block` reads).
    [[nodiscard]] std::vector<std::uint16_t> rounded_x(index P, index stored) const {
        std::vector<std::uint16_t> xb(static_cast<std::size_t>(stored * 2 * P), 0);
        for (index r = 0; r < M; ++r)
            for (index k = 0; k < K; ++k)
                xb[static_cast<std::size_t>(r * 2 * P + k)] = ssm::f32_to_bf16(x[static_cast<std::size_t>(r * K + k)]);
        return xb;
    }
    [[nodiscard]] double error(const std::vector<float>& y, index ldy, const std::vector<float>& start) const {
        return ssm::test::worst_product_error(
            M, N, K, [&](index i, index k) { return rounded(x[static_cast<std::size_t>(i * K + k)]); },
            [&](index k, index j) { return rounded(w[static_cast<std::size_t>(j * K + k)]); }, y, ldy, start);
    }
};

bool columns_untouched(const std::vector<float>& y, const std::vector<float>& before, index M, index N, index ldy) {
    for (index i = 0; i < M; ++i)
        for (index j = N; j < ldy; ++j)
            if (y[static_cast<std::size_t>(i * ldy + j)] != before[static_cast<std::size_t>(i * ldy + j)]) return false;
    return true;
}

}  // namespace

TEST_CASE("amx_block on emulated tiles equals the double product of the rounded operands", "[gemm][amx]") {
    // Runs on any CPU: the packing is portable, X is rounded here, the tiles are emulated.
    std::uint64_t seed = 300;
    EmulatedTiles::misuse() = 0;
    for (const index M : {1, 15, 16, 17, 31, 32, 33, 50})
        for (const index cols : {1, 16, 17, 32, 33, 48, 64})
            for (const index K : {1, 2, 31, 32, 33, 64, 100}) {
                INFO("M " << M << " cols " << cols << " K " << K);
                const Problem p(M, cols, K, seed);
                seed += 2;
                const ssm::PackedBf16 packed(p.wb.data(), K, cols, K);
                const index P = packed.padded_pairs();
                REQUIRE(P % 16 == 0);
                REQUIRE(P >= packed.pairs());
                const std::vector<std::uint16_t> xb = p.rounded_x(P, (M + 15) / 16 * 16);  // whole tiles of rows
                const index ldy = cols + 3;
                for (const bool accumulate : {false, true}) {
                    INFO("accumulate " << accumulate);
                    std::vector<float> y = ssm::test::random_floats(static_cast<std::size_t>(M * ldy), -1, 1, seed++);
                    const std::vector<float> before = y;
                    const long products = EmulatedTiles::products().load();
                    EmulatedTiles::begin();
                    ssm::detail::amx_block<EmulatedTiles>(xb.data(), P, M, packed.block(0), P, y.data(), ldy, cols,
                                                          accumulate);
                    EmulatedTiles::end();
                    CHECK(EmulatedTiles::products().load() > products);
                    CHECK(p.error(y, ldy, accumulate ? before : std::vector<float>{}) < kBound);
                    CHECK(columns_untouched(y, before, M, cols, ldy));
                }
            }
    CHECK(EmulatedTiles::misuse().load() == 0);
}

TEST_CASE("a kernel that reads the tiles wrongly fails the emulated check", "[gemm][amx]") {
    // The emulation is what the checks above stand on: the same call told the depth is one
    // tile shorter (half of K = 64 dropped), or reading X one row down, is far outside the bound.
    const index M = 20, cols = 40, K = 64;
    const Problem p(M, cols, K, 11);
    const ssm::PackedBf16 packed(p.wb.data(), K, cols, K);
    const index P = packed.padded_pairs();
    REQUIRE(P == 32);
    const std::vector<std::uint16_t> xb = p.rounded_x(P, 48);  // room to read one row down
    std::vector<float> y(static_cast<std::size_t>(M * cols)), shallow(y.size()), down(y.size());
    EmulatedTiles::begin();
    ssm::detail::amx_block<EmulatedTiles>(xb.data(), P, M, packed.block(0), P, y.data(), cols, cols, false);
    ssm::detail::amx_block<EmulatedTiles>(xb.data(), P, M, packed.block(0), P - 16, shallow.data(), cols, cols, false);
    ssm::detail::amx_block<EmulatedTiles>(xb.data() + 2 * P, P, M, packed.block(0), P, down.data(), cols, cols, false);
    EmulatedTiles::end();
    CHECK(p.error(y, cols, {}) < kBound);
    CHECK(p.error(shallow, cols, {}) > 0.05);
    CHECK(p.error(down, cols, {}) > 0.05);
}

#if SSM_X86_DISPATCH
TEST_CASE("gemm_bf16's tile path on emulated tiles: padding, packing and the split over threads", "[gemm][amx]") {
    // The two GEMMs around the kernel round X with AVX512-BF16's conversion, so they run
    // where the CPU has it.
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        WARN("SKIPPED: this CPU has no AVX512-BF16 (" << ssm::isa_name(ssm::detected_cpu_isa())
                                                      << "): the tile path's GEMMs were not run; amx_block was");
        return;
    }
    const ssm::test::ForceCpuIsa unit(ssm::CpuIsa::Avx512Bf16);
    EmulatedTiles::misuse() = 0;
    std::uint64_t seed = 900;
    for (const index M : {1, 17, 40})
        for (const index N : {1, 64, 65, 130})
            for (const index K : {1, 3, 32, 97}) {
                INFO("M " << M << " N " << N << " K " << K);
                const Problem p(M, N, K, seed);
                seed += 2;
                const ssm::PackedBf16 packed(p.wb.data(), K, N, K);
                const index ldy = N + 3;
                for (const bool accumulate : {false, true}) {
                    INFO("accumulate " << accumulate);
                    std::vector<float> y = ssm::test::random_floats(static_cast<std::size_t>(M * ldy), -1, 1, seed++);
                    const std::vector<float> before = y;
                    ssm::detail::gemm_bf16_packed<EmulatedTiles>(p.x.data(), K, M, packed, y.data(), ldy, accumulate);
                    CHECK(p.error(y, ldy, accumulate ? before : std::vector<float>{}) < kBound);
                    CHECK(columns_untouched(y, before, M, N, ldy));
                    // The general form: A = X rows, B = Wᵀ (W's rows read as columns).
                    std::vector<float> g = before;
                    ssm::detail::gemm_bf16_operands<EmulatedTiles>(ssm::GemmOperand::rows(p.x.data(), K),
                                                                   ssm::GemmOperand::transposed(p.w.data(), K), M, N, K,
                                                                   g.data(), ldy, accumulate);
                    CHECK(p.error(g, ldy, accumulate ? before : std::vector<float>{}) < kBound);
                    CHECK(columns_untouched(g, before, M, N, ldy));
                }
            }
    // Several 768-row tasks and column blocks; the transposed forms of training's products.
    const Problem big(800, 70, 41, 5);
    std::vector<float> whole(static_cast<std::size_t>(800 * 70)), one(whole.size()), three(whole.size());
    const auto run = [&](std::vector<float>& out) {
        ssm::detail::gemm_bf16_operands<EmulatedTiles>(ssm::GemmOperand::rows(big.x.data(), 41),
                                                       ssm::GemmOperand::transposed(big.w.data(), 41), 800, 70, 41,
                                                       out.data(), 70, false);
    };
    run(whole);
    CHECK(big.error(whole, 70, {}) < kBound);
    ssm::set_num_threads(1);
    run(one);
    ssm::set_num_threads(3);
    run(three);
    ssm::set_num_threads(0);
    CHECK(one == whole);
    CHECK(three == whole);
    // dW += dyᵀ·x: A read by columns (Aᵀ), B by rows.
    const index T = 50, O = 33, I = 45;
    const auto dy = ssm::test::random_floats(static_cast<std::size_t>(T * O), -1, 1, 6);
    const auto xin = ssm::test::random_floats(static_cast<std::size_t>(T * I), -1, 1, 7);
    std::vector<float> dw(static_cast<std::size_t>(O * I));
    ssm::detail::gemm_bf16_operands<EmulatedTiles>(ssm::GemmOperand::transposed(dy.data(), O),
                                                   ssm::GemmOperand::rows(xin.data(), I), O, I, T, dw.data(), I, false);
    const double e = ssm::test::worst_product_error(
        O, I, T, [&](index o, index t) { return rounded(dy[static_cast<std::size_t>(t * O + o)]); },
        [&](index t, index i) { return rounded(xin[static_cast<std::size_t>(t * I + i)]); }, dw, I, {});
    CHECK(e < kBound);
    // The padding is written on every call: buffers left holding infinities by a deeper,
    // taller call would turn a padded 0 · ∞ into NaN.
    {
        const index Md = 48, Nd = 64, Kd = 64;
        const std::vector<float> inf_x(static_cast<std::size_t>(Md * Kd), std::numeric_limits<float>::infinity());
        const std::vector<float> inf_w(static_cast<std::size_t>(Nd * Kd), std::numeric_limits<float>::infinity());
        const std::vector<std::uint16_t> inf_wb(inf_w.size(), ssm::f32_to_bf16(inf_w[0]));
        std::vector<float> sink(static_cast<std::size_t>(Md * Nd));
        ssm::detail::gemm_bf16_operands<EmulatedTiles>(ssm::GemmOperand::rows(inf_x.data(), Kd),
                                                       ssm::GemmOperand::transposed(inf_w.data(), Kd), Md, Nd, Kd,
                                                       sink.data(), Nd, false);
        ssm::detail::gemm_bf16_packed<EmulatedTiles>(inf_x.data(), Kd, Md, ssm::PackedBf16(inf_wb.data(), Kd, Nd, Kd),
                                                     sink.data(), Nd, false);
        const Problem q(17, 64, 33, 8);
        std::vector<float> y(static_cast<std::size_t>(17 * 64)), g(y.size());
        ssm::detail::gemm_bf16_operands<EmulatedTiles>(ssm::GemmOperand::rows(q.x.data(), 33),
                                                       ssm::GemmOperand::transposed(q.w.data(), 33), 17, 64, 33,
                                                       g.data(), 64, false);
        ssm::detail::gemm_bf16_packed<EmulatedTiles>(q.x.data(), 33, 17, ssm::PackedBf16(q.wb.data(), 33, 64, 33),
                                                     y.data(), 64, false);
        CHECK(q.error(g, 64, {}) < kBound);
        CHECK(q.error(y, 64, {}) < kBound);
    }
    CHECK(EmulatedTiles::misuse().load() == 0);
}
#endif

TEST_CASE("gemm_bf16 on the CPU's own tiles where it has AMX", "[gemm][amx]") {
    if (!ssm::cpu_supports(ssm::CpuIsa::Amx)) {
        WARN("SKIPPED: this CPU (or its kernel) offers no AMX tiles ("
             << ssm::isa_name(ssm::detected_cpu_isa()) << "): the tile instructions did not run here; only the "
             << "dispatch's refusal was checked");
        CHECK_FALSE(ssm::cpu_has_amx_bf16());
        CHECK_FALSE(ssm::detail::amx_permission());  // nothing to ask the kernel for
        CHECK_FALSE(ssm::cpu_can_use(ssm::CpuIsa::Amx));
        const std::string e = ssm::test::error_of([] { ssm::use_cpu_isa(ssm::CpuIsa::Amx); });
        CHECK(e.find("amx") != std::string::npos);
        CHECK(ssm::cpu_isa() != ssm::CpuIsa::Amx);
        return;
    }
    const ssm::test::ForceCpuIsa tiles(ssm::CpuIsa::Amx);
    REQUIRE(ssm::gemm_bf16_available());
    std::uint64_t seed = 1200;
    for (const index M : {1, 17, 40, 800})
        for (const index N : {1, 65, 130})
            for (const index K : {1, 33, 768}) {
                INFO("M " << M << " N " << N << " K " << K);
                const Problem p(M, N, K, seed);
                seed += 2;
                const index ldy = N + 3;
                for (const bool accumulate : {false, true}) {
                    std::vector<float> y = ssm::test::random_floats(static_cast<std::size_t>(M * ldy), -1, 1, seed++);
                    const std::vector<float> before = y;
                    ssm::gemm_bf16(p.x.data(), K, M, K, p.wb.data(), K, N, y.data(), ldy, accumulate);
                    CHECK(p.error(y, ldy, accumulate ? before : std::vector<float>{}) < kBound);
                    CHECK(columns_untouched(y, before, M, N, ldy));
                    std::vector<float> g = before;
                    ssm::gemm_bf16(ssm::GemmOperand::rows(p.x.data(), K), ssm::GemmOperand::transposed(p.w.data(), K),
                                   M, N, K, g.data(), ldy, accumulate);
                    CHECK(p.error(g, ldy, accumulate ? before : std::vector<float>{}) < kBound);
                }
            }
}

}  // namespace test_gemm_amx
