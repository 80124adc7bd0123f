// The whole model on the GPU, Mamba-1, Falcon-Mamba and Mamba-2, against the references in tests/data
// (transformers' float64 forward from the saved weights; mamba_ssm's grouped SSD for
// n_groups > 1) and against the CPU model: every hidden state and the logits of every
// sequence, packed batches, the 2048- and 1600-token sequences (also prefilled in chunks
// through the state), the recurrent state itself, prefill + step-by-step decoding == the
// full forward, greedy generation, and batch decoding == one by one; the Mamba-2 models with
// the SSD's products on the tensor cores; and the same models with bf16 weights on the
// device, to a tolerance set by bf16 rounding.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/generation_check.hpp"
#include "ssm/cuda/model.cuh"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace {

namespace cu = ssm::cuda;
using ssm::test::ids_of;
using ssm::test::rel_error;
using ssm::test::rows_of;
using ssm::test::span_of;

constexpr double kTol = 1e-5;   // against the float64 references and the CPU
constexpr double kSelf = 1e-6;  // the same computation packed or split differently

struct Case {
    std::string folder;
    int sequences;
    std::string reference = {};  // the folder whose reference.safetensors it shares, if not its own
};
// Mamba-1 (falcon-mamba-tiny: Falcon-Mamba, Mamba-1 with dt_low, B and C normalised); then
// Mamba-2: mamba2-tiny (4 heads of 16, chunk 16, tied; sequences of 1, 16, 17,
// 50 tokens), mamba2-tiny-long (2 heads of 32, chunk 32, untied, biases, Δ clamped, a bf16
// checkpoint in 3 shards), mamba2-tiny-torch (mamba2-tiny as an original mamba_ssm
// checkpoint) and mamba2-grouped-torch (n_groups 2, d_ssm 48 of 64: the gated MLP beside
// the SSM).
const Case kCases[] = {{"mamba-tiny", 4},        {"mambabyte-tiny", 2},
                       {"mamba-tiny-bf16-sharded", 2}, {"falcon-mamba-tiny", 2},
                       {"mamba2-tiny", 4},       {"mamba2-tiny-long", 3},
                       {"mamba2-tiny-torch", 4, "mamba2-tiny"}, {"mamba2-grouped-torch", 4}};

ssm::SafetensorsFile reference_of(const Case& c) {
    const std::string& from = c.reference.empty() ? c.folder : c.reference;
    return ssm::SafetensorsFile::open(ssm::test::data_dir() / from / "reference.safetensors");
}

// Calls f with the CPU model of the case's folder: ssm::Mamba2LM for a Mamba-2 config,
// ssm::MambaLM otherwise.
template <class F>
void with_cpu_model(const Case& c, F&& f) {
    const auto dir = ssm::test::data_dir() / c.folder;
    if (ssm::MambaConfig::load(dir).family == ssm::ModelFamily::Mamba2)
        f(ssm::Mamba2LM::load(dir));
    else
        f(ssm::MambaLM::load(dir));
}

// The first `nseq` reference sequences one at a time: every hidden state, the final hidden
// state and the logits against the references, and against the CPU model, within `tol`.
template <class CpuModel>
void check_sequences(cu::MambaModel& gpu, const CpuModel& cpu, const ssm::SafetensorsFile& ref,
                     int nseq, double tol) {
    const auto layers = gpu.num_layers();
    for (int i = 0; i < nseq; ++i) {
        const std::string p = "seq" + std::to_string(i);
        const auto ids = ids_of(ref, p + ".input_ids");
        INFO(p << " (" << ids.size() << " tokens)");
        const auto batch = ssm::Batch::of({ids});
        const auto r = gpu.forward(batch, {ssm::Logits::All, true});
        const auto rc = cpu.forward(batch, {ssm::Logits::All, true});
        REQUIRE(static_cast<ssm::index>(r.layer_outputs.size()) == layers);
        for (ssm::index j = 0; j < layers; ++j) {
            INFO("hidden." << j);
            const auto& out = r.layer_outputs[static_cast<std::size_t>(j)];
            CHECK(rel_error(span_of(out),
                            ref.load_f32(p + ".hidden." + std::to_string(j)).values()) < tol);
            CHECK(rel_error(span_of(out), span_of(rc.layer_outputs[static_cast<std::size_t>(j)])) <
                  tol);
        }
        CHECK(rel_error(span_of(r.hidden),
                        ref.load_f32(p + ".hidden." + std::to_string(layers)).values()) < tol);
        CHECK(rel_error(span_of(r.logits), ref.load_f32(p + ".logits").values()) < tol);
        CHECK(rel_error(span_of(r.logits), span_of(rc.logits)) < tol);
    }
}

}  // namespace

