// SAMBA hybrids against the PyTorch float64 references made by
// tests/data/make_samba_reference.py: every hidden state and the logits, packed batches,
// prefill in chunks through the key/value cache, greedy generation through the recurrent
// path, and the lit-gpt config and checkpoint formats.
#include <algorithm>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "model/generation_check.hpp"
#include "model/parity_check.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_samba {

namespace {

using ssm::test::ids_of;
using ssm::test::rel_error;
using ssm::test::rows_of;
using ssm::test::span_of;

constexpr double kTol = 1e-5;
// Two float32 computations of the same thing — packed or alone, one prefill or chunks, a
// batch of steps or one — take different matrix-product paths (GEMM from 32 rows, dot
// products below), and sharp attention weights amplify those roundings to ~2e-6.
constexpr double kSame = 5e-6;

struct Case {
    std::string folder;
    int sequences;
};

// samba-tiny: lit_config.json + lit_model.pth, GQA (4 heads, 2 groups), window 8.
// samba-tiny-mha: config.json + model.safetensors, MHA, RoPE on half of each head.
const Case kCases[] = {{"samba-tiny", 6}, {"samba-tiny-mha", 2}};

ssm::SafetensorsFile reference_of(const std::string& folder) {
    return ssm::SafetensorsFile::open(ssm::test::data_dir() / folder / "reference.safetensors");
}

nlohmann::json lit_config() {
    std::ifstream in(ssm::test::data_dir() / "samba-tiny" / "lit_config.json");
    return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("samba: the lit-gpt config gives the layer pattern and sizes", "[samba]") {
    const auto c = ssm::MambaConfig::load(ssm::test::data_dir() / "samba-tiny");
    REQUIRE(c.is_hybrid());
    CHECK(c.num_hidden_layers == 4);
    CHECK(c.layer_kinds ==
          std::vector<ssm::LayerKind>{ssm::LayerKind::Mamba, ssm::LayerKind::Attention,
                                      ssm::LayerKind::Mamba, ssm::LayerKind::Attention});
    CHECK(c.vocab_size == 320);  // padded_vocab_size
    CHECK(c.hidden_size == 64);
    CHECK(c.intermediate_size == 128);  // Mamba: expand 2
    CHECK(c.time_step_rank == 4);       // ceil(64 / 16)
    CHECK(c.num_attention_heads == 4);
    CHECK(c.num_key_value_heads == 2);
    CHECK(c.head_dim == 16);
    CHECK(c.rotary_dim == 16);
    CHECK(c.sliding_window == 8);
    CHECK(c.mlp_size == 96);
    CHECK(c.tie_word_embeddings);

    const auto mha = ssm::MambaConfig::load(ssm::test::data_dir() / "samba-tiny-mha");
    CHECK(mha.rotary_dim == 8);  // rotary_percentage 0.5 of 16
    CHECK(mha.num_key_value_heads == mha.num_attention_heads);
}

TEST_CASE("samba: configs of variants this library does not run are refused by name", "[samba]") {
    const std::pair<const char*, nlohmann::json> bad[] = {
        {"parallel_residual", true},    {"bias", true},
        {"_mlp_class", "GptNeoxMLP"},   {"condense_ratio", 4},
        {"full_per_layer", 2},          {"gla_per_layer", 2},
        {"n_query_groups", 3},          {"rotary_percentage", 2.0},
        {"shared_attention_norm", true}};
    for (const auto& [key, value] : bad) {
        auto j = lit_config();
        j[key] = value;
        INFO(key);
        const auto msg =
            ssm::test::error_of([&] { (void)ssm::MambaConfig::from_json(j, "cfg.json"); });
        CHECK(msg.find("cfg.json") != std::string::npos);
    }
    auto j = lit_config();
    j["abl_mamba"] = true;
    CHECK(ssm::test::error_of([&] {
              (void)ssm::MambaConfig::from_json(j, "cfg.json");
          }).find("abl_mamba") != std::string::npos);
    // Keys absent from a hand-written file take lit-gpt's defaults, which describe a
    // GPT-NeoX model: refused, and the message says the value was absent.
    j = lit_config();
    j.erase("parallel_residual");
    CHECK(ssm::test::error_of([&] {
              (void)ssm::MambaConfig::from_json(j, "cfg.json");
          }).find("absent") != std::string::npos);
    j = lit_config();
    j.erase("intermediate_size");
    CHECK(ssm::test::error_of([&] {
              (void)ssm::MambaConfig::from_json(j, "cfg.json");
          }).find("intermediate_size") != std::string::npos);
}

TEST_CASE("samba: a full lit-gpt Config dump, with its off values, is read", "[samba]") {
    // What `asdict(config)` writes for a SAMBA config: switches for other variants are
    // present and off (-1 counts, false flags; fused_add_norm only matters for pure Mamba).
    auto j = lit_config();
    for (const char* key : {"gla_per_layer", "ret_per_layer", "mlp_per_layer"}) j[key] = -1;
    j["fused_add_norm"] = true;
    j["abl_mamba"] = false;
    j["attn_layer_pos"] = nullptr;
    j["eos_token_id"] = 2;
    const auto c = ssm::MambaConfig::from_json(j, "cfg.json");
    CHECK(c.layer_kinds.size() == 4);
    CHECK(c.eos_token_id == 2);
    // mb_per_layer -1 (lit-gpt's default): no Mamba layers, every layer attention.
    j["mb_per_layer"] = -1;
    const auto attention_only = ssm::MambaConfig::from_json(j, "cfg.json");
    CHECK(std::count(attention_only.layer_kinds.begin(), attention_only.layer_kinds.end(),
                     ssm::LayerKind::Attention) == 4);
    // rotary_percentage absent: lit-gpt's default, a quarter of the head.
    j.erase("rotary_percentage");
    CHECK(ssm::MambaConfig::from_json(j, "cfg.json").rotary_dim == 4);
}

TEST_CASE("samba: a hybrid checkpoint loaded as a plain Mamba model, or the reverse, is refused",
          "[samba]") {
    const auto samba_dir = ssm::test::data_dir() / "samba-tiny";
    CHECK(ssm::test::error_of([&] { (void)ssm::MambaLM::load(samba_dir); }).find("ssm::Samba") !=
          std::string::npos);
    const auto mamba_dir = ssm::test::data_dir() / "mamba-tiny";
    CHECK(ssm::test::error_of([&] { (void)ssm::Samba::load(mamba_dir); }).find("plain Mamba") !=
          std::string::npos);
}

TEST_CASE("samba: every sequence, every hidden state and the logits match the reference",
          "[samba]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        const auto model = ssm::Samba::load(ssm::test::data_dir() / c.folder);
        const auto ref = reference_of(c.folder);
        ssm::test::check_sequences_one_by_one(model, ref, c.sequences, kTol);
        ssm::test::check_packed_batch(model, ref, c.sequences, kTol, kSame);
    }
}

TEST_CASE("samba: results do not depend on the thread count", "[samba]") {
    const ssm::test::MultiThreadCheck threaded("samba outputs at 3 threads");
    const auto model = ssm::Samba::load(ssm::test::data_dir() / "samba-tiny");
    const auto ref = reference_of("samba-tiny");
    for (int threads : {1, 3}) {
        INFO("threads " << threads);
        ssm::set_num_threads(threads);
        ssm::test::check_sequences_one_by_one(model, ref, 6, kTol);
    }
    ssm::set_num_threads(0);
    threaded.verify();
}

TEST_CASE("samba: prefill in chunks through the state equals one prefill", "[samba]") {
    const auto model = ssm::Samba::load(ssm::test::data_dir() / "samba-tiny");
    const auto ref = reference_of("samba-tiny");
    const auto ids = ids_of(ref, "seq5.input_ids");  // 300 tokens, window 8
    REQUIRE(ids.size() == 300);
    const auto whole = model.forward(ssm::Batch::of({ids}), {ssm::Logits::None, false});
    // Chunks shorter and longer than the window, and one of a single token.
    for (const auto& lengths :
         {std::vector<std::size_t>{100, 1, 199}, std::vector<std::size_t>{3, 5, 4, 288}}) {
        auto state = model.make_state(1);
        std::size_t at = 0;
        for (std::size_t len : lengths) {
            const std::vector<std::int32_t> chunk(
                ids.begin() + static_cast<std::ptrdiff_t>(at),
                ids.begin() + static_cast<std::ptrdiff_t>(at + len));
            const auto part =
                model.forward(ssm::Batch::of({chunk}), {ssm::Logits::None, false}, &state);
            INFO("chunk at " << at << " of " << len);
            CHECK(rel_error(span_of(part.hidden), rows_of(whole.hidden, static_cast<ssm::index>(at),
                                                          static_cast<ssm::index>(len))) < kSame);
            at += len;
        }
    }
}

TEST_CASE("samba: prefill then step-by-step decoding reproduces greedy generation", "[samba]") {
    for (const auto& c : kCases) {
        INFO(c.folder);
        ssm::test::check_generation(ssm::Samba::load(ssm::test::data_dir() / c.folder),
                                    reference_of(c.folder), kTol);
    }
}

TEST_CASE("samba: decoding a batch of sequences at once equals decoding each alone", "[samba]") {
    const auto model = ssm::Samba::load(ssm::test::data_dir() / "samba-tiny");
    // Prompts shorter than, equal to and longer than the window of 8.
    const std::vector<std::vector<std::int32_t>> prompts = {
        {5, 9, 13},
        {7},
        {1, 2, 3, 4, 5, 6, 7, 8},
        {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}};
    auto state = model.make_state(4);
    (void)model.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &state);
    std::vector<ssm::Matrix> together;
    const std::int32_t next[][4] = {{42, 17, 299, 0}, {1, 2, 3, 4}, {8, 8, 8, 8}};
    for (const auto& tokens : next) together.push_back(model.step(tokens, state));
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        auto one = model.make_state(1);
        (void)model.forward(ssm::Batch::of({prompts[i]}), {ssm::Logits::None, false}, &one);
        for (std::size_t s = 0; s < 3; ++s) {
            const std::int32_t tok[] = {next[s][i]};
            const ssm::Matrix alone = model.step(tok, one);
            INFO("sequence " << i << ", step " << s);
            CHECK(rel_error(rows_of(together[s], static_cast<ssm::index>(i), 1), span_of(alone)) <
                  kSame);
        }
    }
}

