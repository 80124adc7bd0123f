// benchmarks/mamba_130m_checkpoint.hpp — a mamba-130m-shaped checkpoint with random
// weights, written once to a temp folder and shared by the whole-model benchmarks.
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

/// Writes a mamba-130m-shaped checkpoint with random weights (once; reused after).
inline void make_checkpoint(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "model.safetensors")) return;
    std::filesystem::create_directories(dir);
    std::mt19937 rng(42);
    std::vector<std::vector<float>> store;
    std::vector<ssm::TensorToWrite> tensors;
    auto add = [&](const std::vector<ssm::index>& shape, float lo, float hi) {
        ssm::index n = 1;
        for (auto s : shape) n *= s;
        std::uniform_real_distribution<float> dist(lo, hi);
        store.emplace_back(static_cast<std::size_t>(n));
        for (auto& v : store.back()) v = dist(rng);
    };
    std::vector<std::pair<std::string, std::vector<ssm::index>>> specs;
    auto spec = [&](const std::string& name, std::vector<ssm::index> shape, float lo, float hi) {
        add(shape, lo, hi);
        specs.emplace_back(name, std::move(shape));
    };
    spec("backbone.embeddings.weight", {kVocab, kD}, -0.05f, 0.05f);
    for (ssm::index l = 0; l < kLayers; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l);
        spec(p + ".norm.weight", {kD}, 0.9f, 1.1f);
        spec(p + ".mixer.in_proj.weight", {2 * kE, kD}, -0.036f, 0.036f);
        spec(p + ".mixer.conv1d.weight", {kE, 1, kK}, -0.5f, 0.5f);
        spec(p + ".mixer.conv1d.bias", {kE}, -0.1f, 0.1f);
        spec(p + ".mixer.x_proj.weight", {kR + 2 * kN, kE}, -0.025f, 0.025f);
        spec(p + ".mixer.dt_proj.weight", {kE, kR}, -0.14f, 0.14f);
        spec(p + ".mixer.dt_proj.bias", {kE}, -6.9f, -2.3f);  // softplus → dt in [0.001, 0.1]
        spec(p + ".mixer.A_log", {kE, kN}, 0.0f, 2.77f);      // A in [-16, -1]
        spec(p + ".mixer.D", {kE}, 0.5f, 1.5f);
        spec(p + ".mixer.out_proj.weight", {kD, kE}, -0.025f, 0.025f);
    }
    spec("backbone.norm_f.weight", {kD}, 0.9f, 1.1f);
    for (std::size_t i = 0; i < specs.size(); ++i)
        tensors.push_back(ssm::f32_tensor(specs[i].first, specs[i].second, store[i]));
    ssm::write_safetensors(dir / "model.safetensors", tensors);
    std::ofstream(dir / "config.json")
        << R"({"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": 50280, "hidden_size": 768, "state_size": 16,
"num_hidden_layers": 24, "expand": 2, "conv_kernel": 4, "time_step_rank": 48,
"intermediate_size": 1536, "use_bias": false, "use_conv_bias": true,
"tie_word_embeddings": true, "layer_norm_epsilon": 1e-05, "eos_token_id": 0})";
}

}  // namespace ssm::bench
