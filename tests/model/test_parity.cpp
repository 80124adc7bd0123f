// Whole-model parity against the HuggingFace transformers references in tests/data
// (float64 forward from the saved float32 weights): every hidden state and the logits of
// every sequence, the 2048-token sequence, the BF16 sharded checkpoint, packed batches,
// and prefill + recurrent decoding.
#include <algorithm>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "model/generation_check.hpp"
#include "model/parity_check.hpp"
#include "test_util.hpp"

namespace test_parity {

namespace {

using ssm::test::rel_error;
using ssm::test::ids_of;
using ssm::test::span_of;
using ssm::test::rows_of;
using ssm::test::check_sequences_one_by_one;
using ssm::test::check_packed_batch;

constexpr double kTol = 1e-5;

struct Case {
    std::string folder;
    int sequences;
    std::string reference_folder = folder;  // where reference.safetensors lies
};

// mambabyte-tiny-torch holds mambabyte-tiny's weights as an original state-spaces
// checkpoint (config.json with d_model/n_layer, pytorch_model.bin, `backbone.embedding`,
// tied head saved once), so it must reproduce mambabyte-tiny's references.
const Case kCases[] = {{"mamba-tiny", 4},
                       {"mambabyte-tiny", 2},
                       {"mamba-tiny-bf16-sharded", 2},
                       {"mambabyte-tiny-torch", 2, "mambabyte-tiny"},
                       // Falcon-Mamba: Mamba-1 plus the weightless RMS norm of dt, B and C.
                       {"falcon-mamba-tiny", 2}};

ssm::SafetensorsFile reference_of(const Case& c) {
    return ssm::SafetensorsFile::open(ssm::test::data_dir() / c.reference_folder / "reference.safetensors");
}

}  // namespace

TEST_CASE("parity: every sequence, every hidden state and the logits match transformers", "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto dir = ssm::test::data_dir() / c.folder;
        const auto ref = reference_of(c);
        const auto model = ssm::MambaLM::load(dir);
        check_sequences_one_by_one(model, ref, c.sequences);
    }
}

TEST_CASE("parity: the sequential scan gives the same model outputs", "[parity]") {
    using Sequential = ssm::MambaLMWith<ssm::RMSNorm, ssm::MambaDiscretization, ssm::SequentialScan>;
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    check_sequences_one_by_one(Sequential::load(dir), ref, 4);
}

TEST_CASE("parity: results do not depend on the thread count", "[parity]") {
    const ssm::test::MultiThreadCheck threaded("model outputs at 2 and 3 threads");
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto model = ssm::MambaLM::load(dir);
    for (int threads : {1, 2, 3}) {
        INFO("threads " << threads);
        ssm::set_num_threads(threads);
        check_sequences_one_by_one(model, ref, 4);
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

TEST_CASE("parity: all sequences packed into one batch equal one by one", "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto dir = ssm::test::data_dir() / c.folder;
        const auto ref = reference_of(c);
        check_packed_batch(ssm::MambaLM::load(dir), ref, c.sequences);
    }
}

TEST_CASE("parity: the 2048-token sequence", "[parity]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto model = ssm::MambaLM::load(dir);
    const auto ids = ids_of(ref, "long.input_ids");
    REQUIRE(ids.size() == 2048);
    const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    CHECK(rel_error(span_of(r.hidden), ref.load_f32("long.last_hidden").values()) < kTol);
    CHECK(rel_error(rows_of(r.logits, 2048 - 8, 8), ref.load_f32("long.logits_tail").values()) < kTol);

    // The same sequence prefilled in three chunks through the recurrent state.
    auto state = model.make_state(1);
    std::vector<ssm::Matrix> parts;
    std::size_t at = 0;
    for (std::size_t len : {700u, 1u, 1347u}) {
        std::vector<std::int32_t> chunk(ids.begin() + static_cast<std::ptrdiff_t>(at),
                                        ids.begin() + static_cast<std::ptrdiff_t>(at + len));
        parts.push_back(model.forward(ssm::Batch::of({chunk}), {ssm::Logits::None, false}, &state).hidden);
        at += len;
    }
    CHECK(rel_error(span_of(parts.back()), rows_of(r.hidden, 701, 1347)) < 1e-6);
}

TEST_CASE("parity: prefill then step-by-step decoding reproduces greedy generation", "[parity]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto dir = ssm::test::data_dir() / c.folder;
        const auto ref = reference_of(c);
        ssm::test::check_generation(ssm::MambaLM::load(dir), ref, kTol);
    }
}