TEST_CASE("samba: bfloat16 weights stay close to the float32 reference", "[samba]") {
    auto model = ssm::Samba::load(ssm::test::data_dir() / "samba-tiny");
    model.store_weights_bf16();
    const auto ref = reference_of("samba-tiny");
    const auto ids = ids_of(ref, "seq4.input_ids");
    const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    const double err = rel_error(span_of(r.logits), ref.load_f32("seq4.logits").values());
    CHECK(err > 1e-6);  // the weights did change
    CHECK(err < 2e-2);  // and only by bf16's precision (the float32 reference)
    // The same rounded weights through the float32 path: equal at float32 precision (with
    // float32 activations: the bf16 unit held off, the bf16 model run again).
    const ssm::test::ForceCpuIsa widened(ssm::test::below_bf16_unit());
    const auto r_widened = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    const auto src = ssm::test::data_dir() / "samba-tiny";
    const auto rounded_dir = ssm::test::bf16_rounded_copy(src / "lit_model.pth", src / "lit_config.json",
                                                          ssm::test::scratch_dir("samba-bf16-rounded"));
    const auto rounded = ssm::Samba::load(rounded_dir);
    const auto expect = rounded.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
    CHECK(rel_error(span_of(r_widened.logits), span_of(expect.logits)) < 1e-5);
    std::filesystem::remove_all(rounded_dir);
}

