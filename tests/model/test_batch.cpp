// Batch packing: offsets, per-sequence views, empty sequences rejected.
#include "ssm/model/batch.hpp"
#include "test_util.hpp"

namespace test_batch {

TEST_CASE("Batch packs sequences back to back with offsets", "[batch]") {
    const auto b = ssm::Batch::of({{1, 2, 3}, {4}, {5, 6}});
    CHECK(b.size() == 3);
    CHECK(b.total_tokens() == 6);
    CHECK(std::vector<ssm::index>(b.offsets().begin(), b.offsets().end()) == std::vector<ssm::index>{0, 3, 4, 6});
    CHECK(b.length(1) == 1);
    CHECK(std::vector<std::int32_t>(b.sequence(2).begin(), b.sequence(2).end()) == std::vector<std::int32_t>{5, 6});
    CHECK(ssm::Batch().empty());
}

TEST_CASE("Batch rejects an empty sequence, naming it", "[batch]") {
    ssm::Batch b;
    b.add(std::vector<std::int32_t>{1});
    CHECK(ssm::test::error_of([&] { b.add(std::vector<std::int32_t>{}); }).find("sequence 1") != std::string::npos);
}

}  // namespace test_batch
