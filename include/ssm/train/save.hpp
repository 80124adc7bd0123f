// ssm/train/save.hpp — saving a trained model as a folder any Mamba tool opens:
// `config.json` and `model.safetensors` in transformers' names (float32), the base
// checkpoint's tokenizer files beside them.
//
// Every file is written atomically (a temporary file renamed into place), so a folder
// never holds a half-written file; a crash between two files leaves files of two
// different steps, which the safetensors metadata key `ssm.step` tells apart.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/error.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm::train {

/// The files a checkpoint folder's tokenizer lives in, copied along with the weights.
inline constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json",
                                                  "special_tokens_map.json", "generation_config.json"};

namespace detail {
/// The fields transformers' Mamba, Falcon-Mamba and Mamba-2 configs share.
inline void add_common_config_fields(nlohmann::ordered_json& j, const MambaConfig& c) {
    j["use_bias"] = c.use_bias;
    j["use_conv_bias"] = c.use_conv_bias;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["layer_norm_epsilon"] = c.layer_norm_epsilon;
    j["residual_in_fp32"] = true;
    j["hidden_act"] = "silu";
    if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
    j["torch_dtype"] = "float32";
}
}  // namespace detail

/// Whether transformers' `Mamba2ForCausalLM` can express a Mamba-2 `config`: not with a
/// gated MLP beside the SSM (d_ssm < d_inner), D per channel, or no gated norm.
[[nodiscard]] inline bool has_transformers_mamba2_form(const MambaConfig& c) {
    const Mamba2Fields& f = c.mamba2;
    return f.ssm_size == c.intermediate_size && !f.d_per_channel && f.gated_norm;
}

/// transformers' `Mamba2Config` JSON for a Mamba-2 `config` that has that form (used when
/// the base folder's config.json is mamba_ssm's).
[[nodiscard]] inline nlohmann::ordered_json transformers_mamba2_config(const MambaConfig& c) {
    const Mamba2Fields& f = c.mamba2;
    require(has_transformers_mamba2_form(c), "transformers_mamba2_config: transformers has no form for this Mamba-2 model");
    nlohmann::ordered_json j;
    j["architectures"] = {"Mamba2ForCausalLM"};
    j["model_type"] = "mamba2";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["state_size"] = c.state_size;
    j["num_heads"] = f.num_heads;
    j["head_dim"] = f.head_dim;
    j["n_groups"] = f.n_groups;
    j["expand"] = c.intermediate_size / std::max<index>(c.hidden_size, 1);
    j["conv_kernel"] = c.conv_kernel;
    j["chunk_size"] = f.chunk_size;
    // transformers writes an infinite limit as {"__float__": "Infinity"}, which it reads back.
    nlohmann::ordered_json hi = std::isinf(f.dt_max) ? nlohmann::ordered_json{{"__float__", "Infinity"}}
                                                     : nlohmann::ordered_json(f.dt_max);
    j["time_step_limit"] = {f.dt_min, hi};
    detail::add_common_config_fields(j, c);
    return j;
}