TEST_CASE("samba: with_mamba picks the hybrid type from the config", "[samba]") {
    const auto ref = reference_of("samba-tiny-mha");
    const auto ids = ids_of(ref, "seq1.input_ids");
    const double err =
        ssm::with_mamba_lm(ssm::test::data_dir() / "samba-tiny-mha", [&](const auto& model) {
            const auto r = model.forward(ssm::Batch::of({ids}), {ssm::Logits::All, false});
            return rel_error(span_of(r.logits), ref.load_f32("seq1.logits").values());
        });
    CHECK(err < kTol);
}

TEST_CASE("samba: the hand-composed hybrid is the ssm::Samba type", "[samba]") {
    using MambaBlock = ssm::MlpResidual<ssm::RMSNorm, ssm::MambaMixer<>, ssm::SwiGLU>;
    using AttentionBlock = ssm::MlpResidual<ssm::RMSNorm, ssm::SlidingWindowAttention, ssm::SwiGLU>;
    using Hybrid = ssm::Model<ssm::HybridStack<MambaBlock, AttentionBlock>, ssm::LmHead>;
    STATIC_REQUIRE(std::is_same_v<Hybrid, ssm::Samba>);
    const auto model = Hybrid::load(ssm::test::data_dir() / "samba-tiny");
    REQUIRE(model.backbone().size() == 4);
    CHECK(model.backbone()[0].kind() == ssm::LayerKind::Mamba);
    CHECK(model.backbone()[1].kind() == ssm::LayerKind::Attention);
    REQUIRE(model.backbone()[1].attention() != nullptr);
    CHECK(model.backbone()[1].attention()->mixer().window() == 8);
    CHECK(model.backbone()[1].attention()->mixer().num_kv_heads() == 2);
    CHECK(model.backbone()[0].attention() == nullptr);
}

