// ssm/model/stack.hpp — the backbone: `num_hidden_layers` identical residual blocks.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// `num_hidden_layers` blocks of type `Layer`, loaded from `backbone.layers.{i}`. A layer
/// type whose `load` also takes a `LayerKind` (`HybridLayer`) is loaded as
/// `config.layer_kinds[i]` says, and needs a hybrid config; any other needs a plain one.
template <class Layer>
class Stack {
public:
    using layer_type = Layer;
    using norm_type = typename Layer::norm_type;
    using state_type = typename Layer::state_type;

    /// Whether each layer's kind comes from the config.
    static constexpr bool per_kind = requires(const Checkpoint& ckpt, const MambaConfig& config) {
        Layer::load(ckpt, config, std::string{}, LayerKind{});
    };

    Stack() = default;

    [[nodiscard]] static Stack load(const Checkpoint& ckpt, const MambaConfig& config) {
        if (config.is_hybrid() && !per_kind)
            fail(ckpt.source().string(),
                 ": the config describes a SAMBA hybrid (attention and MLP layers); "
                 "load it as ssm::Samba (or with ssm::with_mamba, which picks the type)");
        if (!config.is_hybrid() && per_kind)
            fail(ckpt.source().string(),
                 ": the config describes a plain Mamba model (no attention layers); "
                 "load it as ssm::MambaLM, not as a hybrid");
        Stack s;
        s.layers_.reserve(static_cast<std::size_t>(config.num_hidden_layers));
        for (index i = 0; i < config.num_hidden_layers; ++i) {
            const std::string prefix = "backbone.layers." + std::to_string(i);
            if constexpr (per_kind)
                s.layers_.push_back(Layer::load(ckpt, config, prefix,
                                                config.layer_kinds[static_cast<std::size_t>(i)]));
            else
                s.layers_.push_back(Layer::load(ckpt, config, prefix));
        }
        return s;
    }

    [[nodiscard]] index size() const noexcept { return static_cast<index>(layers_.size()); }
    [[nodiscard]] const Layer& operator[](index i) const {
        return layers_.at(static_cast<std::size_t>(i));
    }
    [[nodiscard]] auto begin() const noexcept { return layers_.begin(); }
    [[nodiscard]] auto end() const noexcept { return layers_.end(); }

    /// Keeps every layer's large weights in `format`, where the layer can (`store_weights`).
    void store_weights(WeightFormat format) {
        if constexpr (requires(Layer & l) { l.store_weights(format); })
            for (auto& l : layers_) l.store_weights(format);
    }

    // ---- Training ----------------------------------------------------------------------

    struct Cache {
        std::vector<typename Layer::Cache> layers;
    };

    /// Registers every layer, in order, as `backbone.layers.{i}`.
    void register_parameters(train::Parameters& params) {
        for (std::size_t i = 0; i < layers_.size(); ++i)
            layers_[i].register_parameters(params, "backbone.layers." + std::to_string(i));
    }

    void refresh_derived() {
        for (auto& l : layers_) l.refresh_derived();
    }

    /// Training forward of every layer over the residual stream (T, D), in place.
    void forward(StridedMap residual, std::span<const index> offsets, Cache& cache) {
        cache.layers.resize(layers_.size());
        for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i].forward(residual, offsets, cache.layers[i]);
    }

    /// Backward of every layer in reverse, in place on the residual stream's gradient.
    void backward(StridedMap d_residual, const Cache& cache) {
        require(cache.layers.size() == layers_.size(), "Stack::backward: the cache is not from a training forward");
        for (std::size_t i = layers_.size(); i-- > 0;) layers_[i].backward(d_residual, cache.layers[i]);
    }

private:
    std::vector<Layer> layers_;
};

}  // namespace ssm
