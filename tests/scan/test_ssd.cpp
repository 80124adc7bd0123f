// The SSD scan: the sequential form against a float64 recurrence written here, the chunked
// form against the sequential one (chunk lengths below, at and across sequence lengths,
// packed boundaries inside chunks, groups, carried and final states; Eigen's products and
// gemm_f32's), and the one-token update against the prefill.
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "ssm/scan/ssd.hpp"
#include "test_util.hpp"

namespace test_ssd {

namespace {

using Index = ssm::index;
using ssm::test::rel_error;

struct Problem {
    Index T, H, P, N, G;
    std::vector<Index> offsets;
    std::vector<float> x, dt, A, B, C, s0;
};

Problem make(std::vector<Index> lengths, Index H, Index P, Index N, Index G, std::uint64_t seed) {
    Problem p{0, H, P, N, G, {0}, {}, {}, {}, {}, {}, {}};
    for (Index l : lengths) p.offsets.push_back(p.offsets.back() + l);
    p.T = p.offsets.back();
    const auto T = static_cast<std::size_t>(p.T);
    p.x = ssm::test::random_floats(T * static_cast<std::size_t>(H * P), -1.0f, 1.0f, seed);
    p.dt = ssm::test::random_floats(T * static_cast<std::size_t>(H), 0.01f, 0.6f, seed + 1);
    p.A = ssm::test::random_floats(static_cast<std::size_t>(H), -3.0f, -0.2f, seed + 2);
    p.B = ssm::test::random_floats(T * static_cast<std::size_t>(G * N), -1.0f, 1.0f, seed + 3);
    p.C = ssm::test::random_floats(T * static_cast<std::size_t>(G * N), -1.0f, 1.0f, seed + 4);
    p.s0 = ssm::test::random_floats(lengths.size() * static_cast<std::size_t>(H * P * N), -1.0f, 1.0f, seed + 5);
    return p;
}

ssm::SsdArgs args_of(const Problem& p, std::vector<float>& y, std::vector<float>* final_state, bool with_initial,
                     Index chunk = 0) {
    ssm::SsdArgs a;
    a.T = p.T;
    a.H = p.H;
    a.P = p.P;
    a.N = p.N;
    a.G = p.G;
    a.x = p.x.data();
    a.ld_x = p.H * p.P;
    a.dt = p.dt.data();
    a.ld_dt = p.H;
    a.A = p.A.data();
    a.B = p.B.data();
    a.ld_B = p.G * p.N;
    a.C = p.C.data();
    a.ld_C = p.G * p.N;
    y.assign(static_cast<std::size_t>(p.T * p.H * p.P), 0.0f);
    a.y = y.data();
    a.ld_y = p.H * p.P;
    a.offsets = p.offsets;
    a.initial_state = with_initial ? p.s0.data() : nullptr;
    if (final_state) {
        final_state->assign(p.s0.size(), 0.0f);
        a.final_state = final_state->data();
    }
    a.chunk = chunk;
    return a;
}

// The recurrence in float64, written independently of the library.
void reference(const Problem& p, bool with_initial, std::vector<float>& y, std::vector<float>& final_state) {
    y.assign(static_cast<std::size_t>(p.T * p.H * p.P), 0.0f);
    final_state.assign(p.s0.size(), 0.0f);
    const Index nseq = static_cast<Index>(p.offsets.size()) - 1;
    for (Index s = 0; s < nseq; ++s)
        for (Index h = 0; h < p.H; ++h) {
            const Index g = h / (p.H / p.G);
            std::vector<double> S(static_cast<std::size_t>(p.P * p.N), 0.0);
            const Index base = (s * p.H + h) * p.P * p.N;
            if (with_initial)
                for (Index i = 0; i < p.P * p.N; ++i) S[static_cast<std::size_t>(i)] = p.s0[static_cast<std::size_t>(base + i)];
            for (Index t = p.offsets[static_cast<std::size_t>(s)]; t < p.offsets[static_cast<std::size_t>(s) + 1]; ++t) {
                const double dt = p.dt[static_cast<std::size_t>(t * p.H + h)];
                const double decay = std::exp(dt * p.A[static_cast<std::size_t>(h)]);
                for (Index i = 0; i < p.P; ++i) {
                    double acc = 0.0;
                    for (Index n = 0; n < p.N; ++n) {
                        double& v = S[static_cast<std::size_t>(i * p.N + n)];
                        v = decay * v + dt * p.x[static_cast<std::size_t>(t * p.H * p.P + h * p.P + i)] *
                                            p.B[static_cast<std::size_t>(t * p.G * p.N + g * p.N + n)];
                        acc += v * p.C[static_cast<std::size_t>(t * p.G * p.N + g * p.N + n)];
                    }
                    y[static_cast<std::size_t>(t * p.H * p.P + h * p.P + i)] = static_cast<float>(acc);
                }
            }
            for (Index i = 0; i < p.P * p.N; ++i)
                final_state[static_cast<std::size_t>(base + i)] = static_cast<float>(S[static_cast<std::size_t>(i)]);
        }
}

}  // namespace

TEST_CASE("SSD: the sequential scan matches a float64 recurrence", "[ssd]") {
    for (bool initial : {false, true}) {
        INFO("initial state " << initial);
        const auto p = make({37, 1, 90}, 4, 8, 16, 2, 11);
        std::vector<float> y, fin, y_ref, fin_ref;
        ssm::SequentialSsd::run(args_of(p, y, &fin, initial));
        reference(p, initial, y_ref, fin_ref);
        CHECK(rel_error(y, y_ref) < 1e-5);
        CHECK(rel_error(fin, fin_ref) < 1e-5);
    }
}

TEST_CASE("SSD: the chunked scan equals the sequential one for any chunk length and packing", "[ssd]") {
    struct Shape {
        std::vector<Index> lengths;
        Index H, P, N, G;
    };
    const Shape shapes[] = {{{1}, 2, 4, 8, 1},
                            {{16}, 3, 8, 16, 1},
                            {{17, 5, 64, 33}, 4, 8, 16, 2},
                            {{300}, 8, 16, 32, 4},
                            {{7, 129, 2, 100}, 6, 4, 8, 3}};
    std::uint64_t seed = 100;
    for (const auto& sh : shapes) {
        const auto p = make(sh.lengths, sh.H, sh.P, sh.N, sh.G, seed++);
        for (bool initial : {false, true}) {
            std::vector<float> y_seq, fin_seq;
            ssm::SequentialSsd::run(args_of(p, y_seq, &fin_seq, initial));
            // The last: a config's largest chunk size, cut to the longest sequence.
            for (Index chunk : {Index{1}, Index{3}, Index{16}, Index{64}, Index{128}, Index{512}, Index{1} << 24}) {
                for (const ssm::CpuIsa isa : ssm::test::float32_gemm_isas()) {  // Eigen's products, gemm_f32's
                    const ssm::test::ForceCpuIsa hold(isa);
                    INFO("T " << p.T << ", H " << sh.H << ", G " << sh.G << ", chunk " << chunk << ", initial "
                              << initial << ", " << ssm::isa_name(isa));
                    std::vector<float> y, fin;
                    ssm::ChunkedSsd<>::run(args_of(p, y, &fin, initial, chunk));
                    CHECK(rel_error(y, y_seq) < 2e-6);
                    CHECK(rel_error(fin, fin_seq) < 2e-6);
                }
            }
        }
    }
}

TEST_CASE("SSD: strong decay over a long chunk stays accurate", "[ssd]") {
    // Δ·A sums to about −500 over a chunk; the decay weights come from differences of
    // those sums, which must not lose the small ones.
    auto p = make({256}, 2, 4, 8, 1, 7);
    for (auto& d : p.dt) d = 1.0f + d;
    std::vector<float> y_seq, y, fin_seq, fin, y_ref, fin_ref;
    ssm::SequentialSsd::run(args_of(p, y_seq, &fin_seq, true));
    ssm::ChunkedSsd<>::run(args_of(p, y, &fin, true, 256));
    reference(p, true, y_ref, fin_ref);
    CHECK(rel_error(y, y_ref) < 1e-5);
    CHECK(rel_error(fin, fin_ref) < 1e-5);
    CHECK(rel_error(y_seq, y_ref) < 1e-5);
}

TEST_CASE("SSD: prefill in pieces through the state and the one-token update equal one prefill", "[ssd]") {
    const auto p = make({50}, 4, 8, 16, 2, 21);
    std::vector<float> y_all, fin_all;
    ssm::ChunkedSsd<>::run(args_of(p, y_all, &fin_all, false, 16));
    // The first 40 tokens by prefill, the last 10 one at a time.
    auto head = p;
    head.offsets = {0, 40};
    head.T = 40;
    std::vector<float> y_head, state;
    ssm::ChunkedSsd<>::run(args_of(head, y_head, &state, false, 16));
    const Index row = p.H * p.P;
    CHECK(rel_error(y_head, std::span<const float>(y_all.data(), static_cast<std::size_t>(40 * row))) < 1e-6);
    for (Index t = 40; t < 50; ++t) {
        ssm::SsdArgs a;
        a.T = 1;
        a.H = p.H;
        a.P = p.P;
        a.N = p.N;
        a.G = p.G;
        a.x = p.x.data() + t * row;
        a.ld_x = row;
        a.dt = p.dt.data() + t * p.H;
        a.ld_dt = p.H;
        a.A = p.A.data();
        a.B = p.B.data() + t * p.G * p.N;
        a.ld_B = p.G * p.N;
        a.C = p.C.data() + t * p.G * p.N;
        a.ld_C = p.G * p.N;
        std::vector<float> y(static_cast<std::size_t>(row));
        a.y = y.data();
        a.ld_y = row;
        ssm::ssd_state_update(a, state.data());
        INFO("token " << t);
        CHECK(rel_error(y, std::span<const float>(y_all.data() + t * row, static_cast<std::size_t>(row))) < 1e-6);
    }
    CHECK(rel_error(state, fin_all) < 1e-6);
}

TEST_CASE("SSD: inconsistent arguments are refused", "[ssd]") {
    const auto p = make({10}, 4, 8, 16, 2, 3);
    std::vector<float> y;
    auto a = args_of(p, y, nullptr, false);
    a.G = 3;  // 4 heads do not split into 3 groups
    CHECK(ssm::test::error_of([&] { ssm::ChunkedSsd<>::run(a); }).find("bad sizes") != std::string::npos);
    a = args_of(p, y, nullptr, false);
    const std::vector<Index> bad = {0, 9};
    a.offsets = bad;
    CHECK(ssm::test::error_of([&] { ssm::SequentialSsd::run(a); }).find("offsets") != std::string::npos);
}

TEST_CASE("SSD: the chunked scan gives the same result on any thread count", "[ssd]") {
    // One sequence and one group: the heads are split into blocks across threads.
    const auto p = make({45}, 6, 4, 8, 1, 31);
    std::vector<float> y_seq, fin_seq;
    ssm::SequentialSsd::run(args_of(p, y_seq, &fin_seq, true));
    for (int threads : {1, 2, 4, 7}) {
        INFO("threads " << threads);
        ssm::set_num_threads(threads);
        std::vector<float> y, fin;
        ssm::ChunkedSsd<>::run(args_of(p, y, &fin, true, 8));
        CHECK(rel_error(y, y_seq) < 2e-6);
        CHECK(rel_error(fin, fin_seq) < 2e-6);
    }
    ssm::set_num_threads(0);
}

}  // namespace test_ssd
