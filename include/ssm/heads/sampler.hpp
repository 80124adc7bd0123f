// ssm/heads/sampler.hpp — choosing the next token from logits: greedy, temperature,
// top-k, top-p; seeded, so that a run can be repeated exactly on any platform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

struct SamplingOptions {
    bool greedy = false;      // argmax (also when temperature == 0 or top_k == 1)
    float temperature = 1.0f; // logits / temperature before the softmax; 0 = greedy
    index top_k = 0;          // keep the k most likely tokens; 0 = all
    float top_p = 1.0f;       // keep the smallest set whose probability reaches top_p
    std::uint64_t seed = 0;
};

/// Draws token ids from logits. The random stream is SplitMix64 (fixed, so the same
/// seed gives the same tokens with every compiler and standard library).
class Sampler {
public:
    explicit Sampler(const SamplingOptions& opt = {}) : opt_(opt), state_(opt.seed) {
        require(std::isfinite(opt.temperature) && opt.temperature >= 0,
                "Sampler: temperature must be >= 0, got ", opt.temperature);
        require(opt.top_k >= 0, "Sampler: top_k must be >= 0, got ", opt.top_k);
        require(opt.top_p > 0 && opt.top_p <= 1, "Sampler: top_p must be in (0, 1], got ", opt.top_p);
    }

    [[nodiscard]] const SamplingOptions& options() const noexcept { return opt_; }
    [[nodiscard]] bool is_greedy() const noexcept {
        return opt_.greedy || opt_.temperature == 0 || opt_.top_k == 1;
    }

    /// The index of the largest logit (the first one on ties).
    [[nodiscard]] static std::int32_t argmax(std::span<const float> logits) {
        require(!logits.empty(), "Sampler: no logits");
        return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }

    /// The next token for one row of logits.
    [[nodiscard]] std::int32_t sample(std::span<const float> logits) {
        if (is_greedy()) return argmax(logits);
        const auto probs = distribution(logits);
        double u = uniform();
        for (const auto& [id, p] : probs) {
            u -= p;
            if (u < 0) return id;
        }
        return probs.back().first;  // rounding left a sliver: the least likely kept token
    }

    /// The tokens a non-greedy draw can return and their probabilities, most likely first
    /// (temperature, then top-k, then top-p applied; renormalised to sum to 1).
    [[nodiscard]] std::vector<std::pair<std::int32_t, double>> distribution(std::span<const float> logits) const {
        require(!logits.empty(), "Sampler: no logits");
        std::vector<std::int32_t> order(logits.size());
        std::iota(order.begin(), order.end(), 0);
        const auto by_logit = [&](std::int32_t a, std::int32_t b) {
            return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
                   (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
        };
        std::size_t keep = order.size();
        if (opt_.top_k > 0) keep = std::min(keep, static_cast<std::size_t>(opt_.top_k));
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), by_logit);
        order.resize(keep);

        const double t = opt_.temperature > 0 ? opt_.temperature : 1.0;
        const double top = logits[static_cast<std::size_t>(order.front())];
        std::vector<std::pair<std::int32_t, double>> probs;
        probs.reserve(keep);
        double sum = 0;
        for (auto id : order) {
            const double p = std::exp((logits[static_cast<std::size_t>(id)] - top) / t);
            probs.emplace_back(id, p);
            sum += p;
        }
        std::size_t n = probs.size();
        if (opt_.top_p < 1) {
            double mass = 0;
            n = 0;
            while (n < probs.size()) {
                mass += probs[n++].second / sum;
                if (mass >= opt_.top_p) break;
            }
        }
        probs.resize(n);
        double kept = 0;
        for (const auto& [id, p] : probs) kept += p;
        for (auto& [id, p] : probs) p /= kept;
        return probs;
    }

private:
    std::uint64_t next() noexcept {  // SplitMix64
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

    SamplingOptions opt_;
    std::uint64_t state_;
};

}  // namespace ssm
