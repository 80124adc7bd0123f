// Workspace: matrices do not overlap, are aligned, and a repeated pass reuses the arena.
#include <cstdint>

#include "ssm/core/workspace.hpp"
#include "test_util.hpp"

namespace test_workspace {

TEST_CASE("Workspace hands out disjoint aligned matrices and stops growing", "[workspace]") {
    ssm::Workspace ws;
    for (int pass = 0; pass < 3; ++pass) {
        ws.reset();
        auto a = ws.matrix(7, 13);
        auto b = ws.matrix(5, 3);
        a.setConstant(1.0f);
        b.setConstant(2.0f);
        CHECK((a.array() == 1.0f).all());
        CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % 64 == 0);
        CHECK((b.data() >= a.data() + 7 * 13 || b.data() + 15 <= a.data()));
    }
    const auto cap = ws.capacity_floats();
    ws.reset();
    (void)ws.matrix(7, 13);
    (void)ws.matrix(5, 3);
    CHECK(ws.capacity_floats() == cap);
    CHECK(cap > 0);
}

}  // namespace test_workspace
