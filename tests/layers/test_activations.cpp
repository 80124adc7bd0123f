// SiLU and softplus against double-precision formulas, including the softplus branch
// point at 20 and the negative range where log(1 + exp(x)) loses precision.
#include <cmath>
#include <vector>

#include "ssm/layers/activations.hpp"
#include "test_util.hpp"

namespace test_activations {

TEST_CASE("silu_inplace = v / (1 + exp(-v))", "[activations]") {
    auto v = ssm::test::random_floats(1001, -30, 30, 80);
    std::vector<float> expect(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) expect[i] = static_cast<float>(v[i] / (1 + std::exp(-double(v[i]))));
    ssm::silu_inplace(v.data(), static_cast<ssm::index>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) CHECK(std::abs(v[i] - expect[i]) <= 2e-6f * (1 + std::abs(expect[i])));
}

TEST_CASE("softplus_inplace = x > 20 ? x : log1p(exp(x)), accurate at trained dt biases", "[activations]") {
    std::vector<float> v = {-20.f, -9.f, -8.5f, -1.f, 0.f, 1e-3f, 1.f, 5.f, 19.99f, 20.f, 20.01f, 50.f};
    for (float x : ssm::test::random_floats(500, -15, 25, 81)) v.push_back(x);
    std::vector<double> expect(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) expect[i] = v[i] > 20 ? v[i] : std::log1p(std::exp(double(v[i])));
    ssm::softplus_inplace(v.data(), static_cast<ssm::index>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) {
        INFO("x -> " << expect[i]);
        CHECK(std::abs(v[i] - expect[i]) <= 1e-6 * std::abs(expect[i]) + 1e-30);
    }
}

TEST_CASE("silu_inplace and softplus_inplace give the same bits wherever the values lie in memory",
          "[activations]") {
    // An exactly resumed training run recomputes activations in buffers the heap places
    // elsewhere: the result of each element must not depend on the buffer's alignment.
    const auto values = ssm::test::random_floats(203, -12, 12, 82);
    alignas(64) float buf[203 + 16];
    for (const auto f : {&ssm::silu_inplace, &ssm::softplus_inplace}) {
        std::vector<float> first;
        for (int offset = 0; offset < 16; ++offset) {
            INFO("offset " << offset << " floats from a 64-byte boundary");
            std::copy(values.begin(), values.end(), buf + offset);
            f(buf + offset, static_cast<ssm::index>(values.size()));
            std::vector<float> got(buf + offset, buf + offset + values.size());
            if (first.empty()) first = got;
            CHECK(got == first);
        }
    }
}

}  // namespace test_activations
