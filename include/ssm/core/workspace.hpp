// ssm/core/workspace.hpp — a grow-only float arena for activations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm {

/// Scratch memory for one forward pass: buffers are carved from one arena that only
/// grows, so repeated passes of the same (or smaller) shape allocate nothing.
///
/// Usage: `ws.reset(); auto a = ws.matrix(T, D); auto b = ws.matrix(T, E);` — every
/// matrix taken after a reset stays valid until the next reset.
class Workspace {
public:
    /// Starts a new pass. The arena is resized here (never while matrices are live) to
    /// the largest total requested by any earlier pass.
    void reset() {
        overflow_.clear();
        if (arena_.size() < high_water_ + kAlign) arena_.assign(high_water_ + kAlign, 0.0f);
        used_ = 0;
    }

    /// A (rows, cols) row-major matrix from the arena. Contents are unspecified.
    [[nodiscard]] StridedMap matrix(index rows, index cols) {
        const std::size_t n = static_cast<std::size_t>(rows * cols);
        const std::size_t need = used_ + round_up(n);
        if (need > high_water_) high_water_ = need;
        if (need + kAlign > arena_.size()) {
            // Not enough room in this pass: hand out separately owned storage and
            // size the arena for it at the next reset.
            used_ += round_up(n);
            overflow_.emplace_back(n + kAlign);
            return {aligned(overflow_.back().data()), rows, cols, Eigen::OuterStride<>(cols)};
        }
        float* p = aligned(arena_.data()) + used_;
        used_ += round_up(n);
        return {p, rows, cols, Eigen::OuterStride<>(cols)};
    }

    [[nodiscard]] std::size_t capacity_floats() const noexcept { return arena_.size(); }

private:
    static constexpr std::size_t kAlign = 16;  // floats: 64-byte alignment
    static std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
    static float* aligned(float* p) {
        const auto addr = reinterpret_cast<std::uintptr_t>(p);
        const std::uintptr_t bytes = kAlign * sizeof(float);
        return reinterpret_cast<float*>((addr + bytes - 1) / bytes * bytes);
    }

    std::vector<float> arena_;
    std::vector<std::vector<float>> overflow_;
    std::size_t used_ = 0;
    std::size_t high_water_ = 0;
};

}  // namespace ssm
