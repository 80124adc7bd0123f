// ssm/train/adamw.hpp — AdamW with PyTorch's semantics, global-norm gradient clipping,
// gradient accumulation, a learning-rate schedule, and its state saved and restored
// exactly (safetensors), so a resumed run continues bit for bit.
//
// One step, as `torch.optim.AdamW` (`_single_tensor_adam` with decoupled weight decay),
// for every parameter p with gradient g, t the step count from 1, lr = peak · schedule:
//
//   p ← p · (1 − lr·wd)                          only where Parameter::decay is set
//   m ← m + (1 − β₁)·(g − m)                     (torch's lerp)
//   v ← v·β₂ + (1 − β₂)·g·g
//   p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//
// in float32, with the scalar factors computed in double and rounded to float as PyTorch
// does. Before it, the gradients are divided by the number of accumulated micro-batches
// and, when `max_grad_norm` > 0, scaled by min(1, max_norm / (‖g‖ + 1e-6)) with ‖g‖ the
// 2-norm of all gradients together (`torch.nn.utils.clip_grad_norm_`).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/train/parameters.hpp"
#include "ssm/train/schedule.hpp"

namespace ssm::train {

/// AdamW's hyper-parameters (PyTorch's defaults, except `weight_decay` which PyTorch
/// defaults to 0.01 as well).
struct AdamWOptions {
    double lr = 1e-3;  // peak learning rate; the schedule scales it
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;  // on parameters with `decay` set only
    double max_grad_norm = 0.0;  // global-norm clipping; 0 turns it off
};

/// What one optimizer step did.
struct AdamWStep {
    double grad_norm = 0.0;  // ‖g‖ over all parameters, after accumulation, before clipping
    double lr = 0.0;         // the learning rate the step used
};

/// The 2-norm of all gradients together, accumulated in double. A gradient that is not
/// finite is an error naming its parameter and position.
[[nodiscard]] inline double gradient_norm(const Parameters& params) {
    double sum = 0.0;
    for (const Parameter& p : params) {
        double s = 0.0;
        for (float g : p.grad) s += static_cast<double>(g) * static_cast<double>(g);
        if (!std::isfinite(s))
            for (std::size_t i = 0; i < p.grad.size(); ++i)
                require(std::isfinite(p.grad[i]), "gradient of ", p.name, " is not finite (",
                        p.grad[i], " at element ", i, ")");
        sum += s;
    }
    return std::sqrt(sum);
}

namespace detail {
/// Multiplies all gradients by min(1, max_norm / (norm + 1e-6)).
inline void scale_to_norm(Parameters& params, double norm, double max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;
    const auto c = static_cast<float>(coef);
    for (Parameter& p : params)
        for (float& g : p.grad) g *= c;
}
}  // namespace detail

/// Scales all gradients so that their global 2-norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), at most 1).
/// Returns the norm before clipping.
inline double clip_gradient_norm(Parameters& params, double max_norm) {
    require(max_norm > 0.0, "clip_gradient_norm: max_norm must be positive, got ", max_norm);
    const double norm = gradient_norm(params);
    detail::scale_to_norm(params, norm, max_norm);
    return norm;
}

/// AdamW over a registry of parameters. State (first and second moments, step count) is
/// kept per parameter name, created at the first step.
class AdamW {
public:
    explicit AdamW(AdamWOptions options = {}, LrSchedule schedule = LrSchedule::constant())
        : options_(options), schedule_(schedule) {
        require(options.lr >= 0.0 && std::isfinite(options.lr), "AdamW: lr must be >= 0, got ",
                options.lr);
        require(options.beta1 >= 0.0 && options.beta1 < 1.0, "AdamW: beta1 must be in [0, 1), got ",
                options.beta1);
        require(options.beta2 >= 0.0 && options.beta2 < 1.0, "AdamW: beta2 must be in [0, 1), got ",
                options.beta2);
        require(options.eps >= 0.0, "AdamW: eps must be >= 0, got ", options.eps);
        require(options.weight_decay >= 0.0, "AdamW: weight_decay must be >= 0, got ",
                options.weight_decay);
        require(options.max_grad_norm >= 0.0, "AdamW: max_grad_norm must be >= 0, got ",
                options.max_grad_norm);
    }