TEST_CASE("parity: decoding a batch of sequences at once equals decoding each alone", "[parity]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto model = ssm::MambaLM::load(dir);
    const std::vector<std::vector<std::int32_t>> prompts = {{5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
    auto state = model.make_state(3);
    (void)model.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &state);
    const std::int32_t next[] = {42, 17, 999};
    const ssm::Matrix together = model.step(next, state);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        auto one = model.make_state(1);
        (void)model.forward(ssm::Batch::of({prompts[i]}), {ssm::Logits::None, false}, &one);
        const std::int32_t tok[] = {next[i]};
        const ssm::Matrix alone = model.step(tok, one);
        CHECK(rel_error(rows_of(together, static_cast<ssm::index>(i), 1), span_of(alone)) < 1e-6);
    }
}

TEST_CASE("parity: bfloat16 weights are exact for a BF16 checkpoint, close for a float32 one", "[parity]") {
    {  // weights stored as BF16 in the file: keeping them in bf16 loses nothing (float32
       // activations: the bf16 dot-product unit, which rounds them, is held off here)
        const auto dir = ssm::test::data_dir() / "mamba-tiny-bf16-sharded";
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        auto model = ssm::MambaLM::load(dir);
        model.store_weights_bf16();
        REQUIRE(model.embedding().table().is_bf16());
        {
            const ssm::test::ForceCpuIsa widened(ssm::test::below_bf16_unit());
            check_sequences_one_by_one(model, ref, 2);
            check_packed_batch(model, ref, 2);
            ssm::test::check_generation(model, ref, kTol);
        }
        for (const ssm::CpuIsa unit_isa : {ssm::CpuIsa::Avx512Bf16, ssm::CpuIsa::Amx}) {  // within bf16's precision
            if (!ssm::cpu_supports(unit_isa)) continue;
            INFO(ssm::isa_name(unit_isa));
            const ssm::test::ForceCpuIsa unit(unit_isa);
            const auto ids = ids_of(ref, "seq1.input_ids");  // 40 tokens: prefill on the unit
            const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
            const double err = rel_error(span_of(r.logits), ref.load_f32("seq1.logits").values());
            CHECK(err > 1e-7);  // the activations were rounded
            CHECK(err < 2e-2);
        }
    }
    {  // float32 weights rounded to bf16: logits move, but only by bf16's precision
        const auto dir = ssm::test::data_dir() / "mamba-tiny";
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        auto model = ssm::MambaLM::load(dir);
        model.store_weights_bf16();
        const auto ids = ids_of(ref, "seq1.input_ids");
        const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
        const double err = rel_error(span_of(r.logits), ref.load_f32("seq1.logits").values());
        CHECK(err > 1e-6);  // the weights did change
        CHECK(err < 2e-2);  // and only by bf16's precision (transformers' float32 logits)
        // The same rounded weights through the float32 path: equal at float32 precision
        // (with float32 activations: the bf16 unit held off).
        const ssm::test::ForceCpuIsa widened(ssm::test::below_bf16_unit());
        const auto rounded_dir = ssm::test::bf16_rounded_copy(dir / "model.safetensors", dir / "config.json",
                                                              ssm::test::scratch_dir("bf16-rounded"));
        const auto rounded = ssm::MambaLM::load(rounded_dir);
        const auto expect = rounded.forward(ssm::Batch::of({ids}), {ssm::Logits::All, true});
        CHECK(rel_error(span_of(r.logits), span_of(expect.logits)) < 1e-5);
        const auto all = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, true});
        for (std::size_t j = 0; j < all.layer_outputs.size(); ++j) {
            INFO("hidden." << j);
            CHECK(rel_error(span_of(all.layer_outputs[j]), span_of(expect.layer_outputs[j])) < 1e-5);
        }
        std::filesystem::remove_all(rounded_dir);
    }
}

}  // namespace test_parity
