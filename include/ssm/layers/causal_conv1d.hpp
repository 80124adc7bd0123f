// ssm/layers/causal_conv1d.hpp — depthwise causal 1-D convolution (+ bias, + SiLU) over
// packed sequences, and its one-token update for decoding.
#pragma once

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>
#include <span>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/layers/activations.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// out[t,e] = b[e] + Σ_{k<K} w[e,k] · x[t−(K−1)+k, e]  (cross-correlation; inputs before a
/// sequence's start are 0, or come from a carried conv state), then optionally SiLU.
///
/// The conv state of a sequence is its last K−1 inputs, (K−1, E) row-major, oldest first.
class CausalConv1d {
public:
    CausalConv1d() = default;
    /// `weight` (E, 1, K) or (E, K) as stored by PyTorch; `bias` (E) optional.
    CausalConv1d(const Tensor& weight, std::optional<Tensor> bias) : bias_(std::move(bias)) {
        require(weight.rank() == 3 || weight.rank() == 2, "CausalConv1d: weight must be (E, 1, K), got ",
                shape_string(weight.shape()));
        channels_ = weight.dim(0);
        width_ = weight.dim(weight.rank() - 1);
        require(weight.size() == channels_ * width_, "CausalConv1d: weight ",
                shape_string(weight.shape()), " is not depthwise");
        // Keep the taps as (K, E) so each tap is a contiguous row over channels.
        Tensor t = Tensor::zeros({width_, channels_});
        float* dst = t.mutable_data();
        for (index e = 0; e < channels_; ++e)
            for (index k = 0; k < width_; ++k) dst[k * channels_ + e] = weight.data()[e * width_ + k];
        taps_ = std::move(t);
        if (bias_) require(bias_->size() == channels_, "CausalConv1d: bias has ", bias_->size(),
                           " elements, expected ", channels_);
    }

    [[nodiscard]] static CausalConv1d load(const Checkpoint& ckpt, const std::string& prefix,
                                           index channels, index width, bool with_bias) {
        const index wshape[] = {channels, 1, width};
        Tensor w = ckpt.load_f32(prefix + ".weight", wshape);
        std::optional<Tensor> b;
        if (with_bias) {
            const index bshape[] = {channels};
            b = ckpt.load_f32(prefix + ".bias", bshape);
        }
        return CausalConv1d(w, std::move(b));
    }

    [[nodiscard]] index channels() const noexcept { return channels_; }
    [[nodiscard]] index width() const noexcept { return width_; }
    /// Floats in one sequence's conv state: (K−1) · E.
    [[nodiscard]] index state_size() const noexcept { return (width_ - 1) * channels_; }
    /// The taps as (K, E): tap k of every channel is row k (the newest input meets row K−1).
    [[nodiscard]] const Tensor& taps() const noexcept { return taps_; }
    [[nodiscard]] const std::optional<Tensor>& bias() const noexcept { return bias_; }

    /// Prefill. x, out: (T, E); `offsets`: nseq+1 sequence boundaries. `state_in`
    /// (nseq, K−1, E) supplies the inputs before each sequence (nullptr: zeros);
    /// `state_out` (nseq, K−1, E) receives each sequence's last K−1 inputs.
    void forward(ConstStridedMap x, std::span<const index> offsets, StridedMap out, bool silu,
                 const float* state_in = nullptr, float* state_out = nullptr) const {
        const index T = x.rows();
        require(x.cols() == channels_ && out.cols() == channels_ && out.rows() == T,
                "CausalConv1d: input (", T, ", ", x.cols(), ") / output (", out.rows(), ", ",
                out.cols(), ") do not fit ", channels_, " channels");
        require(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == T,
                "CausalConv1d: offsets must run from 0 to ", T);
        const index E = channels_, K = width_;
        const float* taps = taps_.data();
        parallel_for(T, 64, [&](index begin, index end) {
            index s = static_cast<index>(std::upper_bound(offsets.begin(), offsets.end(), begin) -
                                         offsets.begin()) - 1;
            for (index t = begin; t < end; ++t) {
                while (t >= offsets[static_cast<std::size_t>(s) + 1]) ++s;
                const index start = offsets[static_cast<std::size_t>(s)];
                float* o = &out(t, 0);
                if (bias_)
                    std::memcpy(o, bias_->data(), sizeof(float) * static_cast<std::size_t>(E));
                else
                    std::fill(o, o + E, 0.0f);
                for (index k = 0; k < K; ++k) {
                    const index src = t - (K - 1) + k;
                    const float* in;
                    if (src >= start)
                        in = x.data() + src * x.outerStride();
                    else if (state_in)
                        in = state_in + s * state_size() + (K - 1 + (src - start)) * E;
                    else
                        continue;
                    const float* w = taps + k * E;
                    for (index e = 0; e < E; ++e) o[e] += w[e] * in[e];
                }
                if (silu) silu_inplace(o, E);
            }
        });
        if (state_out) {
            const index nseq = static_cast<index>(offsets.size()) - 1;
            for (index s = 0; s < nseq; ++s) {
                const index start = offsets[static_cast<std::size_t>(s)];
                const index end = offsets[static_cast<std::size_t>(s) + 1];
                for (index j = 0; j < K - 1; ++j) {
                    const index src = end - (K - 1) + j;
                    float* dst = state_out + s * state_size() + j * E;
                    if (src >= start)
                        for (index e = 0; e < E; ++e) dst[e] = x(src, e);
                    else if (state_in)
                        std::memcpy(dst, state_in + s * state_size() + (K - 1 + (src - start)) * E,
                                    sizeof(float) * static_cast<std::size_t>(E));
                    else
                        std::fill(dst, dst + E, 0.0f);
                }
            }
        }
    }

