// ssm/train/schedule.hpp — learning-rate schedules: a multiplier of the peak learning rate
// as a function of the number of optimizer steps already taken, with the formulas of
// transformers' `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`
// and `get_cosine_schedule_with_warmup` / `get_cosine_with_min_lr_schedule_with_warmup`.
//
// Like PyTorch's LambdaLR, step k (counting from 1) runs with factor(k − 1); with a warmup
// the first step therefore has learning rate 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::train {

/// A learning-rate schedule: linear warmup over `warmup_steps`, then constant, linear
/// decay or half-cosine decay over the remaining `total_steps − warmup_steps`, from the
/// peak down to `floor` × peak (transformers' `min_lr_rate`; 0 decays to zero).
struct LrSchedule {
    enum class Kind { constant, linear, cosine };

    Kind kind = Kind::constant;
    index warmup_steps = 0;
    index total_steps = 0;  // linear and cosine only
    double floor = 0.0;     // linear and cosine only, in [0, 1]

    /// The peak throughout, after `warmup` steps of linear warmup from 0.
    [[nodiscard]] static LrSchedule constant(index warmup = 0) {
        return checked({Kind::constant, warmup, 0, 0.0});
    }
    /// Warmup, then linear decay reaching `floor` × peak at `total` steps and staying there.
    [[nodiscard]] static LrSchedule linear(index warmup, index total, double floor = 0.0) {
        return checked({Kind::linear, warmup, total, floor});
    }
    /// Warmup, then 0.5·(1 + cos(π·progress)) scaled into [floor, 1]; progress reaches 1 at
    /// `total` steps (past it the cosine rises again, as in transformers).
    [[nodiscard]] static LrSchedule cosine(index warmup, index total, double floor = 0.0) {
        return checked({Kind::cosine, warmup, total, floor});
    }

    /// The multiplier of the peak learning rate after `step` completed optimizer steps.
    [[nodiscard]] double factor(index step) const {
        require(step >= 0, "LrSchedule: step must be >= 0, got ", step);
        if (step < warmup_steps)
            return static_cast<double>(step) /
                   static_cast<double>(std::max<index>(1, warmup_steps));
        const double span = static_cast<double>(std::max<index>(1, total_steps - warmup_steps));
        switch (kind) {
            case Kind::constant:
                return 1.0;
            case Kind::linear: {
                const double f = std::max(0.0, static_cast<double>(total_steps - step) / span);
                return f * (1.0 - floor) + floor;
            }
            case Kind::cosine: {
                const double progress = static_cast<double>(step - warmup_steps) / span;
                const double f = 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress));
                return std::max(0.0, f * (1.0 - floor) + floor);
            }
        }
        return 1.0;
    }

    /// "constant", "linear" or "cosine".
    [[nodiscard]] std::string name() const {
        switch (kind) {
            case Kind::constant:
                return "constant";
            case Kind::linear:
                return "linear";
            case Kind::cosine:
                return "cosine";
        }
        return "?";
    }

private:
    [[nodiscard]] static LrSchedule checked(LrSchedule s) {
        require(s.warmup_steps >= 0, "LrSchedule: warmup steps must be >= 0, got ", s.warmup_steps);
        if (s.kind != Kind::constant) {
            require(s.total_steps > 0 && s.total_steps >= s.warmup_steps,
                    "LrSchedule: total steps (", s.total_steps,
                    ") must be positive and at least the warmup steps (", s.warmup_steps, ")");
            require(s.floor >= 0.0 && s.floor <= 1.0, "LrSchedule: floor must be in [0, 1], got ",
                    s.floor);
        }
        return s;
    }
};

}  // namespace ssm::train
