// Embedding gathers rows and names the position of an id outside the vocabulary.
#include <vector>

#include "ssm/layers/embedding.hpp"
#include "test_util.hpp"

namespace test_embedding {

TEST_CASE("Embedding gathers table rows", "[embedding]") {
    const auto table = ssm::test::random_floats(10 * 4, -1, 1, 70);
    const ssm::Embedding emb(ssm::Tensor::from({10, 4}, table));
    const std::vector<std::int32_t> ids = {3, 0, 9, 3};
    ssm::Matrix out(4, 4);
    emb.forward(ids, ssm::StridedMap(out.data(), 4, 4, Eigen::OuterStride<>(4)));
    for (std::size_t r = 0; r < ids.size(); ++r)
        for (int c = 0; c < 4; ++c)
            CHECK(out(static_cast<ssm::index>(r), c) == table[static_cast<std::size_t>(ids[r] * 4 + c)]);
}

TEST_CASE("Embedding with a bfloat16 table gathers the rounded rows", "[embedding]") {
    const auto table = ssm::test::random_floats(10 * 4, -1, 1, 71);
    ssm::Embedding emb(ssm::Tensor::from({10, 4}, table));
    emb.store_bf16();
    REQUIRE(emb.table().is_bf16());
    const std::vector<std::int32_t> ids = {9, 0, 9, 4};
    ssm::Matrix out(4, 4);
    emb.forward(ids, ssm::StridedMap(out.data(), 4, 4, Eigen::OuterStride<>(4)));
    for (std::size_t r = 0; r < ids.size(); ++r)
        for (int c = 0; c < 4; ++c)
            CHECK(out(static_cast<ssm::index>(r), c) ==
                  ssm::bf16_to_f32(ssm::f32_to_bf16(table[static_cast<std::size_t>(ids[r] * 4 + c)])));
}

TEST_CASE("Embedding rejects ids outside [0, vocab) naming the position", "[embedding]") {
    const ssm::Embedding emb(ssm::Tensor::zeros({10, 4}));
    ssm::Matrix out(3, 4);
    for (std::int32_t bad : {10, -1, 1 << 30}) {
        const std::vector<std::int32_t> ids = {1, 2, bad};
        const auto msg = ssm::test::error_of(
            [&] { emb.forward(ids, ssm::StridedMap(out.data(), 3, 4, Eigen::OuterStride<>(4))); });
        CHECK(msg.find("position 2") != std::string::npos);
        CHECK(msg.find(std::to_string(bad)) != std::string::npos);
    }
}

}  // namespace test_embedding
