// core/checked.hpp: checked products and sums at the edges of their types, and element
// counts of shapes (zeros, negative dimensions, the 2^62 limit), against exact values.
#include <cstdint>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "ssm/core/checked.hpp"
#include "ssm/core/tensor.hpp"

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