    /// Decoding: one new input per sequence. x, out: (B, E); `state` (B, K−1, E) is
    /// shifted to include x.
    void step(ConstStridedMap x, float* state, StridedMap out, bool silu) const {
        const index B = x.rows(), E = channels_, K = width_;
        require(x.cols() == E && out.cols() == E && out.rows() == B,
                "CausalConv1d::step: input / output do not fit ", E, " channels");
        const float* taps = taps_.data();
        parallel_for(B, 1, [&](index begin, index end) {
            for (index b = begin; b < end; ++b) {
                float* st = state + b * state_size();
                float* o = &out(b, 0);
                const float* xb = x.data() + b * x.outerStride();
                for (index e = 0; e < E; ++e) {
                    float acc = bias_ ? bias_->data()[e] : 0.0f;
                    for (index k = 0; k < K - 1; ++k) acc += taps[k * E + e] * st[k * E + e];
                    acc += taps[(K - 1) * E + e] * xb[e];
                    o[e] = acc;
                }
                if (K > 1) {
                    std::memmove(st, st + E, sizeof(float) * static_cast<std::size_t>((K - 2) * E));
                    std::memcpy(st + (K - 2) * E, xb, sizeof(float) * static_cast<std::size_t>(E));
                }
                if (silu) silu_inplace(o, E);
            }
        });
    }

    // ---- Training ----------------------------------------------------------------------
    // Backward takes the forward's input x again (the caller keeps it, as for Linear);
    // the cache holds the pre-activation when the forward applied SiLU.

    struct Cache {
        Matrix pre;         // (T, E) conv output before SiLU (empty without SiLU)
        bool silu = false;
    };

    /// Makes the weight an owned float32 master in the checkpoint's (E, 1, K) layout (and
    /// the bias one), with gradients, registered as `prefix.weight` (decay as given) and
    /// `prefix.bias` (no decay). The taps the forward computes with are derived from the
    /// master (`refresh_derived`, which every training forward calls first).
    void register_parameters(train::Parameters& params, const std::string& prefix, bool decay = true) {
        master_ = Tensor::zeros({channels_, 1, width_});
        float* w = master_.mutable_data();
        for (index e = 0; e < channels_; ++e)
            for (index k = 0; k < width_; ++k) w[e * width_ + k] = taps_.data()[k * channels_ + e];
        weight_grad_ = Tensor::zeros({channels_, 1, width_});
        const auto n = static_cast<std::size_t>(master_.size());
        params.add(prefix + ".weight", {channels_, 1, width_}, {master_.mutable_data(), n},
                   {weight_grad_.mutable_data(), n}, decay);
        if (bias_) train::register_tensor(params, prefix + ".bias", *bias_, bias_grad_, false);
        taps_ = Tensor::zeros({width_, channels_});  // owned from now on, refreshed from the master
        refresh_derived();
    }

    /// Re-derives the (K, E) taps from the master after the master changed (an optimizer
    /// step); a no-op for a layer that is not trainable.
    void refresh_derived() {
        if (master_.empty()) return;
        float* taps = taps_.mutable_data();
        for (index e = 0; e < channels_; ++e)
            for (index k = 0; k < width_; ++k) taps[k * channels_ + e] = master_.data()[e * width_ + k];
    }