TEST_CASE("samba: a bi-encoder head on a SAMBA backbone embeds the last hidden state", "[samba]") {
    const auto dir = ssm::test::data_dir() / "samba-tiny";
    const auto ref = reference_of("samba-tiny");
    const auto ids = ids_of(ref, "seq4.input_ids");  // 40 tokens
    const std::vector<std::int32_t> prefix(ids.begin(), ids.begin() + 9);
    const auto encoder = ssm::SambaWith<ssm::BiEncoderHead<ssm::LastToken>>::load(dir);
    const ssm::Matrix emb = encoder.encode(ssm::Batch::of({ids, prefix}));
    REQUIRE(emb.rows() == 2);
    // The reference's final hidden state at the last token, L2-normalised.
    const ssm::Tensor hidden = ref.load_f32("seq4.hidden.4");
    Eigen::VectorXf expect = hidden.matrix().row(39).transpose();
    expect.normalize();
    CHECK(rel_error({emb.row(0).data(), 64}, {expect.data(), 64}) < kTol);
    // The prefix: the language model's own final hidden state at its last token.
    const auto lm = ssm::Samba::load(dir);
    Eigen::VectorXf last =
        lm.forward(ssm::Batch::of({prefix}), {ssm::Logits::None, false}).hidden.row(8).transpose();
    last.normalize();
    CHECK(rel_error({emb.row(1).data(), 64}, {last.data(), 64}) < kSame);
}

TEST_CASE("samba: a missing tensor or a shape that disagrees with the config names both",
          "[samba]") {
    namespace fs = std::filesystem;
    const auto src = ssm::test::data_dir() / "samba-tiny-mha";
    const auto original = ssm::SafetensorsFile::open(src / "model.safetensors");
    const auto write_without = [&](const fs::path& dir, const std::string& drop) {
        std::vector<ssm::Tensor> kept;
        std::vector<ssm::TensorToWrite> tensors;
        for (const auto& name : original.names()) {
            if (name == drop) continue;
            kept.push_back(original.load_f32(name));
        }
        std::size_t k = 0;
        for (const auto& name : original.names()) {
            if (name == drop) continue;
            const auto shape = original.info(name).shape;
            tensors.push_back(
                ssm::f32_tensor(name, {shape.begin(), shape.end()}, kept[k++].values()));
        }
        fs::create_directories(dir);
        ssm::write_safetensors(dir / "model.safetensors", tensors);
        fs::copy_file(src / "config.json", dir / "config.json");
    };
    const auto scratch = ssm::test::scratch_dir("samba-bad");
    write_without(scratch / "no-proj", "transformer.h.1.attn.proj.weight");
    const auto missing = ssm::test::error_of([&] { (void)ssm::Samba::load(scratch / "no-proj"); });
    CHECK(missing.find("backbone.layers.1.mixer.o_proj.weight") != std::string::npos);
    CHECK(missing.find("transformer.h.1.attn.proj.weight") != std::string::npos);

    // 4 query heads in 2 groups in the config, 3 heads in the file: the fused projection
    // has the wrong shape.
    write_without(scratch / "heads", "");
    auto config = nlohmann::json::parse(std::ifstream(src / "config.json"));
    config["n_head"] = 4;
    config["n_query_groups"] = 2;
    config["head_size"] = 12;
    std::ofstream(scratch / "heads" / "config.json") << config.dump();
    const auto shape = ssm::test::error_of([&] { (void)ssm::Samba::load(scratch / "heads"); });
    CHECK(shape.find("transformer.h.1.attn.attn.weight") != std::string::npos);
    CHECK(shape.find("[96, 48]") != std::string::npos);   // (4 + 2·2) · 12 rows expected
    CHECK(shape.find("[144, 48]") != std::string::npos);  // (3 + 2·3) · 16 rows found
    fs::remove_all(scratch);
}

}  // namespace test_samba