TEST_CASE(
    "cuda model: every sequence, every hidden state and the logits match transformers and the CPU",
    "[cuda]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / c.folder);
        with_cpu_model(c, [&](const auto& cpu) { check_sequences(gpu, cpu, reference_of(c), c.sequences, kTol); });
    }
}

TEST_CASE("cuda model: all sequences packed into one batch equal one by one", "[cuda]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto ref = reference_of(c);
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / c.folder);
        std::vector<std::vector<std::int32_t>> seqs;  // reverse order: boundaries move
        for (int i = c.sequences - 1; i >= 0; --i)
            seqs.push_back(ids_of(ref, "seq" + std::to_string(i) + ".input_ids"));
        const auto batch = ssm::Batch::of(seqs);
        const auto packed = gpu.forward(batch, {ssm::Logits::All, false});
        const auto last = gpu.forward(batch, {ssm::Logits::Last, false});
        const auto last_hidden = gpu.last_hidden(batch);
        for (int k = 0; k < c.sequences; ++k) {
            const std::string p = "seq" + std::to_string(c.sequences - 1 - k);
            INFO("packed " << p);
            const auto begin = batch.offsets()[static_cast<std::size_t>(k)];
            const auto len = batch.length(k);
            const auto single = gpu.forward(ssm::Batch::of({seqs[static_cast<std::size_t>(k)]}),
                                            {ssm::Logits::All, false});
            CHECK(rel_error(rows_of(packed.hidden, begin, len), span_of(single.hidden)) < kSelf);
            CHECK(rel_error(rows_of(packed.logits, begin, len),
                            ref.load_f32(p + ".logits").values()) < kTol);
            CHECK(rel_error(rows_of(last.logits, k, 1), rows_of(single.logits, len - 1, 1)) <
                  kSelf);
            CHECK(rel_error(rows_of(last_hidden, k, 1), rows_of(single.hidden, len - 1, 1)) <
                  kSelf);
        }
    }
}

TEST_CASE(
    "cuda model: the 2048-token (Mamba-1) and 1600-token (Mamba-2) sequences, whole and "
    "prefilled in chunks through the state",
    "[cuda]") {
    for (const auto& [folder, length] : {std::pair<const char*, std::size_t>{"mamba-tiny", 2048},
                                         std::pair<const char*, std::size_t>{"mamba2-tiny-long", 1600}}) {
    INFO(folder);
    const auto dir = ssm::test::data_dir() / folder;
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    auto gpu = cu::MambaModel::load(dir);
    const auto ids = ids_of(ref, "long.input_ids");
    REQUIRE(ids.size() == length);
    const auto n = static_cast<ssm::index>(length);
    const auto r = gpu.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    CHECK(rel_error(span_of(r.hidden), ref.load_f32("long.last_hidden").values()) < kTol);
    CHECK(rel_error(rows_of(r.logits, n - 8, 8), ref.load_f32("long.logits_tail").values()) <
          kTol);

    // Cut inside and across chunks (Mamba-2: chunks of 32 tokens).
    auto state = gpu.make_state(1);
    std::vector<ssm::Matrix> parts;
    std::size_t at = 0;
    for (std::size_t len : {std::size_t{700}, std::size_t{1}, std::size_t{2}, length - 703}) {
        std::vector<std::int32_t> chunk(ids.begin() + static_cast<std::ptrdiff_t>(at),
                                        ids.begin() + static_cast<std::ptrdiff_t>(at + len));
        parts.push_back(
            gpu.forward(ssm::Batch::of({chunk}), {ssm::Logits::None, false}, &state).hidden);
        at += len;
    }
    CHECK(rel_error(span_of(parts[0]), rows_of(r.hidden, 0, 700)) < kSelf);
    CHECK(rel_error(span_of(parts[1]), rows_of(r.hidden, 700, 1)) < kSelf);
    CHECK(rel_error(span_of(parts[2]), rows_of(r.hidden, 701, 2)) < kSelf);
    CHECK(rel_error(span_of(parts.back()), rows_of(r.hidden, 703, n - 703)) < kSelf);
    }
}

