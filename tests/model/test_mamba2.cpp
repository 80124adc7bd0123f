// Mamba-2 models against the references in tests/data (transformers' `Mamba2ForCausalLM`,
// and mamba_ssm's own SSD and gated norm for n_groups > 1; float64 from the saved weights): every hidden state and the logits, the
// 1600-token sequence, packed batches, prefill + recurrent decoding, the chunked SSD
// against the sequential one at model level, and chunk lengths that do not matter.
#include <cstdint>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "model/generation_check.hpp"
#include "model/parity_check.hpp"
#include "test_util.hpp"

namespace test_mamba2 {

namespace {

using ssm::test::ids_of;
using ssm::test::rel_error;
using ssm::test::rows_of;
using ssm::test::span_of;

constexpr double kTol = 1e-5;

struct Case {
    const char* folder;
    int sequences;
};

// mamba2-tiny: 4 heads of 16, chunk 16, tied, float32; sequences of 1, 16, 17, 50.
// mamba2-tiny-long: 2 heads of 32, chunk 32, untied, in/out biases, no conv bias, Δ clamped
// to [0.004, 0.05], bfloat16 in 3 shards; sequences of 31, 32, 33 and one of 1600.
// mamba2-tiny-torch: mamba2-tiny's weights as an original mamba_ssm checkpoint
// (config.json with ssm_cfg and a bare Infinity, pytorch_model.bin).
// mamba2-grouped-torch: n_groups 2 (3 heads each), d_ssm 48 of d_inner 64 (a gated MLP
// beside the SSM), untied; its reference comes from mamba_ssm's own ssd_minimal_discrete
// and rms_norm_ref (make_mamba2_grouped_reference.py), not from transformers.
const Case kCases[] = {{"mamba2-tiny", 4}, {"mamba2-tiny-long", 3}, {"mamba2-tiny-torch", 4}, {"mamba2-grouped-torch", 4}};

ssm::SafetensorsFile reference_of(const std::string& folder) {
    const std::string from = folder == "mamba2-tiny-torch" ? "mamba2-tiny" : folder;
    return ssm::SafetensorsFile::open(ssm::test::data_dir() / from / "reference.safetensors");
}

}  // namespace

TEST_CASE("Mamba-2: every sequence, every hidden state and the logits match transformers", "[mamba2]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto model = ssm::Mamba2LM::load(ssm::test::data_dir() / c.folder);
        CHECK(model.config().family == ssm::ModelFamily::Mamba2);
        ssm::test::check_sequences_one_by_one(model, reference_of(c.folder), c.sequences, kTol);
    }
}

TEST_CASE("Mamba-2: the sequential SSD and any chunk length give the same model outputs", "[mamba2]") {
    const auto dir = ssm::test::data_dir() / "mamba2-tiny";
    const auto ref = reference_of("mamba2-tiny");
    ssm::test::check_sequences_one_by_one(ssm::Mamba2LMWith<ssm::SequentialSsd>::load(dir), ref, 4, kTol);
    const auto ids = ids_of(ref, "seq3.input_ids");  // 50 tokens
    const auto base = ssm::Mamba2LM::load(dir).forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    // The chunk length is a speed setting: results agree to float32 rounding.
    const auto check = [&](const auto& model) {
        const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
        CHECK(rel_error(span_of(r.logits), span_of(base.logits)) < 1e-6);
        CHECK(rel_error(span_of(r.logits), ref.load_f32("seq3.logits").values()) < kTol);
    };
    check(ssm::Mamba2LMWith<ssm::ChunkedSsd<1>>::load(dir));
    check(ssm::Mamba2LMWith<ssm::ChunkedSsd<7>>::load(dir));
    check(ssm::Mamba2LMWith<ssm::ChunkedSsd<64>>::load(dir));
}

TEST_CASE("Mamba-2: results do not depend on the thread count", "[mamba2]") {
    const auto dir = ssm::test::data_dir() / "mamba2-tiny";
    const auto model = ssm::Mamba2LM::load(dir);
    for (int threads : {1, 2, 3}) {
        INFO("threads " << threads);
        ssm::set_num_threads(threads);
        ssm::test::check_sequences_one_by_one(model, reference_of("mamba2-tiny"), 4, kTol);
    }
    ssm::set_num_threads(0);
}

