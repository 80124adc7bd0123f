// ssm/layers/rotary.hpp — rotary position embedding (RoPE), "rotate half" convention.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

/// RoPE on the first `rotary_dim` features of each head (rotary_dim ≤ head_dim, even).
///
/// Feature i < r/2 pairs with i + r/2 (the GPT-NeoX / LLaMA "rotate half" layout, which
/// SAMBA uses): x'ᵢ = xᵢ cos θ − x_{i+r/2} sin θ, x'_{i+r/2} = x_{i+r/2} cos θ + xᵢ sin θ,
/// θ = pos · base^(−2i/r). The frequencies and the angle pos·freq are rounded to float32
/// as the PyTorch rope caches compute them; cos and sin of the rounded angle are then
/// taken in double precision. (SAMBA's training code further rounds cos and sin to
/// bfloat16; this keeps them in float32, like a float32 PyTorch forward.)
class RotaryEmbedding {
public:
    RotaryEmbedding() = default;
    RotaryEmbedding(index rotary_dim, double base) : dim_(rotary_dim) {
        require(rotary_dim >= 0 && rotary_dim % 2 == 0,
                "RotaryEmbedding: rotary dimension must be even and >= 0, got ", rotary_dim);
        require(base > 0 && std::isfinite(base),
                "RotaryEmbedding: base must be a positive number, got ", base);
        inv_freq_.resize(static_cast<std::size_t>(rotary_dim / 2));
        for (index i = 0; i < rotary_dim / 2; ++i) {
            // float32 exponent and power, then the reciprocal, as torch computes
            // 1 / base ** (arange(0, r, 2).float() / r)
            const float expo = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
            const float p = static_cast<float>(
                std::pow(static_cast<double>(static_cast<float>(base)), static_cast<double>(expo)));
            inv_freq_[static_cast<std::size_t>(i)] = 1.0f / p;
        }
    }

    [[nodiscard]] index rotary_dim() const noexcept { return dim_; }

    /// cos θᵢ and sin θᵢ for one position: `cs` gets r/2 cosines then r/2 sines.
    void angles(std::int64_t pos, float* cs) const {
        const index half = dim_ / 2;
        const float p = static_cast<float>(pos);
        for (index i = 0; i < half; ++i) {
            const double theta = static_cast<double>(p * inv_freq_[static_cast<std::size_t>(i)]);
            cs[i] = static_cast<float>(std::cos(theta));
            cs[half + i] = static_cast<float>(std::sin(theta));
        }
    }

    /// Rotates `heads` consecutive head vectors of `head_dim` floats at `x` by the angles
    /// from `angles()`.
    void apply(float* x, index heads, index head_dim, const float* cs) const {
        const index half = dim_ / 2;
        for (index h = 0; h < heads; ++h) {
            float* v = x + h * head_dim;
            for (index i = 0; i < half; ++i) {
                const float c = cs[i], s = cs[half + i];
                const float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }

    /// The transpose (= inverse) of `apply` with the same angles: rotates by −θ. This is
    /// RoPE's backward: the gradient w.r.t. the unrotated vectors is Rᵀ times the gradient
    /// w.r.t. the rotated ones.
    void apply_transposed(float* x, index heads, index head_dim, const float* cs) const {
        const index half = dim_ / 2;
        for (index h = 0; h < heads; ++h) {
            float* v = x + h * head_dim;
            for (index i = 0; i < half; ++i) {
                const float c = cs[i], s = cs[half + i];
                const float a = v[i], b = v[i + half];
                v[i] = a * c + b * s;
                v[i + half] = b * c - a * s;
            }
        }
    }

private:
    index dim_ = 0;
    std::vector<float> inv_freq_;
};

}  // namespace ssm