    [[nodiscard]] const AdamWOptions& options() const noexcept { return options_; }
    [[nodiscard]] const LrSchedule& schedule() const noexcept { return schedule_; }
    /// Optimizer steps taken so far (restored by `load`).
    [[nodiscard]] index steps_taken() const noexcept { return steps_; }
    /// The learning rate the next step will use.
    [[nodiscard]] double next_lr() const { return options_.lr * schedule_.factor(steps_); }

    /// One step over `params`, whose gradients hold the sum over `accumulation`
    /// micro-batches of each micro-batch's mean-loss gradient. Gradients are divided by
    /// `accumulation` and clipped in place; they are not zeroed (call zero_grad()). A
    /// gradient that is not finite is an error, and then no parameter has changed.
    AdamWStep step(Parameters& params, index accumulation = 1) {
        require(accumulation >= 1, "AdamW: accumulation must be >= 1, got ", accumulation);
        for (const Parameter& p : params) {
            const auto it = state_.find(p.name);
            require(it == state_.end() || it->second.m.size() == p.value.size(),
                    "AdamW: parameter ", p.name, " has ", p.value.size(),
                    " values, its optimizer state ",
                    it == state_.end() ? std::size_t{0} : it->second.m.size());
        }
        AdamWStep report;
        report.grad_norm =
            gradient_norm(params);  // fails on a non-finite gradient before anything changes
        if (accumulation > 1) {
            const auto inv = static_cast<float>(1.0 / static_cast<double>(accumulation));
            for (Parameter& p : params)
                for (float& g : p.grad) g *= inv;
            report.grad_norm = gradient_norm(params);
        }
        if (options_.max_grad_norm > 0.0)
            detail::scale_to_norm(params, report.grad_norm, options_.max_grad_norm);
        report.lr = next_lr();
        ++steps_;

        const double lr = report.lr, t = static_cast<double>(steps_);
        const double bc1 = 1.0 - std::pow(options_.beta1, t);
        const double bc2 = 1.0 - std::pow(options_.beta2, t);
        const auto decay_mul = static_cast<float>(1.0 - lr * options_.weight_decay);
        const auto w1 = static_cast<float>(1.0 - options_.beta1);
        const auto b2 = static_cast<float>(options_.beta2);
        const auto w2 = static_cast<float>(1.0 - options_.beta2);
        const auto neg_step_size = static_cast<float>(-(lr / bc1));
        const auto bc2_sqrt = static_cast<float>(std::sqrt(bc2));
        const auto eps = static_cast<float>(options_.eps);
        const bool any_decay = options_.weight_decay != 0.0;

        for (Parameter& p : params) {
            State& s = state_[p.name];
            if (s.m.empty() && !p.value.empty()) {
                s.m.assign(p.value.size(), 0.0f);
                s.v.assign(p.value.size(), 0.0f);
            }
            float* value = p.value.data();
            const float* grad = p.grad.data();
            float* m = s.m.data();
            float* v = s.v.data();
            const bool decay = any_decay && p.decay;
            parallel_for(p.size(), index{1} << 15, [&](index begin, index end) {
                for (index i = begin; i < end; ++i) {
                    const float g = grad[i];
                    float x = value[i];
                    if (decay) x *= decay_mul;
                    m[i] = m[i] + w1 * (g - m[i]);
                    v[i] = v[i] * b2 + w2 * g * g;
                    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
                    value[i] = x + neg_step_size * m[i] / denom;
                }
            });
        }
        return report;
    }

