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
#include "ssm/train/parameters.hpp"

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

    // ---- Training ----------------------------------------------------------------------

    static constexpr bool trainable =
        Residual<NormT, MixerT>::trainable && requires { typename MlpT::Cache; };

    struct Cache {
        typename Residual<NormT, MixerT>::Cache mixer;
        typename NormT::Cache mlp_norm;
        Matrix h;  // (T, D) the MLP's input, Norm(residual) after the mixer
        typename MlpT::Cache mlp;
    };

    /// Registers the mixer half (`prefix.norm.*`, `prefix.mixer.*`), then
    /// `prefix.mlp_norm.*` and `prefix.mlp.*`.
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        mixer_block_.register_parameters(params, prefix);
        mlp_norm_.register_parameters(params, prefix + ".mlp_norm");
        mlp_.register_parameters(params, prefix + ".mlp");
    }

    void refresh_derived() { mixer_block_.refresh_derived(); }

    /// Training forward from zero state over the residual stream (T, D), in place.
    void forward(StridedMap residual, std::span<const index> offsets, Cache& cache) {
        mixer_block_.forward(residual, offsets, cache.mixer);
        cache.h.resize(residual.rows(), residual.cols());
        mlp_norm_.forward(cview(residual), view(cache.h), cache.mlp_norm);
        mlp_.forward(cview(cache.h), residual, true, cache.mlp);
    }

    /// Backward in place: d_residual holds the gradient of the block's output on entry,
    /// that of its input on return (the MLP half, then the mixer half).
    void backward(StridedMap d_residual, const Cache& cache) {
        Matrix dh(d_residual.rows(), d_residual.cols());
        mlp_.backward(cview(cache.h), cview(d_residual), cache.mlp, view(dh));
        mlp_norm_.backward(cview(dh), cache.mlp_norm, d_residual, true);
        mixer_block_.backward(d_residual, cache.mixer);
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

    // ---- Training ----------------------------------------------------------------------

    static constexpr bool trainable = MambaBlock::trainable && AttentionBlock::trainable;

    /// The training cache of whichever block this layer is.
    using Cache = std::variant<typename MambaBlock::Cache, typename AttentionBlock::Cache>;

    void register_parameters(train::Parameters& params, const std::string& prefix) {
        std::visit([&](auto& l) { l.register_parameters(params, prefix); }, layer_);
    }

    void refresh_derived() {
        std::visit([](auto& l) { l.refresh_derived(); }, layer_);
    }

    void forward(StridedMap residual, std::span<const index> offsets, Cache& cache) {
        if (auto* m = std::get_if<0>(&layer_))
            m->forward(residual, offsets, cache.template emplace<0>());
        else
            std::get<1>(layer_).forward(residual, offsets, cache.template emplace<1>());
    }

    void backward(StridedMap d_residual, const Cache& cache) {
        require(cache.index() == layer_.index(),
                "HybridLayer::backward: the cache was made by a different kind of layer");
        if (auto* m = std::get_if<0>(&layer_))
            m->backward(d_residual, std::get<0>(cache));
        else
            std::get<1>(layer_).backward(d_residual, std::get<1>(cache));
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
