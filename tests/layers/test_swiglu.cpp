// SwiGLU against a naive double-precision down(silu(gate x) ⊙ up x): many rows (GEMM path)
// and few rows (decoding path), accumulate, bf16 weights, and shape errors.
#include <cmath>
#include <vector>

#include "ssm/layers/swiglu.hpp"
#include "test_util.hpp"

namespace test_swiglu {

namespace {

std::vector<float> naive(const std::vector<float>& x, const std::vector<float>& g,
                         const std::vector<float>& u, const std::vector<float>& d, ssm::index rows,
                         ssm::index D, ssm::index F) {
    std::vector<float> y(static_cast<std::size_t>(rows * D));
    for (ssm::index r = 0; r < rows; ++r) {
        std::vector<double> a(static_cast<std::size_t>(F));
        for (ssm::index f = 0; f < F; ++f) {
            double gate = 0, up = 0;
            for (ssm::index i = 0; i < D; ++i) {
                const double xi = x[static_cast<std::size_t>(r * D + i)];
                gate += g[static_cast<std::size_t>(f * D + i)] * xi;
                up += u[static_cast<std::size_t>(f * D + i)] * xi;
            }
            a[static_cast<std::size_t>(f)] = gate / (1.0 + std::exp(-gate)) * up;
        }
        for (ssm::index o = 0; o < D; ++o) {
            double acc = 0;
            for (ssm::index f = 0; f < F; ++f)
                acc += d[static_cast<std::size_t>(o * F + f)] * a[static_cast<std::size_t>(f)];
            y[static_cast<std::size_t>(r * D + o)] = static_cast<float>(acc);
        }
    }
    return y;
}

}  // namespace

TEST_CASE("swiglu: down(silu(gate x) * up x) over few and many rows", "[swiglu]") {
    const ssm::index D = 20, F = 36;
    const auto g = ssm::test::random_floats(static_cast<std::size_t>(F * D), -0.5f, 0.5f, 1);
    const auto u = ssm::test::random_floats(static_cast<std::size_t>(F * D), -0.5f, 0.5f, 2);
    const auto d = ssm::test::random_floats(static_cast<std::size_t>(D * F), -0.5f, 0.5f, 3);
    ssm::SwiGLU mlp(ssm::Tensor::from({F, D}, g), ssm::Tensor::from({F, D}, u),
                    ssm::Tensor::from({D, F}, d));
    CHECK(mlp.hidden_size() == D);
    CHECK(mlp.inner_size() == F);
    for (ssm::index rows : {1, 3, 40}) {
        INFO("rows " << rows);
        const auto x = ssm::test::random_floats(static_cast<std::size_t>(rows * D), -2, 2,
                                                10 + static_cast<unsigned>(rows));
        const auto expect = naive(x, g, u, d, rows, D, F);
        ssm::Workspace ws;
        ssm::Matrix y = ssm::Matrix::Constant(rows, D, std::nanf(""));
        mlp.forward(ssm::ConstStridedMap(x.data(), rows, D, Eigen::OuterStride<>(D)),
                    ssm::StridedMap(y.data(), rows, D, Eigen::OuterStride<>(D)), false, ws);
        CHECK(ssm::test::rel_error(ssm::test::span_of(y), expect) < 1e-6);
        // accumulate: y += mlp(x)
        ws.reset();
        mlp.forward(ssm::ConstStridedMap(x.data(), rows, D, Eigen::OuterStride<>(D)),
                    ssm::StridedMap(y.data(), rows, D, Eigen::OuterStride<>(D)), true, ws);
        std::vector<float> twice(expect);
        for (float& v : twice) v *= 2;
        CHECK(ssm::test::rel_error(ssm::test::span_of(y), twice) < 1e-6);
    }
    // bf16 weights: within bfloat16's precision of the float32 result
    ssm::SwiGLU half = mlp;
    half.store_bf16();
    const auto x = ssm::test::random_floats(static_cast<std::size_t>(4 * D), -2, 2, 99);
    ssm::Workspace ws;
    ssm::Matrix y(4, D);
    half.forward(ssm::ConstStridedMap(x.data(), 4, D, Eigen::OuterStride<>(D)),
                 ssm::StridedMap(y.data(), 4, D, Eigen::OuterStride<>(D)), false, ws);
    const double err = ssm::test::rel_error(ssm::test::span_of(y), naive(x, g, u, d, 4, D, F));
    CHECK(err > 1e-6);
    CHECK(err < 2e-2);
}

TEST_CASE("swiglu: weights of disagreeing shapes are refused", "[swiglu]") {
    const auto t = [](ssm::index r, ssm::index c) { return ssm::Tensor::zeros({r, c}); };
    CHECK_THROWS_AS(ssm::SwiGLU(t(8, 4), t(8, 5), t(4, 8)), ssm::Error);
    CHECK(ssm::test::error_of([&] { ssm::SwiGLU(t(8, 4), t(8, 4), t(4, 9)); }).find("down") !=
          std::string::npos);
}

}  // namespace test_swiglu
