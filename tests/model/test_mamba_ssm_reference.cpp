// Original state-spaces (mamba_ssm) LayerNorm checkpoints against references made with
// mamba_ssm's own modules (tests/data/make_mamba_ssm_reference.py): config.json and
// pytorch_model.bin as `MambaLMHeadModel.save_pretrained` writes them, `rms_norm: false`,
// with and without the in_proj / out_proj and conv biases, a tied and an untied head, a
// padded vocabulary. Every hidden state and the logits of each sequence, packed batches,
// and greedy generation through the recurrent path.
#include <string>
#include <type_traits>

#include "model/generation_check.hpp"
#include "model/parity_check.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_mamba_ssm_reference {

namespace {

// ‖out − ref‖ / ‖ref‖ against a forward in float64 (with mamba_ssm's float32 scan).
constexpr double kTol = 1e-5;
constexpr int kSequences = 3;  // seq0..seq2: 1, 7 and 33 tokens

struct Case {
    std::string folder;
    ssm::index hidden, state, conv_kernel, rank, vocab;  // vocab: padded
    bool bias, conv_bias, tied;
};

const Case kCases[] = {
    // MambaByte-like: in_proj / out_proj biases, conv bias, tied head, dt_rank "auto".
    {"mamba-ssm-layernorm-bias", 36, 16, 4, 3, 256, true, true, true},
    // No biases at all, an untied lm_head, vocab 250 padded to 256, d_conv 3, dt_rank 4.
    {"mamba-ssm-layernorm-untied", 32, 8, 3, 4, 256, false, false, false},
};

}  // namespace

TEST_CASE("mamba_ssm references: the original config.json is read as written", "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto config = ssm::MambaConfig::load(ssm::test::data_dir() / c.folder);
        CHECK(config.family == ssm::ModelFamily::Mamba1);
        CHECK(config.norm == ssm::NormKind::LayerNorm);
        CHECK(config.hidden_size == c.hidden);
        CHECK(config.num_hidden_layers == 2);
        CHECK(config.intermediate_size == 2 * c.hidden);
        CHECK(config.state_size == c.state);
        CHECK(config.conv_kernel == c.conv_kernel);
        CHECK(config.time_step_rank == c.rank);
        CHECK(config.vocab_size == c.vocab);
        CHECK(config.use_bias == c.bias);
        CHECK(config.use_conv_bias == c.conv_bias);
        CHECK(config.tie_word_embeddings == c.tied);
        CHECK(config.layer_norm_epsilon == 1e-5);
    }
}

TEST_CASE("mamba_ssm references: every hidden state and the logits match", "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto dir = ssm::test::data_dir() / c.folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto kind = ssm::with_mamba_lm(dir, [&](const auto& model) {
            CHECK(model.vocab_size() == c.vocab);
            ssm::test::check_sequences_one_by_one(model, ref, kSequences, kTol);
            ssm::test::check_packed_batch(model, ref, kSequences, kTol);
            return std::decay_t<decltype(model)>::norm_type::kind;
        });
        CHECK(kind == ssm::NormKind::LayerNorm);
    }
}

TEST_CASE("mamba_ssm references: prefill then step-by-step decoding reproduces greedy generation",
          "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto dir = ssm::test::data_dir() / c.folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        ssm::test::check_generation(ssm::MambaLMLayerNorm::load(dir), ref, kTol);
    }
}

}  // namespace test_mamba_ssm_reference
