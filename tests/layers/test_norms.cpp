// RMSNorm and LayerNorm against double-precision formulas.
#include <cmath>
#include <vector>

#include "ssm/layers/layer_norm.hpp"
#include "ssm/layers/rms_norm.hpp"
#include "test_util.hpp"

namespace test_norms {

TEST_CASE("RMSNorm = x · rsqrt(mean(x²) + eps) · w", "[norm]") {
    const ssm::index rows = 37, dim = 48;
    const double eps = 1e-5;
    const auto x = ssm::test::random_floats(static_cast<std::size_t>(rows * dim), -3, 3, 11);
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(dim), 0.5, 1.5, 12);
    const ssm::RMSNorm norm(ssm::Tensor::from({dim}, w), eps);
    std::vector<float> expect(x.size());
    for (ssm::index r = 0; r < rows; ++r) {
        double ms = 0;
        for (ssm::index d = 0; d < dim; ++d) ms += std::pow(x[static_cast<std::size_t>(r * dim + d)], 2);
        const double s = 1.0 / std::sqrt(ms / dim + eps);
        for (ssm::index d = 0; d < dim; ++d)
            expect[static_cast<std::size_t>(r * dim + d)] =
                static_cast<float>(x[static_cast<std::size_t>(r * dim + d)] * s * w[static_cast<std::size_t>(d)]);
    }
    ssm::Matrix xm = ssm::ConstMatrixMap(x.data(), rows, dim), y(rows, dim);
    norm.forward(ssm::ConstStridedMap(xm.data(), rows, dim, Eigen::OuterStride<>(dim)),
                 ssm::StridedMap(y.data(), rows, dim, Eigen::OuterStride<>(dim)));
    CHECK(ssm::test::rel_error({y.data(), x.size()}, expect) < 1e-6);
    // In place gives the same.
    norm.forward(ssm::ConstStridedMap(xm.data(), rows, dim, Eigen::OuterStride<>(dim)),
                 ssm::StridedMap(xm.data(), rows, dim, Eigen::OuterStride<>(dim)));
    CHECK(ssm::test::rel_error({xm.data(), x.size()}, expect) < 1e-6);
}

TEST_CASE("LayerNorm = (x − mean) · rsqrt(var + eps) · w + b", "[norm]") {
    const ssm::index rows = 9, dim = 33;
    const double eps = 1e-5;
    const auto x = ssm::test::random_floats(static_cast<std::size_t>(rows * dim), -2, 4, 21);
    const auto w = ssm::test::random_floats(static_cast<std::size_t>(dim), 0.5, 1.5, 22);
    const auto b = ssm::test::random_floats(static_cast<std::size_t>(dim), -1, 1, 23);
    for (bool with_bias : {true, false}) {
        const ssm::LayerNorm norm(ssm::Tensor::from({dim}, w),
                                  with_bias ? std::optional(ssm::Tensor::from({dim}, b)) : std::nullopt, eps);
        std::vector<float> expect(x.size());
        for (ssm::index r = 0; r < rows; ++r) {
            double mean = 0, var = 0;
            for (ssm::index d = 0; d < dim; ++d) mean += x[static_cast<std::size_t>(r * dim + d)];
            mean /= dim;
            for (ssm::index d = 0; d < dim; ++d) var += std::pow(x[static_cast<std::size_t>(r * dim + d)] - mean, 2);
            var /= dim;
            for (ssm::index d = 0; d < dim; ++d) {
                const auto i = static_cast<std::size_t>(r * dim + d);
                expect[i] = static_cast<float>((x[i] - mean) / std::sqrt(var + eps) * w[static_cast<std::size_t>(d)] +
                                               (with_bias ? b[static_cast<std::size_t>(d)] : 0.0));
            }
        }
        ssm::Matrix y(rows, dim);
        norm.forward(ssm::ConstStridedMap(x.data(), rows, dim, Eigen::OuterStride<>(dim)),
                     ssm::StridedMap(y.data(), rows, dim, Eigen::OuterStride<>(dim)));
        INFO("bias " << with_bias);
        CHECK(ssm::test::rel_error({y.data(), x.size()}, expect) < 1e-6);
    }
}

TEST_CASE("norms reject a width that does not match the weight", "[norm]") {
    const ssm::RMSNorm rms(ssm::Tensor::zeros({8}), 1e-5);
    ssm::Matrix x(2, 7), y(2, 7);
    CHECK(ssm::test::error_of([&] {
              rms.forward(ssm::ConstStridedMap(x.data(), 2, 7, Eigen::OuterStride<>(7)),
                          ssm::StridedMap(y.data(), 2, 7, Eigen::OuterStride<>(7)));
          }).find("RMSNorm") != std::string::npos);
}

}  // namespace test_norms
