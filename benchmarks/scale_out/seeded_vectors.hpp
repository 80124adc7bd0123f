// benchmarks/scale_out/seeded_vectors.hpp — seeded unit vectors for the search benchmarks:
// `clusters` random unit centres, each vector a centre plus Gaussian noise of norm about
// `noise` (relative to the centre), normalised, as embeddings cluster by topic (noise 1:
// two vectors of one cluster have cosine about 0.5, of two clusters about 0). Row r
// depends only on (seed, r), so a rank can make its shard's rows alone.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/retrieval/top_k.hpp"

namespace ssm::bench {

struct VectorSpec {
    index dim = 768, clusters = 1000;
    double noise = 1.0;
};

/// Rows [begin, end) of the seeded set `seed`.
[[nodiscard]] inline Matrix seeded_vectors(const VectorSpec& spec, index begin, index end, std::uint64_t seed) {
    std::mt19937_64 centre_rng(1);
    std::normal_distribution<float> normal;
    Matrix centres(spec.clusters, spec.dim);
    for (index i = 0; i < centres.size(); ++i) centres.data()[i] = normal(centre_rng);
    normalize_rows(centres);
    const float sigma = static_cast<float>(spec.noise / std::sqrt(static_cast<double>(spec.dim)));
    Matrix m(end - begin, spec.dim);
    parallel_for(end - begin, 1024, [&](index r0, index r1) {
        std::normal_distribution<float> noise;
        for (index r = r0; r < r1; ++r) {
            std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(begin + r));
            const auto c = static_cast<index>(rng() % static_cast<std::uint64_t>(spec.clusters));
            for (index j = 0; j < spec.dim; ++j) m(r, j) = centres(c, j) + sigma * noise(rng);
        }
    });
    normalize_rows(m);
    return m;
}

}  // namespace ssm::bench
