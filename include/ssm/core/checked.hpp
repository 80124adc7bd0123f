// ssm/core/checked.hpp — size arithmetic on numbers read from files: products and sums
// that report overflow instead of wrapping, and element counts of shapes.
//
// A size in a file is whatever the file says; before it is multiplied, added to or used
// to allocate, it goes through these, and the caller turns "does not fit" into an
// `ssm::Error` naming the file and what the size belongs to.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <type_traits>

namespace ssm {

/// a · b, or nothing when the exact product does not fit in `T`. Written without
/// compiler builtins so that every front end (nvcc's too) reads it.
template <class T>
    requires std::is_integral_v<T>
[[nodiscard]] constexpr std::optional<T> checked_mul(T a, T b) noexcept {
    constexpr T hi = std::numeric_limits<T>::max(), lo = std::numeric_limits<T>::min();
    if (a == 0 || b == 0) return T{0};
    if constexpr (std::is_signed_v<T>) {
        const bool fits = a > 0 ? (b > 0 ? a <= hi / b : b >= lo / a) : (b > 0 ? a >= lo / b : a >= hi / b);
        if (!fits) return std::nullopt;
    } else {
        if (b > hi / a) return std::nullopt;
    }
    return static_cast<T>(a * b);
}

/// a + b, or nothing when the exact sum does not fit in `T`.
template <class T>
    requires std::is_integral_v<T>
[[nodiscard]] constexpr std::optional<T> checked_add(T a, T b) noexcept {
    constexpr T hi = std::numeric_limits<T>::max(), lo = std::numeric_limits<T>::min();
    if constexpr (std::is_signed_v<T>) {
        if ((b > 0 && a > hi - b) || (b < 0 && a < lo - b)) return std::nullopt;
    } else {
        if (a > hi - b) return std::nullopt;
    }
    return static_cast<T>(a + b);
}

/// The largest element count a shape read from a file may have (2^62): every product of
/// its dimensions then fits a signed 64-bit integer (`index`). Its size in bytes is
/// checked apart, against the bytes the file holds.
inline constexpr std::uint64_t kMaxElements = std::uint64_t{1} << 62;

/// The number of elements of a shape whose dimensions are given as any integer type, or
/// nothing when a dimension is negative or the product of its non-zero dimensions exceeds
/// `limit`. Dimensions after a zero are checked too, so any prefix product of the shape
/// (what `Tensor::size` computes) stays within `limit`.
template <class I>
    requires std::is_integral_v<I>
[[nodiscard]] constexpr std::optional<std::uint64_t> checked_elements(std::span<const I> shape,
                                                                      std::uint64_t limit = kMaxElements) noexcept {
    std::uint64_t nonzero = 1;
    bool empty = false;
    for (const I d : shape) {
        if constexpr (std::is_signed_v<I>)
            if (d < 0) return std::nullopt;
        const auto u = static_cast<std::uint64_t>(d);
        if (u == 0) {
            empty = true;
            continue;
        }
        if (u > limit / nonzero) return std::nullopt;
        nonzero *= u;
    }
    return empty ? 0 : nonzero;
}

/// `count` elements of `item` bytes each, or nothing when that exceeds `limit` bytes.
[[nodiscard]] constexpr std::optional<std::uint64_t> checked_bytes(
    std::uint64_t count, std::uint64_t item,
    std::uint64_t limit = std::numeric_limits<std::uint64_t>::max()) noexcept {
    const auto bytes = checked_mul(count, item);
    if (!bytes || *bytes > limit) return std::nullopt;
    return bytes;
}

}  // namespace ssm