TEST_CASE(
    "cuda model: Mamba-2 with the SSD's products on the tensor cores (TF32 with error "
    "compensation) matches transformers and the CPU to the fp32 tolerance",
    "[cuda][mamba2]") {
    if (cu::detail::device_attribute(cudaDevAttrComputeCapabilityMajor) < 8) {
        // No TF32 tensor cores: the prefill is refused, naming what it needs.
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / "mamba2-tiny");
        gpu.set_ssd_math(cu::SsdMath::Tf32x3);
        CHECK(ssm::test::error_of([&] { (void)gpu.forward(ssm::Batch::of({{1, 2, 3}})); })
                  .find("compute capability") != std::string::npos);
        return;
    }
    for (const auto& c : kCases) {
        if (ssm::MambaConfig::load(ssm::test::data_dir() / c.folder).family != ssm::ModelFamily::Mamba2)
            continue;
        INFO(c.folder);
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / c.folder);
        gpu.set_ssd_math(cu::SsdMath::Tf32x3);
        REQUIRE(gpu.ssd_math() == cu::SsdMath::Tf32x3);
        with_cpu_model(c, [&](const auto& cpu) {
            check_sequences(gpu, cpu, reference_of(c), c.sequences, kTol);
        });
    }
    // The 1600-token sequence, chunks of 32, whole.
    const auto dir = ssm::test::data_dir() / "mamba2-tiny-long";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    auto gpu = cu::MambaModel::load(dir);
    gpu.set_ssd_math(cu::SsdMath::Tf32x3);
    const auto ids = ids_of(ref, "long.input_ids");
    const auto r = gpu.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    CHECK(rel_error(span_of(r.hidden), ref.load_f32("long.last_hidden").values()) < kTol);
    CHECK(rel_error(rows_of(r.logits, static_cast<ssm::index>(ids.size()) - 8, 8),
                    ref.load_f32("long.logits_tail").values()) < kTol);
}

TEST_CASE("cuda model: the recurrent state after a packed prefill equals the CPU's", "[cuda]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / c.folder);
        with_cpu_model(c, [&](const auto& cpu) {
        const std::vector<std::vector<std::int32_t>> prompts = {
            {5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {3, 4}};
        const auto batch = ssm::Batch::of(prompts);
        auto cs = cpu.make_state(4);
        auto gs = gpu.make_state(4);
        (void)cpu.forward(batch, {ssm::Logits::None, false}, &cs);
        (void)gpu.forward(batch, {ssm::Logits::None, false}, &gs);
        const auto host = gs.to_host();
        REQUIRE(host.layers.size() == cs.layers.size());
        for (std::size_t l = 0; l < cs.layers.size(); ++l) {
            INFO("layer " << l);
            CHECK(rel_error(host.layers[l].conv, cs.layers[l].conv) < kTol);
            CHECK(rel_error(host.layers[l].ssm, cs.layers[l].ssm) < kTol);
        }
        // And a CPU state uploaded to the GPU decodes like the CPU.
        auto gs2 = gpu.make_state(4);
        gs2.upload(cs);
        const std::int32_t next[] = {11, 12, 13, 14};
        const auto gl = gpu.step(next, gs2);
        const auto cl = cpu.step(next, cs);
        CHECK(rel_error(span_of(gl), span_of(cl)) < kTol);
        });
    }
}

