// ssm/layers/swiglu.hpp — the gated feed-forward block of SAMBA and LLaMA:
// out = down(silu(gate(h)) ⊙ up(h)).
#pragma once

#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/layers/activations.hpp"
#include "ssm/layers/linear.hpp"

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

    /// Keeps both weight matrices in `format` (see `WeightFormat`).
    void store_weights(WeightFormat format) {
        gate_up_.store_weights(format);
        down_.store_weights(format);
    }

    /// Keeps both weight matrices in bfloat16.
    void store_bf16() { store_weights(WeightFormat::BF16); }

private:
    index D_ = 0, F_ = 0;
    Linear gate_up_;  // (2F, D): rows [0, F) gate, [F, 2F) up
    Linear down_;     // (D, F)
};

}  // namespace ssm