    /// Writes the state (step count, and `exp_avg.<name>` / `exp_avg_sq.<name>` for every
    /// parameter, zeros before the first step) to a safetensors file, atomically. The
    /// hyper-parameters go into the metadata, for the record.
    void save(const std::filesystem::path& path, const Parameters& params) const {
        const std::int64_t step = steps_;
        std::vector<std::vector<float>> zeros;
        zeros.reserve(params.size());
        std::vector<TensorToWrite> tensors;
        tensors.push_back({"step", DType::I64, {1}, std::as_bytes(std::span(&step, 1))});
        for (const Parameter& p : params) {
            const auto it = state_.find(p.name);
            std::span<const float> m, v;
            if (it == state_.end() || it->second.m.empty()) {
                zeros.emplace_back(p.value.size(), 0.0f);
                m = v = zeros.back();
            } else {
                require(it->second.m.size() == p.value.size(), path.string(),
                        ": optimizer state of ", p.name, " has ", it->second.m.size(),
                        " values, the parameter ", p.value.size());
                m = it->second.m;
                v = it->second.v;
            }
            tensors.push_back(f32_tensor("exp_avg." + p.name, p.shape, m));
            tensors.push_back(f32_tensor("exp_avg_sq." + p.name, p.shape, v));
        }
        write_safetensors(path, tensors, metadata());
    }

    /// Restores the state written by `save` for the same parameters (by name and shape).
    /// A parameter without state in the file, state for a parameter not in `params`, or
    /// a tensor of the wrong dtype or shape is an error naming it; then nothing changes.
    void load(const std::filesystem::path& path, const Parameters& params) {
        const SafetensorsFile file = SafetensorsFile::open(path);
        const std::string where = path.string();
        const TensorInfo& step_info = file.info("step");
        require(step_info.dtype == DType::I64 && step_info.shape == std::vector<index>{1}, where,
                ": 'step' must be I64 of shape [1]");
        const std::int64_t step = file.load_i64("step").at(0);
        require(step >= 0, where, ": 'step' is negative (", step, ")");

        std::map<std::string, State, std::less<>> loaded;
        std::set<std::string, std::less<>> expected = {"step"};
        for (const Parameter& p : params) {
            State s;
            for (const bool first_moment : {true, false}) {
                const std::string name = (first_moment ? "exp_avg." : "exp_avg_sq.") + p.name;
                expected.insert(name);
                require(file.contains(name), where, ": no optimizer state '", name,
                        "' for parameter ", p.name);
                const TensorInfo& info = file.info(name);
                require(info.dtype == DType::F32 && info.shape == p.shape, where, ": '", name,
                        "' is ", dtype_name(info.dtype), " ", shape_string(info.shape),
                        ", parameter ", p.name, " is F32 ", shape_string(p.shape));
                const Tensor t = file.load_f32(name);
                auto& dst = first_moment ? s.m : s.v;
                dst.assign(t.values().begin(), t.values().end());
            }
            loaded[p.name] = std::move(s);
        }
        for (const std::string& name : file.names())
            require(expected.count(name) == 1, where, ": tensor '", name,
                    "' belongs to no parameter of the model");
        state_ = std::move(loaded);
        steps_ = static_cast<index>(step);
    }

private:
    struct State {
        std::vector<float> m;  // exp_avg
        std::vector<float> v;  // exp_avg_sq
    };

    [[nodiscard]] static std::string number(double x) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.17g", x);
        return buf;
    }

    [[nodiscard]] std::map<std::string, std::string> metadata() const {
        return {{"format", "ssm.adamw"},
                {"lr", number(options_.lr)},
                {"beta1", number(options_.beta1)},
                {"beta2", number(options_.beta2)},
                {"eps", number(options_.eps)},
                {"weight_decay", number(options_.weight_decay)},
                {"max_grad_norm", number(options_.max_grad_norm)},
                {"schedule", schedule_.name()},
                {"warmup_steps", std::to_string(schedule_.warmup_steps)},
                {"total_steps", std::to_string(schedule_.total_steps)},
                {"floor", number(schedule_.floor)}};
    }

    AdamWOptions options_;
    LrSchedule schedule_;
    index steps_ = 0;
    std::map<std::string, State, std::less<>> state_;
};

}  // namespace ssm::train