TEST_CASE(
    "cuda model: prefill then step-by-step decoding reproduces the full forward and greedy "
    "generation",
    "[cuda]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto ref = reference_of(c);
        auto gpu = cu::MambaModel::load(ssm::test::data_dir() / c.folder);
        ssm::test::check_generation(gpu, ref, kTol);
        const auto prompt = ids_of(ref, "generate.prompt");
        const auto expected = ids_of(ref, "generate.output");

        // The same with the argmax on the device.
        const auto generated =
            gpu.generate_greedy(prompt, static_cast<ssm::index>(expected.size() - prompt.size()));
        CHECK(generated == expected);
    }
}

TEST_CASE("cuda model: decoding a batch of sequences at once equals decoding each alone",
          "[cuda]") {
    for (const char* folder : {"mamba-tiny", "falcon-mamba-tiny", "mamba2-tiny", "mamba2-grouped-torch"}) {
    INFO(folder);
    auto gpu = cu::MambaModel::load(ssm::test::data_dir() / folder);
    const std::vector<std::vector<std::int32_t>> prompts = {
        {5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
    auto state = gpu.make_state(3);
    (void)gpu.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &state);
    // The last id of the vocabulary (999 for mamba-tiny, 255 for the byte-level Falcon-Mamba).
    const std::int32_t next[] = {42, 17, static_cast<std::int32_t>(gpu.vocab_size() - 1)};
    const ssm::Matrix together = gpu.step(next, state);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        auto one = gpu.make_state(1);
        (void)gpu.forward(ssm::Batch::of({prompts[i]}), {ssm::Logits::None, false}, &one);
        const std::int32_t tok[] = {next[i]};
        const ssm::Matrix alone = gpu.step(tok, one);
        CHECK(rel_error(rows_of(together, static_cast<ssm::index>(i), 1), span_of(alone)) < kSelf);
    }
    }
}
TEST_CASE("cuda model: decoding through the captured CUDA graph equals launching kernel by kernel",
          "[cuda]") {
    for (const char* folder : {"mamba-tiny", "falcon-mamba-tiny", "mamba2-tiny-long"}) {
    INFO(folder);
    const auto dir = ssm::test::data_dir() / folder;
    auto graphed = cu::MambaModel::load(dir);
    auto direct = cu::MambaModel::load(dir);
    direct.use_decode_graph(false);
    // Two batch sizes in turn: each switch changes the key, so the graph is captured anew
    // and never replayed for buffers it was not made for.
    for (const std::size_t batch : {std::size_t{1}, std::size_t{3}, std::size_t{1}}) {
        INFO("batch " << batch);
        std::vector<std::vector<std::int32_t>> prompts;
        for (std::size_t i = 0; i < batch; ++i)
            prompts.push_back({static_cast<std::int32_t>(3 + i), 8, 21, 34});
        auto sg = graphed.make_state(static_cast<ssm::index>(batch));
        auto sd = direct.make_state(static_cast<ssm::index>(batch));
        (void)graphed.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &sg);
        (void)direct.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &sd);
        std::vector<std::int32_t> tokens(batch, 7);
        for (int step = 0; step < 6; ++step) {
            INFO("step " << step);
            const ssm::Matrix a = graphed.step(tokens, sg);
            const ssm::Matrix b = direct.step(tokens, sd);
            CHECK(rel_error(span_of(a), span_of(b)) < kSelf);
            CHECK_FALSE(direct.decode_graph_used());
            INFO("capture error: " << graphed.decode_graph_error());
            // Direct on the first step with these buffers, the graph from the second on.
            CHECK(graphed.decode_graph_used() == (step >= 1));
            for (std::size_t i = 0; i < batch; ++i)
                tokens[i] = static_cast<std::int32_t>((tokens[i] * 31 + step + i) %
                                                      std::min<ssm::index>(200, graphed.vocab_size()));
        }
        // The states the two advanced agree as well.
        const auto hg = sg.to_host(), hd = sd.to_host();
        for (std::size_t l = 0; l < hg.layers.size(); ++l) {
            CHECK(rel_error(hg.layers[l].ssm, hd.layers[l].ssm) < kSelf);
            CHECK(rel_error(hg.layers[l].conv, hd.layers[l].conv) < kSelf);
        }
    }
    }
}

