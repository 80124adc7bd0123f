// The scan operator: associative (to rounding) on random values, not commutative,
// identity (1, 0), and `advance` is the operator applied to a state.
#include <cmath>
#include <vector>

#include "ssm/scan/scan_operator.hpp"
#include "test_util.hpp"

namespace test_scan_operator {

using E = ssm::ScanElement<float>;

TEST_CASE("ScanOp is associative", "[scan-operator]") {
    const auto v = ssm::test::random_floats(3000, -1.5f, 1.5f, 900);
    const ssm::ScanOp op;
    for (std::size_t i = 0; i + 6 <= v.size(); i += 6) {
        const E x{v[i], v[i + 1]}, y{v[i + 2], v[i + 3]}, z{v[i + 4], v[i + 5]};
        const E l = op(op(x, y), z), r = op(x, op(y, z));
        CHECK(std::abs(l.a - r.a) <= 1e-6f * (1 + std::abs(l.a)));
        CHECK(std::abs(l.b - r.b) <= 1e-6f * (1 + std::abs(l.b)));
    }
}

TEST_CASE("ScanOp is not commutative, has identity (1, 0), and advance applies it", "[scan-operator]") {
    const ssm::ScanOp op;
    const E x{0.5f, 1.0f}, y{2.0f, 3.0f};
    CHECK(op(x, y).b == 2.0f * 1.0f + 3.0f);  // first x then y
    CHECK(op(y, x).b == 0.5f * 3.0f + 1.0f);
    CHECK(op(x, y).b != op(y, x).b);
    const E id{1.0f, 0.0f};
    CHECK(op(id, x).a == x.a);
    CHECK(op(id, x).b == x.b);
    CHECK(op(x, id).b == x.b);
    // advance(h, a, b) is the b of (·, h) ∘ (a, b): the state after one step.
    CHECK(ssm::ScanOp::advance(4.0f, 0.5f, 1.0f) == op(E{1.0f, 4.0f}, E{0.5f, 1.0f}).b);
    static_assert(ssm::ScanOp{}(E{2.0f, 1.0f}, E{3.0f, 1.0f}).b == 4.0f);
}

}  // namespace test_scan_operator
