// ssm/model/hybrid.hpp — SAMBA-style hybrids: blocks with a mixer and an MLP, the mixer
// Mamba in some layers and sliding-window attention in others.
#pragma once

#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/heads/lm_head.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/mamba_mixer.hpp"
#include "ssm/layers/norm.hpp"
#include "ssm/layers/rms_norm.hpp"
#include "ssm/layers/sliding_window_attention.hpp"
#include "ssm/layers/swiglu.hpp"
#include "ssm/model/model.hpp"
#include "ssm/model/residual.hpp"
#include "ssm/model/stack.hpp"
#include "ssm/scan/discretization.hpp"
#include "ssm/scan/selective_scan.hpp"

namespace ssm {

/// A pre-norm block with a mixer and an MLP: `x += Mixer(Norm(x)); x += Mlp(Norm(x))`. The
/// first half is a `Residual<NormT, MixerT>` (norm at `prefix.norm`, mixer at
/// `prefix.mixer`); the MLP's norm is at `prefix.mlp_norm`, the MLP at `prefix.mlp` (inner
/// size `config.mlp_size`).
template <Norm NormT, Mixer MixerT, class MlpT = SwiGLU>
class MlpResidual {
public:
    using norm_type = NormT;
    using mixer_type = MixerT;
    using mlp_type = MlpT;
    using state_type = typename Residual<NormT, MixerT>::state_type;

    MlpResidual() = default;

    [[nodiscard]] static MlpResidual load(const Checkpoint& ckpt, const MambaConfig& config,
                                          const std::string& prefix) {
        MlpResidual r;
        r.mixer_block_ = Residual<NormT, MixerT>::load(ckpt, config, prefix);
        r.mlp_norm_ =
            NormT::load(ckpt, prefix + ".mlp_norm", config.hidden_size, config.layer_norm_epsilon);
        r.mlp_ = MlpT::load(ckpt, prefix + ".mlp", config.hidden_size, config.mlp_size);
        return r;
    }

    [[nodiscard]] const MixerT& mixer() const noexcept { return mixer_block_.mixer(); }
    [[nodiscard]] const MlpT& mlp() const noexcept { return mlp_; }
    [[nodiscard]] state_type make_state(index batch) const {
        return mixer_block_.make_state(batch);
    }

    void store_weights(WeightFormat format) {
        mixer_block_.store_weights(format);
        if constexpr (requires(MlpT & m) { m.store_weights(format); }) mlp_.store_weights(format);
    }

    /// Prefill over packed sequences; the mixer's state as in `Residual::forward`.
    void forward(StridedMap residual, std::span<const index> offsets, Workspace& ws,
                 const state_type* state_in, state_type* state_out) const {
        mixer_block_.forward(residual, offsets, ws, state_in, state_out);
        add_mlp(residual, ws);
    }

    /// Decoding: one token per sequence.
    void step(StridedMap residual, state_type& state, Workspace& ws) const {
        mixer_block_.step(residual, state, ws);
        add_mlp(residual, ws);
    }

private:
    /// residual += Mlp(Norm(residual)).
    void add_mlp(StridedMap residual, Workspace& ws) const {
        StridedMap h = ws.matrix(residual.rows(), residual.cols());
        mlp_norm_.forward(cview(residual), h);
        mlp_.forward(cview(h), residual, true, ws);
    }

    Residual<NormT, MixerT> mixer_block_;
    NormT mlp_norm_;
    MlpT mlp_;
};

/// One layer of a hybrid stack: a `MambaBlock` or an `AttentionBlock`, as the config says.
/// Its recurrent state is the matching alternative of a variant.
template <class MambaBlock, class AttentionBlock>
class HybridLayer {
public:
    using norm_type = typename MambaBlock::norm_type;
    using state_type =
        std::variant<typename MambaBlock::state_type, typename AttentionBlock::state_type>;

    HybridLayer() = default;

    [[nodiscard]] static HybridLayer load(const Checkpoint& ckpt, const MambaConfig& config,
                                          const std::string& prefix, LayerKind kind) {
        HybridLayer l;
        if (kind == LayerKind::Mamba)
            l.layer_ = MambaBlock::load(ckpt, config, prefix);
        else
            l.layer_ = AttentionBlock::load(ckpt, config, prefix);
        return l;
    }

    [[nodiscard]] LayerKind kind() const noexcept {
        return layer_.index() == 0 ? LayerKind::Mamba : LayerKind::Attention;
    }
    [[nodiscard]] const MambaBlock* mamba() const noexcept { return std::get_if<0>(&layer_); }
    [[nodiscard]] const AttentionBlock* attention() const noexcept {
        return std::get_if<1>(&layer_);
    }

    [[nodiscard]] state_type make_state(index batch) const {
        return std::visit([&](const auto& l) { return state_type(l.make_state(batch)); }, layer_);
    }

    void store_weights(WeightFormat format) {
        std::visit([format](auto& l) { l.store_weights(format); }, layer_);
    }

    void forward(StridedMap residual, std::span<const index> offsets, Workspace& ws,
                 const state_type* state_in, state_type* state_out) const {
        std::visit(
            [&](const auto& l) {
                using S = typename std::decay_t<decltype(l)>::state_type;
                const S* in = state_in ? &alternative<S>(*state_in) : nullptr;
                S* out = state_out ? &alternative<S>(*state_out) : nullptr;
                l.forward(residual, offsets, ws, in, out);
            },
            layer_);
    }

    void step(StridedMap residual, state_type& state, Workspace& ws) const {
        std::visit(
            [&](const auto& l) {
                using S = typename std::decay_t<decltype(l)>::state_type;
                l.step(residual, alternative<S>(state), ws);
            },
            layer_);
    }

private:
    template <class S, class V>
    static auto& alternative(V& state) {
        auto* s = std::get_if<S>(&state);
        require(s != nullptr,
                "HybridLayer: the recurrent state was made for a different kind of layer");
        return *s;
    }

    std::variant<MambaBlock, AttentionBlock> layer_;
};

/// The backbone of a hybrid: layer i of `backbone.layers.{i}` a `MambaBlock` or an
/// `AttentionBlock`, as `config.layer_kinds[i]` says.
template <class MambaBlock, class AttentionBlock>
using HybridStack = Stack<HybridLayer<MambaBlock, AttentionBlock>>;

/// SAMBA's layers: RMSNorm, Mamba-1 or sliding-window attention with RoPE, then SwiGLU.
template <Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
using SambaStack = HybridStack<MlpResidual<RMSNorm, MambaMixer<Disc, ScanT>, SwiGLU>,
                               MlpResidual<RMSNorm, SlidingWindowAttention, SwiGLU>>;

/// A SAMBA backbone with any head.
template <class Head, Discretization Disc = MambaDiscretization, Scan ScanT = ParallelScan>
using SambaWith = Model<SambaStack<Disc, ScanT>, Head>;

/// SAMBA language model (microsoft/Samba checkpoints in lit-gpt names, tied head).
using Samba = SambaWith<LmHead>;

}  // namespace ssm