namespace {

// bf16 weights on the device (`store_weights_bf16`). The bf16 checkpoint's weights are bf16
// values already, so the only difference from its float64 references is that every GEMM's
// activation is rounded to bf16 first (2⁻⁹ relative per element). An emulation of exactly
// that rounding in float32 (tests/cuda/bf16_rounding_estimate.py, PyTorch on the CPU) puts
// the hidden states ~1.5e-3 and the logits ~2.2e-3 from the references (mamba-tiny, whose
// fp32 weights both sides round alike: ~3.6e-3 from the CPU's bf16 model); kBf16Tol leaves a
// factor of about 3 to 5 over that, while a wrong weight or index is off by orders of
// magnitude.
constexpr double kBf16Tol = 1e-2;
// Greedy decoding can part from generate.output only where the reference's two best logits
// are closer than the rounding moves them. Along generate.output the closest gap is 7.5e-3
// and the emulation keeps 6e-3 of it, so the tokens should match exactly; a departure is
// accepted only at a near-tie of kTieBand (twice a 1e-2 error on each of the two logits).
constexpr double kTieBand = 2e-2;

// A packed prefill of `prompts` and one decoding step of `next` (a token per prompt), on the
// device and on the CPU: the prefill's logits, the step's logits and every layer's state
// agree within `tol`.
template <class CpuModel>
void check_decoding_against_cpu(cu::MambaModel& gpu, const CpuModel& cpu,
                                const std::vector<std::vector<std::int32_t>>& prompts,
                                std::span<const std::int32_t> next, double tol) {
    const auto n = static_cast<ssm::index>(prompts.size());
    auto cs = cpu.make_state(n);
    auto gs = gpu.make_state(n);
    const auto batch = ssm::Batch::of(prompts);
    const auto rc = cpu.forward(batch, {ssm::Logits::All, false}, &cs);
    const auto rg = gpu.forward(batch, {ssm::Logits::All, false}, &gs);
    CHECK(rel_error(span_of(rg.logits), span_of(rc.logits)) < tol);
    const auto gl = gpu.step(next, gs);
    const auto cl = cpu.step(next, cs);
    CHECK(rel_error(span_of(gl), span_of(cl)) < tol);
    const auto host = gs.to_host();
    REQUIRE(host.layers.size() == cs.layers.size());
    for (std::size_t l = 0; l < cs.layers.size(); ++l) {
        INFO("layer " << l);
        CHECK(rel_error(host.layers[l].ssm, cs.layers[l].ssm) < tol);
        CHECK(rel_error(host.layers[l].conv, cs.layers[l].conv) < tol);
    }
}

}  // namespace