/// transformers' `MambaConfig` (or `FalconMambaConfig`) JSON for a Mamba-1 (or
/// Falcon-Mamba) `config` (used when the base folder's
/// config.json is in another form, e.g. mamba_ssm's `d_model` / `n_layer`).
[[nodiscard]] inline nlohmann::ordered_json transformers_config(const MambaConfig& c) {
    nlohmann::ordered_json j;
    const bool falcon = c.family == ModelFamily::FalconMamba;
    j["architectures"] = {falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"};
    j["model_type"] = falcon ? "falcon_mamba" : "mamba";
    if (falcon) j["mixer_rms_eps"] = c.mixer_rms_eps;
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["state_size"] = c.state_size;
    j["conv_kernel"] = c.conv_kernel;
    j["expand"] = c.expand;
    j["intermediate_size"] = c.intermediate_size;
    j["time_step_rank"] = c.time_step_rank;
    detail::add_common_config_fields(j, c);
    return j;
}

/// The config.json text a saved folder gets: the base's own when it is transformers' form
/// (`"model_type"` `"mamba"`, `"falcon_mamba"` or `"mamba2"`), else
/// `transformers_config(config)` (`transformers_mamba2_config` for Mamba-2; a Mamba-2
/// model transformers cannot express keeps the base's mamba_ssm config.json, which the
/// library reads with the saved weights' names as well). Either way
/// `rescale_prenorm_residual` is false: the flag only shapes a fresh initialisation, and
/// transformers' `from_pretrained` redraws every `out_proj.weight` it has just loaded when
/// it is true, so a trained model saved with it set would not load as trained.
[[nodiscard]] inline std::string saved_config_text(const std::filesystem::path& base_dir, const MambaConfig& config) {
    const auto file = base_dir / "config.json";
    std::ifstream in(file, std::ios::binary);
    if (in) {
        std::stringstream buffer;
        buffer << in.rdbuf();
        try {
            // mamba_ssm configs may hold Python's `Infinity`: kept as the string "Infinity",
            // which the library reads back as the number.
            auto j = nlohmann::ordered_json::parse(ssm::detail::quote_nonfinite_tokens(buffer.str()));
            const std::string type = j.is_object() ? j.value("model_type", std::string()) : std::string();
            if (type == "mamba" || type == "falcon_mamba" || type == "mamba2" ||
                (config.family == ModelFamily::Mamba2 && !has_transformers_mamba2_form(config))) {
                if (!j.contains("rescale_prenorm_residual") || j["rescale_prenorm_residual"] != false)
                    j["rescale_prenorm_residual"] = false;
                return j.dump(2) + "\n";
            }
        } catch (const nlohmann::json::exception&) {
            // fall through: write transformers' form
        }
    }
    if (config.family == ModelFamily::Mamba2 && !has_transformers_mamba2_form(config))
        fail(file.string(), ": cannot be read, and this Mamba-2 model has no transformers config form to write instead");
    auto j = config.family == ModelFamily::Mamba2 ? transformers_mamba2_config(config) : transformers_config(config);
    j["rescale_prenorm_residual"] = false;
    return j.dump(2) + "\n";
}

/// Writes `text` to `path` atomically.
inline void write_text_file(const std::filesystem::path& path, const std::string& text) {
    write_file_atomically(path, [&](std::ostream& out) { out.write(text.data(), static_cast<std::streamsize>(text.size())); });
}

/// Copies `from` onto `to` atomically (a temporary file renamed into place).
inline void copy_file_atomically(const std::filesystem::path& from, const std::filesystem::path& to) {
    std::ifstream in(from, std::ios::binary);
    if (!in) fail(from.string(), ": cannot open for reading");
    write_file_atomically(to, [&](std::ostream& out) {
        out << in.rdbuf();
        if (in.bad()) fail(from.string(), ": read failed");
    });
}

/// What `save_model_folder` writes beyond the parameters.
struct SaveOptions {
    std::map<std::string, std::string> metadata;  // into model.safetensors' __metadata__
    std::vector<std::string> exclude_prefixes;    // parameters saved elsewhere (e.g. "score.")
};

/// Saves a trainable model to `dir` (created if missing): `config.json` (see
/// `saved_config_text`), `model.safetensors` holding every registered parameter as
/// float32 under its checkpoint name, plus every tensor of the base checkpoint in
/// `base_dir` that no parameter covers (e.g. an untied `lm_head.weight` a retriever does
/// not train; never a tied one, which transformers re-ties), and the base's tokenizer
/// files. Parameters and base tensors whose names start with an excluded prefix are left
/// out. `dir` equal to `base_dir` is allowed: each file is replaced atomically.
inline void save_model_folder(const std::filesystem::path& dir, const std::filesystem::path& base_dir,
                              const MambaConfig& config, const Parameters& params, const SaveOptions& options = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec)) fail(dir.string(), ": cannot create the output folder");
    const auto excluded = [&](const std::string& name) {
        for (const auto& p : options.exclude_prefixes)
            if (name.rfind(p, 0) == 0) return true;
        return false;
    };

    std::vector<TensorToWrite> tensors;
    std::vector<Tensor> kept;  // base tensors copied through: they must outlive the write
    for (const Parameter& p : params)
        if (!excluded(p.name)) tensors.push_back(f32_tensor(p.name, p.shape, p.value));

    if (fs::exists(base_dir / "config.json", ec)) {
        const Checkpoint base = Checkpoint::open(base_dir);
        std::set<std::string> covered;
        for (const Parameter& p : params)
            if (auto stored = base.resolve(p.name)) covered.insert(*stored);
        if (config.tie_word_embeddings)
            if (auto stored = base.resolve("lm_head.weight")) covered.insert(*stored);
        const std::vector<std::string> names = base.names();
        kept.reserve(names.size());  // no reallocation: `tensors` views each kept value
        for (const std::string& name : names) {
            if (covered.count(name) || excluded(name)) continue;
            const TensorInfo& info = base.info(name);
            if (info.dtype != DType::F32 && info.dtype != DType::BF16 && info.dtype != DType::F16) continue;
            kept.push_back(base.load_f32(name, info.shape));
            tensors.push_back(f32_tensor(name, info.shape, kept.back().values()));
        }
    }
    std::map<std::string, std::string> metadata = options.metadata;
    metadata.emplace("format", "pt");
    write_safetensors(dir / "model.safetensors", tensors, metadata);
    write_text_file(dir / "config.json", saved_config_text(base_dir, config));
    if (fs::equivalent(dir, base_dir, ec)) return;
    for (const char* name : kTokenizerFiles)
        if (fs::exists(base_dir / name, ec)) copy_file_atomically(base_dir / name, dir / name);
}

}  // namespace ssm::train