TEST_CASE("Mamba-2: all sequences packed into one batch equal one by one", "[mamba2]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        ssm::test::check_packed_batch(ssm::Mamba2LM::load(ssm::test::data_dir() / c.folder), reference_of(c.folder),
                                      c.sequences, kTol);
    }
}

TEST_CASE("Mamba-2: the 1600-token sequence, whole and prefilled in pieces", "[mamba2]") {
    const auto ref = reference_of("mamba2-tiny-long");
    const auto model = ssm::Mamba2LM::load(ssm::test::data_dir() / "mamba2-tiny-long");
    const auto ids = ids_of(ref, "long.input_ids");
    REQUIRE(ids.size() == 1600);
    const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    CHECK(rel_error(span_of(r.hidden), ref.load_f32("long.last_hidden").values()) < kTol);
    CHECK(rel_error(rows_of(r.logits, 1600 - 8, 8), ref.load_f32("long.logits_tail").values()) < kTol);

    // Pieces that end inside, at and one past a chunk boundary (chunk 32).
    auto state = model.make_state(1);
    std::vector<ssm::Matrix> parts;
    std::size_t at = 0;
    for (std::size_t len : {45u, 1u, 18u, 1u, 1535u}) {
        const std::vector<std::int32_t> piece(ids.begin() + static_cast<std::ptrdiff_t>(at),
                                              ids.begin() + static_cast<std::ptrdiff_t>(at + len));
        parts.push_back(model.forward(ssm::Batch::of({piece}), {ssm::Logits::None, false}, &state).hidden);
        at += len;
    }
    CHECK(rel_error(span_of(parts.front()), rows_of(r.hidden, 0, 45)) < 1e-6);
    CHECK(rel_error(span_of(parts.back()), rows_of(r.hidden, 65, 1535)) < 1e-6);
}

TEST_CASE("Mamba-2: prefill then step-by-step decoding reproduces greedy generation", "[mamba2]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        ssm::test::check_generation(ssm::Mamba2LM::load(ssm::test::data_dir() / c.folder), reference_of(c.folder), kTol);
    }
}

TEST_CASE("Mamba-2: decoding a batch at once equals decoding each sequence alone", "[mamba2]") {
    const auto model = ssm::Mamba2LM::load(ssm::test::data_dir() / "mamba2-tiny");
    const std::vector<std::vector<std::int32_t>> prompts = {{5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}};
    auto state = model.make_state(3);
    (void)model.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &state);
    const std::int32_t next[] = {20, 30, 40};
    const ssm::Matrix together = model.step(next, state);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        INFO("sequence " << i);
        auto one = prompts[i];
        one.push_back(next[i]);
        const auto alone = model.forward(ssm::Batch::of({one}), {ssm::Logits::Last, false});
        CHECK(rel_error(rows_of(together, static_cast<ssm::index>(i), 1), span_of(alone.logits)) < 1e-5);
    }
}

TEST_CASE("Mamba-2 checkpoints are refused as Mamba-1 models, and the reverse", "[mamba2]") {
    const auto m2 = ssm::test::data_dir() / "mamba2-tiny";
    CHECK(ssm::test::error_of([&] { (void)ssm::MambaLM::load(m2); }).find("Mamba-2") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)ssm::Mamba2LM::load(ssm::test::data_dir() / "mamba-tiny"); })
              .find("mamba") != std::string::npos);
    // with_mamba picks the type from the config.
    const auto ref = reference_of("mamba2-tiny");
    ssm::with_mamba_lm(m2, [&](const auto& model) {
        const auto r = model.forward(ssm::Batch::of({ids_of(ref, "seq2.input_ids")}), {ssm::Logits::All, false});
        CHECK(rel_error(span_of(r.logits), ref.load_f32("seq2.logits").values()) < kTol);
        return 0;
    });
}

}  // namespace test_mamba2
