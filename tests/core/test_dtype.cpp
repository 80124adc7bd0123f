// dtype conversions against exact bit patterns: bf16 and f16 round trips, rounding to
// nearest even, subnormals, infinities and NaN.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ssm/core/dtype.hpp"
#include "test_util.hpp"

namespace test_dtype {

TEST_CASE("dtype names parse back and sizes are right", "[dtype]") {
    for (auto t : {ssm::DType::F32, ssm::DType::F16, ssm::DType::BF16, ssm::DType::F64, ssm::DType::I64,
                   ssm::DType::I32, ssm::DType::I16, ssm::DType::I8, ssm::DType::U8, ssm::DType::Bool})
        CHECK(ssm::parse_dtype(ssm::dtype_name(t)) == t);
    CHECK(!ssm::parse_dtype("F8_E4M3").has_value());
    CHECK(ssm::dtype_size(ssm::DType::BF16) == 2);
    CHECK(ssm::dtype_size(ssm::DType::I64) == 8);
}

TEST_CASE("bf16 <-> f32", "[dtype]") {
    CHECK(ssm::bf16_to_f32(0x3f80) == 1.0f);
    CHECK(ssm::bf16_to_f32(0xc000) == -2.0f);
    CHECK(ssm::f32_to_bf16(1.0f) == 0x3f80);
    // 1 + 2^-8 is halfway between two bf16 values: ties to even (down to 1.0).
    CHECK(ssm::f32_to_bf16(1.0f + 0.00390625f) == 0x3f80);
    // 1 + 3·2^-8 is halfway, ties to even (up).
    CHECK(ssm::f32_to_bf16(1.0f + 3 * 0.00390625f) == 0x3f82);
    CHECK(std::isnan(ssm::bf16_to_f32(ssm::f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isinf(ssm::bf16_to_f32(ssm::f32_to_bf16(std::numeric_limits<float>::infinity()))));
    for (std::uint32_t bits = 0; bits < 0x10000; bits += 7) {  // every finite bf16 survives a round trip
        const auto h = static_cast<std::uint16_t>(bits);
        const float f = ssm::bf16_to_f32(h);
        if (!std::isnan(f)) CHECK(ssm::f32_to_bf16(f) == h);
    }
}

TEST_CASE("f16 <-> f32", "[dtype]") {
    CHECK(ssm::f16_to_f32(0x3c00) == 1.0f);
    CHECK(ssm::f16_to_f32(0xc000) == -2.0f);
    CHECK(ssm::f16_to_f32(0x7bff) == 65504.0f);
    CHECK(ssm::f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(ssm::f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
    CHECK(std::isinf(ssm::f16_to_f32(0x7c00)));
    CHECK(std::isnan(ssm::f16_to_f32(0x7e00)));
    CHECK(ssm::f32_to_f16(65520.0f) == 0x7c00);  // rounds to inf
    CHECK(ssm::f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie to even
    for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {  // every non-NaN half survives a round trip
        const auto h = static_cast<std::uint16_t>(bits);
        const float f = ssm::f16_to_f32(h);
        if (!std::isnan(f)) REQUIRE(ssm::f32_to_f16(f) == h);
    }
}

TEST_CASE("convert_to_f32 reads unaligned data of each float and integer type", "[dtype]") {
    unsigned char buf[1 + 3 * 8] = {};
    const std::int64_t vals[] = {-5, 0, 1 << 20};
    std::memcpy(buf + 1, vals, sizeof vals);
    float out[3];
    REQUIRE(ssm::convert_to_f32(ssm::DType::I64, buf + 1, out, 3));
    CHECK(out[0] == -5.0f);
    CHECK(out[2] == 1048576.0f);
    const std::uint16_t bf[] = {0x3f80, 0x4000};
    std::memcpy(buf + 1, bf, sizeof bf);
    REQUIRE(ssm::convert_to_f32(ssm::DType::BF16, buf + 1, out, 2));
    CHECK(out[1] == 2.0f);
    CHECK_FALSE(ssm::convert_to_f32(ssm::DType::Bool, buf, out, 1));
}

}  // namespace test_dtype
