// tests/train/gradient_check.hpp — central finite differences for the backward tests.
//
// Every check has the same shape: a scalar probe f = Σ g ⊙ y (g fixed and random, so
// ∂f/∂y = g) of a layer's output y, the layer's backward fed with g, and each analytic
// gradient compared, norm-wise, with central differences (f(v + h) − f(v − h)) / 2h of f
// on a sample of coordinates. The probe is summed in double; what remains is float32
// rounding in the forward (~1e-7·|f| / h) and the O(h²) truncation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "test_util.hpp"

namespace ssm::test {

/// Σ g ⊙ y in double.
inline double probe(std::span<const float> y, std::span<const float> g) {
    REQUIRE(y.size() == g.size());
    double f = 0;
    for (std::size_t i = 0; i < y.size(); ++i) f += static_cast<double>(y[i]) * static_cast<double>(g[i]);
    return f;
}
inline double probe(const Matrix& y, const Matrix& g) { return probe(span_of(y), span_of(g)); }

/// Up to `count` distinct coordinates of [0, n), always including the first and the last.
inline std::vector<index> some_coordinates(index n, index count, std::uint64_t seed) {
    std::vector<index> all(static_cast<std::size_t>(n));
    for (index i = 0; i < n; ++i) all[static_cast<std::size_t>(i)] = i;
    if (n <= count) return all;
    std::mt19937_64 rng(seed);
    std::shuffle(all.begin() + 1, all.end() - 1, rng);
    std::vector<index> pick(all.begin(), all.begin() + (count - 1));
    pick.push_back(n - 1);
    return pick;
}

/// Central differences of `f()` (double) with respect to values[i] for i in `which`;
/// each value is restored afterwards.
template <class F>
std::vector<float> central_differences(std::span<float> values, std::span<const index> which, float h, F&& f) {
    std::vector<float> d;
    d.reserve(which.size());
    for (index i : which) {
        float& v = values[static_cast<std::size_t>(i)];
        const float saved = v;
        v = saved + h;
        const double fp = f();
        v = saved - h;
        const double fm = f();
        v = saved;
        d.push_back(static_cast<float>((fp - fm) / (2.0 * static_cast<double>(h))));
    }
    return d;
}

/// The entries of `grad` at `which`, to compare with `central_differences`.
inline std::vector<float> gather(std::span<const float> grad, std::span<const index> which) {
    std::vector<float> g;
    for (index i : which) g.push_back(grad[static_cast<std::size_t>(i)]);
    return g;
}

/// Checks the analytic gradient `grad` of f w.r.t. `values` against central differences on
/// up to `count` coordinates: norm-wise relative error below `tol`.
template <class F>
void check_gradient(const char* what, std::span<float> values, std::span<const float> grad, F&& f,
                    double tol = 2e-3, float h = 1e-2f, index count = 48) {
    REQUIRE(values.size() == grad.size());
    const auto which = some_coordinates(static_cast<index>(values.size()), count, values.size());
    const auto fd = central_differences(values, which, h, f);
    const auto an = gather(grad, which);
    const double err = rel_error(an, fd, 1e-6);
    INFO(what << ": relative error " << err << " over " << which.size() << " coordinates");
    CHECK(err < tol);
}

/// Every parameter of a registry (`train::Parameters`) against central differences of
/// `f()` on up to `coords` of its coordinates, norm-wise relative error below `tol`; the
/// difference step for a parameter is `step_of(name)`.
template <class Params, class F, class Step>
void check_parameters(Params& params, F&& f, double tol, Step&& step_of, index coords) {
    for (auto& p : params) {
        const auto which = some_coordinates(p.size(), coords, p.size() + 1);
        const auto fd = central_differences(p.value, which, step_of(p.name), f);
        const auto an = gather(p.grad, which);
        const double err = rel_error(an, fd, 1e-5);
        INFO(p.name << ": relative error " << err << " over " << which.size() << " coordinates");
        CHECK(err < tol);
    }
}

inline std::span<float> mspan(Matrix& m) { return {m.data(), static_cast<std::size_t>(m.size())}; }
inline std::span<float> mspan(Tensor& t) { return {t.mutable_data(), static_cast<std::size_t>(t.size())}; }
inline std::span<const float> cspan(const Tensor& t) { return t.values(); }

/// A (rows, cols) matrix of uniform values in [lo, hi).
inline Matrix random_matrix(index rows, index cols, float lo, float hi, std::uint64_t seed) {
    const auto v = random_floats(static_cast<std::size_t>(rows * cols), lo, hi, seed);
    return ConstMatrixMap(v.data(), rows, cols);
}

}  // namespace ssm::test
