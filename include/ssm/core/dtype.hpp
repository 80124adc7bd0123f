// ssm/core/dtype.hpp — element types found in checkpoints and their conversion to float.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace ssm {

enum class DType : std::uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

[[nodiscard]] constexpr std::size_t dtype_size(DType t) noexcept {
    switch (t) {
        case DType::F64:
        case DType::I64: return 8;
        case DType::F32:
        case DType::I32: return 4;
        case DType::F16:
        case DType::BF16:
        case DType::I16: return 2;
        case DType::I8:
        case DType::U8:
        case DType::Bool: return 1;
    }
    return 0;
}

/// The safetensors spelling of a dtype ("F32", "BF16", ...).
[[nodiscard]] constexpr std::string_view dtype_name(DType t) noexcept {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::F64: return "F64";
        case DType::I64: return "I64";
        case DType::I32: return "I32";
        case DType::I16: return "I16";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        case DType::Bool: return "BOOL";
    }
    return "?";
}

/// Parses a safetensors dtype string; empty when unknown.
[[nodiscard]] constexpr std::optional<DType> parse_dtype(std::string_view s) noexcept {
    constexpr DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64,
                             DType::I32, DType::I16, DType::I8,   DType::U8,  DType::Bool};
    for (DType t : all)
        if (dtype_name(t) == s) return t;
    return std::nullopt;
}

/// bfloat16 bits -> float (exact).
[[nodiscard]] inline float bf16_to_f32(std::uint16_t bits) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

/// float -> bfloat16 bits, round to nearest even; NaN stays NaN.
[[nodiscard]] inline std::uint16_t f32_to_bf16(float f) noexcept {
    std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
}

/// IEEE half bits -> float (exact, handles subnormals, inf, NaN).
[[nodiscard]] inline float f16_to_f32(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    std::uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exp = 113;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

/// float -> IEEE half bits, round to nearest even, overflow to inf.
[[nodiscard]] inline std::uint16_t f32_to_f16(float f) noexcept {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
    if (a < 0x38800000u) {  // result is subnormal or zero
        if (a < 0x33000000u) return sign;
        const std::uint32_t e = a >> 23;
        const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126u - e;  // 14..24
        std::uint32_t r = m >> shift;
        const std::uint32_t rem = m & ((1u << shift) - 1u);
        const std::uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return static_cast<std::uint16_t>(sign | r);
    }
    std::uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
}

/// Converts `n` elements of type `src_type` at `src` (any alignment) to float.
/// Integer types convert by value. Returns false for a type with no float meaning.
inline bool convert_to_f32(DType src_type, const void* src, float* dst, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(src);
    auto load = [p](std::size_t i, auto tag) {
        decltype(tag) v;
        std::memcpy(&v, p + i * sizeof v, sizeof v);
        return v;
    };
    switch (src_type) {
        case DType::F32:
            if (n) std::memcpy(dst, src, n * 4);  // an empty tensor may have no storage at all
            return true;
        case DType::F16:
            for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load(i, std::uint16_t{}));
            return true;
        case DType::BF16:
            for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load(i, std::uint16_t{}));
            return true;
        case DType::F64:
            for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load(i, double{}));
            return true;
        case DType::I64:
            for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load(i, std::int64_t{}));
            return true;
        case DType::I32:
            for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load(i, std::int32_t{}));
            return true;
        default: return false;
    }
}

}  // namespace ssm
