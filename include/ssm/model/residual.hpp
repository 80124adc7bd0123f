// ssm/model/residual.hpp — one pre-norm residual block: x += Mixer(Norm(x)).
#pragma once

#include <span>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/norm.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// A mixer: loadable by prefix, with prefill (`forward`) and one-token `step`, and a
/// per-layer recurrent state type.
template <class M>
concept Mixer = requires(const M& m, const Checkpoint& ckpt, const MambaConfig& cfg,
                         const std::string& prefix, index batch) {
    { M::load(ckpt, cfg, prefix) } -> std::same_as<M>;
    { m.make_state(batch) };
};

/// `x += Mixer(Norm(x))` with the norm at `prefix.norm` and the mixer at `prefix.mixer`.
template <Norm NormT, Mixer MixerT>
class Residual {
public:
    using norm_type = NormT;
    using mixer_type = MixerT;
    using state_type = decltype(std::declval<const MixerT&>().make_state(index{}));

    Residual() = default;

    [[nodiscard]] static Residual load(const Checkpoint& ckpt, const MambaConfig& config,
                                       const std::string& prefix) {
        Residual r;
        r.norm_ = NormT::load(ckpt, prefix + ".norm", config.hidden_size, config.layer_norm_epsilon);
        r.mixer_ = MixerT::load(ckpt, config, prefix + ".mixer");
        return r;
    }

    [[nodiscard]] const NormT& norm() const noexcept { return norm_; }
    [[nodiscard]] const MixerT& mixer() const noexcept { return mixer_; }
    [[nodiscard]] state_type make_state(index batch) const { return mixer_.make_state(batch); }

    /// Keeps the mixer's large weights in `format`, when the mixer can (`store_weights`).
    void store_weights(WeightFormat format) {
        if constexpr (requires(MixerT& m) { m.store_weights(format); }) mixer_.store_weights(format);
    }

    /// Prefill: residual (T, D) += Mixer(Norm(residual)).
    void forward(StridedMap residual, std::span<const index> offsets, Workspace& ws,
                 const state_type* state_in, state_type* state_out) const {
        StridedMap h = ws.matrix(residual.rows(), residual.cols());
        norm_.forward(cview(residual), h);
        mixer_.forward(cview(h), offsets, residual, true, ws, state_in, state_out);
    }

    /// Decoding: residual (B, D) += Mixer.step(Norm(residual)).
    void step(StridedMap residual, state_type& state, Workspace& ws) const {
        StridedMap h = ws.matrix(residual.rows(), residual.cols());
        norm_.forward(cview(residual), h);
        mixer_.step(cview(h), state, residual, true, ws);
    }

    // ---- Training ----------------------------------------------------------------------

    /// Whether the block has a backward pass: its mixer has a training cache.
    static constexpr bool trainable = requires { typename MixerT::Cache; };

    /// Whether the mixer's backward takes its forward input again (attention, which keeps
    /// only its projections); the block then keeps the normed input in its cache.
    static constexpr bool mixer_backward_takes_input =
        requires(MixerT& m, ConstStridedMap h, ConstStridedMap d, const typename MixerT::Cache& c, StridedMap dh) {
            m.backward(h, d, c, dh);
        };

    struct Cache {
        typename NormT::Cache norm;
        typename MixerT::Cache mixer;
        Matrix h;  // (T, D) the mixer's input, kept only when its backward takes it again
    };

    /// Registers the norm (`prefix.norm.*`), then the mixer (`prefix.mixer.*`).
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        norm_.register_parameters(params, prefix + ".norm");
        mixer_.register_parameters(params, prefix + ".mixer");
    }

    /// Re-derives what the mixer computes from its masters (after an optimizer step).
    void refresh_derived() {
        if constexpr (requires(MixerT& m) { m.refresh_derived(); }) mixer_.refresh_derived();
    }

    /// Training forward from zero state: residual (T, D) += Mixer(Norm(residual)).
    void forward(StridedMap residual, std::span<const index> offsets, Cache& cache) {
        Matrix local;
        Matrix& h = mixer_backward_takes_input ? cache.h : local;
        h.resize(residual.rows(), residual.cols());
        norm_.forward(cview(residual), view(h), cache.norm);
        mixer_.forward(cview(h), offsets, residual, true, cache.mixer);
    }

    /// Backward through the block, in place: on entry d_residual (T, D) is the gradient of
    /// the block's output, on return that of its input (dx = dy + Normᵀ Mixerᵀ dy).
    void backward(StridedMap d_residual, const Cache& cache) {
        Matrix dh(d_residual.rows(), d_residual.cols());
        if constexpr (mixer_backward_takes_input)
            mixer_.backward(cview(cache.h), cview(d_residual), cache.mixer, view(dh));
        else
            mixer_.backward(cview(d_residual), cache.mixer, view(dh));
        norm_.backward(cview(dh), cache.norm, d_residual, true);
    }

private:
    NormT norm_;
    MixerT mixer_;
};

}  // namespace ssm
