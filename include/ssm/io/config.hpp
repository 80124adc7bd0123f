// ssm/io/config.hpp — a Mamba checkpoint's config.json, in HuggingFace or original
// state-spaces (mamba_ssm) form, as one typed struct.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

enum class NormKind { RMSNorm, LayerNorm };

/// The sizes and switches of a Mamba-1 model (REFERENCE names in comments).
struct MambaConfig {
    index vocab_size = 0;
    index hidden_size = 0;        // D (d_model)
    index num_hidden_layers = 0;  // (n_layer)
    index state_size = 16;        // N (d_state)
    index conv_kernel = 4;        // K (d_conv)
    index expand = 2;
    index intermediate_size = 0;  // E = expand · D unless given
    index time_step_rank = 0;     // R; "auto" = ceil(D / 16)
    bool use_bias = false;        // in_proj / out_proj bias
    bool use_conv_bias = true;
    bool tie_word_embeddings = true;
    bool residual_in_fp32 = true;
    double layer_norm_epsilon = 1e-5;
    NormKind norm = NormKind::RMSNorm;
    std::optional<std::int64_t> bos_token_id, eos_token_id, pad_token_id;

    /// Reads either form; `source` names the file in error messages.
    [[nodiscard]] static MambaConfig from_json(const nlohmann::json& j, const std::string& source) {
        if (!j.is_object()) fail(source, ": config is not a JSON object");
        MambaConfig c;
        const bool original = j.contains("d_model") && !j.contains("hidden_size");
        const nlohmann::json empty = nlohmann::json::object();
        const nlohmann::json& ssm_cfg = original && j.contains("ssm_cfg") ? j.at("ssm_cfg") : empty;
        if (!ssm_cfg.is_object()) fail(source, ": 'ssm_cfg' is not an object");

        auto integer = [&](const nlohmann::json& obj, const char* key, std::optional<index> fallback) -> index {
            if (!obj.contains(key) || obj.at(key).is_null()) {
                if (!fallback) fail(source, ": missing '", key, "'");
                return *fallback;
            }
            const auto& v = obj.at(key);
            if (!v.is_number_integer()) fail(source, ": '", key, "' must be an integer, got ", v.dump());
            return static_cast<index>(v.get<std::int64_t>());
        };
        auto boolean = [&](const nlohmann::json& obj, const char* key, bool fallback) {
            if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
            if (!obj.at(key).is_boolean()) fail(source, ": '", key, "' must be true or false, got ", obj.at(key).dump());
            return obj.at(key).get<bool>();
        };
        auto number = [&](const nlohmann::json& obj, const char* key, double fallback) {
            if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
            if (!obj.at(key).is_number()) fail(source, ": '", key, "' must be a number, got ", obj.at(key).dump());
            return obj.at(key).get<double>();
        };
        auto token = [&](const char* key) -> std::optional<std::int64_t> {
            if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
            const auto& v = j.at(key);
            if (v.is_array() && !v.empty() && v.at(0).is_number_integer()) return v.at(0).get<std::int64_t>();
            if (!v.is_number_integer()) fail(source, ": '", key, "' must be an integer token id, got ", v.dump());
            return v.get<std::int64_t>();
        };

        const nlohmann::json* rank_value = nullptr;
        if (original) {
            c.hidden_size = integer(j, "d_model", std::nullopt);
            c.num_hidden_layers = integer(j, "n_layer", std::nullopt);
            c.vocab_size = integer(j, "vocab_size", std::nullopt);
            const index multiple = integer(j, "pad_vocab_size_multiple", 1);
            if (multiple <= 0) fail(source, ": 'pad_vocab_size_multiple' must be positive");
            c.vocab_size = (c.vocab_size + multiple - 1) / multiple * multiple;
            c.state_size = integer(ssm_cfg, "d_state", 16);
            c.conv_kernel = integer(ssm_cfg, "d_conv", 4);
            c.expand = integer(ssm_cfg, "expand", 2);
            c.intermediate_size = c.expand * c.hidden_size;
            c.use_bias = boolean(ssm_cfg, "bias", false);
            c.use_conv_bias = boolean(ssm_cfg, "conv_bias", true);
            c.norm = boolean(j, "rms_norm", true) ? NormKind::RMSNorm : NormKind::LayerNorm;
            c.residual_in_fp32 = boolean(j, "residual_in_fp32", true);
            c.tie_word_embeddings = boolean(j, "tie_embeddings", true);
            c.layer_norm_epsilon = number(j, "norm_epsilon", 1e-5);
            if (ssm_cfg.contains("dt_rank")) rank_value = &ssm_cfg.at("dt_rank");
            if (ssm_cfg.contains("layer") && ssm_cfg.at("layer") != "Mamba1")
                fail(source, ": ssm_cfg.layer ", ssm_cfg.at("layer").dump(), " is not supported (Mamba1 only)");
        } else {
            c.hidden_size = integer(j, "hidden_size", std::nullopt);
            c.num_hidden_layers = integer(j, "num_hidden_layers", std::nullopt);
            c.vocab_size = integer(j, "vocab_size", std::nullopt);
            c.state_size = integer(j, "state_size", 16);
            c.conv_kernel = integer(j, "conv_kernel", 4);
            c.expand = integer(j, "expand", 2);
            c.intermediate_size = integer(j, "intermediate_size", c.expand * c.hidden_size);
            c.use_bias = boolean(j, "use_bias", false);
            c.use_conv_bias = boolean(j, "use_conv_bias", true);
            c.tie_word_embeddings = boolean(j, "tie_word_embeddings", true);
            c.residual_in_fp32 = boolean(j, "residual_in_fp32", true);
            c.layer_norm_epsilon = number(j, "layer_norm_epsilon", 1e-5);
            if (j.contains("rms_norm")) c.norm = boolean(j, "rms_norm", true) ? NormKind::RMSNorm : NormKind::LayerNorm;
            if (j.contains("time_step_rank")) rank_value = &j.at("time_step_rank");
        }
        if (!rank_value || rank_value->is_null() || (rank_value->is_string() && rank_value->get<std::string>() == "auto")) {
            c.time_step_rank = (c.hidden_size + 15) / 16;
        } else if (rank_value->is_number_integer()) {
            c.time_step_rank = static_cast<index>(rank_value->get<std::int64_t>());
        } else {
            fail(source, ": time step rank must be an integer or \"auto\", got ", rank_value->dump());
        }
        c.bos_token_id = token("bos_token_id");
        c.eos_token_id = token("eos_token_id");
        c.pad_token_id = token("pad_token_id");
        c.validate(source);
        return c;
    }