TEST_CASE(
    "cuda model: bf16 weights on the device match the bf16 checkpoint's references to bf16 "
    "rounding of the GEMM inputs",
    "[cuda]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny-bf16-sharded";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    const auto cpu = ssm::MambaLM::load(dir);  // fp32 arithmetic on the same bf16 values
    auto gpu = cu::MambaModel::load(dir);
    const auto fp32_bytes = gpu.weight_bytes();
    gpu.store_weights_bf16();
    REQUIRE(gpu.weights_bf16());
    CHECK(static_cast<double>(gpu.weight_bytes()) < 0.6 * static_cast<double>(fp32_bytes));
    check_sequences(gpu, cpu, ref, 2, kBf16Tol);

    // Prefill + step-by-step decoding (the fused step with bf16 x_proj / dt_proj) against
    // generate.full_logits, and greedy generation, on the host and with the argmax on the
    // device.
    ssm::test::check_generation(gpu, ref, kBf16Tol, kTieBand);
    const auto prompt = ids_of(ref, "generate.prompt");
    const auto expected = ids_of(ref, "generate.output");
    const auto generated =
        gpu.generate_greedy(prompt, static_cast<ssm::index>(expected.size() - prompt.size()));
    (void)ssm::test::check_tokens(generated, expected, ref.load_f32("generate.full_logits"),
                                  gpu.vocab_size(), kTieBand);

    // A packed batch decoded together equals the CPU's, state and logits.
    const std::int32_t next[] = {42, 17, 499};
    check_decoding_against_cpu(gpu, cpu, {{5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6}}, next, kBf16Tol);
}

TEST_CASE(
    "cuda model: bf16 weights with a tied head over the 2048-token sequence equal the CPU's "
    "bf16 model to bf16 rounding of the GEMM inputs",
    "[cuda]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    auto cpu = ssm::MambaLM::load(dir);
    cpu.store_weights_bf16();  // the same rounding of the fp32 weights as the device's
    auto gpu = cu::MambaModel::load(dir);
    gpu.store_weights_bf16();
    const auto batch = ssm::Batch::of({ids_of(ref, "long.input_ids")});
    const auto r = gpu.forward(batch, {ssm::Logits::Last, false});
    const auto rc = cpu.forward(batch, {ssm::Logits::Last, false});
    CHECK(rel_error(span_of(r.hidden), span_of(rc.hidden)) < kBf16Tol);
    CHECK(rel_error(span_of(r.logits), span_of(rc.logits)) < kBf16Tol);
    const auto last = gpu.last_hidden(batch);
    CHECK(rel_error(span_of(last), rows_of(r.hidden, 2047, 1)) < kSelf);
}

namespace {

// Mamba-2 with bf16 weights on the device: in_proj, out_proj, the embedding and the head in
// bf16, and every input of in_proj, out_proj and the head rounded to bf16, in decoding too.
// The emulation of exactly that in float32 (bf16_rounding_estimate.py: transformers'
// Mamba2ForCausalLM with the inputs rounded by hooks; it reproduces the references to
// 4e-7 without the rounding) puts mamba2-tiny-long, a bf16 checkpoint, 2.8e-3 to 4.4e-3
// from its references in the hidden states, 4.7e-3 in the logits and 4.1e-3 over the
// 1600-token sequence; on mamba2-tiny the rounding alone (the device against the CPU's bf16
// model, which keeps its activations float32) moves the logits by at most 4.7e-3. The bound
// leaves a factor of about 4. Along mamba2-tiny-long's generate.output the reference's
// closest top-1 gap is 7.3e-4 and the largest logit error 3.0e-2 (2.5e-3 of the gap is left
// in the emulation): a departure is accepted only at a near-tie of twice that error.
constexpr double kMamba2Bf16Tol = 2e-2;
constexpr double kMamba2TieBand = 6e-2;

}  // namespace

