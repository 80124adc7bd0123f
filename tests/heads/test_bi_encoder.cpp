// The bi-encoder head against the transformers references: the L2-normalised final
// hidden state at the appended EOS (`embed.embeddings`) and the cosine matrix, on every
// bundled checkpoint; mean pooling and normalisation switched off against a hand computation.
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_bi_encoder {

using ssm::test::span_of;

TEST_CASE("BiEncoderHead<LastToken> gives transformers' embeddings and cosines", "[bi_encoder]") {
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded", "falcon-mamba-tiny",
                               "mamba2-tiny", "mamba2-tiny-long"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto seqs = ssm::test::embed_inputs(ref);
        ssm::with_mamba<ssm::BiEncoderHead<ssm::LastToken>>(dir, [&](const auto& model) {
            REQUIRE(model.config().eos_token_id.has_value());
            for (const auto& s : seqs) CHECK(s.back() == *model.config().eos_token_id);
            const ssm::Matrix emb = model.encode(ssm::Batch::of(seqs));  // one packed batch
            REQUIRE(emb.rows() == 4);
            REQUIRE(emb.cols() == model.hidden_size());
            CHECK(ssm::test::rel_error(span_of(emb), ref.load_f32("embed.embeddings").values()) < 1e-5);
            for (ssm::index r = 0; r < 4; ++r) CHECK(std::abs(emb.row(r).norm() - 1.0f) < 1e-6f);
            const ssm::Matrix cosine = emb * emb.transpose();
            CHECK(ssm::test::rel_error(span_of(cosine), ref.load_f32("embed.cosine").values()) < 1e-5);
            // One sequence at a time gives the same rows as the packed batch.
            for (ssm::index r = 0; r < 4; ++r) {
                const ssm::Matrix one = model.encode(ssm::Batch::of({seqs[static_cast<std::size_t>(r)]}));
                CHECK((one.row(0) - emb.row(r)).norm() < 1e-6f);
            }
            return 0;
        });
    }
}

TEST_CASE("BiEncoderHead: Mean pooling and normalisation off, against the hidden states", "[bi_encoder]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto seqs = ssm::test::embed_inputs(ref);
    const auto batch = ssm::Batch::of(seqs);
    const auto lm = ssm::MambaLM::load(dir);
    const auto hidden = lm.forward(batch, {ssm::Logits::None, false}).hidden;

    auto mean = ssm::MambaWith<ssm::BiEncoderHead<ssm::Mean>>::load(dir);
    mean.head().set_normalize(false);
    const ssm::Matrix m = mean.encode(batch);
    auto last = ssm::MambaRetriever::load(dir);
    last.head().set_normalize(false);
    const ssm::Matrix l = last.encode(batch);
    for (ssm::index s = 0; s < batch.size(); ++s) {
        const auto b = batch.offsets()[static_cast<std::size_t>(s)];
        const auto n = batch.length(s);
        const Eigen::RowVectorXf expect_mean = hidden.middleRows(b, n).colwise().mean();
        CHECK((m.row(s) - expect_mean).norm() <= 1e-6f * expect_mean.norm());
        CHECK((l.row(s) - hidden.row(b + n - 1)).norm() == 0.0f);
        CHECK(l.row(s).norm() > 1.5f);  // really unnormalised (RMSNorm output has norm ~sqrt(D))
    }
}

TEST_CASE("a model without an LM head refuses logits and says so", "[bi_encoder]") {
    const auto model = ssm::MambaRetriever::load(ssm::test::data_dir() / "mamba-tiny");
    const auto msg = ssm::test::error_of([&] { (void)model.forward(ssm::Batch::of({{1, 2, 3}}), {ssm::Logits::All, false}); });
    CHECK(msg.find("Logits::None") != std::string::npos);
}

}  // namespace test_bi_encoder
