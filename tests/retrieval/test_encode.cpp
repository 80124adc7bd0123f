// encode_sequences: rows in input order, independent of how sequences are batched, equal
// to encoding each alone; bad input names the sequence.
#include <random>
#include <vector>

#include "ssm/retrieval/encode.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_encode {

TEST_CASE("encode_sequences keeps input order and does not depend on the batching", "[encode]") {
    const auto model = ssm::MambaRetriever::load(ssm::test::data_dir() / "mamba-tiny");
    std::mt19937 rng(11);
    std::vector<std::vector<std::int32_t>> seqs;
    for (int i = 0; i < 23; ++i) {
        std::vector<std::int32_t> s(1 + rng() % 90);
        for (auto& t : s) t = static_cast<std::int32_t>(rng() % 1000);
        seqs.push_back(std::move(s));
    }
    const ssm::Matrix big = ssm::encode_sequences(model, seqs, {1 << 20, nullptr});
    const ssm::Matrix small = ssm::encode_sequences(model, seqs, {1, nullptr});  // one sequence a batch
    const ssm::Matrix mid = ssm::encode_sequences(model, seqs, {150, nullptr});
    REQUIRE(big.rows() == 23);
    for (int i = 0; i < 23; ++i) {
        INFO("sequence " << i);
        const ssm::Matrix alone = model.encode(ssm::Batch::of({seqs[static_cast<std::size_t>(i)]}));
        CHECK((big.row(i) - alone.row(0)).norm() < 1e-6f);
        CHECK((small.row(i) - alone.row(0)).norm() < 1e-6f);
        CHECK((mid.row(i) - alone.row(0)).norm() < 1e-6f);
    }
}

TEST_CASE("encode_sequences names a bad sequence before doing any work", "[encode]") {
    const auto model = ssm::MambaRetriever::load(ssm::test::data_dir() / "mamba-tiny");
    const std::vector<std::vector<std::int32_t>> bad_id{{1, 2}, {3, 1000}};
    const auto msg = ssm::test::error_of([&] { (void)ssm::encode_sequences(model, bad_id); });
    CHECK(msg.find("sequence 1") != std::string::npos);
    CHECK(msg.find("1000") != std::string::npos);
    const std::vector<std::vector<std::int32_t>> empty{{1, 2}, {}};
    CHECK(ssm::test::error_of([&] { (void)ssm::encode_sequences(model, empty); }).find("sequence 1 is empty") !=
          std::string::npos);
    CHECK(ssm::encode_sequences(model, std::vector<std::vector<std::int32_t>>{}).size() == 0);
}

}  // namespace test_encode