    /// Training forward from zero state (each sequence starts afresh): out as `forward`,
    /// keeping the pre-activation when `silu`. Calls `refresh_derived` first.
    void forward(ConstStridedMap x, std::span<const index> offsets, StridedMap out, bool silu, Cache& cache) {
        refresh_derived();
        cache.silu = silu;
        if (!silu) {
            cache.pre.resize(0, 0);
            forward(x, offsets, out, false);
            return;
        }
        cache.pre.resize(x.rows(), channels_);
        forward(x, offsets, view(cache.pre), false);
        out = cache.pre;
        parallel_for(x.rows(), 64, [&](index b, index e) {
            for (index t = b; t < e; ++t) silu_inplace(&out(t, 0), channels_);
        });
    }

    /// Backward: with p the pre-activation and dp = dout ⊙ silu'(p) (dout itself without
    /// SiLU), dbias += Σ_t dp; dw[e,k] += Σ_t dp[t,e]·x[t−(K−1)+k, e] and
    /// dx[s,e] = Σ_k w[e,k]·dp[s+(K−1)−k, e], both only inside each sequence; dx written
    /// (added with `accumulate`).
    void backward(ConstStridedMap x, std::span<const index> offsets, ConstStridedMap dout, const Cache& cache,
                  StridedMap dx, bool accumulate = false) {
        require(!weight_grad_.empty(), "CausalConv1d::backward: register_parameters was not called");
        const index T = x.rows(), E = channels_, K = width_;
        require(x.cols() == E && dout.cols() == E && dx.cols() == E && dout.rows() == T && dx.rows() == T &&
                    (!cache.silu || cache.pre.rows() == T),
                "CausalConv1d::backward: input, gradients and cache do not fit (", T, ", ", E, ")");
        require(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == T,
                "CausalConv1d::backward: offsets must run from 0 to ", T);
        Matrix dp = dout;  // (T, E)
        if (cache.silu)
            // silu'(p) = σ(p)·(1 + p·(1 − σ(p))), a block of rows at a time in vector form.
            parallel_for(T, 64, [&](index b, index e) {
                const auto p = cache.pre.middleRows(b, e - b).array();
                const Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sg =
                    (1.0f + (-p).exp()).inverse();
                dp.middleRows(b, e - b).array() *= sg * (1.0f + p * (1.0f - sg));
            });
        const float* taps = taps_.data();
        std::mutex add_mutex;
        const auto seq_of = [&](index t) {
            return static_cast<index>(std::upper_bound(offsets.begin(), offsets.end(), t) - offsets.begin()) - 1;
        };
        parallel_for(T, 64, [&](index begin, index end) {
            std::vector<float> dw(static_cast<std::size_t>(K * E), 0.0f), db(static_cast<std::size_t>(E), 0.0f);
            index s = seq_of(begin);
            for (index t = begin; t < end; ++t) {
                while (t >= offsets[static_cast<std::size_t>(s) + 1]) ++s;
                const index start = offsets[static_cast<std::size_t>(s)];
                const index stop = offsets[static_cast<std::size_t>(s) + 1];
                const float* g = dp.data() + t * E;
                for (index e = 0; e < E; ++e) db[static_cast<std::size_t>(e)] += g[e];
                // Weight: row t's output met x[t−(K−1)+k].
                for (index k = 0; k < K; ++k) {
                    const index src = t - (K - 1) + k;
                    if (src < start) continue;
                    const float* in = x.data() + src * x.outerStride();
                    float* d = dw.data() + k * E;
                    for (index e = 0; e < E; ++e) d[e] += g[e] * in[e];
                }
                // Input: row t fed the outputs t + (K−1) − k.
                float* o = dx.data() + t * dx.outerStride();
                if (!accumulate) std::fill(o, o + E, 0.0f);
                for (index k = 0; k < K; ++k) {
                    const index dst = t + (K - 1) - k;
                    if (dst >= stop) continue;
                    const float* gd = dp.data() + dst * E;
                    const float* w = taps + k * E;
                    for (index e = 0; e < E; ++e) o[e] += w[e] * gd[e];
                }
            }
            std::lock_guard lock(add_mutex);
            float* gw = weight_grad_.mutable_data();  // (E, 1, K)
            for (index e = 0; e < E; ++e)
                for (index k = 0; k < K; ++k) gw[e * K + k] += dw[static_cast<std::size_t>(k * E + e)];
            if (bias_)
                for (index e = 0; e < E; ++e) bias_grad_.mutable_data()[e] += db[static_cast<std::size_t>(e)];
        });
    }

private:
    Tensor taps_;                 // (K, E)
    std::optional<Tensor> bias_;  // (E)
    index channels_ = 0, width_ = 0;
    Tensor master_;               // (E, 1, K) float32 master, once trainable
    Tensor weight_grad_;          // (E, 1, K), once trainable
    Tensor bias_grad_;            // (E), once trainable with a bias
};

}  // namespace ssm
