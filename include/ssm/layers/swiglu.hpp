// ssm/layers/swiglu.hpp — the gated feed-forward block of SAMBA and LLaMA:
// out = down(silu(gate(h)) ⊙ up(h)).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/layers/activations.hpp"
#include "ssm/layers/linear.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// SwiGLU MLP over rows of the residual stream: D → F (gate and up) → D (down), no biases.
///
/// `gate` and `up` are kept as one (2F, D) matrix, so prefill runs one GEMM over all
/// tokens for both and a decoding step reads the two weights in one pass.
class SwiGLU {
public:
    SwiGLU() = default;

    /// `gate` (F, D), `up` (F, D), `down` (D, F), PyTorch `[out, in]` layout.
    SwiGLU(const Tensor& gate, const Tensor& up, Tensor down) {
        require(gate.rank() == 2 && up.rank() == 2 && gate.dim(0) == up.dim(0) &&
                    gate.dim(1) == up.dim(1),
                "SwiGLU: gate ", shape_string(gate.shape()), " and up ", shape_string(up.shape()),
                " must have the same (F, D) shape");
        F_ = gate.dim(0);
        D_ = gate.dim(1);
        require(down.rank() == 2 && down.dim(0) == D_ && down.dim(1) == F_, "SwiGLU: down is ",
                shape_string(down.shape()), ", expected [", D_, ", ", F_, "]");
        std::vector<float> w(static_cast<std::size_t>(2 * F_ * D_));
        std::copy(gate.values().begin(), gate.values().end(), w.begin());
        std::copy(up.values().begin(), up.values().end(), w.begin() + F_ * D_);
        gate_up_ = Linear(Tensor::from({2 * F_, D_}, std::move(w)), std::nullopt);
        down_ = Linear(std::move(down), std::nullopt);
    }

    /// Loads `prefix.{gate_proj,up_proj,down_proj}.weight` (or their aliases), checking
    /// shapes against hidden size `D` and inner size `F`.
    [[nodiscard]] static SwiGLU load(const Checkpoint& ckpt, const std::string& prefix, index D,
                                     index F) {
        const index in_shape[] = {F, D}, out_shape[] = {D, F};
        const Tensor gate = ckpt.load_f32(prefix + ".gate_proj.weight", in_shape);
        const Tensor up = ckpt.load_f32(prefix + ".up_proj.weight", in_shape);
        return SwiGLU(gate, up, ckpt.load_f32(prefix + ".down_proj.weight", out_shape));
    }

    [[nodiscard]] index hidden_size() const noexcept { return D_; }
    [[nodiscard]] index inner_size() const noexcept { return F_; }

    /// out (rows, D) (+)= SwiGLU(h (rows, D)).
    void forward(ConstStridedMap h, StridedMap out, bool accumulate, Workspace& ws) const {
        const index rows = h.rows();
        StridedMap gu = ws.matrix(rows, 2 * F_);  // [gate | up]
        gate_up_.forward(h, gu);
        StridedMap act = ws.matrix(rows, F_);
        parallel_for(rows, 16, [&](index b, index e) {
            for (index r = b; r < e; ++r) {
                float* a = act.data() + r * F_;
                const float* g = gu.data() + r * 2 * F_;
                std::copy(g, g + F_, a);
                silu_inplace(a, F_);
                Eigen::Map<Eigen::ArrayXf>(a, F_) *= Eigen::Map<const Eigen::ArrayXf>(g + F_, F_);
            }
        });
        down_.forward(cview(act), out, accumulate);
    }

    /// Keeps both weight matrices in bfloat16.
    void store_bf16() {
        gate_up_.store_bf16();
        down_.store_bf16();
    }

    // ---- Training ----------------------------------------------------------------------
    // Backward takes the forward's input h again (the caller keeps it); the cache holds the
    // gate and up projections, from which backward recomputes silu(gate) ⊙ up.

    struct Cache {
        Matrix gu;  // (rows, 2F) [gate | up] before the activation
    };

