// core/checked.hpp: checked products and sums at the edges of their types, and element
// counts of shapes (zeros, negative dimensions, the 2^62 limit), against exact values and
// the compiler's own overflow builtins.
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "catch.hpp"
#include "ssm/core/checked.hpp"
#include "ssm/core/tensor.hpp"

namespace test_checked {

TEST_CASE("checked_mul and checked_add report overflow instead of wrapping", "[checked]") {
    constexpr auto i64max = std::numeric_limits<std::int64_t>::max();
    constexpr auto u64max = std::numeric_limits<std::uint64_t>::max();
    CHECK(ssm::checked_mul<std::int64_t>(3037000499, 3037000499) == std::int64_t{9223372030926249001});
    CHECK_FALSE(ssm::checked_mul<std::int64_t>(3037000500, 3037000500));
    CHECK_FALSE(ssm::checked_mul<std::int64_t>(i64max, 2));
    CHECK(ssm::checked_mul<std::int64_t>(i64max, -1) == -i64max);
    CHECK_FALSE(ssm::checked_mul<std::int64_t>(std::numeric_limits<std::int64_t>::min(), -1));
    CHECK(ssm::checked_mul<std::uint64_t>(std::uint64_t{1} << 62, 3) == std::uint64_t{3} << 62);
    CHECK_FALSE(ssm::checked_mul<std::uint64_t>(std::uint64_t{1} << 62, 4));  // wraps to 0
    CHECK(ssm::checked_add<std::uint64_t>(u64max - 1, 1) == u64max);
    CHECK_FALSE(ssm::checked_add<std::uint64_t>(u64max, 1));
    CHECK_FALSE(ssm::checked_add<std::int64_t>(i64max, 1));
    CHECK(ssm::checked_bytes(std::uint64_t{1} << 61, 4) == std::uint64_t{1} << 63);
    CHECK_FALSE(ssm::checked_bytes(std::uint64_t{1} << 62, 4));
    CHECK_FALSE(ssm::checked_bytes(100, 4, 399));
    CHECK(ssm::checked_bytes(100, 4, 400) == 400u);
}

TEST_CASE("checked_elements counts every dimension, those after a zero too", "[checked]") {
    using Shape = std::vector<ssm::index>;
    const auto count = [](const Shape& s) { return ssm::checked_elements(std::span<const ssm::index>(s)); };
    CHECK(count({}) == 1u);
    CHECK(count({3, 4, 5}) == 60u);
    CHECK(count({0, 4}) == 0u);
    CHECK(count({ssm::index{1} << 62}) == std::uint64_t{1} << 62);
    CHECK_FALSE(count({(ssm::index{1} << 62) + 1}));
    CHECK_FALSE(count({ssm::index{1} << 31, ssm::index{1} << 32}));
    CHECK_FALSE(count({ssm::index{1} << 62, ssm::index{1} << 62, 0}));  // the zero does not hide them
    CHECK_FALSE(count({0, ssm::index{1} << 62, 2}));
    CHECK(count({ssm::index{1} << 31, ssm::index{1} << 31, 0}) == 0u);  // prefix products fit
    CHECK_FALSE(count({2, -1}));
    CHECK_FALSE(count({-1, 0}));
    const std::vector<std::uint32_t> unsigned_shape = {65536, 65536};
    CHECK(ssm::checked_elements(std::span<const std::uint32_t>(unsigned_shape), std::uint64_t{1} << 32) ==
          std::uint64_t{1} << 32);
    CHECK_FALSE(ssm::checked_elements(std::span<const std::uint32_t>(unsigned_shape), (std::uint64_t{1} << 32) - 1));
}

TEST_CASE("checked_mul and checked_add agree with the compiler's overflow builtins on edge values", "[checked]") {
    const std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    const std::vector<std::int64_t> values = {lo, lo + 1, -3037000500, -3037000499, -65536, -2, -1, 0, 1, 2,
                                              65536, 3037000499, 3037000500, hi - 1, hi};
    for (const auto a : values) {
        for (const auto b : values) {
            INFO(a << " , " << b);
            std::int64_t p = 0, s = 0;
            const bool p_fits = !__builtin_mul_overflow(a, b, &p), s_fits = !__builtin_add_overflow(a, b, &s);
            CHECK(ssm::checked_mul(a, b) == (p_fits ? std::optional<std::int64_t>(p) : std::nullopt));
            CHECK(ssm::checked_add(a, b) == (s_fits ? std::optional<std::int64_t>(s) : std::nullopt));
            const auto ua = static_cast<std::uint64_t>(a), ub = static_cast<std::uint64_t>(b);
            std::uint64_t up = 0, us = 0;
            const bool up_fits = !__builtin_mul_overflow(ua, ub, &up), us_fits = !__builtin_add_overflow(ua, ub, &us);
            CHECK(ssm::checked_mul(ua, ub) == (up_fits ? std::optional<std::uint64_t>(up) : std::nullopt));
            CHECK(ssm::checked_add(ua, ub) == (us_fits ? std::optional<std::uint64_t>(us) : std::nullopt));
        }
    }
}

}  // namespace test_checked
