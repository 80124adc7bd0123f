// CausalConv1d against a naive per-sequence convolution; prefill with carried state and
// the one-token step against one long prefill; any width K.
#include <cmath>
#include <vector>

#include "ssm/layers/causal_conv1d.hpp"
#include "test_util.hpp"

namespace test_causal_conv1d {

namespace {

double silu(double v) { return v / (1 + std::exp(-v)); }

// out[t,e] = b[e] + Σ_k w[e,k] x[t-(K-1)+k, e], zero before the sequence start.
std::vector<float> naive(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                         const std::vector<ssm::index>& offsets, ssm::index E, ssm::index K, bool act) {
    std::vector<float> out(x.size());
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s)
        for (ssm::index t = offsets[s]; t < offsets[s + 1]; ++t)
            for (ssm::index e = 0; e < E; ++e) {
                double acc = b[static_cast<std::size_t>(e)];
                for (ssm::index k = 0; k < K; ++k) {
                    const ssm::index src = t - (K - 1) + k;
                    if (src >= offsets[s]) acc += static_cast<double>(w[static_cast<std::size_t>(e * K + k)]) *
                                                  x[static_cast<std::size_t>(src * E + e)];
                }
                out[static_cast<std::size_t>(t * E + e)] = static_cast<float>(act ? silu(acc) : acc);
            }
    return out;
}

ssm::ConstStridedMap cmap(const std::vector<float>& v, ssm::index rows, ssm::index cols) {
    return {v.data(), rows, cols, Eigen::OuterStride<>(cols)};
}
ssm::StridedMap map(std::vector<float>& v, ssm::index rows, ssm::index cols) {
    return {v.data(), rows, cols, Eigen::OuterStride<>(cols)};
}

}  // namespace

TEST_CASE("CausalConv1d prefill equals the naive convolution over packed sequences", "[conv]") {
    const ssm::test::MultiThreadCheck threaded("CausalConv1d prefill at 2 threads");
    const ssm::index E = 19;
    const std::vector<ssm::index> offsets = {0, 1, 6, 7, 30, 33, 160};  // 160 rows: 2 threads (64 each, at least)
    const ssm::index T = offsets.back();
    for (ssm::index K : {1, 2, 4, 5}) {
        const auto w = ssm::test::random_floats(static_cast<std::size_t>(E * K), -1, 1, 30 + K);
        const auto b = ssm::test::random_floats(static_cast<std::size_t>(E), -1, 1, 40 + K);
        const auto x = ssm::test::random_floats(static_cast<std::size_t>(T * E), -2, 2, 50 + K);
        const ssm::CausalConv1d conv(ssm::Tensor::from({E, 1, K}, w), ssm::Tensor::from({E}, b));
        for (bool act : {false, true}) {
            for (int threads : {1, 2}) {
                ssm::set_num_threads(threads);
                INFO("K " << K << " silu " << act << " threads " << threads);
                std::vector<float> out(x.size());
                conv.forward(cmap(x, T, E), offsets, map(out, T, E), act);
                CHECK(ssm::test::rel_error(out, naive(x, w, b, offsets, E, K, act)) < 1e-6);
            }
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

TEST_CASE("CausalConv1d: chunked prefill and single steps equal one prefill", "[conv]") {
    const ssm::index E = 8, K = 4, T = 23;
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(E * K), -1, 1, 60);
    const auto b = ssm::test::random_floats(static_cast<std::size_t>(E), -1, 1, 61);
    const auto x = ssm::test::random_floats(static_cast<std::size_t>(T * E), -2, 2, 62);
    const ssm::CausalConv1d conv(ssm::Tensor::from({E, 1, K}, w), ssm::Tensor::from({E}, b));
    const std::vector<ssm::index> whole = {0, T};
    std::vector<float> expect(x.size());
    conv.forward(cmap(x, T, E), whole, map(expect, T, E), true);

    // Prefill the first 2 tokens (fewer than K−1), then 9 more, then step through the rest.
    std::vector<float> state(static_cast<std::size_t>(conv.state_size()), 0.0f);
    std::vector<float> got(x.size());
    ssm::index at = 0;
    for (ssm::index len : {2, 9}) {
        std::vector<float> part(x.begin() + at * E, x.begin() + (at + len) * E), out(part.size());
        const std::vector<ssm::index> offs = {0, len};
        conv.forward(cmap(part, len, E), offs, map(out, len, E), true, state.data(), state.data());
        std::copy(out.begin(), out.end(), got.begin() + at * E);
        at += len;
    }
    for (; at < T; ++at) {
        std::vector<float> one(x.begin() + at * E, x.begin() + (at + 1) * E), out(static_cast<std::size_t>(E));
        conv.step(cmap(one, 1, E), state.data(), map(out, 1, E), true);
        std::copy(out.begin(), out.end(), got.begin() + at * E);
    }
    CHECK(ssm::test::rel_error(got, expect) < 1e-6);
}

TEST_CASE("CausalConv1d rejects a non-depthwise weight and offsets that do not cover the input", "[conv]") {
    CHECK(ssm::test::error_of([] { ssm::CausalConv1d(ssm::Tensor::zeros({4, 2, 3}), std::nullopt); })
              .find("depthwise") != std::string::npos);
    const ssm::CausalConv1d conv(ssm::Tensor::zeros({4, 1, 3}), std::nullopt);
    std::vector<float> x(20), out(20);
    const std::vector<ssm::index> bad = {0, 3};
    CHECK(ssm::test::error_of([&] { conv.forward(cmap(x, 5, 4), bad, map(out, 5, 4), true); })
              .find("offsets") != std::string::npos);
}

}  // namespace test_causal_conv1d