TEST_CASE(
    "cuda model: Mamba-2 with bf16 weights on the device matches the references and the CPU's "
    "bf16 model to bf16 rounding of the GEMM inputs",
    "[cuda]") {
    {
        const auto dir = ssm::test::data_dir() / "mamba2-tiny-long";  // a bf16 checkpoint
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto cpu = ssm::Mamba2LM::load(dir);  // fp32 arithmetic on the same bf16 values
        auto gpu = cu::MambaModel::load(dir);
        const auto fp32_bytes = gpu.weight_bytes();
        gpu.store_weights_bf16();
        REQUIRE(gpu.weights_bf16());
        CHECK(static_cast<double>(gpu.weight_bytes()) < 0.6 * static_cast<double>(fp32_bytes));
        check_sequences(gpu, cpu, ref, 3, kMamba2Bf16Tol);
        ssm::test::check_generation(gpu, ref, kMamba2Bf16Tol, kMamba2TieBand);
        const auto prompt = ids_of(ref, "generate.prompt");
        const auto expected = ids_of(ref, "generate.output");
        const auto generated =
            gpu.generate_greedy(prompt, static_cast<ssm::index>(expected.size() - prompt.size()));
        (void)ssm::test::check_tokens(generated, expected, ref.load_f32("generate.full_logits"),
                                      gpu.vocab_size(), kMamba2TieBand);
        const auto r = gpu.forward(ssm::Batch::of({ids_of(ref, "long.input_ids")}), {ssm::Logits::None, false});
        CHECK(rel_error(span_of(r.hidden), ref.load_f32("long.last_hidden").values()) < kMamba2Bf16Tol);
    }
    {
        // mamba2-tiny's fp32 weights, rounded alike on both sides: a packed prefill and a
        // decoding step, state and logits against the CPU's bf16 model.
        const auto dir = ssm::test::data_dir() / "mamba2-tiny";
        auto cpu = ssm::Mamba2LM::load(dir);
        cpu.store_weights_bf16();
        auto gpu = cu::MambaModel::load(dir);
        gpu.store_weights_bf16();
        const std::int32_t next[] = {42, 17, 199};
        check_decoding_against_cpu(
            gpu, cpu, {{5, 9, 13}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}}, next,
            kMamba2Bf16Tol);
    }
}

TEST_CASE("cuda model: bad input is an ssm::Error naming what is wrong", "[cuda]") {
    auto gpu = cu::MambaModel::load(ssm::test::data_dir() / "mamba-tiny");
    CHECK(ssm::test::error_of([&] { (void)gpu.forward(ssm::Batch{}); }).find("no sequence") !=
          std::string::npos);
    const auto msg = ssm::test::error_of([&] {
        (void)gpu.forward(ssm::Batch::of({{1, 2, 1000}}));
    });
    CHECK(msg.find("token id 1000 at position 2") != std::string::npos);
    auto state = gpu.make_state(2);
    const std::int32_t one[] = {1};
    CHECK(ssm::test::error_of([&] { (void)gpu.step(one, state); }).find("state of 2 sequences") !=
          std::string::npos);
    CHECK_THROWS_AS(cu::MambaModel::load(ssm::test::data_dir() / "no-such-model"), ssm::Error);
}

TEST_CASE("cuda model: SAMBA folders are refused naming what they are", "[cuda]") {
    const auto family = [](const char* folder) {
        return ssm::test::error_of([&] { (void)cu::MambaModel::load(ssm::test::data_dir() / folder); });
    };
    CHECK(family("samba-tiny").find("SAMBA") != std::string::npos);
    CHECK(family("samba-tiny-mha").find("SAMBA") != std::string::npos);
    // A model uploaded from the CPU must hold float32 weights.
    auto cpu = ssm::MambaLM::load(ssm::test::data_dir() / "mamba-tiny");
    cpu.store_weights_bf16();
    CHECK(ssm::test::error_of([&] { (void)cu::MambaModel::upload(cpu); }).find("bfloat16") != std::string::npos);
    auto cpu2 = ssm::Mamba2LM::load(ssm::test::data_dir() / "mamba2-tiny");
    cpu2.store_weights_bf16();
    CHECK(ssm::test::error_of([&] { (void)cu::MambaModel::upload(cpu2); }).find("bfloat16") != std::string::npos);
}
