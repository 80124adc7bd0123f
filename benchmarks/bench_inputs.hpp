// benchmarks/bench_inputs.hpp — seeded inputs the model benchmarks share.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm::bench {

/// `n` token ids drawn uniformly from [0, vocab), repeatable by `seed`.
inline std::vector<std::int32_t> random_ids(index n, index vocab, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::int32_t> dist(0, static_cast<std::int32_t>(vocab - 1));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    for (auto& i : ids) i = dist(rng);
    return ids;
}

/// A (rows, cols) matrix of values drawn uniformly from [lo, hi), repeatable by `seed`.
inline Matrix random_matrix(index rows, index cols, float lo, float hi, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    Matrix m(rows, cols);
    for (index i = 0; i < m.size(); ++i) m.data()[i] = dist(rng);
    return m;
}

}  // namespace ssm::bench