    /// Reads `file_or_dir` (a folder means its config.json).
    [[nodiscard]] static MambaConfig load(const std::filesystem::path& file_or_dir) {
        const auto file = std::filesystem::is_directory(file_or_dir) ? file_or_dir / "config.json" : file_or_dir;
        if (!std::filesystem::exists(file_or_dir)) fail(file_or_dir.string(), ": no such file or folder");
        std::ifstream in(file);
        if (!in) fail(file.string(), ": cannot open (a checkpoint folder needs a config.json)");
        std::stringstream buffer;
        buffer << in.rdbuf();
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(buffer.str());
        } catch (const nlohmann::json::exception& e) {
            fail(file.string(), ": invalid JSON: ", e.what());
        }
        return from_json(j, file.string());
    }

    /// Checks that every size is positive and the sizes agree with each other.
    void validate(const std::string& source) const {
        const auto positive = [&](index v, const char* what) {
            if (v <= 0) fail(source, ": ", what, " must be positive, got ", v);
        };
        positive(vocab_size, "vocab_size");
        positive(hidden_size, "hidden size");
        positive(num_hidden_layers, "number of layers");
        positive(state_size, "state size");
        positive(conv_kernel, "conv kernel");
        positive(expand, "expand");
        positive(intermediate_size, "intermediate size");
        positive(time_step_rank, "time step rank");
        if (!(layer_norm_epsilon > 0) || !std::isfinite(layer_norm_epsilon))
            fail(source, ": layer norm epsilon must be a positive number, got ", layer_norm_epsilon);
        for (const auto& [id, name] : {std::pair{eos_token_id, "eos_token_id"}, std::pair{bos_token_id, "bos_token_id"},
                                       std::pair{pad_token_id, "pad_token_id"}})
            if (id && (*id < 0 || *id >= vocab_size))
                fail(source, ": ", name, " ", *id, " is outside the vocabulary [0, ", vocab_size, ")");
    }
};

}  // namespace ssm
