// ssm/train/parameters.hpp — the registry of trainable parameters: every parameter of a
// model under its checkpoint name, with its float32 master value and its gradient.
//
// Layers own their values and gradients (llm.c's habit: parameters and gradients side by
// side); the registry holds views of them, so the optimizer, the saver, `ssm-grad` and a
// data-parallel allreduce all walk one list in one order. Layers register in the order
// of the checkpoint (embedding, layers 0.., final norm, head), so two processes that
// build the same model see the same list.
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::train {

/// One trainable tensor: a view of its float32 value and of its gradient, both owned by
/// the layer that registered it.
struct Parameter {
    std::string name;           // checkpoint name, e.g. "backbone.layers.3.mixer.A_log"
    std::vector<index> shape;   // as in the checkpoint, e.g. {E, N}
    std::span<float> value;     // float32 master weights
    std::span<float> grad;      // same size; backward accumulates (+=) into it
    bool decay = true;          // AdamW's weight decay applies (not to norms, biases, A_log, D)

    [[nodiscard]] index size() const noexcept { return static_cast<index>(value.size()); }
};

/// The list of a model's parameters, in registration order; names are unique.
class Parameters {
public:
    /// Registers a parameter; fails when the name is taken or the sizes disagree.
    void add(std::string name, std::vector<index> shape, std::span<float> value,
             std::span<float> grad, bool decay) {
        index n = 1;
        for (index d : shape) n *= d;
        require(static_cast<std::size_t>(n) == value.size() && value.size() == grad.size(),
                "Parameters: ", name, " has shape of ", n, " elements but ", value.size(),
                " values and ", grad.size(), " gradients");
        require(find(name) == nullptr, "Parameters: ", name, " is registered twice");
        list_.push_back(Parameter{std::move(name), std::move(shape), value, grad, decay});
    }

    [[nodiscard]] const Parameter* find(const std::string& name) const noexcept {
        const auto it = std::find_if(list_.begin(), list_.end(),
                                     [&](const Parameter& p) { return p.name == name; });
        return it == list_.end() ? nullptr : &*it;
    }
    [[nodiscard]] Parameter* find(const std::string& name) noexcept {
        return const_cast<Parameter*>(std::as_const(*this).find(name));
    }
    [[nodiscard]] const Parameter& at(const std::string& name) const {
        const Parameter* p = find(name);
        require(p != nullptr, "Parameters: no parameter named ", name);
        return *p;
    }

    /// Sets every gradient to zero (before a step's first micro-batch).
    void zero_grad() noexcept {
        for (Parameter& p : list_) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
    }

    /// How many scalars all parameters hold together.
    [[nodiscard]] index count() const noexcept {
        index n = 0;
        for (const Parameter& p : list_) n += p.size();
        return n;
    }

    [[nodiscard]] std::size_t size() const noexcept { return list_.size(); }
    [[nodiscard]] bool empty() const noexcept { return list_.empty(); }
    [[nodiscard]] auto begin() noexcept { return list_.begin(); }
    [[nodiscard]] auto end() noexcept { return list_.end(); }
    [[nodiscard]] auto begin() const noexcept { return list_.begin(); }
    [[nodiscard]] auto end() const noexcept { return list_.end(); }

private:
    std::vector<Parameter> list_;
};

/// An owned float32 copy of `t`: the master copy of a parameter that may be a read-only
/// view of a mapped checkpoint.
[[nodiscard]] inline Tensor master_copy(const Tensor& t) {
    const auto v = t.values();
    return Tensor::from({t.shape().begin(), t.shape().end()}, std::vector<float>(v.begin(), v.end()));
}

/// The common case of a layer's `register_parameters`: `value` becomes an owned float32
/// master copy of itself, `grad` a zero tensor of its shape, and both are registered under
/// `name`. Tensors share their storage when copied, so the registry's views stay valid
/// however the layer is moved or copied afterwards.
inline void register_tensor(Parameters& params, std::string name, Tensor& value, Tensor& grad, bool decay) {
    value = master_copy(value);
    std::vector<index> shape(value.shape().begin(), value.shape().end());
    grad = Tensor::zeros(shape);
    const auto n = static_cast<std::size_t>(value.size());
    params.add(std::move(name), std::move(shape), {value.mutable_data(), n}, {grad.mutable_data(), n}, decay);
}

}  // namespace ssm::train
