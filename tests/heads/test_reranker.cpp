// The reranker head against the transformers references (`rerank.scores` from
// `rerank.score.weight/bias` at the EOS), with the head given as an extra safetensors
// file or inside the checkpoint; and its errors.
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_reranker {

TEST_CASE("RerankerHead scores match transformers on every bundled checkpoint", "[reranker]") {
    const auto scratch = ssm::test::scratch_dir("reranker");
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded", "falcon-mamba-tiny",
                               "mamba2-tiny", "mamba2-tiny-long"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const std::filesystem::path head[] = {ssm::test::write_score_head(ref, scratch / (std::string(folder) + ".safetensors"), true)};
        ssm::with_mamba<ssm::RerankerHead>(dir, [&](const auto& model) {
            CHECK(model.head().has_bias());
            const ssm::Matrix scores = model.encode(ssm::Batch::of(ssm::test::embed_inputs(ref)));
            REQUIRE(scores.rows() == 4);
            REQUIRE(scores.cols() == 1);
            CHECK(ssm::test::rel_error({scores.data(), 4}, ref.load_f32("rerank.scores").values()) < 1e-5);
            return 0;
        }, head);
    }
}

TEST_CASE("RerankerHead: score.bias is optional; score.weight is not", "[reranker]") {
    const auto scratch = ssm::test::scratch_dir("reranker-bias");
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto seqs = ssm::test::embed_inputs(ref);
    const float bias = ref.load_f32("rerank.score.bias").values()[0];
    const std::filesystem::path head[] = {ssm::test::write_score_head(ref, scratch / "head.safetensors", false)};
    ssm::with_mamba<ssm::RerankerHead>(dir, [&](const auto& model) {
        CHECK_FALSE(model.head().has_bias());
        const ssm::Matrix s = model.encode(ssm::Batch::of(seqs));
        const auto expected = ref.load_f32("rerank.scores").values();
        for (int k = 0; k < 4; ++k) CHECK(std::abs(s(k, 0) + bias - expected[static_cast<std::size_t>(k)]) < 1e-5);
        return 0;
    }, head);

    const auto msg = ssm::test::error_of([&] { (void)ssm::MambaReranker::load(dir); });
    CHECK(msg.find("score.weight") != std::string::npos);
    CHECK(msg.find("mamba-tiny") != std::string::npos);
}

TEST_CASE("an extra file may not shadow a checkpoint tensor", "[reranker]") {
    const auto scratch = ssm::test::scratch_dir("reranker-dup");
    const auto file = scratch / "dup.safetensors";
    const float v[64] = {};
    const std::vector<ssm::TensorToWrite> t = {ssm::f32_tensor("backbone.norm_f.weight", {64}, v)};
    ssm::write_safetensors(file, t);
    auto ckpt = ssm::Checkpoint::open(ssm::test::data_dir() / "mamba-tiny");
    const auto msg = ssm::test::error_of([&] { ckpt.add_extra(file); });
    CHECK(msg.find("backbone.norm_f.weight") != std::string::npos);
    CHECK(msg.find("dup.safetensors") != std::string::npos);
}

TEST_CASE("RerankerHead::pair_text is the RankMamba template", "[reranker]") {
    CHECK(ssm::RerankerHead::pair_text("what is ssm", "Mamba is an SSM.") ==
          "Document: Mamba is an SSM.\n\nQuery: what is ssm");
}

}  // namespace test_reranker
