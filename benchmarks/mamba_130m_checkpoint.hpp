// benchmarks/mamba_130m_checkpoint.hpp — mamba-130m- and mamba2-130m-shaped checkpoints with
// random weights, written once to a temp folder and shared by the whole-model benchmarks.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ssm/io/safetensors.hpp>

namespace ssm::bench {

// mamba-130m: D 768, 24 layers, E 1536, N 16, R 48, K 4, vocab 50280, tied head.
inline constexpr ssm::index kD = 768, kLayers = 24, kE = 1536, kN = 16, kR = 48, kK = 4, kVocab = 50280;

/// Matrix-product weights per layer (in_proj, x_proj, dt_proj, out_proj).
inline constexpr double kLayerGemmParams = 2.0 * kE * kD + (kR + 2.0 * kN) * kE + kE * kR + kD * kE;

inline std::filesystem::path checkpoint_dir() {
    const char* env = std::getenv("SSM_BENCH_DIR");
    return env ? std::filesystem::path(env)
               : std::filesystem::temp_directory_path() / "ssm-bench-mamba-130m-shape";
}

/// A checkpoint of random weights, tensor by tensor (each uniform in [lo, hi), drawn in
/// order from one generator seeded 42), written as model.safetensors and config.json.
struct RandomCheckpoint {
    std::mt19937 rng{42};
    std::vector<std::vector<float>> store;
    std::vector<std::pair<std::string, std::vector<ssm::index>>> specs;

    void add(const std::string& name, std::vector<ssm::index> shape, float lo, float hi) {
        ssm::index n = 1;
        for (auto s : shape) n *= s;
        std::uniform_real_distribution<float> dist(lo, hi);
        store.emplace_back(static_cast<std::size_t>(n));
        for (auto& v : store.back()) v = dist(rng);
        specs.emplace_back(name, std::move(shape));
    }
    void write(const std::filesystem::path& dir, const std::string& config) const {
        std::filesystem::create_directories(dir);
        std::vector<ssm::TensorToWrite> tensors;
        for (std::size_t i = 0; i < specs.size(); ++i)
            tensors.push_back(ssm::f32_tensor(specs[i].first, specs[i].second, store[i]));
        ssm::write_safetensors(dir / "model.safetensors", tensors);
        std::ofstream(dir / "config.json") << config;
    }
};

/// Writes a mamba-130m-shaped checkpoint with random weights (once; reused after), with a
/// vocabulary of `vocab` (mamba-130m's 50280 unless asked).
inline void make_checkpoint(const std::filesystem::path& dir, ssm::index vocab = kVocab) {
    if (std::filesystem::exists(dir / "model.safetensors")) return;
    RandomCheckpoint w;
    w.add("backbone.embeddings.weight", {vocab, kD}, -0.05f, 0.05f);
    for (ssm::index l = 0; l < kLayers; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l);
        w.add(p + ".norm.weight", {kD}, 0.9f, 1.1f);
        w.add(p + ".mixer.in_proj.weight", {2 * kE, kD}, -0.036f, 0.036f);
        w.add(p + ".mixer.conv1d.weight", {kE, 1, kK}, -0.5f, 0.5f);
        w.add(p + ".mixer.conv1d.bias", {kE}, -0.1f, 0.1f);
        w.add(p + ".mixer.x_proj.weight", {kR + 2 * kN, kE}, -0.025f, 0.025f);
        w.add(p + ".mixer.dt_proj.weight", {kE, kR}, -0.14f, 0.14f);
        w.add(p + ".mixer.dt_proj.bias", {kE}, -6.9f, -2.3f);  // softplus → dt in [0.001, 0.1]
        w.add(p + ".mixer.A_log", {kE, kN}, 0.0f, 2.77f);      // A in [-16, -1]
        w.add(p + ".mixer.D", {kE}, 0.5f, 1.5f);
        w.add(p + ".mixer.out_proj.weight", {kD, kE}, -0.025f, 0.025f);
    }
    w.add("backbone.norm_f.weight", {kD}, 0.9f, 1.1f);
    w.write(dir, R"({"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": )" +
                     std::to_string(vocab) + R"(, "hidden_size": 768, "state_size": 16,
"num_hidden_layers": 24, "expand": 2, "conv_kernel": 4, "time_step_rank": 48,
"intermediate_size": 1536, "use_bias": false, "use_conv_bias": true,
"tie_word_embeddings": true, "layer_norm_epsilon": 1e-05, "eos_token_id": 0})");
}

// mamba2-130m: D 768, 24 layers, d_inner 1536, 24 heads of 64, one group, N 128, K 4,
// chunk 256, vocab 50288, tied head.
inline constexpr ssm::index kN2 = 128, kP2 = 64, kH2 = kE / kP2, kVocab2 = 50288, kChunk2 = 256;

/// Matrix-product weights per Mamba-2 layer (in_proj, out_proj).
inline constexpr double kLayerGemmParams2 = (2.0 * kE + 2.0 * kN2 + kH2) * kD + kD * kE;

/// Where the mamba2-130m-shaped checkpoint is written: SSM_BENCH_DIR or the temp folder.
inline std::filesystem::path mamba2_checkpoint_dir() {
    const char* env = std::getenv("SSM_BENCH_DIR");
    return (env ? std::filesystem::path(env) : std::filesystem::temp_directory_path()) /
           "ssm-bench-mamba2-130m-shape";
}

/// Writes a mamba2-130m-shaped checkpoint with random weights (once; reused after).
inline void make_mamba2_checkpoint(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "model.safetensors")) return;
    RandomCheckpoint w;
    const ssm::index conv = kE + 2 * kN2;
    w.add("backbone.embeddings.weight", {kVocab2, kD}, -0.05f, 0.05f);
    for (ssm::index l = 0; l < kLayers; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l);
        w.add(p + ".norm.weight", {kD}, 0.9f, 1.1f);
        w.add(p + ".mixer.in_proj.weight", {2 * kE + 2 * kN2 + kH2, kD}, -0.036f, 0.036f);
        w.add(p + ".mixer.conv1d.weight", {conv, 1, kK}, -0.5f, 0.5f);
        w.add(p + ".mixer.conv1d.bias", {conv}, -0.1f, 0.1f);
        w.add(p + ".mixer.dt_bias", {kH2}, -6.9f, -2.3f);
        w.add(p + ".mixer.A_log", {kH2}, 0.0f, 2.77f);
        w.add(p + ".mixer.D", {kH2}, 0.5f, 1.5f);
        w.add(p + ".mixer.norm.weight", {kE}, 0.9f, 1.1f);
        w.add(p + ".mixer.out_proj.weight", {kD, kE}, -0.025f, 0.025f);
    }
    w.add("backbone.norm_f.weight", {kD}, 0.9f, 1.1f);
    w.write(dir, R"({"model_type": "mamba2", "vocab_size": 50288, "hidden_size": 768, "state_size": 128,
"num_hidden_layers": 24, "expand": 2, "conv_kernel": 4, "num_heads": 24, "head_dim": 64, "n_groups": 1,
"chunk_size": 256, "tie_word_embeddings": true})");
}

}  // namespace ssm::bench
