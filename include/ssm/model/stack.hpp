// ssm/model/stack.hpp — the backbone: `num_hidden_layers` identical residual blocks.
#pragma once

#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"

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

private:
    std::vector<Layer> layers_;
};

}  // namespace ssm
