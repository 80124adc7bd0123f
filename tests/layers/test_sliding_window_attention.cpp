// SlidingWindowAttention and RotaryEmbedding against a naive double-precision attention
// written here from the definition: packed sequences, windows of 1, 3 and none, multi-head,
// grouped and multi-query heads, full, partial and no RoPE, thread counts, Eigen's products
// and gemm_f32's; prefill continued through the key/value cache and one-token steps equal
// one prefill; the cache stops growing at the window.
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/layers/rotary.hpp"
#include "ssm/layers/sliding_window_attention.hpp"
#include "test_util.hpp"

namespace test_sliding_window_attention {

namespace {

using Shape = ssm::SlidingWindowAttention::Shape;

struct Weights {
    std::vector<float> q, k, v, o;
};

Weights random_weights(const Shape& s, ssm::index D, std::uint64_t seed) {
    const auto n = [](ssm::index a, ssm::index b) { return static_cast<std::size_t>(a * b); };
    const float r = 1.5f / std::sqrt(static_cast<float>(D));  // sharp enough attention
    return {ssm::test::random_floats(n(s.heads * s.head_dim, D), -r, r, seed),
            ssm::test::random_floats(n(s.kv_heads * s.head_dim, D), -r, r, seed + 1),
            ssm::test::random_floats(n(s.kv_heads * s.head_dim, D), -r, r, seed + 2),
            ssm::test::random_floats(n(D, s.heads * s.head_dim), -r, r, seed + 3)};
}

ssm::SlidingWindowAttention make(const Shape& s, ssm::index D, const Weights& w) {
    const auto t = [](const std::vector<float>& v, ssm::index rows, ssm::index cols) {
        return ssm::Tensor::from({rows, cols}, v);
    };
    const ssm::index q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
    return ssm::SlidingWindowAttention(s, t(w.q, q, D), t(w.k, kv, D), t(w.v, kv, D), t(w.o, D, q));
}

/// RoPE in double precision on float32 angles (the convention the layer documents).
void rope(std::vector<double>& x, ssm::index heads, ssm::index hd, ssm::index r, double base,
          std::int64_t pos) {
    for (ssm::index i = 0; i < r / 2; ++i) {
        const float inv =
            1.0f / static_cast<float>(std::pow(
                       static_cast<double>(static_cast<float>(base)),
                       static_cast<double>(static_cast<float>(2 * i) / static_cast<float>(r))));
        const double a = static_cast<double>(static_cast<float>(pos) * inv);
        for (ssm::index h = 0; h < heads; ++h) {
            double& x1 = x[static_cast<std::size_t>(h * hd + i)];
            double& x2 = x[static_cast<std::size_t>(h * hd + i + r / 2)];
            const double y1 = x1 * std::cos(a) - x2 * std::sin(a),
                         y2 = x2 * std::cos(a) + x1 * std::sin(a);
            x1 = y1;
            x2 = y2;
        }
    }
}

std::vector<double> project(const std::vector<float>& w, const float* x, ssm::index out,
                            ssm::index in) {
    std::vector<double> y(static_cast<std::size_t>(out), 0.0);
    for (ssm::index o = 0; o < out; ++o)
        for (ssm::index i = 0; i < in; ++i)
            y[static_cast<std::size_t>(o)] +=
                static_cast<double>(w[static_cast<std::size_t>(o * in + i)]) * x[i];
    return y;
}

/// The attention output (T, D) of packed sequences, each starting at position 0.
std::vector<float> naive(const Shape& s, ssm::index D, const Weights& w,
                         const std::vector<float>& x, const std::vector<ssm::index>& offsets) {
    const ssm::index T = offsets.back(), H = s.heads, G = s.kv_heads, hd = s.head_dim;
    std::vector<float> out(static_cast<std::size_t>(T * D));
    for (std::size_t q = 0; q + 1 < offsets.size(); ++q) {
        const ssm::index b = offsets[q], n = offsets[q + 1] - b;
        std::vector<std::vector<double>> Q, K, V;
        for (ssm::index t = 0; t < n; ++t) {
            const float* xt = x.data() + (b + t) * D;
            Q.push_back(project(w.q, xt, H * hd, D));
            K.push_back(project(w.k, xt, G * hd, D));
            V.push_back(project(w.v, xt, G * hd, D));
            rope(Q.back(), H, hd, s.rotary_dim, s.rope_theta, t);
            rope(K.back(), G, hd, s.rotary_dim, s.rope_theta, t);
        }
        for (ssm::index t = 0; t < n; ++t) {
            std::vector<float> y(static_cast<std::size_t>(H * hd));
            for (ssm::index h = 0; h < H; ++h) {
                const ssm::index g = h / (H / G);
                const ssm::index lo = s.window > 0 ? std::max<ssm::index>(0, t - s.window + 1) : 0;
                std::vector<double> p;
                double m = -1e300, sum = 0;
                for (ssm::index j = lo; j <= t; ++j) {
                    double d = 0;
                    for (ssm::index i = 0; i < hd; ++i)
                        d += Q[static_cast<std::size_t>(t)][static_cast<std::size_t>(h * hd + i)] *
                             K[static_cast<std::size_t>(j)][static_cast<std::size_t>(g * hd + i)];
                    p.push_back(d / std::sqrt(static_cast<double>(hd)));
                    m = std::max(m, p.back());
                }
                for (double& e : p) sum += (e = std::exp(e - m));
                for (ssm::index i = 0; i < hd; ++i) {
                    double acc = 0;
                    for (ssm::index j = lo; j <= t; ++j)
                        acc += p[static_cast<std::size_t>(j - lo)] / sum *
                               V[static_cast<std::size_t>(j)][static_cast<std::size_t>(g * hd + i)];
                    y[static_cast<std::size_t>(h * hd + i)] = static_cast<float>(acc);
                }
            }
            const auto o = project(w.o, y.data(), D, H * hd);
            for (ssm::index d = 0; d < D; ++d)
                out[static_cast<std::size_t>((b + t) * D + d)] =
                    static_cast<float>(o[static_cast<std::size_t>(d)]);
        }
    }
    return out;
}

ssm::Matrix run(const ssm::SlidingWindowAttention& a, const std::vector<float>& x,
                const std::vector<ssm::index>& offsets, ssm::Workspace& ws,
                const ssm::AttentionLayerState* in = nullptr,
                ssm::AttentionLayerState* out = nullptr) {
    const ssm::index T = offsets.back(), D = a.hidden_size();
    ssm::Matrix y = ssm::Matrix::Constant(T, D, std::nanf(""));
    ws.reset();
    a.forward(ssm::ConstStridedMap(x.data(), T, D, Eigen::OuterStride<>(D)), offsets,
              ssm::StridedMap(y.data(), T, D, Eigen::OuterStride<>(D)), false, ws, in, out);
    return y;
}

}  // namespace

TEST_CASE("attention: prefill over packed sequences equals the naive attention", "[attention]") {
    const ssm::test::MultiThreadCheck threaded("attention prefill at 3 threads");
    const ssm::index D = 24;
    const std::vector<ssm::index> offsets = {0, 5, 6, 23,
                                             93};  // 5, 1, 17, 70 tokens (70 > one query block)
    const Shape shapes[] = {{4, 2, 8, 3, 8, 10000.0},
                            {3, 3, 8, 1, 4, 10000.0},
                            {4, 1, 6, 0, 6, 500.0},
                            {2, 2, 12, 0, 0, 10000.0},
                            {4, 2, 8, 64, 8, 10000.0}};
    std::uint64_t seed = 100;
    for (const Shape& s : shapes) {
        INFO("heads " << s.heads << "/" << s.kv_heads << " hd " << s.head_dim << " window "
                      << s.window << " rotary " << s.rotary_dim);
        const Weights w = random_weights(s, D, seed += 10);
        const auto attn = make(s, D, w);
        const auto x =
            ssm::test::random_floats(static_cast<std::size_t>(offsets.back() * D), -1, 1, seed + 5);
        const auto expect = naive(s, D, w, x, offsets);
        for (const ssm::CpuIsa isa : ssm::test::float32_gemm_isas()) {  // Eigen's products, gemm_f32's
            const ssm::test::ForceCpuIsa hold(isa);
            for (int threads : {1, 3}) {
                INFO(ssm::isa_name(isa) << ", " << threads << " threads");
                ssm::set_num_threads(threads);
                ssm::Workspace ws;
                const auto y = run(attn, x, offsets, ws);
                CHECK(ssm::test::rel_error(ssm::test::span_of(y), expect) < 2e-6);
            }
        }
        ssm::set_num_threads(0);
    }
    threaded.verify();
}

TEST_CASE("attention: prefill in chunks and one-token steps equal one prefill", "[attention]") {
    const ssm::index D = 16;
    for (const ssm::CpuIsa isa : ssm::test::float32_gemm_isas()) {  // Eigen's products, gemm_f32's
        const ssm::test::ForceCpuIsa hold(isa);
        for (const Shape& s : {Shape{2, 1, 8, 4, 8, 10000.0}, Shape{2, 2, 8, 0, 4, 10000.0},
                               Shape{2, 1, 8, 1, 8, 10000.0}}) {
            INFO("window " << s.window << ", " << ssm::isa_name(isa));
            const Weights w = random_weights(s, D, 7);
            const auto attn = make(s, D, w);
            const std::vector<ssm::index> lengths = {13, 2};
            const auto x = ssm::test::random_floats(static_cast<std::size_t>(15 * D), -1, 1, 9);
            ssm::Workspace ws;
            const auto whole = run(attn, x, {0, 13, 15}, ws);

            // Chunks of 3, 1 and 9 tokens for the first sequence, 2 and 0 for the second.
            auto state = attn.make_state(2);
            std::vector<float> got(static_cast<std::size_t>(15 * D));
            ssm::index at0 = 0, at1 = 0;
            for (const auto& [n0, n1] : {std::pair<ssm::index, ssm::index>{3, 2}, {1, 0}, {9, 0}}) {
                std::vector<float> chunk;
                chunk.insert(chunk.end(), x.begin() + at0 * D, x.begin() + (at0 + n0) * D);
                chunk.insert(chunk.end(), x.begin() + (13 + at1) * D, x.begin() + (13 + at1 + n1) * D);
                const auto y = run(attn, chunk, {0, n0, n0 + n1}, ws, &state, &state);
                std::copy(y.data(), y.data() + n0 * D, got.begin() + at0 * D);
                std::copy(y.data() + n0 * D, y.data() + (n0 + n1) * D, got.begin() + (13 + at1) * D);
                at0 += n0;
                at1 += n1;
            }
            CHECK(state.pos == std::vector<std::int64_t>{13, 2});
            CHECK(ssm::test::rel_error(got, ssm::test::span_of(whole)) < 1e-6);

            // The first 5 tokens prefilled, the rest one step at a time.
            auto st = attn.make_state(1);
            (void)run(attn, std::vector<float>(x.begin(), x.begin() + 5 * D), {0, 5}, ws, nullptr, &st);
            for (ssm::index t = 5; t < 13; ++t) {
                ssm::Matrix y(1, D);
                ws.reset();
                attn.step(ssm::ConstStridedMap(x.data() + t * D, 1, D, Eigen::OuterStride<>(D)), st,
                          ssm::StridedMap(y.data(), 1, D, Eigen::OuterStride<>(D)), false, ws);
                INFO("step at position " << t);
                CHECK(ssm::test::rel_error(ssm::test::span_of(y), ssm::test::rows_of(whole, t, 1)) <
                      1e-6);
            }
            if (s.window > 0)
                CHECK(static_cast<ssm::index>(st.k[0].size()) ==
                      (s.window - 1) * s.kv_heads * s.head_dim);
            else
                CHECK(static_cast<ssm::index>(st.k[0].size()) == 13 * s.kv_heads * s.head_dim);
        }
    }
}

// Regression: window 1 makes a key/value cache of capacity 0, whose slot() computed p % 0
// if reached. A window of 1 attends to the token itself only, so the softmax weight is 1 and
// each head's output is the token's own value: out = Wo · [Wv x per head's group] —
// checked here directly, for prefill (with a cache carried between chunks) and steps.
TEST_CASE("attention: a window of 1 attends to the token itself only", "[attention]") {
    const ssm::index D = 16;
    const Shape s{4, 2, 8, 1, 8, 10000.0};
    const Weights w = random_weights(s, D, 21);
    const auto attn = make(s, D, w);
    const ssm::index T = 9, H = s.heads, G = s.kv_heads, hd = s.head_dim;
    const auto x = ssm::test::random_floats(static_cast<std::size_t>(T * D), -1, 1, 22);
    std::vector<float> expect(static_cast<std::size_t>(T * D));
    for (ssm::index t = 0; t < T; ++t) {
        const auto v = project(w.v, x.data() + t * D, G * hd, D);
        std::vector<float> y(static_cast<std::size_t>(H * hd));
        for (ssm::index h = 0; h < H; ++h)
            for (ssm::index i = 0; i < hd; ++i)
                y[static_cast<std::size_t>(h * hd + i)] =
                    static_cast<float>(v[static_cast<std::size_t>((h / (H / G)) * hd + i)]);
        const auto o = project(w.o, y.data(), D, H * hd);
        for (ssm::index d = 0; d < D; ++d)
            expect[static_cast<std::size_t>(t * D + d)] = static_cast<float>(o[static_cast<std::size_t>(d)]);
    }
    ssm::Workspace ws;
    CHECK(ssm::test::rel_error(ssm::test::span_of(run(attn, x, {0, T}, ws)), expect) < 1e-6);

    // Prefill of 4 tokens through the (empty) cache, then one-token steps.
    auto state = attn.make_state(1);
    CHECK(state.capacity == 0);
    const auto first = run(attn, std::vector<float>(x.begin(), x.begin() + 4 * D), {0, 4}, ws, &state, &state);
    CHECK(ssm::test::rel_error(ssm::test::span_of(first), std::span<const float>(expect.data(), 4 * D)) < 1e-6);
    for (ssm::index t = 4; t < T; ++t) {
        ssm::Matrix y(1, D);
        ws.reset();
        attn.step(ssm::ConstStridedMap(x.data() + t * D, 1, D, Eigen::OuterStride<>(D)), state,
                  ssm::StridedMap(y.data(), 1, D, Eigen::OuterStride<>(D)), false, ws);
        CHECK(ssm::test::rel_error(ssm::test::span_of(y),
                                   std::span<const float>(expect.data() + t * D, static_cast<std::size_t>(D))) < 1e-6);
    }
    CHECK(state.pos == std::vector<std::int64_t>{T});
    CHECK(state.k[0].empty());
    // The ring of capacity 0 has no slot to ask for.
    CHECK(ssm::test::error_of([&] { (void)state.slot(3); }).find("capacity 0") != std::string::npos);
}

TEST_CASE("attention: a cache for another batch or width is refused", "[attention]") {
    const Shape s{2, 1, 8, 4, 8, 10000.0};
    const auto attn = make(s, 16, random_weights(s, 16, 3));
    auto state = attn.make_state(3);
    ssm::Workspace ws;
    const auto x = ssm::test::random_floats(32, -1, 1, 4);
    CHECK(ssm::test::error_of([&] {
              (void)run(attn, x, {0, 2}, ws, &state, &state);
          }).find("cache") != std::string::npos);
    {  // offsets that do not cover the 2 rows
        ssm::Matrix y(2, 16);
        const ssm::index offsets[] = {0, 1};
        CHECK(ssm::test::error_of([&] {
                  attn.forward(ssm::ConstStridedMap(x.data(), 2, 16, Eigen::OuterStride<>(16)),
                               offsets, ssm::StridedMap(y.data(), 2, 16, Eigen::OuterStride<>(16)),
                               false, ws);
              }).find("offsets") != std::string::npos);
    }
    const Shape wider{2, 1, 8, 6, 8, 10000.0};  // same width, another window
    auto other = make(wider, 16, random_weights(wider, 16, 3)).make_state(1);
    CHECK(ssm::test::error_of([&] {
              (void)run(attn, x, {0, 2}, ws, &other, &other);
          }).find("window") != std::string::npos);
    CHECK_THROWS_AS(ssm::SlidingWindowAttention(
                        {3, 2, 8, 4, 8, 1e4}, ssm::Tensor::from({24, 16}, std::vector<float>(384)),
                        ssm::Tensor::from({16, 16}, std::vector<float>(256)),
                        ssm::Tensor::from({16, 16}, std::vector<float>(256)),
                        ssm::Tensor::from({16, 24}, std::vector<float>(384))),
                    ssm::Error);  // 3 heads cannot share 2 groups
}

TEST_CASE("rotary: rotations keep lengths, and scores depend on relative position only",
          "[attention]") {
    const ssm::RotaryEmbedding rope(16, 10000.0);
    const auto q0 = ssm::test::random_floats(16, -1, 1, 1),
               k0 = ssm::test::random_floats(16, -1, 1, 2);
    const auto rotated = [&](std::vector<float> v, std::int64_t pos) {
        std::vector<float> cs(16);
        rope.angles(pos, cs.data());
        rope.apply(v.data(), 1, 16, cs.data());
        return v;
    };
    const auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
        double d = 0;
        for (std::size_t i = 0; i < a.size(); ++i) d += static_cast<double>(a[i]) * b[i];
        return d;
    };
    CHECK(rotated(q0, 0) == q0);
    CHECK(std::abs(dot(rotated(q0, 37), rotated(q0, 37)) - dot(q0, q0)) < 1e-6 * dot(q0, q0));
    const double s1 = dot(rotated(q0, 10), rotated(k0, 3)),
                 s2 = dot(rotated(q0, 50), rotated(k0, 43));
    CHECK(std::abs(s1 - s2) < 1e-5 * std::abs(s1));
    CHECK(std::abs(s1 - dot(rotated(q0, 10), rotated(k0, 4))) > 1e-3);  // and it does depend on it
}

}  // namespace test_sliding_window_attention