    /// Makes the weights owned float32 masters with gradients, registered under the
    /// checkpoint's names `prefix.gate_proj.weight` (F, D), `prefix.up_proj.weight` (F, D)
    /// and `prefix.down_proj.weight` (D, F), all with weight decay. Gate and up stay one
    /// (2F, D) matrix; the registry views its two halves.
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::Parameters fused;
        gate_up_.register_parameters(fused, prefix + ".gate_up");
        const train::Parameter& w = fused.at(prefix + ".gate_up.weight");
        const auto n = static_cast<std::size_t>(F_ * D_);
        params.add(prefix + ".gate_proj.weight", {F_, D_}, w.value.subspan(0, n),
                   w.grad.subspan(0, n), true);
        params.add(prefix + ".up_proj.weight", {F_, D_}, w.value.subspan(n, n),
                   w.grad.subspan(n, n), true);
        down_.register_parameters(params, prefix + ".down_proj", true);
    }

    /// Training forward: as `forward`, keeping the gate and up projections in `cache`.
    void forward(ConstStridedMap h, StridedMap out, bool accumulate, Cache& cache) const {
        const index rows = h.rows();
        cache.gu.resize(rows, 2 * F_);
        gate_up_.forward(h, view(cache.gu));
        const Matrix act = activation(cache.gu);
        down_.forward(cview(act), out, accumulate);
    }

    /// Backward, with a = silu(g) ⊙ u: dW_down += doutᵀ a; da = dout · W_down;
    /// dg = da ⊙ u ⊙ silu'(g), du = da ⊙ silu(g), silu'(g) = σ(g)·(1 + g·(1 − σ(g)));
    /// dW_gate/up += [dg | du]ᵀ h; dh = [dg | du] · W_gate/up, written (added with
    /// `accumulate`). dh must not alias h or dout.
    void backward(ConstStridedMap h, ConstStridedMap dout, const Cache& cache, StridedMap dh,
                  bool accumulate = false) {
        const index rows = h.rows();
        require(cache.gu.rows() == rows && cache.gu.cols() == 2 * F_ && dout.rows() == rows &&
                    dout.cols() == D_ && h.cols() == D_,
                "SwiGLU::backward: input (", rows, ", ", h.cols(), "), output gradient (",
                dout.rows(), ", ", dout.cols(), ") and cache (", cache.gu.rows(), ", ",
                cache.gu.cols(), ") do not fit D ", D_, ", F ", F_);
        const Matrix act = activation(cache.gu);
        Matrix da(rows, F_);
        down_.backward(cview(act), dout, view(da));
        Matrix dgu(rows, 2 * F_);
        parallel_for(rows, 16, [&](index b, index e) {
            for (index r = b; r < e; ++r) {
                const float* g = cache.gu.data() + r * 2 * F_;
                const float* u = g + F_;
                const float* d = da.data() + r * F_;
                float* dg = dgu.data() + r * 2 * F_;
                float* du = dg + F_;
                for (index i = 0; i < F_; ++i) {
                    const float sg = 1.0f / (1.0f + std::exp(-g[i]));
                    du[i] = d[i] * g[i] * sg;
                    dg[i] = d[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
                }
            }
        });
        gate_up_.backward(h, cview(dgu), dh, accumulate);
    }

private:
    /// silu(gate) ⊙ up (rows, F) from [gate | up] (rows, 2F).
    [[nodiscard]] Matrix activation(const Matrix& gu) const {
        const index rows = gu.rows();
        Matrix act(rows, F_);
        parallel_for(rows, 16, [&](index b, index e) {
            for (index r = b; r < e; ++r) {
                float* a = act.data() + r * F_;
                const float* g = gu.data() + r * 2 * F_;
                std::copy(g, g + F_, a);
                silu_inplace(a, F_);
                Eigen::Map<Eigen::ArrayXf>(a, F_) *= Eigen::Map<const Eigen::ArrayXf>(g + F_, F_);
            }
        });
        return act;
    }

    index D_ = 0, F_ = 0;
    Linear gate_up_;  // (2F, D): rows [0, F) gate, [F, 2F) up
    Linear down_;     // (D, F)
};

}  // namespace ssm
